# Output writers shared by the *_reference.R scripts in this directory (survival, weighted,
# diagnostics, competing, matching, modifiers). Base R only (no jsonlite).
#
# Each script computes `here` (its own directory) and `res_dir`, then runs
#   source(file.path(here, "writers.R"))
# write_json() looks `res_dir` up when it is called, so the script must define it.
#
# Numbers are written with sprintf("%.17g") so they round-trip exactly to doubles.

num17 <- function(x) ifelse(is.na(x), NA_character_, sprintf("%.17g", x))

json <- function(x, indent = "") {
  inner <- paste0(indent, "  ")
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (is.null(names(x))) {
      items <- vapply(x, json, "", indent = inner)
      return(paste0("[\n", inner, paste(items, collapse = paste0(",\n", inner)), "\n", indent, "]"))
    }
    items <- vapply(names(x), function(k) paste0("\"", k, "\": ", json(x[[k]], inner)), "")
    return(paste0("{\n", inner, paste(items, collapse = paste0(",\n", inner)), "\n", indent, "}"))
  }
  scalar <- function(v) {
    if (is.na(v)) return("null")
    if (is.character(v)) return(paste0("\"", gsub("\"", "\\\\\"", v), "\""))
    if (is.logical(v)) return(if (v) "true" else "false")
    if (is.infinite(v)) return(if (v > 0) "\"Inf\"" else "\"-Inf\"")
    # same text as %.17g for every R integer (at most 10 digits); kept from matching_reference.R
    if (is.integer(v)) return(as.character(v))
    sprintf("%.17g", v)
  }
  vals <- vapply(seq_along(x), function(i) scalar(x[[i]]), "")
  if (!is.null(names(x))) {
    return(paste0("{", paste0("\"", names(x), "\": ", vals, collapse = ", "), "}"))
  }
  if (length(x) == 1) return(vals)
  paste0("[", paste(vals, collapse = ", "), "]")
}

write_json <- function(x, name) writeLines(json(x), file.path(res_dir, name))

write_csv17 <- function(df, path) {
  out <- df
  for (k in names(out)) if (is.double(out[[k]])) out[[k]] <- num17(out[[k]])
  write.csv(out, path, row.names = FALSE, na = "")
}
