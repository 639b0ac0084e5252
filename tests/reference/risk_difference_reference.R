# Reference outputs from base R for tests/reference/test_risk_difference_vs_R.py: Wilson's score
# interval of a share (prop.test without continuity correction) and the MOVER interval of a
# difference of two shares built from them (Newcombe 1998, method 10; with a correlation r,
# Zou & Donner 2008), which ketaoutcomes.models.contrasts uses for the share-by-a-day differences.
#
# Newcombe's own example (his Table II, 56/70 - 48/80) has the published interval 0.0524 to 0.3339.
#
# Regenerate (from the repository root):
#   apt-get install -y r-base-core
#   Rscript tests/reference/risk_difference_reference.R > tests/reference/results/risk_difference_reference.log
#
# Writes results/risk_difference.json. Numbers as %.17g (round-trip exact doubles).

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
here <- if (length(script)) dirname(normalizePath(script)) else getwd()
res_dir <- file.path(here, "results")
source(file.path(here, "writers.R"))

wilson <- function(x, n, conf = 0.95) unname(prop.test(x, n, conf.level = conf, correct = FALSE)$conf.int[1:2])

mover <- function(p1, ci1, p2, ci2, r = 0) {
  d <- p1 - p2
  c(d - sqrt(max((p1 - ci1[1])^2 + (ci2[2] - p2)^2 - 2 * r * (p1 - ci1[1]) * (ci2[2] - p2), 0)),
    d + sqrt(max((ci1[2] - p1)^2 + (p2 - ci2[1])^2 - 2 * r * (ci1[2] - p1) * (p2 - ci2[1]), 0)))
}

shares <- list(c(56, 70), c(48, 80), c(0, 25), c(25, 25), c(3, 150), c(9, 154), c(18, 461))
wil <- lapply(shares, function(s) list(x = s[1], n = s[2], conf = 0.95, ci = wilson(s[1], s[2])))
wil90 <- lapply(shares[1:2], function(s) list(x = s[1], n = s[2], conf = 0.90, ci = wilson(s[1], s[2], 0.90)))

pairs <- list(list(a = c(56, 70), b = c(48, 80), r = 0), list(a = c(9, 154), b = c(18, 461), r = 0),
              list(a = c(0, 25), b = c(3, 150), r = 0), list(a = c(9, 154), b = c(18, 461), r = 0.3),
              list(a = c(9, 154), b = c(18, 461), r = -0.2))
mv <- lapply(pairs, function(p) {
  p1 <- p$a[1] / p$a[2]; p2 <- p$b[1] / p$b[2]
  ci <- mover(p1, wilson(p$a[1], p$a[2]), p2, wilson(p$b[1], p$b[2]), p$r)
  cat(sprintf("%g/%g - %g/%g, r = %g: %.4f (%.4f to %.4f)\n", p$a[1], p$a[2], p$b[1], p$b[2], p$r, p1 - p2,
              ci[1], ci[2]))
  list(x1 = p$a[1], n1 = p$a[2], x2 = p$b[1], n2 = p$b[2], r = p$r, ci = ci)
})

write_json(list(wilson = c(wil, wil90), mover = mv, versions = list(R = R.version.string)), "risk_difference.json")
