# Reference outputs from R's survival and cmprsk packages for
# tests/reference/test_competing_vs_R.py (ketaoutcomes.models.competing: Aalen-Johansen
# cumulative incidence and Gray's test).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-survival r-cran-cmprsk
#   Rscript tests/reference/competing_reference.R
#
# Writes, next to this script:
#   data/competing_mgus2.csv       survival::mgus2 as competing risks (the package vignette's example):
#                                  etime = months to progression (PCM) or, without PCM, to death or
#                                  last contact; event 0 = censored, 1 = PCM, 2 = death without PCM;
#                                  agecat = age group (<60, 60-69, 70-79, 80+) coded 1..4, old = age >= 70
#   data/competing_edge.csv        a hand-made set (group, time, status): ties between events of both
#                                  causes and censorings at one time, a group with one subject, a group
#                                  without events, a group whose last time takes everyone out, a group
#                                  whose incidence of one cause reaches 1 (std.err exactly 0)
#   results/competing_*_<conf.type>.csv
#                                  survfit(Surv(time, factor(status)) ~ group) multi-state fits, every
#                                  distinct time, one row per time and state: strata, time, n_risk
#                                  (in the event-free state "(s0)"), n_censor, state, n_event (into that
#                                  state), pstate, std_err, lower, upper
#   results/competing_*_at.csv     summary(fit, times = ..., extend = TRUE) at a few horizons
#   results/competing_gray.json    cmprsk::cuminc(...)$Tests: stat, p-value and df per cause
#   results/competing_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
data_dir <- file.path(here, "data")
res_dir <- file.path(here, "results")

# ---------------------------------------------------------------- writers (writers.R, shared with survival_reference.R)
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
mg <- data.frame(
  id = mgus2$id,
  sex = as.character(mgus2$sex),
  age = mgus2$age,
  etime = ifelse(mgus2$pstat == 0, mgus2$futime, mgus2$ptime),
  event = ifelse(mgus2$pstat == 0, 2 * mgus2$death, 1)
)
mg$agecat <- as.integer(cut(mg$age, c(-Inf, 60, 70, 80, Inf), right = FALSE))
mg$old <- as.integer(mg$age >= 70)
write_csv17(mg, file.path(data_dir, "competing_mgus2.csv"))

edge <- data.frame(
  group = c(rep("A", 12), "B", rep("C", 3), rep("D", 3), rep("E", 6)),
  time = c(1, 2, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6,   # A: at 2 one event of each cause and two censorings
           3,                                    # B: one subject
           1, 2, 2,                              # C: no events
           2, 2, 4,                              # D: tied events of one cause
           1, 1, 1, 2, 2, 4),                    # E: censorings tied with an event at 1, then only cause 1:
  status = c(1, 1, 2, 0, 0, 2, 2, 0, 1, 0, 1, 2, #    its incidence reaches 1 with std.err exactly 0
             2,                                  # A: at 6 both remaining subjects have an event (S -> 0)
             0, 0, 0,
             1, 1, 0,
             0, 0, 1, 1, 1, 1)
)
write_csv17(edge, file.path(data_dir, "competing_edge.csv"))

# ---------------------------------------------------------------- Aalen-Johansen (survfit, multi-state)
ms_table <- function(fit) {
  states <- fit$states
  nt <- length(fit$time)
  # conf.type = "arcsin" returns lower/upper as plain vectors (pmax() drops the matrix dim): reshape
  lower <- matrix(fit$lower, nrow = nt)
  upper <- matrix(fit$upper, nrow = nt)
  strata <- if (is.null(fit$strata)) rep("all", nt) else rep(sub("^[^=]*=", "", names(fit$strata)), fit$strata)
  rows <- lapply(seq_along(states), function(j) data.frame(
    strata = strata, time = fit$time, n_risk = fit$n.risk[, 1], n_censor = fit$n.censor,
    state = states[j], n_event = fit$n.event[, j], pstate = fit$pstate[, j],
    std_err = fit$std.err[, j], lower = lower[, j], upper = upper[, j]
  ))
  out <- do.call(rbind, rows)
  out[order(match(out$strata, unique(strata)), out$state != "(s0)", out$state, out$time), ]
}

