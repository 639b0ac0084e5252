# Reference outputs of riskRegression's ate() for tests/reference/test_ate_vs_R.py
# (ketaoutcomes.models.ate and .ate_nuisance): standardised risks by the g-formula (GFORMULA), inverse
# probability of treatment and censoring weighting (IPTW, "IPTW,IPCW") and the doubly robust estimator
# (AIPTW, "AIPTW,AIPCW"), each arm, their differences and ratios, influence-function standard errors
# and Wald intervals; and the restricted mean up to a horizon, which ate() does not give: ate() is
# evaluated at every distinct time up to the horizon and its curve and influence function integrated
# here (each estimate is a step function of t changing only at observed times, so this is exact).
#
# Models, as a user of ate() writes them (convergence tightened so that the comparison is not of
# stopping rules):
#   outcome   coxph(Surv(time, status) ~ treat + <covariates>)            (Efron ties, R's default)
#   censoring coxph(Surv(time, status == 0) ~ treat + <covariates>)
#   treatment glm(treat ~ <covariates>, family = binomial)
# and, in the cases *_strata, strata(treat) in place of treat in both Cox models (a baseline hazard per
# arm, as the analysis fits them).
#
# Cases (data/ate_*.csv):
#   lung_tied    survival's lung, complete cases of time, status, age, sex, ph.ecog (227 patients); treat =
#                female (sex 2); covariates age, ph.ecog; days 90, 180, 365; horizon 365. 26 tied death
#                days, 3 tied censoring days.
#   lung_untied  the same with time + i / 1000 (i the row number): no ties.
#   synthetic    this project's simulator, time to response of IV ketamine vs SSRI (265 patients, whole
#                days: heavy ties), covariates x1..x9 the analysis's propensity design
#                (ate_synthetic_data.py); days 7, 14, 28; horizon 28.
#   lung_untied_strata, synthetic_strata: the same with strata(treat) (synthetic: days 7, 14, 21 and horizon
#                21, the IV arm's follow-up ending at day 28).
# For lung_tied, synthetic and synthetic_strata also the coefficients' influence functions: riskRegression's (iidCox) and
# survival's residuals(fit, "dfbeta"), which differ with tied event times (see test_ate_vs_R.py).
#
# Regenerate (from the repository root; about 1 minute):
#   apt-get install -y r-base-core r-cran-survival r-cran-riskregression
#   Rscript tests/reference/ate_reference.R > tests/reference/results/ate_reference.log
# Writes data/ate_lung.csv and results/ate_<case>.json, results/ate_versions.json. Numbers as %.17g.

suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(data.table)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
data_dir <- file.path(here, "data")
source(file.path(here, "writers.R"))
options(width = 160)

lung <- read.csv(file.path(data_dir, "lung.csv"))
lung <- na.omit(lung[, c("time", "status", "age", "sex", "ph.ecog")])
rownames(lung) <- NULL
lung <- data.frame(time = lung$time, time_untied = lung$time + seq_len(nrow(lung)) / 1000,
                   status = lung$status, treat = as.integer(lung$sex == 2), age = lung$age, ph.ecog = lung$ph.ecog)
write_csv17(lung, file.path(data_dir, "ate_lung.csv"))
synthetic <- read.csv(file.path(data_dir, "ate_synthetic.csv"))

rows <- function(m) lapply(seq_len(nrow(m)), function(i) unname(m[i, ]))
table_rows <- function(dt, cols) lapply(seq_len(nrow(dt)), function(i) {
  r <- as.list(dt[i, cols, with = FALSE])
  lapply(r, function(v) if (is.factor(v)) as.character(v) else v)
})

