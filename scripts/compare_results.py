"""Compare the analysis outputs of two warehouses: the check behind "the default report's numbers
are unchanged" when code is restructured.

Usage (from the checkout)::

    uv run python scripts/compare_results.py dump WAREHOUSE OUT_DIR     # latest run -> OUT_DIR/*.csv
    uv run python scripts/compare_results.py diff OLD_DIR NEW_DIR        # exit 1 on any difference

``dump`` writes every ``ad_*`` and ``results_*`` table of the warehouse's latest analysis run, floats
rounded to 9 significant digits, rows sorted, without the columns that name the run (``run_id``,
``settings_id``: they hash the code version and the settings' layout, not the numbers). ``diff``
compares two dumps table by table and prints what differs (columns the new dump adds are listed
and left out of the comparison; a column gone is a difference). Not a test: it needs two runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import duckdb
import polars as pl

ID_COLUMNS = ("run_id", "settings_id")


def _round(x: float | None, digits: int = 9) -> float | None:
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def dump(db: Path, out: Path) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        run_id = con.execute("SELECT run_id FROM results_runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'ad\\_%' ESCAPE '\\' "
            "OR table_name LIKE 'results\\_%' ESCAPE '\\' ORDER BY 1").fetchall()]
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name == "results_runs":
                continue
            frame = con.execute(f"SELECT * FROM {name} WHERE run_id = ?", [run_id]).pl()
            frame = frame.drop([c for c in ID_COLUMNS if c in frame.columns])
            frame = frame.with_columns(
                pl.col(c).map_elements(_round, return_dtype=pl.Float64)
                for c, t in frame.schema.items() if t.is_float())
            frame = frame.sort(frame.columns, nulls_last=True) if frame.height else frame
            frame.write_csv(out / f"{name}.csv")
            print(f"{name}: {frame.height} rows", file=sys.stderr)
    finally:
        con.close()


def diff(old: Path, new: Path) -> int:
    bad = 0
    names = sorted({p.name for p in old.glob("*.csv")} | {p.name for p in new.glob("*.csv")})
    for name in names:
        a, b = old / name, new / name
        if not a.exists() or not b.exists():
            print(f"{name}: only in {'new' if b.exists() else 'old'}")
            bad += 1
            continue
        fa, fb = pl.read_csv(a, infer_schema=False), pl.read_csv(b, infer_schema=False)
        gone, added = sorted(set(fa.columns) - set(fb.columns)), sorted(set(fb.columns) - set(fa.columns))
        if gone:
            print(f"{name}: columns gone: {gone}")
            bad += 1
            continue
        if added:  # new columns are reported, and the old ones compared
            print(f"{name}: columns added (not compared): {added}")
        fb = fb.select(fa.columns)
        fa, fb = fa.sort(fa.columns, nulls_last=True), fb.sort(fa.columns, nulls_last=True)
        if not fa.equals(fb):
            print(f"{name}: {fa.height} vs {fb.height} rows; first differing rows:")
            print(pl.concat([fa.join(fb, on=fa.columns, how="anti", nulls_equal=True).head(3).with_columns(pl.lit("old").alias("_")),
                             fb.join(fa, on=fa.columns, how="anti", nulls_equal=True).head(3).with_columns(pl.lit("new").alias("_"))]))
            bad += 1
    print(f"{len(names)} tables compared, {bad} differ")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    d = sub.add_parser("dump")
    d.add_argument("warehouse", type=Path)
    d.add_argument("out", type=Path)
    c = sub.add_parser("diff")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.verb == "dump":
        dump(args.warehouse, args.out)
    else:
        raise SystemExit(diff(args.old, args.new))


if __name__ == "__main__":
    main()
