# Reference outputs from R's survival package for tests/reference/test_modifiers_vs_R.py
# (ketaoutcomes.models.modifiers: effect modifiers of the time to response).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival
#   Rscript tests/reference/modifiers_reference.R
#
# Writes data/modifiers_data.csv (a simulated cohort, generated here with a fixed seed)
# and results/modifiers_*.json:
#   modifiers_sex.json, modifiers_conbenzo.json   route x modifier (nested terms) and main-effects fits,
#                                                 anova(main, interaction), and the same subgroup HRs as
#                                                 linear combinations of the usual ARM * M parameterisation
#   modifiers_age.json                            main effects and the interaction centred at 30, 50, 70
#   modifiers_within_ketamine.json                ketamine routes only, strata(ARM, SITEID) and strata(ARM)
#   modifiers_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles. The fits are
# iterated to eps = 1e-11 (coxph's default 1e-9 stops ~1e-8 short of the maximum).

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
data_path <- file.path(here, "data", "modifiers_data.csv")

# ---------------------------------------------------------------- writers (writers.R, shared with survival_reference.R)
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
# 3000 courses on three arms; known effects on the hazard of response (per day):
#   ketamine_iv vs ssri HR 3, esketamine_intranasal vs ssri HR 2.5 without a benzodiazepine,
#   halved with one (benzodiazepine x ketamine interaction HR 0.5); ketamine x age +0.1 per
#   10 years (log HR); no sex interaction; dose +8% per +25% of the route's typical dose (ketamine);
#   site, baseline and prior failures as main effects. Censoring uniform on 14-84 days; times
#   rounded up to whole days, so there are many ties (Efron). Missing values: 60 CONBENZO,
#   20 BASE, 25 DOSEREL (ketamine); sex U in ~3%.
set.seed(20261121)
n <- 3000
arms <- c("ssri", "ketamine_iv", "esketamine_intranasal")
ARM <- sample(arms, n, replace = TRUE, prob = c(0.40, 0.35, 0.25))
SITEID <- sample(sprintf("S%02d", 1:5), n, replace = TRUE)
SEX <- sample(c("F", "M", "U"), n, replace = TRUE, prob = c(0.56, 0.41, 0.03))
AGE <- round(runif(n, 18, 80))
CONBENZO <- runif(n) < 0.3
CONSSRI <- ifelse(ARM == "ssri", FALSE, runif(n) < 0.4)
BASE <- round(rnorm(n, 32, 6))
PRIORFAIL <- rpois(n, 1.5)
keta <- ARM != "ssri"
DOSEREL <- ifelse(keta, round(exp(rnorm(n, 0, 0.2)), 4), round(exp(rnorm(n, 0, 0.4)), 4))
site_eff <- c(S01 = 0, S02 = 0.2, S03 = -0.2, S04 = 0.1, S05 = -0.1)[SITEID]
lp <- log(3) * (ARM == "ketamine_iv") + log(2.5) * (ARM == "esketamine_intranasal") +
  log(0.5) * keta * CONBENZO + 0.1 * keta * (AGE - 50) / 10 - 0.02 * (AGE - 50) / 10 +
  log(1.08) * keta * (DOSEREL - 1) / 0.25 - 0.03 * (BASE - 32) - 0.1 * PRIORFAIL + site_eff
t_event <- rexp(n, 0.02 * exp(lp))
t_cens <- runif(n, 14, 84)
AVAL <- ceiling(pmin(t_event, t_cens))
EVENT <- as.integer(t_event <= t_cens)
CONBENZO[sample(n, 60)] <- NA
BASE[sample(n, 20)] <- NA
DOSEREL[sample(which(keta), 25)] <- NA

lower_bool <- function(x) ifelse(is.na(x), NA, ifelse(x, "true", "false"))
out <- data.frame(
  USUBJID = sprintf("P%05d", seq_len(n)), ARM = ARM, SITEID = SITEID, SEX = SEX, AGE = AGE,
  CONSSRI = lower_bool(CONSSRI), CONBENZO = lower_bool(CONBENZO), BASE = BASE, PRIORFAIL = PRIORFAIL,
  DOSEREL = num17(DOSEREL), AVAL = AVAL, EVENT = EVENT
)
write.csv(out, data_path, row.names = FALSE, na = "", quote = FALSE)

