# Reference outputs from R's survival package for tests/reference/test_survival_vs_R.py.
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival r-cran-cardata
#   Rscript tests/reference/survival_reference.R
#
# Writes, next to this script:
#   data/*.csv     the data sets the models were fitted on (so Python fits the same rows)
#   results/*.json model summaries (coefficients, tests, concordance), full precision
#   results/*.csv  survfit tables, full precision
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.
# Only base R + survival + carData are used (no jsonlite: a tiny writer, writers.R, is
# sourced below).

suppressPackageStartupMessages({
  library(survival)
  library(carData)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
data_dir <- file.path(here, "data")
res_dir <- file.path(here, "results")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)
dir.create(res_dir, showWarnings = FALSE, recursive = TRUE)

# ---------------------------------------------------------------- writers (shared with the other *_reference.R scripts)
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
# lung: R's status is 1 = censored, 2 = dead; recode to 1 = event, 0 = censored.
lung_df <- survival::lung
lung_df$status <- as.integer(lung_df$status == 2)
write_csv17(lung_df, file.path(data_dir, "lung.csv"))

# rossi: carData::Rossi (Fox & Weisberg), factors recoded to the 0/1 coding that
# lifelines' rossi.csv uses (fin yes=1, race black=1, wexp yes=1, mar married=1, paro yes=1).
R0 <- carData::Rossi
rossi <- data.frame(
  week = R0$week, arrest = R0$arrest,
  fin = as.integer(R0$fin == "yes"), age = R0$age,
  race = as.integer(R0$race == "black"), wexp = as.integer(R0$wexp == "yes"),
  mar = as.integer(R0$mar == "married"), paro = as.integer(R0$paro == "yes"),
  prio = R0$prio
)
write.csv(rossi, file.path(data_dir, "rossi.csv"), row.names = FALSE)

# Counting-process data 1: lung split at fixed cut points (days 90, 180, 365;
# one death falls exactly on 180, so an entry time equals an event time).
lung_split <- survSplit(Surv(time, status) ~ ., data = lung_df,
                        cut = c(90, 180, 365), start = "tstart", episode = "period")
lung_split <- lung_split[, c("tstart", "time", "status", "age", "sex", "ph.ecog", "period")]
write_csv17(lung_split, file.path(data_dir, "lung_split.csv"))

# Counting-process data 2: rossi with weekly employment as a time-varying covariate
# (Fox & Weisberg, "Cox proportional-hazards regression for survival data", appendix):
# one row per person-week (start, stop] = (j-1, j], event in the arrest week only.
emp <- as.matrix(R0[, paste0("emp", 1:52)])
rows <- rep(seq_len(nrow(R0)), R0$week)
wk <- unlist(lapply(R0$week, seq_len))
rossi_long <- data.frame(
  id = rows,
  start = wk - 1L,
  stop = wk,
  arrest = as.integer(wk == R0$week[rows] & R0$arrest[rows] == 1),
  fin = rossi$fin[rows], age = rossi$age[rows], prio = rossi$prio[rows],
  employed = as.integer(emp[cbind(rows, wk)] == "yes")
)
write.csv(rossi_long, file.path(data_dir, "rossi_long.csv"), row.names = FALSE)

# ---------------------------------------------------------------- coxph
cox_summary <- function(fit, label, formula_text) {
  s <- summary(fit, conf.int = 0.95)
  cf <- s$coefficients
  ci <- s$conf.int
  cc <- fit$concordance
  terms <- rownames(cf)
  list(
    label = label,
    formula = formula_text,
    ties = fit$method,
    n = fit$n,
    nevent = fit$nevent,
    n_dropped = length(fit$na.action),
    iter = fit$iter,
    terms = as.list(terms),
    coef = setNames(as.numeric(cf[, "coef"]), terms),
    hr = setNames(as.numeric(cf[, "exp(coef)"]), terms),
    se = setNames(as.numeric(cf[, "se(coef)"]), terms),
    z = setNames(as.numeric(cf[, "z"]), terms),
    p = setNames(as.numeric(cf[, "Pr(>|z|)"]), terms),
    hr_lower = setNames(as.numeric(ci[, "lower .95"]), terms),
    hr_upper = setNames(as.numeric(ci[, "upper .95"]), terms),
    loglik_null = fit$loglik[1],
    loglik = fit$loglik[2],
    lr_chi2 = as.numeric(s$logtest["test"]),
    lr_df = as.numeric(s$logtest["df"]),
    lr_p = as.numeric(s$logtest["pvalue"]),
    # summary.coxph rounds the Wald statistic for printing; fit$wald.test is full precision
    wald_chi2 = as.numeric(fit$wald.test),
    wald_p = pchisq(as.numeric(fit$wald.test), length(terms), lower.tail = FALSE),
    score_chi2 = as.numeric(s$sctest["test"]),
    score_p = as.numeric(s$sctest["pvalue"]),
    concordance = as.numeric(cc["concordance"]),
    concordance_se = as.numeric(cc["std"]),
    concordant = as.numeric(cc["concordant"]),
    discordant = as.numeric(cc["discordant"]),
    tied_x = as.numeric(cc["tied.x"]),
    tied_y = as.numeric(cc["tied.y"]),
    tied_xy = as.numeric(cc["tied.xy"])
  )
}

fit_cox <- function(formula_text, data, ties, label) {
  fit <- coxph(as.formula(formula_text), data = data, ties = ties)
  write_json(cox_summary(fit, label, formula_text), paste0("cox_", label, ".json"))
  invisible(fit)
}

lung_f <- "Surv(time, status) ~ age + sex + ph.ecog"
rossi_f <- "Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio"
fit_cox(lung_f, lung_df, "efron", "lung_efron")
fit_cox(lung_f, lung_df, "breslow", "lung_breslow")
fit_cox(rossi_f, rossi, "efron", "rossi_efron")
fit_cox(rossi_f, rossi, "breslow", "rossi_breslow")
fit_cox("Surv(time, status) ~ age + ph.ecog + strata(sex)", lung_df, "efron", "lung_strata_sex")
fit_cox("Surv(week, arrest) ~ age + prio + strata(fin, race)", rossi, "breslow", "rossi_strata_fin_race_breslow")
# categorical: ph.ecog as a factor with reference level 1 (level 3 has a single subject)
lung_cat <- lung_df
lung_cat$ecog <- relevel(factor(lung_cat$ph.ecog), ref = "1")
fit_cox("Surv(time, status) ~ age + sex + ecog", lung_cat, "efron", "lung_ecog_factor_ref1")
# counting process / left truncation
fit_cox("Surv(tstart, time, status) ~ age + sex + ph.ecog", lung_split, "efron", "lung_split_efron")
fit_cox("Surv(start, stop, arrest) ~ fin + age + prio + employed", rossi_long, "efron", "rossi_long_efron")
fit_cox("Surv(start, stop, arrest) ~ fin + age + prio + employed", rossi_long, "breslow", "rossi_long_breslow")

# ---------------------------------------------------------------- survfit
km_export <- function(formula_text, data, conf_type, label) {
  fit <- survfit(as.formula(formula_text), data = data, conf.type = conf_type)
  s <- summary(fit, censored = TRUE)
  strata <- if (is.null(s$strata)) rep("all", length(s$time)) else as.character(s$strata)
  tab <- data.frame(
    strata = strata, time = s$time, n_risk = s$n.risk, n_event = s$n.event,
    n_censor = s$n.censor, surv = s$surv, std_err = s$std.err,
    lower = s$lower, upper = s$upper
  )
  write_csv17(tab, file.path(res_dir, paste0("km_", label, "_", conf_type, ".csv")))
  st <- summary(fit)$table
  if (is.null(dim(st))) st <- t(as.matrix(st))
  strata_names <- if (is.null(fit$strata)) "all" else names(fit$strata)
  med <- data.frame(
    strata = strata_names, n = st[, "records"], events = st[, "events"],
    median = st[, "median"], lcl = st[, "0.95LCL"], ucl = st[, "0.95UCL"]
  )
  write_csv17(med, file.path(res_dir, paste0("km_", label, "_", conf_type, "_medians.csv")))
}
for (ct in c("log", "log-log", "plain")) {
  km_export("Surv(time, status) ~ sex", lung_df, ct, "lung_sex")
}
km_export("Surv(time, status) ~ 1", lung_df, "log", "lung_all")
km_export("Surv(time, status) ~ ph.ecog", lung_df, "log", "lung_ecog")
km_export("Surv(week, arrest) ~ fin", rossi, "log", "rossi_fin")
# Edge cases of R's median rule (quantile.survfit/findq):
#   flat: the curve sits exactly at 0.5 between t = 2 and t = 3 -> median is the midpoint 2.5
#   ends_half: the curve ends at exactly 0.5 (last rows censored) -> midpoint with the last time
#   no_events: nothing happens -> survival 1, median NA
km_edge <- data.frame(
  group = c(rep("flat", 4), rep("ends_half", 4), rep("no_events", 3)),
  time = c(1, 2, 3, 4, 1, 2, 3, 4, 2, 5, 7),
  status = c(1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
)
write.csv(km_edge, file.path(data_dir, "km_edge.csv"), row.names = FALSE)
km_export("Surv(time, status) ~ group", km_edge, "log", "edge")

# ---------------------------------------------------------------- survdiff
sd_export <- function(formula_text, data, label) {
  sd <- survdiff(as.formula(formula_text), data = data)
  obs <- if (is.matrix(sd$obs)) rowSums(sd$obs) else sd$obs
  expd <- if (is.matrix(sd$exp)) rowSums(sd$exp) else sd$exp
  df <- sum(expd > 0) - 1
  write_json(list(
    label = label, formula = formula_text,
    groups = as.list(names(sd$n)),
    n = as.numeric(sd$n), observed = as.numeric(obs), expected = as.numeric(expd),
    chisq = sd$chisq, df = df, p = pchisq(sd$chisq, df, lower.tail = FALSE)
  ), paste0("logrank_", label, ".json"))
}
sd_export("Surv(time, status) ~ sex", lung_df, "lung_sex")
sd_export("Surv(week, arrest) ~ fin", rossi, "rossi_fin")
sd_export("Surv(time, status) ~ ph.ecog", lung_df, "lung_ecog")
sd_export("Surv(time, status) ~ sex + strata(ph.ecog)", lung_df, "lung_sex_strata_ecog")

# ---------------------------------------------------------------- versions
write_json(list(
  r_version = R.version.string,
  survival_version = as.character(packageVersion("survival")),
  carData_version = as.character(packageVersion("carData"))
), "versions.json")
cat("wrote", length(list.files(res_dir)), "result files to", res_dir, "\n")
