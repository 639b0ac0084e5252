"""The reference engine: Great Expectations' own pandas execution engine on polars frames.

``validate_tables(frames, registries, engine="gx-pandas")``. This was how every validation
ran until the metrics moved into DuckDB (:mod:`.metrics`); it is kept as the reference those
are tested against, row for row (``tests/unit/test_validate.py``,
``tests/integration/test_validate_engines.py``). It needs the whole tables in memory as pandas
frames: at 1M patients 11.8 GB and 154 CPU seconds, so the warehouse is validated with
:mod:`.metrics` instead.

Per table: derive the cross-table columns with polars joins, convert the needed columns to
pandas once (the ``_row_number`` column becomes the index, so GX reports source row numbers),
run the suite through an ephemeral context, and hand back GX's result per rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import polars as pl

from ketaoutcomes.contract import TABLES
from ketaoutcomes.validate.results import N_EXAMPLES, ROW_NUMBER, clean_error
from ketaoutcomes.validate.rules import DERIVED, SESSION_AFTER_END_TOLERANCE_DAYS, Rule, frame_columns
from ketaoutcomes.validate.suites import suite_for

__all__ = ["evaluate_table_gx_pandas"]


def _derived_columns(table: str, frames: Mapping[str, pl.DataFrame], wanted: set[str]) -> list[pl.Series]:
    """The ``_ko_*`` columns of ``table`` (same length and order as the frame),
    computed with vectorised polars expressions and joins."""
    frame = frames[table]
    out: list[pl.Series] = []
    for ref in TABLES[table].references:
        name = f"_ko_ref_{ref.column}"
        if name not in wanted:
            continue
        keys = frames[ref.to_table].get_column(ref.to_column).drop_nulls().unique()
        keys = keys.cast(frame.schema[ref.column])
        # null id -> null flag (ignored here; the not-null rule reports it)
        out.append(frame.select(pl.col(ref.column).is_in(keys.implode()).alias(name)).to_series())

    course_cols = {"_ko_arm": "arm", "_ko_course_start": "start_date", "_ko_course_end_limit": "end_date"}
    need = [c for d, c in course_cols.items() if d in wanted and (table, d) in DERIVED]
    if need:
        courses = (
            frames["courses"]
            .select(["course_id", *need])
            .filter(pl.col("course_id").is_not_null())
            # a duplicated course_id (reported by courses.key_unique) must not
            # duplicate sessions in the join: keep its first row
            .unique(subset="course_id", keep="first", maintain_order=True)
            .with_columns(pl.col("course_id").cast(frame.schema["course_id"]))
        )
        joined = frame.select("course_id").join(courses, on="course_id", how="left", maintain_order="left")
        if joined.height != frame.height:  # pragma: no cover - guarded by the unique() above
            raise RuntimeError("course join changed the number of sessions")
        ts_dtype = frame.schema.get("session_ts", pl.Datetime("us"))
        if not isinstance(ts_dtype, pl.Datetime):
            ts_dtype = pl.Datetime("us")
        if "_ko_arm" in wanted:
            out.append(joined.get_column("arm").cast(pl.String).alias("_ko_arm"))
        if "_ko_course_start" in wanted:
            out.append(joined.get_column("start_date").cast(ts_dtype).alias("_ko_course_start"))
        if "_ko_course_end_limit" in wanted:
            days = SESSION_AFTER_END_TOLERANCE_DAYS + 1
            limit = joined.select(
                (pl.col("end_date").cast(ts_dtype) + pl.duration(days=days)).alias("_ko_course_end_limit")
            ).to_series()
            out.append(limit)
    return out


def _validate_batch(context: Any, table: str, name: str, pdf: Any, rules: list[Rule]) -> dict[str, Any]:
    suite = suite_for(table, rules)
    source_name = f"ketaoutcomes_{table}_{name}"
    source = context.data_sources.add_pandas(name=source_name)
    try:
        asset = source.add_dataframe_asset(name=f"{table}_{name}")
        batch_definition = asset.add_batch_definition_whole_dataframe(name=f"{table}_{name}_whole")
        batch = batch_definition.get_batch(batch_parameters={"dataframe": pdf})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            suite_result = batch.validate(
                suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": N_EXAMPLES}
            )
    finally:
        # the datasource's engine caches the pandas frame: drop it so only one
        # table's copy is alive at a time
        context.data_sources.delete(source_name)
    by_id = {r.rule_id for r in rules}
    out: dict[str, Any] = {}
    for res in suite_result.results:
        rule_id = (res.expectation_config.meta or {}).get("rule_id")
        if rule_id in by_id:
            out[rule_id] = res
    return out


def evaluate_table_gx_pandas(
    context: Any, table: str, frames: Mapping[str, pl.DataFrame], rules: list[Rule]
) -> tuple[dict[str, Any], bool]:
    """GX's result (``ExpectationValidationResult``) or an error text per rule id of
    ``rules`` (all runnable on ``frames``), and whether the table has source row numbers."""
    import pandas as pd

    frame = frames[table]
    wanted = {c for r in rules for c in frame_columns(r) if c.startswith("_ko_")}
    contract_cols = [c for c in TABLES[table].column_names if c in frame.schema]
    gx_frame = frame.select(contract_cols)  # no copy: polars shares the buffers
    derived = _derived_columns(table, frames, wanted)
    if derived:
        gx_frame = gx_frame.with_columns(derived)
    # GX 1.24 quirk: ExpectColumnValuesToBeBetween is vectorised on pandas only
    # when the dtype is exactly int64 or float64 (`column.dtype in [int, float]`);
    # an int32 column (DuckDB INTEGER) falls back to a per-row Python map, ~1 s
    # per million rows and rule. Widen the numeric columns first.
    widen = [
        pl.col(c).cast(pl.Int64 if d.is_integer() else pl.Float64)
        for c, d in gx_frame.schema.items()
        if (d.is_integer() and d != pl.Int64) or (d.is_float() and d != pl.Float64)
    ]
    if widen:
        gx_frame = gx_frame.with_columns(widen)
    has_row_numbers = ROW_NUMBER in frame.schema and frame.get_column(ROW_NUMBER).null_count() == 0
    index = pd.Index(frame.get_column(ROW_NUMBER).to_numpy(), name=ROW_NUMBER) if has_row_numbers else None

    # Two batches. Rules with a row condition (one per arm / instrument) run on
    # a narrow frame holding only the columns they read: the pandas engine
    # re-filters the whole frame with DataFrame.query for every metric of every
    # conditional expectation (~6 per rule), so the width of that frame is what
    # costs. Its condition columns are categorical, which makes the query's
    # string equality a comparison of integer codes.
    plain = [r for r in rules if r.condition is None]
    conditional = [r for r in rules if r.condition is not None]
    batches: list[tuple[str, list[Rule], list[str], set[str]]] = []
    if plain:
        used = {c for r in plain for c in frame_columns(r)}
        cols = [c for c in gx_frame.columns if not c.startswith("_ko_") or c in used]
        batches.append(("all_rows", plain, cols, set()))
    if conditional:
        used = {c for r in conditional for c in frame_columns(r)}
        cols = [c for c in gx_frame.columns if c in used]
        batches.append(("by_condition", conditional, cols, {r.condition[0] for r in conditional}))  # type: ignore[index]

    out: dict[str, Any] = {}
    for name, batch_rules, cols, categorical in batches:
        try:
            selected = gx_frame.select(
                [pl.col(c).cast(pl.Categorical) if c in categorical else pl.col(c) for c in cols]
            )
            pdf = selected.to_pandas()  # the one copy GX's pandas engine needs
            if index is not None:
                pdf.index = index
            out.update(_validate_batch(context, table, name, pdf, batch_rules))
        except Exception as exc:  # noqa: BLE001 - reported per rule, never swallowed as a pass
            err = f"validation of {table} could not run: {type(exc).__name__}: {clean_error(exc)}"
            for r in batch_rules:
                out[r.rule_id] = err
    return out, has_row_numbers