# Fit what the file holds (exactly what Python reads).
d <- read.csv(data_path, na.strings = "", stringsAsFactors = FALSE)
d$CONSSRI <- as.logical(toupper(d$CONSSRI))
d$CONBENZO <- as.logical(toupper(d$CONBENZO))

# ---------------------------------------------------------------- fits with named terms
ctrl <- coxph.control(eps = 1e-11, iter.max = 100)   # toler.chol (1.8e-12) must stay below eps
routes <- c("ketamine_iv", "esketamine_intranasal")   # the order Python is given
adjust <- c("BASE", "PRIORFAIL")

# terms: named list, Python term name -> numeric column (built explicitly, no R contrasts)
fit_terms <- function(data, terms, adjust, strata) {
  X <- as.data.frame(terms, optional = TRUE)
  safe <- sprintf("x%d", seq_along(terms))
  names(X) <- safe
  X$AVAL <- data$AVAL
  X$EVENT <- data$EVENT
  for (a in adjust) X[[a]] <- data[[a]]
  rhs <- paste(c(safe, adjust), collapse = " + ")
  if (!is.null(strata)) {
    X$.strata <- strata
    rhs <- paste(rhs, "+ strata(.strata)")
  }
  fit <- coxph(as.formula(paste("Surv(AVAL, EVENT) ~", rhs)), data = X, ties = "efron", control = ctrl)
  stopifnot(length(fit$na.action) == 0)   # complete rows are passed in
  names(fit$coefficients) <- c(names(terms), adjust)
  fit
}

export <- function(fit, label) {
  s <- summary(fit, conf.int = 0.95)
  cf <- s$coefficients
  ci <- s$conf.int
  terms <- names(coef(fit))
  list(
    label = label, n = fit$n, nevent = fit$nevent, ties = fit$method, iter = fit$iter,
    terms = as.list(terms),
    coef = setNames(as.numeric(cf[, "coef"]), terms),
    se = setNames(as.numeric(cf[, "se(coef)"]), terms),
    hr = setNames(as.numeric(cf[, "exp(coef)"]), terms),
    hr_lower = setNames(as.numeric(ci[, "lower .95"]), terms),
    hr_upper = setNames(as.numeric(ci[, "upper .95"]), terms),
    p = setNames(as.numeric(cf[, "Pr(>|z|)"]), terms),
    loglik_null = fit$loglik[1], loglik = fit$loglik[2]
  )
}

lr_export <- function(main, inter) {
  a <- anova(main, inter)   # survival's anova.coxphlist: Chisq = 2 * delta loglik, Df = delta coefficients
  list(chisq = a[2, "Chisq"], df = a[2, "Df"], p = a[2, "Pr(>|Chi|)"],
       loglik_main = main$loglik[2], loglik_interaction = inter$loglik[2])
}

complete <- function(data, cols) data[stats::complete.cases(data[, cols]), ]
ind <- function(x) as.numeric(x)

# ---------------------------------------------------------------- Model A: categorical modifiers
categorical_modifier <- function(data, col, levels, value) {
  m <- value(data)
  terms <- list()
  for (lv in levels) for (r in routes) terms[[sprintf("ARM[%s]:%s[%s]", r, col, lv)]] <- ind(data$ARM == r & m == lv)
  main_terms <- list()
  for (r in routes) main_terms[[sprintf("ARM[%s]", r)]] <- ind(data$ARM == r)
  level_terms <- list()
  for (lv in levels[-1]) level_terms[[sprintf("%s[%s]", col, lv)]] <- ind(m == lv)
  inter <- fit_terms(data, c(terms, level_terms), adjust, data$SITEID)
  main <- fit_terms(data, c(main_terms, level_terms), adjust, data$SITEID)
  # the same subgroup HRs from the usual parameterisation: ARM * M with treatment contrasts,
  # HR in level lv = exp(b_route + b_route:M[lv]), Wald SE from the covariance matrix
  dd <- data
  dd$arm_f <- factor(dd$ARM, levels = c("ssri", routes))
  dd$m_f <- factor(m, levels = levels)
  usual <- coxph(Surv(AVAL, EVENT) ~ arm_f * m_f + BASE + PRIORFAIL + strata(SITEID), data = dd,
                 ties = "efron", control = ctrl)
  b <- coef(usual)
  V <- vcov(usual)
  lincom <- list()
  for (lv in levels) for (r in routes) {
    w <- setNames(numeric(length(b)), names(b))
    w[paste0("arm_f", r)] <- 1
    if (lv != levels[1]) w[paste0("arm_f", r, ":m_f", lv)] <- 1
    est <- sum(w * b)
    lincom[[sprintf("ARM[%s]:%s[%s]", r, col, lv)]] <- c(coef = est, se = sqrt(drop(t(w) %*% V %*% w)))
  }
  list(
    modifier = col, levels = as.list(levels), n_rows = nrow(data),
    interaction = export(inter, paste(col, "interaction")),
    main = export(main, paste(col, "main")),
    lr = lr_export(main, inter),
    usual_loglik = usual$loglik[2],
    lincom_coef = sapply(lincom, function(v) v[["coef"]]),
    lincom_se = sapply(lincom, function(v) v[["se"]])
  )
}

