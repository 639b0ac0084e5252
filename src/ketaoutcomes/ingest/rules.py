"""Row-level contract rules applied at ingest, and the data-quality summary of a load.

Pure functions on polars frames. A *problem* frame has one row per problem:
``_row_number, column_name, rule, reason``; a row with any problem is
quarantined, the rest load. Reasons never quote a cell value (it could be an
identifier); they name the column, the rule and, for references, the row of the
other file.

Rule ids (stable; tests/corpus and the quarantine table use them):

=====================  ==========================================================
``type``               the value does not convert to the column's type
``key_missing``        a key column is empty
``required_missing``   a required column is empty (``drug`` of a course, ``dose_mg`` of a session: on a drug arm)
``not_allowed``        outside the contract's allowed values
``unknown_arm``        arm not in the arms registry
``unknown_instrument`` instrument not in the instruments registry
``score_out_of_range`` total score outside the instrument's range
``si_item_out_of_range`` suicidal-ideation item outside the instrument's item range
``dose_implausible``   dose negative or outside the arm's range; mg/kg above its maximum; a dose for an
                       arm that is not a drug (no dose range in the registry)
``end_before_start``   course end_date before start_date
``before_course_start`` session before its course's start_date
``after_course_end``   session more than a day after its course's end_date
``orphan``             a reference that does not resolve (or resolves only to a quarantined row)
``duplicate_conflict`` the same key more than once with different content (every copy)
``duplicate_exact``    an identical row repeated (the first copy loads)
``impossible_value``   a number outside the column's possible range (age 0-120, ...)
``not_a_code``         free text where a code belongs (``site``, ``drug``)
=====================  ==========================================================

A code (``site``, ``drug``: open vocabularies, so no allowed set catches free text in them) is at
most :data:`CODE_MAX_WORDS` words and :data:`CODE_MAX_CHARS` characters of letters (any alphabet),
digits, spaces and ``_ - . / + ( ) & #``, with no title (Dr, Mrs, ...) and no word that ties it to a
person (per, by, from, patient, ...): "S01", "North Clinic", "Malmö", "Esketamine Nasal Spray" are
codes; "Dr Okafor's practice" and "sertraline per J Doe" are not. A column declared safe in
phi_allowlist.toml is exempt (its values were approved as they are).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import polars as pl

from ketaoutcomes.contract import CODE_MAX_CHARS, CODE_MAX_WORDS, EXTRA_COLUMN, TABLES, Reference
from ketaoutcomes.registries import Registries, key_folded

__all__ = [
    "PROBLEM_SCHEMA",
    "Parent",
    "DUPLICATE_ROWS_SHOWN",
    "SESSION_AFTER_END_TOLERANCE_DAYS",
    "duplicate_problems",
    "empty_problems",
    "one_problem_per_cell",
    "reference_problems",
    "row_problems",
    "row_rule_columns",
    "session_course_problems",
    "dq_checks",
    "present_cells",
    "CODE_MAX_CHARS",
    "CODE_MAX_WORDS",
]

PROBLEM_SCHEMA = {"_row_number": pl.Int64, "column_name": pl.String, "rule": pl.String, "reason": pl.String}
#: A session dated the day after its course's end_date is accepted (late entry of an evening dose).
SESSION_AFTER_END_TOLERANCE_DAYS = 1
_P_CODE_CHARS = r"^[\p{L}\p{N}][\p{L}\p{N} _./+()&#-]*$"
_P_CODE_PERSON = (r"(?i:\b(?:per|by|from|via|attn|c/o|called|told|asked|said|spoke|pt|patient|mother|father|wife"
                  r"|husband|son|daughter|sister|brother|friend|neighbou?r)\b)"
                  r"|\b(?:[Dd]r|[Mm]r|[Mm]rs|[Mm]s|[Mm]iss|[Mm]x|[Pp]rof|[Rr]ev|Sir|Dame)\b")


def empty_problems() -> pl.DataFrame:
    return pl.DataFrame(schema=PROBLEM_SCHEMA)


def _problems(frame: pl.DataFrame, mask: pl.Expr, column: str, rule: str, reason: str | pl.Expr) -> pl.DataFrame:
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    # The mask is made a column before filtering: polars 2.1 fails to broadcast a scalar
    # predicate such as ``pl.lit(True).fill_null(False)`` over a frame of more than ~16k rows
    # (ShapeError: filter predicate length of 2 ...).
    return frame.with_columns(mask.fill_null(False).alias("_problem")).filter(pl.col("_problem")).select(
        pl.col("_row_number").cast(pl.Int64),
        pl.lit(column, dtype=pl.String).alias("column_name"),
        pl.lit(rule, dtype=pl.String).alias("rule"),
        reason_expr.cast(pl.String).alias("reason"),
    )


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical") if frames else empty_problems()


#: A duplicate_conflict reason lists at most this many of the group's rows (a group of
#: 100,000 copies must not make 100,000 reasons of 100,000 row numbers each).
DUPLICATE_ROWS_SHOWN = 5


def duplicate_problems(table: str, typed: pl.DataFrame) -> pl.DataFrame:
    """Repeated keys in one file: identical rows load once, conflicting ones not at all.

    ``typed`` should hold only the rows that pass every rule on their own: a row quarantined
    for its own problem is not a copy of anything (see :func:`ketaoutcomes.ingest.load.ingest_export`).
    Any number of copies and groups: every reason is of bounded length."""
    spec = TABLES[table]
    key = list(spec.key)
    # (the patients file's own columns kept for covariates are content too)
    content = [*spec.column_names, *([EXTRA_COLUMN] if EXTRA_COLUMN in typed.columns else [])]
    rows = typed.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in key))
    dup = rows.filter(pl.len().over(key) > 1)
    if dup.is_empty():
        return empty_problems()
    dup = dup.with_columns(
        pl.struct(content).hash().alias("_content"),
        pl.col("_row_number").min().over(key).alias("_first"),
    ).with_columns(pl.col("_content").n_unique().over(key).alias("_variants"))
    exact = dup.filter((pl.col("_variants") == 1) & (pl.col("_row_number") != pl.col("_first")))
    conflict = dup.filter(pl.col("_variants") > 1)
    n = DUPLICATE_ROWS_SHOWN
    groups = conflict.group_by(key).agg(pl.len().alias("_n"), pl.col("_row_number").sort().head(n).alias("_rows"))
    groups = groups.with_columns(
        (pl.col("_rows").cast(pl.List(pl.String)).list.join(", ")
         + pl.when(pl.col("_n") > n).then(pl.format(" and {} more", pl.col("_n") - n)).otherwise(pl.lit("")))
        .alias("_shown"))
    conflict = conflict.join(groups.select(*key, "_n", "_shown"), on=key, how="left")
    key_text = " + ".join(key)
    return _concat([
        _problems(exact, pl.lit(True), key[0], "duplicate_exact",
                  pl.format(f"same {key_text} and content as row {{}}; the first copy loads", pl.col("_first"))),
        _problems(conflict, pl.lit(True), key[0], "duplicate_conflict",
                  pl.format(f"{key_text} appears on {{}} rows ({{}}) with different content; none is loaded until the "
                            "export says which is right", pl.col("_n"), pl.col("_shown"))),
    ])


def _range_text(lo: float | None, hi: float | None, unit: str | None) -> str:
    text = f"{'' if lo is None else f'{lo:g}'}-{'' if hi is None else f'{hi:g}'}"
    return f"{text} {unit}" if unit else text


def not_a_code(v: pl.Expr) -> pl.Expr:
    """True where a value of a code column (site, drug) is shaped like free text, not a code."""
    return v.is_not_null() & (
        (v.str.len_chars() > CODE_MAX_CHARS) | (v.str.count_matches(r"\S+") > CODE_MAX_WORDS)
        | ~v.str.contains(_P_CODE_CHARS) | v.str.contains(_P_CODE_PERSON))


def _unknown_key(column: str, keys: Collection[str], reason: str) -> pl.Expr:
    """The reason for a value that is not a registry key: when it is one but for case, '-' or '_'
    (``tau`` for ``TAU``, ``BDI2`` for ``BDI-II``), the reason names the key as registered (a key,
    not the cell's value); keys are not mapped silently."""
    folded = {key_folded(k): k for k in keys}
    near = (pl.col(column).str.to_lowercase().str.replace_all(r"[-_]", "")
            .replace_strict(folded, default=None, return_dtype=pl.String))
    return (pl.when(near.is_not_null())
            .then(pl.format(f"{column} is not in the {column}s registry as written, but {{}} is (keys are written as "
                            "registered: case, - and _ matter); write it as registered", near))
            .otherwise(pl.lit(reason)))


def row_rule_columns(table: str) -> list[str]:
    """The columns :func:`row_problems` reads of ``table`` (``_row_number`` first): a caller may hand
    it those only (a narrower frame to join and filter)."""
    spec = TABLES[table]
    cols = [c.name for c in spec.columns if c.hard_min is not None or c.hard_max is not None or c.code
            or c.allowed or c.registry in ("arms", "instruments")]
    cols += {"courses": ["end_date", "start_date", "drug", "arm"],
             "mood_scores": ["instrument", "total_score", "si_item_score"]}.get(table, [])
    return ["_row_number", *dict.fromkeys(cols)]


def row_problems(table: str, typed: pl.DataFrame, registries: Registries,
                 exempt: Collection[str] = ()) -> pl.DataFrame:
    """Rules that need only the row itself and the registries. ``exempt``: columns the export's
    phi_allowlist.toml declares safe (no code-shape rule)."""
    spec = TABLES[table]
    out = []
    for col in spec.columns:  # (type, key_missing and required_missing are found while typing)
        if col.hard_min is not None or col.hard_max is not None:
            v = pl.col(col.name)
            low = (v < col.hard_min) if col.hard_min is not None else pl.lit(False)
            high = (v > col.hard_max) if col.hard_max is not None else pl.lit(False)
            out.append(_problems(typed, low | high, col.name, "impossible_value",
                                 f"{col.name} outside the possible range {_range_text(col.hard_min, col.hard_max, col.unit)}"
                                 " (a typo or a value typed into the wrong column; the value is not shown): fix it "
                                 "in the export"))
        if col.code and col.name not in exempt:
            out.append(_problems(typed, not_a_code(pl.col(col.name)), col.name, "not_a_code",
                                 f"{col.name} is not a code: at most {CODE_MAX_WORDS} words and {CODE_MAX_CHARS} "
                                 "characters of letters, digits, spaces and _-./+()&#, no title and no 'per', 'by' or "
                                 "'from' (free text can carry identifiers; the value is not shown); use the "
                                 "export's code, or declare the column in phi_allowlist.toml"))
        if col.allowed:
            out.append(_problems(typed, ~pl.col(col.name).is_in(list(col.allowed)), col.name, "not_allowed",
                                 f"{col.name} is not one of {', '.join(col.allowed)}"))
        if col.registry == "arms":
            out.append(_problems(typed, ~pl.col(col.name).is_in(sorted(registries.arms)), col.name, "unknown_arm",
                                 _unknown_key(col.name, registries.arms, "arm is not in the arms registry; add it to "
                                                                         "arms.csv in the export folder")))
        if col.registry == "instruments":
            out.append(_problems(typed, ~pl.col(col.name).is_in(sorted(registries.instruments)), col.name,
                                 "unknown_instrument",
                                 _unknown_key(col.name, registries.instruments, "instrument is not in the instruments "
                                                                                "registry; add it to instruments.csv")))
    if table == "courses":
        out.append(_problems(typed, pl.col("end_date") < pl.col("start_date"), "end_date", "end_before_start",
                             "end_date is before start_date"))
        drug_arms = sorted(k for k, a in registries.arms.items() if a.is_drug)
        out.append(_problems(typed, pl.col("drug").is_null() & pl.col("arm").is_in(drug_arms), "drug",
                             "required_missing", pl.format("drug is empty, and arm {} is a drug arm (it has a dose "
                                                           "range in the arms registry)", "arm")))
    if table == "mood_scores":
        inst = registries.instruments_frame().select(
            pl.col("instrument"), "score_min", "score_max", "si_item_min", "si_item_max")
        j = typed.join(inst, on="instrument", how="inner")
        out.append(_problems(
            j, (pl.col("total_score") < pl.col("score_min")) | (pl.col("total_score") > pl.col("score_max")),
            "total_score", "score_out_of_range",
            pl.format("total_score outside the {} range {}-{}", "instrument", "score_min", "score_max")))
        out.append(_problems(
            j, pl.col("si_item_min").is_not_null() & ((pl.col("si_item_score") < pl.col("si_item_min"))
                                                     | (pl.col("si_item_score") > pl.col("si_item_max"))),
            "si_item_score", "si_item_out_of_range",
            pl.format("si_item_score outside the {} item range {}-{}", "instrument", "si_item_min", "si_item_max")))
    return _concat(out)


@dataclass(frozen=True)
class Parent:
    """The keys a child row may reference: rows that loaded from this export, rows
    already in the warehouse, and (for the reason text) rows quarantined here."""

    table: str
    file: str
    good: pl.DataFrame  # key column(s) of rows that load, plus any columns children need
    stored: pl.DataFrame  # the same columns from stg_<table> (earlier loads)
    quarantined: pl.DataFrame  # key column + first quarantined _row_number

    def available(self) -> pl.DataFrame:
        """Good rows of this export win over stored versions of the same key."""
        key = list(TABLES[self.table].key)
        stored = self.stored.join(self.good.select(key), on=key, how="anti")
        return pl.concat([self.good, stored.select(self.good.columns)], how="vertical_relaxed")


def reference_problems(table: str, typed: pl.DataFrame, parents: Mapping[str, Parent]) -> pl.DataFrame:
    """References that do not resolve to a row that loads (here or earlier)."""
    out = []
    for ref in TABLES[table].references:
        parent = parents[ref.to_table]
        out.append(_orphans(typed, ref, parent))
    return _concat(out)


def _orphans(typed: pl.DataFrame, ref: Reference, parent: Parent) -> pl.DataFrame:
    rows = typed.filter(pl.col(ref.column).is_not_null())
    if rows.is_empty():  # (no row to look up: the parent's keys are not gathered)
        return empty_problems()
    avail = parent.available().select(pl.col(ref.to_column).alias(ref.column)).unique()
    rows = rows.join(avail, on=ref.column, how="anti")
    if rows.is_empty():
        return empty_problems()
    q = parent.quarantined.select(pl.col(ref.to_column).alias(ref.column), pl.col("_row_number").alias("_parent_row"))
    rows = rows.join(q, on=ref.column, how="left")
    reason = (
        pl.when(pl.col("_parent_row").is_not_null())
        .then(pl.format(f"{ref.column} refers to a {ref.to_table} row that was quarantined ({parent.file} row {{}})",
                        pl.col("_parent_row")))
        .otherwise(pl.lit(f"{ref.column} is in neither this export's {ref.to_table} nor the warehouse"))
    )
    return _problems(rows, pl.lit(True), ref.column, "orphan", reason)


def session_course_problems(typed: pl.DataFrame, courses: pl.DataFrame, registries: Registries) -> pl.DataFrame:
    """Sessions checked against their course: dose range of its arm, dates inside the course."""
    arms = registries.arms_frame().select("arm", "dose_min_mg", "dose_max_mg", "dose_max_mg_per_kg")
    j = typed.join(courses.select("course_id", "arm", "start_date", "end_date"), on="course_id", how="inner").join(
        arms, on="arm", how="left")
    day = pl.col("session_ts").dt.date()
    late = pl.col("end_date") + pl.duration(days=SESSION_AFTER_END_TOLERANCE_DAYS)
    known = pl.col("arm").is_in(sorted(registries.arms))
    drug = known & pl.col("dose_min_mg").is_not_null()
    not_drug = known & pl.col("dose_min_mg").is_null()
    return _concat([
        _problems(j, drug & pl.col("dose_mg").is_null(), "dose_mg", "required_missing",
                  pl.format("dose_mg is empty, and the course's arm {} is a drug arm (it has a dose range in the arms "
                            "registry)", "arm")),
        *(_problems(j, not_drug & pl.col(c).is_not_null(), c, "dose_implausible",
                    pl.format(f"{c} given, but the course's arm {{}} is not a drug (no dose range in the arms "
                              "registry): leave it empty, or give the arm its dose range in arms.csv", "arm"))
          for c in ("dose_mg", "dose_mg_per_kg")),
        _problems(j, (pl.col("dose_mg") < 0) | (pl.col("dose_mg") < pl.col("dose_min_mg"))
                  | (pl.col("dose_mg") > pl.col("dose_max_mg")), "dose_mg", "dose_implausible",
                  pl.format("dose_mg outside the plausible range {}-{} mg of the course's arm {}",
                            "dose_min_mg", "dose_max_mg", "arm")),
        _problems(j, (pl.col("dose_mg_per_kg") < 0) | (pl.col("dose_mg_per_kg") > pl.col("dose_max_mg_per_kg")),
                  "dose_mg_per_kg", "dose_implausible",
                  pl.format("dose_mg_per_kg above the maximum {} mg/kg of the course's arm {}",
                            "dose_max_mg_per_kg", "arm")),
        _problems(j, day < pl.col("start_date"), "session_ts", "before_course_start",
                  "session_ts is before its course's start_date"),
        _problems(j, pl.col("end_date").is_not_null() & (day > late), "session_ts", "after_course_end",
                  f"session_ts is more than {SESSION_AFTER_END_TOLERANCE_DAYS} day after its course's end_date"),
    ])


# ---------------------------------------------------------------------------
# Data-quality summary (OHDSI Data Quality Dashboard categories)
# ---------------------------------------------------------------------------

DQ_SCHEMA = {
    "table_name": pl.String, "category": pl.String, "check_id": pl.String, "column_name": pl.String,
    "rule": pl.String, "rows_tested": pl.Int64, "rows_failing": pl.Int64, "pct_failing": pl.Float64,
    "threshold_pct": pl.Float64, "status": pl.String, "error": pl.String,
}

#: Category of each quarantine rule (DQD: conformance = values and relations as the
#: contract says; completeness = required values present; plausibility = believable values).
RULE_CATEGORY = {
    "type": "conformance", "not_allowed": "conformance", "unknown_arm": "conformance",
    "unknown_instrument": "conformance", "orphan": "conformance", "duplicate_conflict": "conformance",
    "duplicate_exact": "conformance", "key_missing": "completeness", "required_missing": "completeness",
    "score_out_of_range": "plausibility", "si_item_out_of_range": "plausibility",
    "dose_implausible": "plausibility", "end_before_start": "plausibility",
    "before_course_start": "plausibility", "after_course_end": "plausibility",
    "impossible_value": "plausibility", "not_a_code": "conformance",
}
#: Share of rows outside a contract plausibility range (BP, heart rate, weight...) above which the check fails.
RANGE_THRESHOLD_PCT = 1.0


def _status(failing: int, tested: int, threshold: float) -> tuple[float | None, str]:
    if tested == 0:
        return None, "pass" if failing == 0 else "fail"
    pct = 100.0 * failing / tested
    return pct, "pass" if pct <= threshold else "fail"


def present_cells(text: pl.DataFrame, table: str) -> dict[str, int]:
    """Per contract column of ``table``, the cells of ``text`` (a file as read) that hold a value
    (besides white space): the rows the ``type`` rule tests. A column left out has none."""
    return {c: (text.select(pl.col(c).str.strip_chars().replace("", None).is_not_null().sum()).item()
                if c in text.columns else 0) for c in TABLES[table].column_names}


def _quarantine_checks(table: str, rows_read: int, problems: pl.DataFrame, present: Mapping[str, int]) -> list[dict]:
    """One check per (rule, column) the table is subject to: the quarantine rules are checks
    with a 0% threshold, each counted whether or not it found anything."""
    spec = TABLES[table]
    expected: list[tuple[str, str]] = []
    for c in spec.columns:
        if c.dtype != "VARCHAR":
            expected.append(("type", c.name))
        expected.append(("key_missing" if c.name in spec.key else "required_missing", c.name) if c.required else ("", ""))
        if c.allowed:
            expected.append(("not_allowed", c.name))
        if c.registry == "arms":
            expected.append(("unknown_arm", c.name))
        if c.registry == "instruments":
            expected.append(("unknown_instrument", c.name))
        if c.hard_min is not None or c.hard_max is not None:
            expected.append(("impossible_value", c.name))
        if c.code:
            expected.append(("not_a_code", c.name))
    for ref in spec.references:
        expected.append(("orphan", ref.column))
    expected.append(("duplicate_conflict", spec.key[0]))
    expected.append(("duplicate_exact", spec.key[0]))
    expected += {
        "courses": [("end_before_start", "end_date"), ("required_missing", "drug")],
        "sessions": [("required_missing", "dose_mg"), ("dose_implausible", "dose_mg"), ("dose_implausible", "dose_mg_per_kg"),
                     ("before_course_start", "session_ts"), ("after_course_end", "session_ts")],
        "mood_scores": [("score_out_of_range", "total_score"), ("si_item_out_of_range", "si_item_score")],
    }.get(table, [])
    counts = {(r, c): n for r, c, n in problems.group_by("rule", "column_name").agg(
        pl.col("_row_number").n_unique()).iter_rows()}
    rows = []
    for rule, column in dict.fromkeys(e for e in expected if e[0]):
        tested = rows_read
        if rule == "type":  # only non-empty cells can fail to convert; an optional column left out has none
            tested = present.get(column, 0)
        failing = counts.get((rule, column), 0)
        pct, status = _status(failing, tested, 0.0)
        rows.append({"category": RULE_CATEGORY[rule], "check_id": f"{table}.{column}.{rule}", "column_name": column,
                     "rule": f"quarantine rule {rule} on {column} (rows failing are quarantined)",
                     "rows_tested": tested, "rows_failing": failing, "pct_failing": pct, "threshold_pct": 0.0,
                     "status": status, "error": None})
    return rows


def _range_checks(table: str, typed: pl.DataFrame | None,
                  counts: Mapping[str, tuple[int, int]] | None = None) -> list[dict]:
    rows = []
    for c in TABLES[table].columns:
        if c.min is None and c.max is None:
            continue
        v = pl.col(c.name)
        outside = pl.lit(False)
        if c.min is not None:
            outside = outside | (v < c.min)
        if c.max is not None:
            outside = outside | (v > c.max)
        tested, failing = (counts[c.name] if counts is not None else
                           typed.select(v.is_not_null().sum(), outside.fill_null(False).sum()).row(0))
        pct, status = _status(failing, tested, RANGE_THRESHOLD_PCT)
        lo = "" if c.min is None else f"{c.min:g}"
        hi = "" if c.max is None else f"{c.max:g}"
        rows.append({"category": "plausibility", "check_id": f"{table}.{c.name}.range", "column_name": c.name,
                     "rule": f"{c.name} within {lo}-{hi} {c.unit or ''}".strip() + " (rows load; a warning above the threshold)",
                     "rows_tested": tested, "rows_failing": failing, "pct_failing": pct,
                     "threshold_pct": RANGE_THRESHOLD_PCT, "status": status, "error": None})
    return rows


def dq_checks(table: str, *, rows_read: int, typed: pl.DataFrame | None, problems: pl.DataFrame,
              text: pl.DataFrame | None = None, present: Mapping[str, int] | None = None,
              ranges: Mapping[str, tuple[int, int]] | None = None) -> pl.DataFrame:
    """The data-quality summary of one file's load. ``present``: per column, the cells with a value
    (:func:`present_cells` of the file's ``text``, or counted while typing); ``ranges``: per column
    with a plausibility range, the cells with a value and those outside it (counted in DuckDB,
    :func:`ketaoutcomes.ingest.suspects.range_counts`), else counted in ``typed``. A check that
    raises is recorded with status 'error' (never 'pass')."""
    rows: list[dict] = []

    def quarantine() -> list[dict]:
        counts = present if present is not None else present_cells(text, table)
        return _quarantine_checks(table, rows_read, problems, counts)

    for name, fn in (("quarantine rules", quarantine),
                     ("plausibility ranges", lambda: _range_checks(table, typed, ranges))):
        try:
            rows += fn()
        except Exception as exc:  # noqa: BLE001 - a check that could not run is reported, not hidden
            rows.append({"category": "error", "check_id": f"{table}.{name.replace(' ', '_')}", "column_name": None,
                         "rule": name, "rows_tested": None, "rows_failing": None, "pct_failing": None,
                         "threshold_pct": None, "status": "error",
                         "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
    return pl.DataFrame([{"table_name": table, **r} for r in rows], schema=DQ_SCHEMA)


def one_problem_per_cell(problems: pl.DataFrame) -> pl.DataFrame:
    """A cell whose value does not convert (``type``) is not also ``required_missing``: the
    rules that require a value on a drug arm (courses.drug, sessions.dose_mg) see it as null."""
    typed_bad = problems.filter(pl.col("rule") == "type").select("_row_number", "column_name").unique()
    dup = problems.filter(pl.col("rule") == "required_missing").join(typed_bad, on=["_row_number", "column_name"],
                                                                       how="semi")
    return problems if dup.is_empty() else problems.join(dup, on=problems.columns, how="anti")