at_table <- function(fit, times) {
  s <- summary(fit, times = times, extend = TRUE)
  states <- fit$states
  nt <- length(s$time)
  strata <- if (is.null(s$strata)) rep("all", nt) else sub("^[^=]*=", "", as.character(s$strata))
  rows <- lapply(seq_along(states), function(j) data.frame(
    strata = strata, time = s$time, n_risk = s$n.risk[, 1], state = states[j],
    pstate = s$pstate[, j], std_err = s$std.err[, j], lower = s$lower[, j], upper = s$upper[, j]
  ))
  do.call(rbind, rows)
}

conf_types <- c("log", "log-log", "plain", "logit", "arcsin")
mg$ev <- factor(mg$event, 0:2, labels = c("censor", "pcm", "death"))
for (ct in conf_types) {
  fit <- survfit(Surv(etime, ev) ~ sex, data = mg, conf.type = ct)
  write_csv17(ms_table(fit), file.path(res_dir, paste0("competing_mgus2_sex_", ct, ".csv")))
}
fit_all <- survfit(Surv(etime, ev) ~ 1, data = mg)
stopifnot(fit_all$conf.type == "log")          # R's default for multi-state pstate
write_csv17(ms_table(fit_all), file.path(res_dir, "competing_mgus2_all_log.csv"))
fit_sex <- survfit(Surv(etime, ev) ~ sex, data = mg)
write_csv17(at_table(fit_sex, c(0.5, 12, 60, 120, 240, 400, 500)), file.path(res_dir, "competing_mgus2_sex_at.csv"))
# 99% intervals
fit99 <- survfit(Surv(etime, ev) ~ agecat, data = mg, conf.int = 0.99)
write_csv17(ms_table(fit99), file.path(res_dir, "competing_mgus2_agecat_log_99.csv"))

edge$ev <- factor(edge$status, 0:2, labels = c("censor", "1", "2"))
for (ct in conf_types) {
  fit <- survfit(Surv(time, ev) ~ group, data = edge, conf.type = ct)
  write_csv17(ms_table(fit), file.path(res_dir, paste0("competing_edge_", ct, ".csv")))
}
fit_edge <- survfit(Surv(time, ev) ~ group, data = edge)
write_csv17(at_table(fit_edge, c(0, 0.5, 2, 2.5, 6, 10)), file.path(res_dir, "competing_edge_at.csv"))

# ---------------------------------------------------------------- Gray's test (cmprsk::cuminc)
gray <- function(ftime, fstatus, group, strata, rho = 0) {
  ci <- if (missing(strata)) {
    cuminc(ftime, fstatus, group, rho = rho)
  } else {
    cuminc(ftime, fstatus, group, strata = strata, rho = rho)
  }
  tests <- ci$Tests
  lapply(setNames(rownames(tests), rownames(tests)), function(cause) list(
    stat = tests[cause, "stat"], p = tests[cause, "pv"], df = tests[cause, "df"]
  ))
}
write_json(list(
  mgus2_sex = gray(mg$etime, mg$event, mg$sex),
  mgus2_agecat = gray(mg$etime, mg$event, mg$agecat),
  mgus2_sex_strata_old = gray(mg$etime, mg$event, mg$sex, strata = mg$old),
  mgus2_agecat_rho1 = gray(mg$etime, mg$event, mg$agecat, rho = 1),
  edge_AD = gray(edge$time[edge$group %in% c("A", "D")], edge$status[edge$group %in% c("A", "D")],
                 edge$group[edge$group %in% c("A", "D")])
), "competing_gray.json")

write_json(list(
  r_version = R.version.string,
  survival_version = as.character(packageVersion("survival")),
  cmprsk_version = as.character(packageVersion("cmprsk"))
), "competing_versions.json")
cat("wrote competing_* reference files to", res_dir, "and", data_dir, "\n")