# SEX: F and M only (U left out); complete BASE (the adjusters)
d_sex <- complete(d[d$SEX %in% c("F", "M"), ], c("BASE", "PRIORFAIL", "SITEID"))
write_json(categorical_modifier(d_sex, "SEX", c("F", "M"), function(x) x$SEX), "modifiers_sex.json")

# CONBENZO: N (false) and Y (true); missing CONBENZO left out
d_bz <- complete(d, c("CONBENZO", "BASE", "PRIORFAIL", "SITEID"))
write_json(categorical_modifier(d_bz, "CONBENZO", c("N", "Y"), function(x) ifelse(x$CONBENZO, "Y", "N")),
           "modifiers_conbenzo.json")

# ---------------------------------------------------------------- Model A: age
d_age <- complete(d, c("AGE", "BASE", "PRIORFAIL", "SITEID"))
route_terms <- list()
for (r in routes) route_terms[[sprintf("ARM[%s]", r)]] <- ind(d_age$ARM == r)
age10 <- list("AGE/10" = d_age$AGE / 10)
main <- fit_terms(d_age, c(route_terms, age10), adjust, d_age$SITEID)
centred <- list()
for (cc in c(30, 50, 70)) {
  slope <- list()
  for (r in routes) slope[[sprintf("ARM[%s]:(AGE-%d)/10", r, cc)]] <- ind(d_age$ARM == r) * (d_age$AGE - cc) / 10
  inter <- fit_terms(d_age, c(route_terms, slope, age10), adjust, d_age$SITEID)
  centred[[as.character(cc)]] <- export(inter, sprintf("AGE interaction centred at %d", cc))
  if (cc == 30) lr <- lr_export(main, inter)
}
write_json(list(modifier = "AGE", n_rows = nrow(d_age), main = export(main, "AGE main"), lr = lr,
                centred = centred), "modifiers_age.json")

# ---------------------------------------------------------------- Model B: within ketamine
d_k <- complete(d[d$ARM != "ssri" & d$SEX != "U", ],
                c("DOSEREL", "CONSSRI", "CONBENZO", "AGE", "SEX", "BASE", "PRIORFAIL", "SITEID"))
kt <- list("DOSEREL/0.25" = d_k$DOSEREL / 0.25, CONSSRI = ind(d_k$CONSSRI), CONBENZO = ind(d_k$CONBENZO),
           "AGE/10" = d_k$AGE / 10, "SEX[M]" = ind(d_k$SEX == "M"))
b_site <- fit_terms(d_k, kt, adjust, interaction(d_k$ARM, d_k$SITEID, drop = TRUE))
b_arm <- fit_terms(d_k, kt, adjust, d_k$ARM)
# strata(ARM, SITEID) written the usual way must be the same fit
chk <- coxph(Surv(AVAL, EVENT) ~ I(DOSEREL / 0.25) + CONSSRI + CONBENZO + I(AGE / 10) + I(SEX == "M") +
               BASE + PRIORFAIL + strata(ARM, SITEID), data = d_k, ties = "efron", control = ctrl)
stopifnot(isTRUE(all.equal(unname(coef(chk)), unname(coef(b_site)), tolerance = 1e-10)))
write_json(list(
  n_rows = nrow(d_k), n_strata_arm_site = length(unique(paste(d_k$ARM, d_k$SITEID))),
  arm_site = export(b_site, "within ketamine, strata(ARM, SITEID)"),
  arm = export(b_arm, "within ketamine, strata(ARM)")
), "modifiers_within_ketamine.json")

write_json(list(
  r_version = R.version.string,
  survival_version = as.character(packageVersion("survival"))
), "modifiers_versions.json")
cat("wrote data/modifiers_data.csv and modifiers_* reference files to", res_dir, "\n")
