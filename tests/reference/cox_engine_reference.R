# Reference outputs from R's survival package for tests/reference/test_cox_engine_vs_R.py
# (ketaoutcomes.models.cox_engine, and cox_ph / weighted_cox that use it).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival
#   Rscript tests/reference/cox_engine_reference.R
#
# Writes (about 2 s):
#   data/cox_engine_sim.csv      2,000 simulated rows (seeded): continuous times `time` (no ties), the
#                                same times as whole days `tday` (heavily tied), `status` 1 = event,
#                                covariates x1 (age-like), x2 (0/1), x3 (normal), x4 (counts 0..),
#                                `site` A-D (strata), positive non-integer case weights `w`, `cl`
#                                (cluster, 300 of them) and `tstart` (entry time, below tday; 0 in
#                                most rows) for counting-process fits
#   results/cox_engine_*.json    one coxph fit each (list below)
#   results/cox_engine_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
set.seed(20240612)
n <- 2000
x1 <- round(rnorm(n, 45, 12), 1)
x2 <- rbinom(n, 1, 0.45)
x3 <- rnorm(n)
x4 <- rpois(n, 1.5)
site <- sample(c("A", "B", "C", "D"), n, replace = TRUE, prob = c(0.4, 0.3, 0.2, 0.1))
site_eff <- c(A = 0, B = 0.3, C = -0.2, D = 0.5)[site]
lp <- 0.02 * (x1 - 45) - 0.4 * x2 + 0.3 * x3 + 0.15 * x4 + site_eff
t_event <- rexp(n, 0.02 * exp(lp))
t_cens <- runif(n, 0, 150)
time <- pmin(t_event, t_cens) + 0.001          # continuous, no two alike
status <- as.integer(t_event <= t_cens)
tday <- ceiling(time)                           # whole days: ~150 distinct times for 2,000 rows
w <- round(exp(rnorm(n, 0, 0.5)), 6)            # IPTW-like positive weights
cl <- sample(1:300, n, replace = TRUE)
late <- runif(n) < 0.3
tstart <- ifelse(late, floor((tday - 1) * runif(n)), 0)   # entry < tday, ties with event days included
sim <- data.frame(id = seq_len(n) - 1, time = time, tday = tday, status = status, x1 = x1, x2 = x2,
                  x3 = x3, x4 = x4, site = site, w = w, cl = cl, tstart = tstart)
write_csv17(sim, file.path(here, "data", "cox_engine_sim.csv"))
sim <- read.csv(file.path(here, "data", "cox_engine_sim.csv"))   # fit exactly what the tests read

# ---------------------------------------------------------------- fits
named <- function(v, terms) setNames(as.numeric(v), terms)

cox_export <- function(label, formula_text, ties, weighted = FALSE, cluster = FALSE) {
  f <- as.formula(formula_text)
  d <- sim
  if (weighted && cluster) {
    fit <- coxph(f, data = d, ties = ties, weights = w, cluster = cl)
  } else if (weighted) {
    fit <- coxph(f, data = d, ties = ties, weights = w, robust = TRUE)
  } else {
    fit <- coxph(f, data = d, ties = ties)
  }
  terms <- names(coef(fit))
  naive <- if (weighted) fit$naive.var else fit$var
  out <- list(
    label = label,
    formula = formula_text,
    ties = fit$method,
    weights = if (weighted) "w" else NA_character_,
    cluster = if (cluster) "cl" else NA_character_,
    robust = weighted,
    n = fit$n,
    nevent = fit$nevent,
    iter = fit$iter,
    terms = as.list(terms),
    coef = named(coef(fit), terms),
    se = named(sqrt(diag(naive)), terms),
    se_robust = if (weighted) named(sqrt(diag(fit$var)), terms) else NA,
    var = as.numeric(naive),
    var_robust = if (weighted) as.numeric(fit$var) else NA,
    loglik_null = fit$loglik[1],
    loglik = fit$loglik[2],
    lr_chi2 = 2 * (fit$loglik[2] - fit$loglik[1]),
    lr_df = length(terms),
    score_chi2 = as.numeric(fit$score),
    robust_score_chi2 = if (weighted) as.numeric(fit$rscore) else NA,
    wald_chi2 = as.numeric(fit$wald.test)   # with the robust variance when robust
  )
  if (!weighted) {
    cc <- fit$concordance
    out$concordance <- as.numeric(cc["concordance"])
    out$pairs <- list(concordant = as.numeric(cc["concordant"]), discordant = as.numeric(cc["discordant"]),
                      tied_x = as.numeric(cc["tied.x"]), tied_y = as.numeric(cc["tied.y"]),
                      tied_xy = as.numeric(cc["tied.xy"]))
  }
  write_json(out, paste0("cox_engine_", label, ".json"))
}

x <- "x1 + x2 + x3 + x4"
for (ties in c("efron", "breslow")) {
  cox_export(paste0("tied_", ties), paste("Surv(tday, status) ~", x), ties)
  cox_export(paste0("continuous_", ties), paste("Surv(time, status) ~", x), ties)
  cox_export(paste0("tied_strata_", ties), paste("Surv(tday, status) ~", x, "+ strata(site)"), ties)
  cox_export(paste0("continuous_strata_", ties), paste("Surv(time, status) ~", x, "+ strata(site)"), ties)
  cox_export(paste0("entry_strata_", ties), paste("Surv(tstart, tday, status) ~", x, "+ strata(site)"), ties)
  cox_export(paste0("weighted_tied_", ties), paste("Surv(tday, status) ~", x), ties, weighted = TRUE)
  cox_export(paste0("weighted_continuous_", ties), paste("Surv(time, status) ~", x), ties, weighted = TRUE)
  cox_export(paste0("weighted_tied_strata_cluster_", ties), paste("Surv(tday, status) ~", x, "+ strata(site)"),
             ties, weighted = TRUE, cluster = TRUE)
}

write_json(list(
  r_version = R.version.string,
  survival_version = as.character(packageVersion("survival"))
), "cox_engine_versions.json")
cat("wrote cox_engine_* reference files to", res_dir, "\n")
