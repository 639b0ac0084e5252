# Reference outputs from R's survival package for tests/reference/test_weighted_vs_R.py
# (ketaoutcomes.models.weighted: weighted Cox, weighted Kaplan-Meier, RMST).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival
#   Rscript tests/reference/weighted_reference.R
#
# Reads data/lung.csv (written by survival_reference.R; status 1 = dead, 0 = censored)
# and writes only results/weighted_*.{csv,json}:
#   weighted_lung_data.csv            lung with the weights used below (column w)
#   weighted_cox_*.json               coxph(..., weights = w, robust = TRUE) fits
#   weighted_km_lung_sex_*.csv        summary(survfit(..., weights = w), censored = TRUE)
#   weighted_km_lung_sex_*_table.csv  summary(survfit(...))$table with rmean = 365
#   weighted_rmst_lung_sex.csv        print(survfit(...), rmean = 365) of the unweighted fit
#   weighted_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")

# ---------------------------------------------------------------- writers (writers.R, shared with survival_reference.R)
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
lung <- read.csv(file.path(here, "data", "lung.csv"))
# Deterministic positive, non-integer weights: 1, 1.5, 2, 1, 1.5, 2, ... by row (0-based i: 1 + (i %% 3) / 2).
lung$w <- 1 + ((seq_len(nrow(lung)) - 1) %% 3) / 2
lung$one <- 1
write_csv17(lung, file.path(res_dir, "weighted_lung_data.csv"))

# ---------------------------------------------------------------- weighted Cox
# The variance lifelines 0.30.3 computes for CoxPHFitter(weights_col, robust = TRUE): sum over rows of
# (w_i * r_i V)^2, where r_i are *Breslow* score residuals (lifelines' _compute_score_within_strata
# ignores ties) evaluated at the Efron estimate and V is the model-based (inverse information) variance
# of the weighted Efron fit. R's robust = TRUE uses the Efron score residuals instead; the two agree
# when no event time is tied. Reconstructed here so that the difference is checked, not guessed.
lifelines_like_var <- function(fit, formula, data) {
  fb <- coxph(formula, data = data, weights = .w, ties = "breslow",
              init = coef(fit), control = coxph.control(iter.max = 0))
  r <- residuals(fb, type = "score")            # unweighted score residuals, Breslow, at beta = Efron estimate
  if (!is.matrix(r)) r <- matrix(r, ncol = 1)
  dfb <- (r * data$.w[as.integer(rownames(model.frame(fb)))]) %*% fit$naive.var
  crossprod(dfb)
}

wcox_export <- function(formula_text, data, wname, label, cluster = NULL) {
  f <- as.formula(formula_text)
  data$.w <- data[[wname]]
  if (is.null(cluster)) {
    fit <- coxph(f, data = data, weights = .w, robust = TRUE, ties = "efron")
  } else {
    data$.c <- data[[cluster]]
    fit <- coxph(f, data = data, weights = .w, cluster = .c, ties = "efron")
  }
  s <- summary(fit, conf.int = 0.95)
  cf <- s$coefficients
  ci <- s$conf.int
  terms <- rownames(cf)
  used <- as.integer(rownames(model.frame(fit)))
  ll_var <- if (is.null(cluster)) lifelines_like_var(fit, f, data) else matrix(NA, length(terms), length(terms))
  list(
    label = label,
    formula = formula_text,
    weights = wname,
    cluster = if (is.null(cluster)) NA_character_ else cluster,
    ties = fit$method,
    n = fit$n,
    nevent = fit$nevent,
    weighted_nevent = sum(data$.w[used] * data$status[used]),
    n_dropped = length(fit$na.action),
    terms = as.list(terms),
    coef = setNames(as.numeric(cf[, "coef"]), terms),
    hr = setNames(as.numeric(cf[, "exp(coef)"]), terms),
    se_naive = setNames(as.numeric(cf[, "se(coef)"]), terms),
    se_robust = setNames(as.numeric(cf[, "robust se"]), terms),
    z = setNames(as.numeric(cf[, "z"]), terms),
    p = setNames(as.numeric(cf[, "Pr(>|z|)"]), terms),
    hr_lower = setNames(as.numeric(ci[, "lower .95"]), terms),
    hr_upper = setNames(as.numeric(ci[, "upper .95"]), terms),
    se_lifelines_like = setNames(sqrt(diag(ll_var)), terms),
    loglik_null = fit$loglik[1],
    loglik = fit$loglik[2],
    lr_chi2 = as.numeric(s$logtest["test"]),
    lr_df = as.numeric(s$logtest["df"]),
    wald_chi2_robust = as.numeric(fit$wald.test),
    score_chi2 = as.numeric(fit$score),
    robust_score_chi2 = as.numeric(fit$rscore),
    concordance = as.numeric(fit$concordance["concordance"])
  )
}

