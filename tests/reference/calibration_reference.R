# Reference outputs for tests/unit/test_calibration.py from OHDSI EmpiricalCalibration's own code
# (github.com/OHDSI/EmpiricalCalibration, version 3.1.4, commit 03d4747; Apache-2.0): fitNull,
# calibrateP, computeExpectedAbsoluteSystematicError and calibrateConfidenceInterval with the
# constant-error model convertNullToErrorModel(null) (meanSlope 1, sdSlope 0).
#
# The package is not packaged for Debian and nothing is installed from the internet: the script
# source()s the package's R/*.R files and compiles its C++ likelihood (src/RcppWrapper.cpp, where
# logLikelihoodNull lives) with Rcpp::sourceCpp (Debian's r-cran-rcpp and g++), then load()s its
# bundled example data (data/sccs.rda, data/cohortMethod.rda).
#
# Regenerate (from the repository root; EC_SRC is a checkout of the package):
#   git clone https://github.com/OHDSI/EmpiricalCalibration /tmp/ec   # or any copy of its R/, src/, data/
#   EC_SRC=/tmp/ec Rscript tests/reference/calibration_reference.R > tests/reference/results/calibration_reference.log
#
# Writes data/calibration_<case>.csv (the negative and positive controls used) and
# results/calibration_<case>.json. Numbers as %.17g (round-trip exact doubles).
#
# fitNull maximises its likelihood with optim's Nelder-Mead at its default tolerance (reltol 1e-8)
# in the parametrisation (mean, precision = 1 / sd^2), starting at (0, 1). Its answer is therefore
# the maximum only to about 1e-4; the script also writes `null_tight`: the same C++ likelihood,
# the same parametrisation and start, optim restarted until it stops moving at reltol 1e-15, which
# is the maximum likelihood estimate to ~1e-8 (what the Python code computes exactly).

suppressMessages(library(Rcpp))
args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
data_dir <- file.path(here, "data")
source(file.path(here, "writers.R"))

ec <- Sys.getenv("EC_SRC")
if (!nzchar(ec) || !dir.exists(file.path(ec, "R"))) stop("set EC_SRC to a copy of OHDSI/EmpiricalCalibration (with R/, src/, data/)")
for (f in sort(list.files(file.path(ec, "R"), pattern = "\\.R$", full.names = TRUE))) source(f)
# after R/RcppExports.R, whose .Call wrappers need the installed package: the compiled functions
sourceCpp(file.path(ec, "src", "RcppWrapper.cpp"))
ec_version <- unname(read.dcf(file.path(ec, "DESCRIPTION"), fields = "Version")[1, 1])
for (f in c("sccs.rda", "cohortMethod.rda")) load(file.path(ec, "data", f))

tight_null <- function(logRr, seLogRr) {
  keep <- is.finite(logRr) & is.finite(seLogRr) & abs(logRr) <= log(100)  # fitNull's filters
  logRr <- logRr[keep]
  seLogRr <- seLogRr[keep]
  theta <- c(0, 1)
  value <- Inf
  repeat {
    fit <- optim(theta, logLikelihoodNull, logRr = logRr, seLogRr = seLogRr,
                 control = list(reltol = 1e-15, maxit = 1e5))
    if (abs(value - fit$value) < 1e-13) break
    theta <- fit$par
    value <- fit$value
  }
  list(mean = fit$par[1], sd = 1 / sqrt(fit$par[2]), log_likelihood = -fit$value, n = length(logRr))
}