run_case <- function(name, d, covariates, days, horizon, influence = FALSE, strata = FALSE) {
  cat("\n==", name, "==\n")
  d$treat <- factor(d$treat, levels = c(0, 1))
  rhs <- paste(c(if (strata) "strata(treat)" else "treat", covariates), collapse = " + ")
  fo <- coxph(as.formula(paste("Surv(time, status) ~", rhs)), data = d, x = TRUE, y = TRUE,
              control = coxph.control(eps = 1e-11, iter.max = 100))
  fc <- coxph(as.formula(paste("Surv(time, status == 0) ~", rhs)), data = d, x = TRUE, y = TRUE,
              control = coxph.control(eps = 1e-11, iter.max = 100))
  ft <- glm(as.formula(paste("treat ~", paste(covariates, collapse = " + "))), data = d, family = binomial,
            control = glm.control(epsilon = 1e-14, maxit = 100))
  a <- ate(event = fo, treatment = ft, censor = fc, data = d, times = days,
           estimator = c("GFORMULA", "IPTW", "AIPTW"), verbose = FALSE)
  print(summary(a, short = TRUE))
  grid <- sort(unique(c(days[days <= horizon], d$time[d$time <= horizon])))
  g <- ate(event = fo, treatment = ft, censor = fc, data = d, times = grid,
           estimator = c("GFORMULA", "IPTW", "AIPTW"), iid = TRUE, verbose = FALSE)
  step <- diff(c(grid, horizon))  # the length of each step of the curve up to the horizon
  rmst <- list()
  for (e in c("GFORMULA", "IPTW", "AIPTW")) {
    arm <- function(lv) {
      est <- g$meanRisk[estimator == e & treatment == lv][order(time)]$estimate
      iid <- g$iid[[e]][[lv]]
      list(value = horizon - sum(est * step), iid = -drop(iid %*% step))
    }
    t1 <- arm("1"); t0 <- arm("0")
    rmst[[e]] <- list(target = t1$value, comparator = t0$value, se_target = sqrt(sum(t1$iid^2)),
                      se_comparator = sqrt(sum(t0$iid^2)), difference = t1$value - t0$value,
                      se = sqrt(sum((t1$iid - t0$iid)^2)))
    cat(sprintf("%s restricted mean up to %g: treat 1 %.6f, treat 0 %.6f, difference %.6f (SE %.6f)\n",
                e, horizon, t1$value, t0$value, t1$value - t0$value, rmst[[e]]$se))
  }
  out <- list(
    n = nrow(d), days = days, horizon = horizon, covariates = covariates, strata = strata, grid_size = length(grid),
    coef_outcome = unname(coef(fo)), coef_censoring = unname(coef(fc)), coef_treatment = unname(coef(ft)),
    mean_risk = table_rows(a$meanRisk, c("estimator", "time", "treatment", "estimate", "se", "lower", "upper")),
    diff_risk = table_rows(a$diffRisk, c("estimator", "time", "estimate", "se", "lower", "upper", "p.value")),
    ratio_risk = table_rows(a$ratioRisk, c("estimator", "time", "estimate", "se", "lower", "upper")),
    rmst = rmst
  )
  if (influence) {
    out$iid_beta_outcome_riskregression <- rows(iidCox(fo, return.object = FALSE)$IFbeta)
    out$dfbeta_outcome <- rows(residuals(fo, type = "dfbeta"))
    out$iid_beta_censoring_riskregression <- rows(iidCox(fc, return.object = FALSE)$IFbeta)
    out$dfbeta_censoring <- rows(residuals(fc, type = "dfbeta"))
  }
  write_json(out, paste0("ate_", name, ".json"))
}

run_case("lung_tied", lung, c("age", "ph.ecog"), c(90, 180, 365), 365, influence = TRUE)
run_case("lung_untied", transform(lung, time = time_untied), c("age", "ph.ecog"), c(90, 180, 365), 365)
run_case("synthetic", synthetic, grep("^x", names(synthetic), value = TRUE), c(7, 14, 28), 28, influence = TRUE)
# a baseline hazard per arm in the outcome and censoring models (strata(treat)): what the analysis fits
run_case("lung_untied_strata", transform(lung, time = time_untied), c("age", "ph.ecog"), c(90, 180, 365), 365,
         strata = TRUE)
run_case("synthetic_strata", synthetic, grep("^x", names(synthetic), value = TRUE), c(7, 14, 21), 21,
         influence = TRUE, strata = TRUE)

write_json(list(R = R.version.string, survival = as.character(packageVersion("survival")),
                riskRegression = as.character(packageVersion("riskRegression")),
                data.table = as.character(packageVersion("data.table"))), "ate_versions.json")