lung_f <- "Surv(time, status) ~ age + sex + ph.ecog"
write_json(wcox_export(lung_f, lung, "w", "lung"), "weighted_cox_lung.json")
write_json(wcox_export(lung_f, lung, "one", "lung_unit"), "weighted_cox_lung_unit.json")
write_json(wcox_export("Surv(time, status) ~ age + ph.ecog + strata(sex)", lung, "w", "lung_strata_sex"),
           "weighted_cox_lung_strata_sex.json")
# cluster(inst): sandwich summed within institution (inst is missing in one row)
write_json(wcox_export(lung_f, lung, "w", "lung_cluster_inst", cluster = "inst"), "weighted_cox_lung_cluster_inst.json")
# No tied event times: lung with time + i/1000 (i = 0-based row), so Efron = Breslow and
# lifelines' robust variance must equal R's.
lung_untied <- lung
lung_untied$time <- lung$time + (seq_len(nrow(lung)) - 1) / 1000
write_csv17(lung_untied[, c("time", "status", "age", "sex", "ph.ecog", "w")],
            file.path(res_dir, "weighted_lung_untied_data.csv"))
write_json(wcox_export(lung_f, lung_untied, "w", "lung_untied"), "weighted_cox_lung_untied.json")

# ---------------------------------------------------------------- weighted Kaplan-Meier
km_export <- function(data, robust, label) {
  fit <- survfit(Surv(time, status) ~ sex, data = data, weights = w, robust = robust)
  s <- summary(fit, censored = TRUE)
  tab <- data.frame(
    strata = as.character(s$strata), time = s$time, n_risk = s$n.risk, n_event = s$n.event,
    n_censor = s$n.censor, surv = s$surv, std_err = s$std.err, lower = s$lower, upper = s$upper
  )
  write_csv17(tab, file.path(res_dir, paste0("weighted_km_lung_sex_", label, ".csv")))
  st <- summary(fit, rmean = 365)$table
  med <- data.frame(
    strata = rownames(st), records = st[, "records"], events = st[, "events"],
    rmean = st[, "rmean"], se_rmean = st[, "se(rmean)"],
    median = st[, "median"], lcl = st[, "0.95LCL"], ucl = st[, "0.95UCL"]
  )
  write_csv17(med, file.path(res_dir, paste0("weighted_km_lung_sex_", label, "_table.csv")))
}
# survfit's default for non-integer weights is robust = TRUE (infinitesimal jackknife std.err);
# robust = FALSE is the Greenwood formula with weighted counts (case weights).
km_export(lung, TRUE, "robust")
km_export(lung, FALSE, "greenwood")

# ---------------------------------------------------------------- RMST (unweighted), as print() shows it
fit <- survfit(Surv(time, status) ~ sex, data = lung)
st <- summary(fit, rmean = 365)$table
write_csv17(data.frame(strata = rownames(st), records = st[, "records"], events = st[, "events"],
                       rmean = st[, "rmean"], se_rmean = st[, "se(rmean)"]),
            file.path(res_dir, "weighted_rmst_lung_sex.csv"))
fit1 <- survfit(Surv(time, status) ~ 1, data = lung)
st1 <- summary(fit1, rmean = 1000)$table   # horizon beyond the last time (1022 is the max; 1000 is not)
st2 <- summary(fit1, rmean = 2000)$table
write_csv17(data.frame(horizon = c(1000, 2000), rmean = c(st1["rmean"], st2["rmean"]),
                       se_rmean = c(st1["se(rmean)"], st2["se(rmean)"])),
            file.path(res_dir, "weighted_rmst_lung_all.csv"))

write_json(list(
  r_version = R.version.string,
  survival_version = as.character(packageVersion("survival"))
), "weighted_versions.json")
cat("wrote weighted_* reference files to", res_dir, "\n")
