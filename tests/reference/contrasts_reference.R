# Reference outputs from R's survival package for tests/reference/test_contrasts_vs_R.py:
# the primary contrasts of two Kaplan-Meier curves (share with the event by a day, median,
# restricted mean up to a horizon) and survRM2's analytic interval of an RMST difference.
#
# survRM2 is neither installed here nor packaged by Debian, so its rmst2() is reproduced from
# survival: print(survfit(...), rmean = tau) gives each arm's RMST and SE (survmean), and
# rmst2()'s "RMST (arm=1)-(arm=0)" row is their difference with SE sqrt(se1^2 + se0^2) and a
# Wald interval (survRM2 0.3-1, rmst2.R: rmst.diff.10, rmst.diff.10.se, qnorm(1 - alpha/2)).
# The share with the event by a day is 1 - summary(fit, times = d)$surv, and its difference is
# computed by hand from those two numbers.
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival
#   Rscript tests/reference/contrasts_reference.R > tests/reference/results/contrasts_reference.log
#
# Reads data/lung.csv and results/weighted_lung_data.csv (the weights w of weighted_reference.R),
# writes results/contrasts_lung.json. Numbers as %.17g (round-trip exact doubles).

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
source(file.path(here, "writers.R"))

lung <- read.csv(file.path(res_dir, "weighted_lung_data.csv"))   # lung (status 1 = dead) + weights w
tau <- 365
days <- c(90, 180, 365)

contrast <- function(fit, label) {
  # arms: sex 2 (target, "arm = 1" in survRM2's terms) vs sex 1 (comparator)
  tab <- summary(fit, rmean = tau)$table
  rmst <- tab[, "rmean"]; se <- tab[, "se(rmean)"]
  s <- summary(fit, times = days, extend = FALSE)
  surv_at <- function(stratum) s$surv[s$strata == stratum]
  risk_t <- 1 - surv_at("sex=2"); risk_c <- 1 - surv_at("sex=1")
  diff <- unname(rmst["sex=2"] - rmst["sex=1"])
  diff_se <- sqrt(unname(se["sex=2"])^2 + unname(se["sex=1"])^2)
  z <- qnorm(0.975)
  cat("\n==", label, "==\n")
  print(fit, rmean = tau)
  print(s)
  cat(sprintf("RMST difference (sex 2 - sex 1) up to day %g: %.6f (SE %.6f, 95%% CI %.6f to %.6f)\n",
              tau, diff, diff_se, diff - z * diff_se, diff + z * diff_se))
  cat(sprintf("share dead by day %g, difference sex 2 - sex 1: %.6f\n", days, risk_t - risk_c))
  list(
    tau = tau, days = days,
    rmst_target = unname(rmst["sex=2"]), rmst_comparator = unname(rmst["sex=1"]),
    rmst_se_target = unname(se["sex=2"]), rmst_se_comparator = unname(se["sex=1"]),
    rmst_difference = diff, rmst_difference_se = diff_se,
    rmst_difference_lower = diff - z * diff_se, rmst_difference_upper = diff + z * diff_se,
    median_target = unname(tab["sex=2", "median"]), median_comparator = unname(tab["sex=1", "median"]),
    risk_target = risk_t, risk_comparator = risk_c, risk_difference = risk_t - risk_c
  )
}

out <- list(
  unweighted = contrast(survfit(Surv(time, status) ~ sex, data = lung), "unweighted"),
  weighted = contrast(survfit(Surv(time, status) ~ sex, data = lung, weights = w), "weighted (case weights w)"),
  versions = list(R = R.version.string, survival = as.character(packageVersion("survival")))
)
write_json(out, "contrasts_lung.json")