run_case <- function(name, neg, pos) {
  controls <- rbind(
    data.frame(name = neg$name, control = "negative", logRr = neg$logRr, seLogRr = neg$seLogRr),
    data.frame(name = pos$name, control = "positive", logRr = pos$logRr, seLogRr = pos$seLogRr)
  )
  write.csv(data.frame(name = controls$name, control = controls$control,
                       logRr = num17(controls$logRr), seLogRr = num17(controls$seLogRr)),
            file.path(data_dir, paste0("calibration_", name, ".csv")), row.names = FALSE, quote = TRUE)
  null <- suppressWarnings(fitNull(neg$logRr, neg$seLogRr))
  tight <- tight_null(neg$logRr, neg$seLogRr)
  default_ll <- -logLikelihoodNull(c(null[1], 1 / null[2]^2), neg$logRr[is.finite(neg$logRr) & is.finite(neg$seLogRr) & abs(neg$logRr) <= log(100)],
                                   neg$seLogRr[is.finite(neg$logRr) & is.finite(neg$seLogRr) & abs(neg$logRr) <= log(100)])
  x <- controls$logRr
  se <- controls$seLogRr
  ci <- calibrateConfidenceInterval(x, se, convertNullToErrorModel(null), ciWidth = 0.95)
  ci90 <- calibrateConfidenceInterval(x, se, convertNullToErrorModel(null), ciWidth = 0.90)
  z <- qnorm(0.975)
  s <- sqrt(null[[2]]^2 + se^2)
  out <- list(
    case = name,
    n_negative_rows = nrow(neg),
    null = list(mean = unname(null[1]), sd = unname(null[2]), log_likelihood = default_ll),
    null_tight = tight,
    ease = computeExpectedAbsoluteSystematicError(null),
    ease_tight = computeExpectedAbsoluteSystematicError(structure(c(tight$mean, tight$sd), class = "null")),
    p_two_sided = calibrateP(null, x, se),
    p_upper = calibrateP(null, x, se, twoSided = FALSE, upper = TRUE),
    p_lower = calibrateP(null, x, se, twoSided = FALSE, upper = FALSE),
    p_traditional = computeTraditionalP(x, se),
    ci95_package = list(logRr = ci$logRr, lower = ci$logLb95Rr, upper = ci$logUb95Rr, seLogRr = ci$seLogRr),
    ci90_package = list(lower = ci90$logLb95Rr, upper = ci90$logUb95Rr),
    # the same model solved in closed form: x - mean -/+ z * sqrt(sd^2 + se^2)
    ci95_closed_form = list(lower = x - null[[1]] - z * s, upper = x - null[[1]] + z * s)
  )
  write_json(out, paste0("calibration_", name, ".json"))
  cat(sprintf("%-14s n=%d  fitNull mean %.6f sd %.6f | tight mean %.8f sd %.8f ll %.8f | EASE %.6f\n",
              name, tight$n, null[1], null[2], tight$mean, tight$sd, tight$log_likelihood,
              computeExpectedAbsoluteSystematicError(null)))
  print(null)
}

ex <- function(d, truth) d[d$groundTruth == truth, ]
s <- sccs
s$name <- s$drugName
run_case("sccs", ex(s, 0), ex(s, 1))
cm <- cohortMethod
cm$name <- cm$drugName
run_case("cohortmethod", ex(cm, 0), ex(cm, 1))

# A small synthetic set: 12 negative controls sharing a systematic error N(0.4, 0.15^2), each
# estimated with its own standard error, plus rows fitNull drops (NA, infinite SE, |logRr| > log(100)),
# and one "positive" (true log effect 0.5, so the biased estimate is near 0.9).
set.seed(20261201)
n <- 12
se <- round(runif(n, 0.08, 0.4), 4)
bias <- rnorm(n, 0.4, 0.15)
logRr <- round(bias + rnorm(n, 0, se), 4)
syn_neg <- data.frame(name = c(sprintf("nc%02d", 1:n), "nc_na", "nc_inf_se", "nc_extreme"),
                      logRr = c(logRr, NA, 0.3, 5.2), seLogRr = c(se, 0.2, Inf, 0.3))
syn_pos <- data.frame(name = "exposure", logRr = 0.9, seLogRr = 0.12)
run_case("synthetic", syn_neg, syn_pos)

# Controls less dispersed than their standard errors: the maximum is on the boundary sd = 0
syn0 <- data.frame(name = sprintf("nc%02d", 1:6), logRr = c(0.10, 0.12, 0.08, 0.11, 0.09, 0.10),
                   seLogRr = c(0.3, 0.25, 0.4, 0.2, 0.35, 0.3))
run_case("boundary", syn0, data.frame(name = "exposure", logRr = 0.4, seLogRr = 0.1))

write_json(list(R = R.version.string, EmpiricalCalibration = ec_version,
                EmpiricalCalibration_commit = "03d4747", Rcpp = as.character(packageVersion("Rcpp"))),
           "calibration_versions.json")
