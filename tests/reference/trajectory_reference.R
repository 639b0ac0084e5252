# Reference fit from lme4::lmer (REML) for tests/unit/test_trajectory.py.
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-lme4
#   Rscript tests/reference/trajectory_reference.R
#
# Reads  results/trajectory_data.csv (a small seeded data set from a known mixed
#        model, committed; USUBJID, ARM, day, score)
# Writes results/trajectory_lmer_<time>.csv   fixed effects: term, coef, se
#        results/trajectory_lmer_<time>_varcorr.csv  variance components
#        results/trajectory_lmer_versions.csv  R and lme4 versions
# for <time> in log1p (f(day) = log1p(day)) and linear (f(day) = day).
# Terms are renamed to ketaoutcomes' labels: (Intercept), ARM[<arm>], log1p(day)
# or day, ARM[<arm>]:<time>. Numbers written with %.17g (round-trip to doubles).

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else "tests/reference"
res_dir <- file.path(here, "results")

d <- read.csv(file.path(res_dir, "trajectory_data.csv"), stringsAsFactors = FALSE)
d$ARM <- relevel(factor(d$ARM), ref = "ssri")

fmt <- function(x) sprintf("%.17g", x)

for (time in c("log1p", "linear")) {
  d$t <- if (time == "log1p") log1p(d$day) else d$day
  tlab <- if (time == "log1p") "log1p(day)" else "day"
  fit <- lmer(score ~ ARM * t + (1 + t | USUBJID), data = d, REML = TRUE,
              control = lmerControl(optimizer = "bobyqa",
                                    optCtrl = list(maxfun = 1e5)))
  cf <- summary(fit)$coefficients
  terms <- rownames(cf)
  terms <- sub("^ARM([^:]+)$", "ARM[\\1]", terms)
  terms <- sub("^ARM([^:]+):t$", paste0("ARM[\\1]:", tlab), terms)
  terms[terms == "t"] <- tlab
  write.csv(data.frame(term = terms, coef = fmt(cf[, "Estimate"]), se = fmt(cf[, "Std. Error"])),
            file.path(res_dir, sprintf("trajectory_lmer_%s.csv", time)), row.names = FALSE, quote = TRUE)
  vc <- VarCorr(fit)$USUBJID
  out <- data.frame(
    component = c("var_intercept", "var_slope", "cov_intercept_slope", "var_residual", "reml_criterion"),
    estimate = fmt(c(vc[1, 1], vc[2, 2], vc[1, 2], sigma(fit)^2, REMLcrit(fit)))
  )
  write.csv(out, file.path(res_dir, sprintf("trajectory_lmer_%s_varcorr.csv", time)), row.names = FALSE, quote = TRUE)
}
write.csv(data.frame(r = R.version.string, lme4 = as.character(packageVersion("lme4"))),
          file.path(res_dir, "trajectory_lmer_versions.csv"), row.names = FALSE)
