# Reference outputs from R for tests/reference/test_diagnostics_vs_R.py
# (ketaoutcomes.models.diagnostics).
#
# Regenerate (from the repository root; needs only base R + survival):
#   Rscript tests/reference/diagnostics_reference.R
#
# Reads data/lung.csv and data/rossi.csv (written by survival_reference.R) and writes
# into results/:
#   zph_<data>_<transform>.csv   cox.zph(...)$table: term, chisq, df, p (terms + GLOBAL)
#   discrete_subjects.csv         simulated subjects: id, arm, age, aval (day), event
#   discrete_visits.csv           their assessment days: id, day
#   discrete_person_period.csv    person-period rows built here from the two above
#   discrete_glm.json             glm(binomial(cloglog)) on them: coef, model se, deviance
#   discrete_glm_cluster.json     cluster-robust (by id) SEs of that glm, vcovCL-HC1 by hand
#   discrete_versions.json        R and survival versions
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles
# (num17 and write_csv17 come from writers.R; jnum/jstr below are local).

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
data_dir <- file.path(here, "data")
res_dir <- file.path(here, "results")

source(file.path(here, "writers.R"))   # num17, write_csv17 (shared with survival_reference.R)
jnum <- function(x) paste0("[", paste(num17(x), collapse = ", "), "]")
jstr <- function(x) paste0("[", paste0("\"", x, "\"", collapse = ", "), "]")

# ---------------------------------------------------------------- Task 1: cox.zph
lung <- read.csv(file.path(data_dir, "lung.csv"))
rossi <- read.csv(file.path(data_dir, "rossi.csv"))

fits <- list(
  lung = coxph(Surv(time, status) ~ age + sex + ph.ecog, data = lung),           # Efron (default)
  lung_breslow = coxph(Surv(time, status) ~ age + sex + ph.ecog, data = lung, ties = "breslow"),
  lung_ecog_factor = coxph(Surv(time, status) ~ age + sex + factor(ph.ecog), data = lung),
  lung_strata_sex = coxph(Surv(time, status) ~ age + ph.ecog + strata(sex), data = lung),
  rossi = coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio, data = rossi)
)
for (nm in names(fits)) {
  for (tr in c("km", "identity", "rank", "log")) {
    z <- cox.zph(fits[[nm]], transform = tr)
    tb <- z$table
    out <- data.frame(term = rownames(tb), chisq = tb[, "chisq"], df = as.integer(tb[, "df"]),
                      p = tb[, "p"])
    write_csv17(out, file.path(res_dir, sprintf("zph_%s_%s.csv", nm, tr)))
  }
}

# ---------------------------------------------------------------- Task 2: discrete-time
# Simulated trial: PH times (Weibull baseline, true log HR of arm = -0.5, age effect 0.02
# per year), rated only at visits: arm 0 weekly, arm 1 every 14 days, up to day 168,
# each scheduled visit missed with probability 0.15. Dropout ~ Uniform(20, 400) days.
# The event is seen at the first attended visit on or after the true time.
set.seed(20261121)
n <- 400
arm <- rbinom(n, 1, 0.5)
age <- round(rnorm(n, 50, 10))
lp <- -0.5 * arm + 0.02 * (age - 50)
shape <- 1.3; scale <- 90
t_true <- scale * (-log(runif(n)) / exp(lp))^(1 / shape)
dropout <- runif(n, 20, 400)
subjects <- data.frame(id = integer(0), arm = integer(0), age = double(0), aval = double(0), event = integer(0))
visits <- data.frame(id = integer(0), day = double(0))
pp <- list()
for (i in seq_len(n)) {
  step <- if (arm[i] == 0) 7 else 14
  sched <- seq(step, 168, by = step)
  att <- sched[runif(length(sched)) > 0.15 & sched <= dropout[i]]
  ev_visits <- att[att >= t_true[i]]
  if (length(ev_visits)) { aval <- ev_visits[1]; event <- 1L }
  else { aval <- if (length(att)) max(att) else 0; event <- 0L }
  subjects[i, ] <- list(i, arm[i], age[i], aval, event)
  if (length(att)) visits <- rbind(visits, data.frame(id = i, day = att))
  v <- att[att <= aval]
  if (length(v)) {
    start <- c(0, head(v, -1)); stop <- v
    pp[[i]] <- data.frame(id = i, start = start, stop = stop, length = stop - start,
                          event = as.integer(event == 1L & stop == aval),
                          arm = arm[i], age = age[i])
  }
}
pp <- do.call(rbind, pp)
band_width <- 28
pp$band <- floor((pp$start + pp$stop) / 2 / band_width)
write_csv17(subjects, file.path(res_dir, "discrete_subjects.csv"))
write_csv17(visits, file.path(res_dir, "discrete_visits.csv"))
write_csv17(pp, file.path(res_dir, "discrete_person_period.csv"))

g <- glm(event ~ 0 + factor(band) + arm + age, offset = log(length), data = pp,
         family = binomial(link = "cloglog"),
         control = glm.control(epsilon = 1e-14, maxit = 100))
sm <- summary(g)$coefficients
nm <- sub("^factor\\(band\\)", "band", rownames(sm))
writeLines(c(
  "{",
  paste0("  \"band_width\": ", band_width, ","),
  paste0("  \"n_rows\": ", nrow(pp), ","),
  paste0("  \"n_events\": ", sum(pp$event), ","),
  paste0("  \"terms\": ", jstr(nm), ","),
  paste0("  \"coef\": ", jnum(sm[, 1]), ","),
  paste0("  \"se\": ", jnum(sm[, 2]), ","),
  paste0("  \"z\": ", jnum(sm[, 3]), ","),
  paste0("  \"p\": ", jnum(sm[, 4]), ","),
  paste0("  \"deviance\": ", num17(deviance(g)), ","),
  paste0("  \"loglik\": ", num17(as.numeric(logLik(g)))),
  "}"
), file.path(res_dir, "discrete_glm.json"))

writeLines(c(
  "{",
  paste0("  \"r_version\": \"", R.version.string, "\","),
  paste0("  \"survival_version\": \"", as.character(packageVersion("survival")), "\""),
  "}"
), file.path(res_dir, "discrete_versions.json"))

# Cluster-robust (by subject) variance, by hand (no sandwich package), with the
# small-sample factor statsmodels' cov_type="cluster" applies:
# G/(G-1) * (N-1)/(N-K). Score of row i: x_i (y_i - mu_i) mu.eta(eta_i) / V(mu_i).
X <- model.matrix(g)
mu <- fitted(g); eta <- g$linear.predictors
sc <- X * as.vector((pp$event - mu) * g$family$mu.eta(eta) / g$family$variance(mu))
sc_c <- rowsum(sc, pp$id)
bread <- summary(g)$cov.unscaled
G <- nrow(sc_c); N <- nrow(X); K <- ncol(X)
vc <- bread %*% crossprod(sc_c) %*% bread * G / (G - 1) * (N - 1) / (N - K)
writeLines(c("{", paste0("  \"terms\": ", jstr(sub("^factor\\(band\\)", "band", colnames(X))), ","),
             paste0("  \"se_cluster\": ", jnum(sqrt(diag(vc)))), "}"),
           file.path(res_dir, "discrete_glm_cluster.json"))
