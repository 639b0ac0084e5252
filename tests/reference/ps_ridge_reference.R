# Reference fits of the propensity model for tests/reference/test_ps_ridge_vs_R.py
# (ketaoutcomes.models.ps_model.fit_ps_model and fit_propensity(model = "ridge" / "logistic")).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-glmnet
#   Rscript tests/reference/ps_ridge_reference.R
#
# Writes:
#   data/ps_ridge_data.csv       n = 900 simulated here with set.seed: row (1-based), treat (1 target,
#                                0 comparator), x1 (normal), x2 (count 0..), site (A/B/C/D; A most
#                                frequent), sex (F/M/U; F most frequent). Sex U (16 patients) is
#                                given to the comparator only: quasi-complete separation, where the
#                                unpenalised fit has no finite maximum and the ridge fit does.
#   results/ps_ridge_glmnet.json per case: the design columns, lambda, variance, coefficients
#                                (intercept first, original scale), fitted probabilities, passes
#   results/ps_ridge_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.
#
# The ridge cases call glmnet(X, treat, family = "binomial", alpha = 0, lambda = 1 / (n * v),
# standardize = TRUE, thresh = 1e-20, maxit = 1e7): glmnet minimises
#   -(1/n) loglik + lambda / 2 * sum(b^2)
# over the coefficients b of the columns standardised with the SD of divisor n, intercept not
# penalised, i.e. it maximises loglik - sum(b^2) / (2 v): the objective of fit_ps_model with
# variance v. X is model.matrix(~ x1 + x2 + site + sex)[, -1] (reference levels A and F).
# The unpenalised case is glm(treat ~ x1 + x2 + site + sexM, binomial) with sex U counted as F,
# as fit_propensity does once U is left out as a rare level (16 / 900 = 1.8% < 2%).

suppressPackageStartupMessages(library(glmnet))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
data_dir <- file.path(here, "data")
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

set.seed(20260517)
n <- 900
x1 <- rnorm(n)
x2 <- rpois(n, 3)
site <- sample(c("A", "B", "C", "D"), n, replace = TRUE, prob = c(0.4, 0.3, 0.2, 0.1))
sex <- sample(c("F", "M", "U"), n, replace = TRUE, prob = c(0.6, 0.385, 0.015))
lp <- -0.3 + 0.8 * x1 + 0.15 * (x2 - 3) + 0.5 * (site == "B") - 0.6 * (site == "D") + 0.3 * (sex == "M")
treat <- rbinom(n, 1, plogis(lp))
treat[sex == "U"] <- 0L   # sex U only on the comparator arm: quasi-complete separation
d <- data.frame(row = seq_len(n), treat = treat, x1 = x1, x2 = x2, site = site, sex = sex)
stopifnot(names(sort(table(site), decreasing = TRUE))[1] == "A",
          names(sort(table(sex), decreasing = TRUE))[1] == "F")
write_csv17(d, file.path(data_dir, "ps_ridge_data.csv"))

d$site <- factor(d$site, levels = c("A", "B", "C", "D"))
d$sex <- factor(d$sex, levels = c("F", "M", "U"))
X <- model.matrix(~ x1 + x2 + site + sex, data = d)[, -1]

ridge <- function(v) {
  lam <- 1 / (n * v)
  fit <- glmnet(X, d$treat, family = "binomial", alpha = 0, lambda = lam, standardize = TRUE,
                thresh = 1e-20, maxit = 1e7)
  b <- as.numeric(coef(fit, s = lam))
  list(model = "ridge", variance = v, lambda = lam, columns = colnames(X), coef = b,
       ps = as.numeric(predict(fit, newx = X, s = lam, type = "response")),
       passes = as.numeric(fit$npasses), dev_ratio = as.numeric(fit$dev.ratio))
}

d$sexM <- as.numeric(d$sex == "M")
g <- glm(treat ~ x1 + x2 + site + sexM, family = binomial, data = d,
         control = glm.control(epsilon = 1e-14, maxit = 100))
logistic <- list(model = "logistic", columns = c("x1", "x2", "siteB", "siteC", "siteD", "sexM"),
                 coef = unname(coef(g)), ps = unname(fitted(g)), converged = g$converged)

write_json(list(ridge_v0.1 = ridge(0.1), ridge_v1 = ridge(1), ridge_v10 = ridge(10), ridge_v25 = ridge(25),
                logistic = logistic),
           "ps_ridge_glmnet.json")
write_json(list(R = R.version.string, glmnet = as.character(packageVersion("glmnet"))),
           "ps_ridge_versions.json")
