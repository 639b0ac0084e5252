# Reference matches from R's MatchIt for tests/reference/test_matching_vs_R.py
# (ketaoutcomes.models.matching.match_nearest: greedy nearest-neighbour matching on the logit PS).
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core r-cran-matchit
#   Rscript tests/reference/matching_reference.R
#
# Writes two data sets, simulated here with set.seed (R >= 3.6 sampling), and MatchIt's matches:
#   data/matching_data.csv          n = 1000, continuous x1, binary x2, strong confounding: the
#                                   caliper drops treated units at the top of the PS range
#   data/matching_ties_data.csv     n = 400, x1 in 0..5, x2 in 0..1: 12 distinct PS values, so
#                                   most units share their PS with others (tie rules)
#   (columns: row (1-based), treat, x1, x2, ps = fitted glm(treat ~ x1 + x2, binomial),
#    lps = log(ps) - log1p(-ps), the matching distance)
#   results/matching_<case>.csv         row, treat, subclass (empty: unmatched), weight
#   results/matching_<case>_pairs.csv   treated, slot, control: match.matrix in long form
#                                       (1-based rows; control empty when the slot is unfilled)
#   results/matching_cases.json         per case: data, call, caliper width on the logit scale
#                                       (m$caliper), numbers of matched units
#   results/matching_versions.json
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.
#
# Every case calls matchit(treat ~ x1 + x2, data, method = "nearest", distance = lps,
# m.order = "largest", replace = FALSE, [caliper = 0.2, std.caliper = TRUE], [ratio = 2]).
# Cases named *_mahvars add mahvars = ~ lps. Why: MatchIt 4.5.1-4.5.3 send a distance vector
# without mahvars to nn_matchC_vec, which takes abs() of a double through C's integer abs
# (MatchIt issue #163: the caliper is ignored for differences below 1 and the lower neighbour
# wins whenever both are within 1). With mahvars = ~ lps, 4.5.1 runs its older routine nn_matchC:
# nearest by the Mahalanobis distance of lps alone (a constant times |lps_i - lps_j|), caliper
# and order on `distance`, ties to the first eligible control in data order (which_min). That
# is the documented algorithm. The default-route case "default_caliper" is kept so the test can
# show that its pairs are exactly those of the truncated abs.

suppressPackageStartupMessages(library(MatchIt))

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
data_dir <- file.path(here, "data")

# ---------------------------------------------------------------- writers (writers.R, shared with survival_reference.R)
source(file.path(here, "writers.R"))   # num17, json, write_json (into res_dir), write_csv17

# ---------------------------------------------------------------- data
with_ps <- function(d) {
  fit <- glm(treat ~ x1 + x2, data = d, family = binomial)
  d$ps <- unname(fitted(fit))
  # identical covariates must give bit-identical scores (ties are the point of the ties data)
  d$ps <- ave(d$ps, d$x1, d$x2, FUN = function(v) v[1])
  d$lps <- log(d$ps) - log1p(-d$ps)
  d
}

set.seed(20240517)
n <- 1000
x1 <- rnorm(n)
x2 <- rbinom(n, 1, 0.4)
treat <- rbinom(n, 1, plogis(-1.4 + 1.8 * x1 + 0.8 * x2))
main <- with_ps(data.frame(row = seq_len(n), treat = treat, x1 = x1, x2 = x2))

set.seed(20240518)
n <- 400
x1 <- sample(0:5, n, replace = TRUE)
x2 <- rbinom(n, 1, 0.5)
treat <- rbinom(n, 1, plogis(-1.5 + 0.35 * x1 + 0.6 * x2))
ties <- with_ps(data.frame(row = seq_len(n), treat = treat, x1 = as.double(x1), x2 = x2))

write_csv17(main, file.path(data_dir, "matching_data.csv"))
write_csv17(ties, file.path(data_dir, "matching_ties_data.csv"))

# ---------------------------------------------------------------- matches
datasets <- list(main = main, ties = ties)
cases <- list(
  main_caliper_mahvars = list(data = "main", caliper = 0.2, ratio = 1L, mahvars = TRUE),
  main_nocaliper_mahvars = list(data = "main", caliper = NULL, ratio = 1L, mahvars = TRUE),
  main_caliper_ratio2_mahvars = list(data = "main", caliper = 0.2, ratio = 2L, mahvars = TRUE),
  ties_caliper_mahvars = list(data = "ties", caliper = 0.2, ratio = 1L, mahvars = TRUE),
  ties_nocaliper_mahvars = list(data = "ties", caliper = NULL, ratio = 1L, mahvars = TRUE),
  main_caliper_default = list(data = "main", caliper = 0.2, ratio = 1L, mahvars = FALSE)
)

summary_json <- list()
for (name in names(cases)) {
  cs <- cases[[name]]
  d <- datasets[[cs$data]]
  call_args <- list(treat ~ x1 + x2, data = d, method = "nearest", distance = d$lps,
                    m.order = "largest", replace = FALSE, ratio = cs$ratio)
  if (!is.null(cs$caliper)) call_args <- c(call_args, list(caliper = cs$caliper, std.caliper = TRUE))
  if (cs$mahvars) call_args$mahvars <- ~ lps
  m <- do.call(matchit, call_args)

  sub <- m$subclass
  write_csv17(data.frame(row = d$row, treat = d$treat,
                         subclass = if (is.null(sub)) NA_integer_ else as.integer(as.character(sub)),
                         weight = unname(m$weights)),
              file.path(res_dir, sprintf("matching_%s.csv", name)))

  mm <- m$match.matrix
  treated_rows <- as.integer(rownames(mm))
  pairs <- data.frame(treated = rep(treated_rows, times = ncol(mm)),
                      slot = rep(seq_len(ncol(mm)), each = nrow(mm)),
                      control = as.integer(as.vector(mm)))
  pairs <- pairs[order(pairs$treated, pairs$slot), ]
  write.csv(pairs, file.path(res_dir, sprintf("matching_%s_pairs.csv", name)), row.names = FALSE, na = "")

  summary_json[[name]] <- list(
    data = cs$data,
    call = paste0("matchit(treat ~ x1 + x2, data, method = \"nearest\", distance = lps, ",
                  "m.order = \"largest\", replace = FALSE, ratio = ", cs$ratio,
                  if (!is.null(cs$caliper)) paste0(", caliper = ", cs$caliper, ", std.caliper = TRUE") else "",
                  if (cs$mahvars) ", mahvars = ~ lps" else "", ")"),
    caliper_sd = if (is.null(cs$caliper)) NA_real_ else cs$caliper,
    ratio = cs$ratio,
    caliper_width = if (is.null(m$caliper)) NA_real_ else unname(m$caliper[1]),
    n_treated = sum(d$treat == 1),
    n_control = sum(d$treat == 0),
    n_treated_matched = sum(m$weights > 0 & d$treat == 1),
    n_control_matched = sum(m$weights > 0 & d$treat == 0)
  )
}
write_json(summary_json, "matching_cases.json")

write_json(list(R = R.version.string, MatchIt = as.character(packageVersion("MatchIt"))),
           "matching_versions.json")
