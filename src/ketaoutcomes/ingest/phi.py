"""The PHI guard at the door (HIPAA Safe Harbor): refuse a file that carries direct identifiers.

Clinic exports are hand-edited and sometimes carry identifiers that must never be
stored: a pasted e-mail column, a phone number typed into ``weight_kg``, a
``Patient Name`` column someone forgot to delete. Before anything is written,
:func:`scan_frame` looks at *every* column of a file as read (contract columns
and extra columns alike, before the extra ones are dropped) and returns
:class:`PhiFinding` objects; a caller refuses the export when there is any.

Pure: polars frames in, findings out. The only I/O is
:meth:`PhiAllowList.load`, which reads the optional ``phi_allowlist.toml`` of the
export folder. Nothing here ever puts a cell value into a finding, a reason or
an exception message: findings say which column, which rule and how many rows,
never which values. See docs/phi-guard.md for the rules, thresholds and the
allow-list format.

The rules:

* **Headers** (every column): a header cell that is itself an identifier (a
  data row or a patient's name where the header belongs) refuses the file; a
  header is printed or stored only when shaped like a column name, else it is
  ``#N``, its position (:func:`header_labels`).
* **Column names** (extra columns only: a contract column is de-identified by
  design): a normalised name (case, separators and camelCase ignored) that says
  "name", "e-mail", "phone", "address", "ZIP", "SSN", "MRN", "date of birth", ...
* **Ids** (``*_id`` contract columns): every id must be a pseudonymous id, of
  the export's id pattern (``[ids] pattern`` of the allow-list, else
  :data:`DEFAULT_ID_PATTERN`), and hold no name, date or birth year, or record
  number (one row).
* **Values** (every column): vectorised regexes. High-specificity shapes
  (e-mail, SSN, phone, IP address, URL) trigger on one row, in every column,
  numeric ones included. In text columns (not INTEGER/DOUBLE contract columns)
  also: street addresses, a ZIP after a state and a common given name or a
  title next to another word (one row); "Firstname Lastname"-shaped values,
  whole-value 5-digit ZIPs and full dates in extra columns (above a share of
  the non-empty rows, see :data:`SHARE_THRESHOLDS`).

Speed: per column, one pass of a single union regex over all rows finds the
rows that could match any rule; the per-rule regexes run only on those rows
(none, for clean data), so a clean 12M-row file costs one regex pass per column
(two for an id column). Linear in the number of columns too: a wide file's
columns of one kind are stacked and scanned with one regex. :class:`PhiScan` does the
same a batch of rows at a time (ingest streams files: :mod:`ketaoutcomes.ingest.read`),
keeping only the candidate rows; :func:`scan_frame` is it on one frame.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import polars as pl

from ketaoutcomes.contract import DEFAULT_ID_EXAMPLES, DEFAULT_ID_PATTERN, TABLES
from ketaoutcomes.ingest.phi_patterns import (
    DRUG_STEMS,
    GIVEN_NAMES,
    HIGH_RULES,
    P_DATE,
    P_ECHOABLE_HEADER,
    P_HEADER_DIGITS,
    P_ID_DATE,
    P_ID_LONG_DIGITS,
    P_ID_RECORD,
    P_ID_WORDS,
    P_NAME_GIVEN_CTX,
    P_NAME_STRONG,
    P_NAME_TITLE,
    P_NAME_WEAK,
    P_PHRASE,
    P_STOP,
    P_STREET,
    P_YEAR,
    P_ZIP_STATE,
    P_ZIP_WHOLE,
    PHRASE_WORDS,
    STOP_WORDS,
    STREET_RULE,
    column_name_rule,
    name_tokens,
)
from ketaoutcomes.registries import REGISTRY_FILES

#: The columns of the registry files an export may carry (arms.csv, instruments.csv): scanned as free
#: text (labels and descriptions are stored and shown in the report), their names known.
REGISTRY_COLUMNS = {name: tuple(model.model_fields) for name, (_file, model, _key) in REGISTRY_FILES.items()}

__all__ = [
    "ALLOWLIST_FILE",
    "DEFAULT_ID_PATTERN",
    "DRUG_STEMS",
    "GIVEN_NAMES",
    "PHRASE_WORDS",
    "STOP_WORDS",
    "column_words",
    "header_labels",
    "header_looks_like",
    "PhiAllowList",
    "PhiError",
    "PhiFinding",
    "SHARE_THRESHOLDS",
    "cap_age",
    "check_frame",
    "PhiScan",
    "nonempty_rows",
    "scan_frame",
]

ALLOWLIST_FILE = "phi_allowlist.toml"
ROW_NUMBER = "_row_number"
AGE_COLUMN = "age_at_index"
AGE_CAP = 89  # Safe Harbor: ages over 89 are aggregated into "90 or older"

#: Low-specificity value rules: the share of non-empty rows that must match.
SHARE_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "value.person_name": 0.20,  # "Firstname Lastname"-shaped values (2-3 capitalised words)
    "value.zip5": 0.50,  # whole value is 12345 or 12345-6789
    "value.birth_date": 0.50,  # extra column of full dates spread over many years
})
#: value.birth_date in an extra column: the dates must also spread over at least this
#: many years (10th to 90th percentile of the year): a cohort's birth dates span
#: decades, a column of (shifted) visit dates spans a few years.
BIRTH_YEAR_SPREAD = 10
#: value.person_name, weak shape: the matching values must also be many different
#: ones (at least this many, or this share of the matching rows): a category such
#: as a site or a drug repeats a few values, a column of names has many.
NAME_MIN_DISTINCT = 20
NAME_MIN_DISTINCT_SHARE = 0.5


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class PhiFinding:
    """One column of one file that looks like it carries direct identifiers.

    ``column`` is the column name (names are not values; they may be printed),
    except for a header that itself looks like an identifier: then ``#N`` (its
    1-based position). ``rows`` is how many rows matched, never which (for a
    column-name rule: the column's non-empty cells; for a header rule: 0).
    """

    file: str
    table: str
    column: str
    rule: str
    reason: str
    rows: int

    def __str__(self) -> str:
        return f"{self.file}: column {self.column}: {self.rule}: {self.reason}"


class PhiError(ValueError):
    """The file carries what looks like direct identifiers; nothing may be stored.

    ``str()`` lists one finding a line as ``FILE: column COL: RULE: reason``;
    it never contains a cell value.
    """

    def __init__(self, findings: Iterable[PhiFinding]):
        self.findings: tuple[PhiFinding, ...] = tuple(findings)
        super().__init__(
            "refused: the export looks like it carries direct identifiers (HIPAA Safe Harbor; "
            "see docs/phi-guard.md); nothing was stored:\n" + "\n".join(str(f) for f in self.findings)
        )


# --------------------------------------------------------------------------- allow-list


@dataclass(frozen=True)
class PhiAllowList:
    """What a study declares in ``phi_allowlist.toml`` in the export folder.

    ``columns`` maps ``"table.column"`` to the study's reason why the column is
    not identifying. A listed column is skipped by every rule of the guard (name,
    values, id pattern) and by the code-shape rule of ``site`` and ``drug``.
    ``id_pattern`` is the shape of the export's pseudonymous ids (a regular
    expression the whole id must match); ``None``: :data:`DEFAULT_ID_PATTERN`.

    The file::

        [columns]
        "patients.site" = "site codes are clinic names, approved by the data steward on 2026-03-01"

        [ids]
        pattern = "KX-[0-9]{6}"
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    id_pattern: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    @classmethod
    def load(cls, export_dir: Path) -> PhiAllowList:
        """The allow-list of ``export_dir``; empty when there is no ``phi_allowlist.toml``.

        Raises
        ------
        ValueError
            The file is not valid TOML, has something other than a ``[columns]``
            and an ``[ids]`` table, names an unknown table, gives an entry without
            a reason, or an id pattern that is not a valid regular expression.
            The message names the file and the problem.
        """
        path = Path(export_dir) / ALLOWLIST_FILE
        if not path.is_file():
            return cls({})
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc}); see docs/phi-guard.md for the format") from None
        return cls(*_parse_allowlist(data, str(path)))

    def allows(self, table: str, column: str) -> bool:
        return f"{table}.{column}" in self.columns

    def allowed_columns(self, table: str) -> frozenset[str]:
        """The columns of ``table`` declared safe."""
        return frozenset(k.partition(".")[2] for k in self.columns if k.partition(".")[0] == table)

    @property
    def ids(self) -> str:
        """The regular expression a whole id must match (the export's, else the default)."""
        return self.id_pattern or DEFAULT_ID_PATTERN


def _parse_allowlist(data: Mapping[str, object], where: str) -> tuple[dict[str, str], str | None]:
    hint = ('expected [columns] with entries like "patients.site" = "why this column is not identifying", '
            'and optionally [ids] with pattern = "a regular expression every id matches"')
    extra = sorted(k for k in data if k not in ("columns", "ids"))
    if extra:
        raise ValueError(f"{where}: unknown section or key(s) {', '.join(extra)}; {hint}")
    cols = data.get("columns", {})
    if not isinstance(cols, dict):
        raise ValueError(f"{where}: 'columns' must be a table; {hint}")
    out: dict[str, str] = {}
    problems: list[str] = []
    for key, reason in cols.items():
        table, dot, column = key.partition(".")
        if not dot or not table or not column:
            problems.append(f"entry {key!r} is not 'table.column'")
        elif table not in TABLES:
            problems.append(f"entry {key!r} names unknown table {table!r} (tables: {', '.join(TABLES)})")
        elif not isinstance(reason, str):
            problems.append(f"entry {key!r} must be a text reason, not a {type(reason).__name__}")
        elif not reason.strip():
            problems.append(f"entry {key!r} has no reason; say why the column is not identifying and who approved it")
        else:
            out[key] = reason.strip()
    pattern = _parse_ids(data.get("ids"), problems)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + f"; {hint}")
    return out, pattern


def _parse_ids(ids: object, problems: list[str]) -> str | None:
    if ids is None:
        return None
    if not isinstance(ids, dict):
        problems.append("'ids' must be a table")
        return None
    extra = sorted(k for k in ids if k != "pattern")
    if extra:
        problems.append(f"[ids] has unknown key(s) {', '.join(extra)} (only 'pattern')")
    pattern = ids.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append("[ids] pattern must be a non-empty text: a regular expression every id matches")
        return None
    try:
        pl.Series([""], dtype=pl.String).str.contains(_whole(pattern))
    except Exception as exc:  # noqa: BLE001 - polars' regex error, shown without the data
        problems.append(f"[ids] pattern is not a valid regular expression ({str(exc).splitlines()[0][:200]})")
        return None
    return pattern


def _whole(pattern: str) -> str:
    """A pattern the whole (trimmed) value must match."""
    return rf"^\s*(?:{pattern})\s*$"


# --------------------------------------------------------------------------- column kinds


@dataclass(frozen=True)
class _Kind:
    """What a column gets scanned for."""

    contract_dtype: str | None  # None: not in the contract (an extra column)
    is_id: bool  # a contract id column (patient_id, course_id, ...): the id rules
    birthish: bool  # its name suggests birth
    codeish: bool = False  # its name says it holds 5-digit codes that are not ZIPs (CPT, HCPCS, ...)
    per_patient: bool = False  # a column of the patients table (one row per patient, no contract dates)
    id_pattern: str | None = None  # ids: the pattern a whole id must match
    long_digits: bool = True  # ids: 8+ digits in a row are a record number (the default id pattern)
    keyish: bool = False  # a key or reference column (no ZIP rule: keys may be 5-digit numbers)

    @property
    def numeric(self) -> bool:
        return self.contract_dtype in ("INTEGER", "DOUBLE")

    @property
    def text_rules(self) -> bool:  # names, addresses, ZIPs
        return not self.numeric

    @property
    def zip_rule(self) -> bool:
        return self.text_rules and not self.keyish and not self.codeish

    @property
    def date_rule(self) -> bool:  # contract DATE/TIMESTAMP columns hold shifted dates: allowed
        return self.birthish or self.contract_dtype is None


#: Column-name words that say a column of 5-digit numbers holds billing or
#: terminology codes (a CPT code such as 90870 is not a ZIP).
_CODE_WORDS = frozenset({"cpt", "hcpcs", "icd", "ndc", "loinc", "snomed", "drg", "procedure", "billing"})


def _kind(table: str, column: str, allow: PhiAllowList) -> _Kind:
    spec = TABLES.get(table)
    tokens = name_tokens(column)
    compact = "".join(tokens)
    birthish = bool(re.search(r"birth|born|^dob|dob$", compact)) or bool({"dob", "bday"} & set(tokens))
    codeish = bool(_CODE_WORDS & set(tokens))
    if spec is not None and column in spec.column_names:
        keys = set(spec.key) | {r.column for r in spec.references}
        dtype = spec.column(column).dtype
        is_id = column.endswith("_id") and dtype == "VARCHAR"  # patient_id, course_id, session_id, ae_id
        return _Kind(dtype, is_id, birthish, codeish, table == "patients", allow.ids if is_id else None,
                     is_id and allow.id_pattern is None, column in keys or is_id)
    return _Kind(None, False, birthish, codeish, table == "patients")


@lru_cache(maxsize=None)
def _union(kind: _Kind) -> str:
    """One regex that matches every row any rule of this kind of column could flag (for an id
    column, with the rows that do not match the id pattern)."""
    parts = [r.pattern for r in HIGH_RULES]
    if kind.text_rules:
        parts += [P_STREET, P_ZIP_STATE, P_NAME_WEAK, P_NAME_STRONG]
    if kind.zip_rule:
        parts.append(P_ZIP_WHOLE)
    if kind.date_rule:
        parts.append(P_DATE)
    if kind.is_id:
        parts += [P_ID_WORDS, P_ID_DATE, P_ID_RECORD] + ([P_ID_LONG_DIGITS] if kind.long_digits else [])
    return "|".join(f"(?:{p})" for p in parts)


# --------------------------------------------------------------------------- headers

#: Header shapes that refuse the export: a header cell that is itself an identifier (a data row
#: pasted over the header, a patient's name typed as a column name). Checked on every header. A
#: header with digits or a date in it (score_2024, a shifted visit date of a data row) is not refused,
#: only never printed or stored (see :func:`header_labels`).
_HEADER_CHECKS: tuple[tuple[str, str], ...] = (
    *((r.pattern, r.what) for r in (*HIGH_RULES, STREET_RULE)),
    (P_ZIP_STATE, "an address"),
    (P_NAME_GIVEN_CTX, "a person's name"),
    (P_NAME_TITLE, "a person's name"),
    (P_ID_RECORD, "a record number"),
)
_CLEARED_BY_STOP_WORDS = (P_NAME_GIVEN_CTX, P_NAME_TITLE)


def header_looks_like(names: list[str]) -> list[str | None]:
    """For each header cell, what identifier it looks like ("a person's name", "phone or fax numbers",
    ...), or None. One vectorised pass per shape over all headers (linear in the number of columns)."""
    return list(_header_looks_like(tuple(names)))


@lru_cache(maxsize=256)
def _header_looks_like(names: tuple[str, ...]) -> tuple[str | None, ...]:
    """:func:`header_looks_like`, remembered per header row (a file's headers are asked for several
    times in one load, and the same headers come in every delivery)."""
    s = pl.Series("h", names, dtype=pl.String)
    looks: list[str | None] = [None] * len(names)
    for pattern, what in _HEADER_CHECKS:
        if pattern in _CLEARED_BY_STOP_WORDS:
            hit = s.str.extract_all(pattern).list.eval(~pl.element().str.contains(P_STOP)).list.any()
        else:
            hit = s.str.contains(pattern)
        for i in hit.fill_null(False).arg_true().to_list():
            if looks[i] is None:
                looks[i] = what
    return tuple(looks)


def header_labels(names: list[str]) -> list[str]:
    """How each header may be printed or stored: the name when it looks like a column name (see
    :data:`P_ECHOABLE_HEADER`), else ``#N``, its 1-based position. Linear in the number of columns."""
    s = pl.Series("h", names, dtype=pl.String)
    shaped = (s.str.contains(P_ECHOABLE_HEADER) & ~s.str.contains(P_HEADER_DIGITS)).to_list()
    looks = header_looks_like(names)
    return [name if ok and looks[i] is None and GIVEN_NAMES.isdisjoint(name_tokens(name)) else f"#{i + 1}"
            for i, (name, ok) in enumerate(zip(names, shaped))]


def column_words(label: str) -> str:
    """'column 'site'' for a printable header, 'column #8 (header not shown)' for a position."""
    return f"column {label} (header not shown)" if label.startswith("#") else f"column '{label}'"


# --------------------------------------------------------------------------- scanning


def _advice(kind: _Kind) -> str:
    allow = "declare it safe in phi_allowlist.toml with the reason"
    if kind.contract_dtype is None:
        return f"remove the column from the export or, if it is not identifying, {allow}"
    if kind.numeric:
        return ("fix those cells in the export: a number column holds numbers only (the file is refused, "
                "not quarantined, so the values never reach the warehouse or a log)")
    if kind.is_id:
        return ("replace them with pseudonymous study ids (never names, dates of birth or record numbers) or, "
                "if they are pseudonymous, declare their shape as [ids] pattern in phi_allowlist.toml")
    return f"replace those values with de-identified codes in the export or, if they are not identifying, {allow}"


#: Wide files: columns of one kind are stacked into one series of at most this many cells and
#: scanned with one regex (a select of thousands of expressions, each compiling its regex, costs
#: polars more than linear time); tall files: at most this many columns per select.
_STACK_CELLS = 1 << 20
_BATCH = 64


def _text(s: pl.Series) -> pl.Series:
    return s if s.dtype == pl.String else s.cast(pl.String)


def _candidates(kind: _Kind, v: pl.Expr) -> pl.Expr:
    """Rows any rule of this kind of column could flag (and, for ids, rows not of the id pattern)."""
    hit = v.str.contains(_union(kind))
    if kind.id_pattern is not None:
        text = v.str.strip_chars()
        hit = hit | ((text != "") & ~text.str.contains(_whole(kind.id_pattern)))
    return hit.fill_null(False)


def _candidate_rows(series: Mapping[str, pl.Series], columns: list[str], kinds: Mapping[str, _Kind],
                    height: int) -> dict[str, pl.Series]:
    """For each column, a boolean series: the rows that could match a rule. Linear in the number of
    cells: columns of one kind are stacked (wide files) or scanned a batch per select (tall files)."""
    by_kind: dict[_Kind, list[str]] = {}
    for c in columns:
        by_kind.setdefault(kinds[c], []).append(c)
    hits: dict[str, pl.Series] = {}
    per_stack = _STACK_CELLS // max(height, 1)
    rest: list[str] = []
    for kind, cols in by_kind.items():
        if per_stack < 2 or len(cols) < 2:
            rest += cols
            continue
        for i in range(0, len(cols), per_stack):
            batch = cols[i:i + per_stack]
            long = pl.concat([_text(series[c]).alias("v") for c in batch], rechunk=True)
            hit = pl.DataFrame({"v": long}).select(_candidates(kind, pl.col("v")))["v"]
            hits.update({c: hit.slice(j * height, height) for j, c in enumerate(batch)})
    for i in range(0, len(rest), _BATCH):  # one select per batch: polars runs its columns in parallel
        batch = rest[i:i + _BATCH]  # (positional names: a header may be empty, which polars renames)
        part = pl.DataFrame([_text(series[c]).alias(f"c{k}") for k, c in enumerate(batch)])
        hits.update(zip(batch, part.select(_candidates(kinds[c], pl.col(f"c{k}")).alias(f"c{k}")
                                           for k, c in enumerate(batch)).get_columns()))
    return hits


def scan_frame(frame: pl.DataFrame, *, table: str, file: str, allow: PhiAllowList) -> list[PhiFinding]:
    """Findings for one file as read: every column as text plus ``_row_number`` (ignored).

    Parameters
    ----------
    frame : DataFrame
        All columns of the file, contract and extra, as ``pl.String`` (others are
        cast to text).
    table : str
        The contract table the file holds (decides which columns are contract
        columns, their types and ids).
    file : str
        The path as given, for the findings.
    allow : PhiAllowList
        Columns declared safe: skipped by every rule; the export's id pattern.

    Returns
    -------
    list of PhiFinding
        Empty when the file looks clean. At most one finding per column and rule.
        Linear in the number of columns and in the number of rows.
    """
    scan = PhiScan([c for c in frame.columns if c != ROW_NUMBER], table=table, file=file, allow=allow)
    scan.add(frame)
    return scan.findings(lambda c: nonempty_rows(frame[c]))


def nonempty_rows(values: pl.Series) -> int:
    """Rows of a column with something besides white space (the denominator of the share rules)."""
    return int(_text(values).str.contains(r"\S").sum())


class PhiScan:
    """:func:`scan_frame` over a file read in batches (:meth:`add`, in row order): the batches'
    candidate rows (the union-regex test of each column, see :func:`_union`) are kept, nothing
    else; :meth:`findings` then runs every rule on them. Memory: the candidates only."""

    def __init__(self, headers: list[str], *, table: str, file: str, allow: PhiAllowList):
        self.table, self.file = table, file
        self.headers = [c for c in headers if c != ROW_NUMBER]
        self.columns = [c for c in self.headers if not allow.allows(table, c)]
        self.kinds = {c: _kind(table, c, allow) for c in self.columns}
        self.height = 0
        self.nulls = dict.fromkeys(self.headers, 0)
        self.candidates: dict[str, list[pl.Series]] = {c: [] for c in self.columns}

    def add(self, frame: pl.DataFrame) -> None:
        """One batch of rows: every header of the file as a column of text (plus ``_row_number``)."""
        self.height += frame.height
        if not self.columns or frame.height == 0:
            return
        for c, n in zip(frame.columns, frame.null_count().row(0)):
            if c in self.nulls:
                self.nulls[c] += n
        series = dict(zip(frame.columns, frame.get_columns()))
        hits = _candidate_rows(series, self.columns, self.kinds, frame.height)
        for c in self.columns:
            if hits[c].any():
                self.candidates[c].append(_text(series[c]).filter(hits[c]))

    def findings(self, nonempty: Callable[[str], int]) -> list[PhiFinding]:
        """The findings of the rows added so far. ``nonempty(column)``: the rows of a column with
        something besides white space (:func:`nonempty_rows`), asked only when a share rule needs it."""
        table, file = self.table, self.file
        spec = TABLES.get(table)  # None: a registry file (arms, instruments): every column free text
        contract = set(spec.column_names) if spec else set(REGISTRY_COLUMNS.get(table, ()))
        findings: list[PhiFinding] = []

        def add(column: str, rule: str, reason: str, rows: int) -> None:
            findings.append(PhiFinding(file=file, table=table, column=column, rule=rule, reason=reason, rows=rows))

        label = dict(zip(self.headers, header_labels(self.headers)))
        columns = self.columns
        looks = dict(zip(columns, header_looks_like(columns)))
        # 1. Headers (every header: a data row or a name typed over the header is refused) and column
        #    names (extra columns only: the contract is de-identified by design).
        for c in columns:
            if looks[c] is not None:
                add(label[c], "column_name.looks_like_identifier",
                    f"the header of column {label[c]} looks like {looks[c]} itself (not shown); "
                    "fix the header row of the export", 0)
                continue
            if c in contract:
                continue
            rule = column_name_rule(c)
            if rule is not None:
                add(label[c], rule.rule,
                    f"{column_words(label[c])} is named like {rule.what}, a direct identifier under HIPAA Safe "
                    f"Harbor; remove it from the export or, if it holds no identifiers, declare it safe in "
                    f"{ALLOWLIST_FILE} with the reason", self.height - self.nulls[c])

        # 2. Values: one union-regex pass per column over all rows (in :meth:`add`), then every rule
        #    on the distinct values of the few rows that could match.
        if not columns or self.height == 0:
            return findings
        for c in columns:
            if not self.candidates[c]:
                continue
            counted = _counted(pl.DataFrame({"v": pl.concat(self.candidates[c], rechunk=True)}))
            n = self.height - self.nulls[c]
            what_col = column_words(label[c])
            findings += [
                PhiFinding(file=file, table=table, column=label[c], rule=rule, rows=rows,
                           reason=f"{what_col} has values that look like {what} in {rows} of {n} rows"
                                  f"{extra}; {_advice(self.kinds[c])}")
                for rule, what, rows, extra in _value_findings(counted, self.kinds[c], lambda c=c: nonempty(c))
            ]
        return findings


def _counted(rows: pl.DataFrame) -> pl.DataFrame:
    """Candidate values ``v`` with their row counts ``n``: grouped when they repeat (free text and
    categories repeat a few values), row by row when they are mostly distinct (grouping would cost
    more than it saves)."""
    if rows.height > 50_000:
        sample = rows.gather_every(max(1, rows.height // 20_000))
        if sample["v"].n_unique() < 0.5 * sample.height:
            return rows.group_by("v").agg(pl.len().cast(pl.Int64).alias("n"))
    return rows.with_columns(pl.lit(1, dtype=pl.Int64).alias("n"))


def _value_findings(counted: pl.DataFrame, kind: _Kind,
                    nonempty_rows: Callable[[], int]) -> list[tuple[str, str, int, str]]:
    """(rule, what, rows, extra reason text) for one column.

    ``counted``: the candidate values ``v`` with their row counts ``n`` (see
    :func:`_counted`: repeated values are checked once);
    ``nonempty_rows``: the rows of the whole column with something besides white space, for the
    share denominators.
    """
    v = pl.col("v")
    masks = {r.rule: v.str.contains(r.pattern) for r in HIGH_RULES}
    if kind.text_rules:
        masks[STREET_RULE.rule] = v.str.contains(P_STREET)
        masks["zip_state"] = v.str.contains(P_ZIP_STATE)
        masks["name_weak"] = v.str.contains(P_NAME_WEAK) & ~v.str.contains(P_STOP) & ~v.str.contains(P_PHRASE)
        masks["name_strong_shape"] = v.str.contains(P_NAME_STRONG)
    if kind.is_id:
        masks["id_words"] = v.str.contains(P_ID_WORDS)
        masks["id_date"] = v.str.contains(P_ID_DATE)
        masks["id_record"] = v.str.contains(P_ID_RECORD)
        if kind.long_digits:
            masks["id_record"] = masks["id_record"] | v.str.contains(P_ID_LONG_DIGITS)
        text = v.str.strip_chars()
        masks["id_pattern"] = (text != "") & ~text.str.contains(_whole(kind.id_pattern or DEFAULT_ID_PATTERN))
    if kind.zip_rule:
        masks["zip_whole"] = v.str.contains(P_ZIP_WHOLE)
    if kind.date_rule:
        masks["dates"] = v.str.contains(P_DATE)
    m = counted.with_columns(**{k: e.fill_null(False) for k, e in masks.items()})

    def rows_where(mask: pl.Series | str) -> int:
        mask = m[mask] if isinstance(mask, str) else mask
        return int(m["n"].filter(mask).sum())

    got = {k: rows_where(k) for k in masks}
    out: list[tuple[str, str, int, str]] = []
    for r in (*HIGH_RULES, STREET_RULE) if kind.text_rules else HIGH_RULES:
        if got[r.rule]:
            out.append((r.rule, r.what, got[r.rule], ""))

    nonempty: int | None = None

    def share(rows: int) -> float:
        nonlocal nonempty
        if nonempty is None:  # one more pass, only when a low-specificity shape matched
            nonempty = nonempty_rows()
        return rows / nonempty if nonempty else 0.0

    def limit(rule: str) -> str:
        return f" (more than the limit of {SHARE_THRESHOLDS[rule]:.0%} of non-empty rows)"

    id_words = m["id_words"] if kind.is_id else pl.Series("w", [False] * m.height, dtype=pl.Boolean)
    if kind.text_rules and (got["name_strong_shape"] or got["name_weak"] or id_words.any()):
        # strong: a given name next to another word, unless a stop word is within one word of it; a title
        # (Mrs, Dr) before a capitalised word that is not a stop word; in an id, any two words
        strong = id_words
        if got["name_strong_shape"]:
            def cleared(pattern: str) -> pl.Expr:
                return v.str.extract_all(pattern).list.eval(~pl.element().str.contains(P_STOP)).list.any()

            strong = strong | m.select(
                pl.when(pl.col("name_strong_shape")).then(cleared(P_NAME_GIVEN_CTX) | cleared(P_NAME_TITLE))
                .otherwise(False).fill_null(False).alias("s")
            )["s"]
        # weak: "Firstname Lastname"-shaped values, many different ones (a category such as a site or
        # a drug repeats a few values; a column of names has many)
        weak_rows = got["name_weak"]
        distinct = m.filter(pl.col("name_weak"))["v"].n_unique()
        weak_ok = (weak_rows > 0 and share(weak_rows) >= SHARE_THRESHOLDS["value.person_name"]
                   and (distinct >= NAME_MIN_DISTINCT or distinct >= NAME_MIN_DISTINCT_SHARE * weak_rows))
        if strong.any():
            what = ("person names (two words where an id belongs, a common given name next to another word, or a "
                    "title such as Mrs or Dr before a name)" if kind.is_id else
                    "person names (a common given name next to another word, or a title such as Mrs or Dr "
                    "before a name)")
            out.append(("value.person_name", what, rows_where(strong | (m["name_weak"] & weak_ok)), ""))
        elif weak_ok:
            out.append(("value.person_name", "person names ('Firstname Lastname': two or three capitalised "
                        "words, many different ones)", weak_rows, limit("value.person_name")))

    if kind.is_id:
        explained = id_words | m["id_date"] | m["id_record"]
        if got["id_date"]:
            out.append(("value.birth_date", "dates or birth years inside ids (a full date, or a name or "
                        "initials next to a year)", got["id_date"], ""))
        if got["id_record"]:
            digits = " or 8 or more digits in a row" if kind.long_digits else ""
            out.append(("value.record_number", f"record numbers (an MRN, chart or account prefix{digits})",
                        got["id_record"], ""))
        for name in ("email", "ssn", "phone", "ip_address", "url", "street_address"):
            if f"value.{name}" in m.columns:
                explained = explained | m[f"value.{name}"]
        other = rows_where(m["id_pattern"] & ~explained)
        if other:
            shape = (f"the default: up to 3 capital letters and 1 to 7 digits, in up to 4 parts joined by '-', "
                     f"'_' or '.', such as {DEFAULT_ID_EXAMPLES}; see docs/phi-guard.md" if kind.long_digits
                     else "[ids] pattern of phi_allowlist.toml")
            out.append(("value.id_pattern", f"something other than pseudonymous ids (they do not match the "
                        f"export's id pattern, {shape})", other, ""))

    if kind.text_rules and got["zip_state"]:
        out.append(("value.zip5", "ZIP codes after a state (ST NNNNN)", got["zip_state"], ""))
    elif kind.zip_rule and got["zip_whole"] and share(got["zip_whole"]) >= SHARE_THRESHOLDS["value.zip5"]:
        out.append(("value.zip5", "5-digit ZIP or ZIP+4 codes", got["zip_whole"], limit("value.zip5")))

    if kind.date_rule and got["dates"]:
        if kind.birthish:
            out.append(("value.birth_date", "exact dates of birth (day precision; a year alone is allowed)",
                        got["dates"], ""))
        elif share(got["dates"]) >= SHARE_THRESHOLDS["value.birth_date"]:
            years = (
                m.filter(pl.col("dates"))
                .select(y=v.str.extract(P_DATE, 0).str.extract(P_YEAR, 1).cast(pl.Int32, strict=False), n="n")
                .drop_nulls().group_by("y").agg(pl.col("n").sum()).sort("y")
            )
            spread = _weighted_quantile(years, 0.9) - _weighted_quantile(years, 0.1)
            if kind.per_patient:
                out.append(("value.birth_date", "exact dates of birth (a full date per patient in a column the "
                            "contract does not define is most likely a date of birth)", got["dates"],
                            limit("value.birth_date")))
            elif spread >= BIRTH_YEAR_SPREAD:
                out.append(("value.birth_date", "exact dates of birth", got["dates"],
                            f" (full dates spread over {spread} years, as a cohort's birth dates are; "
                            f"event dates span a few)"))
    return out


def _weighted_quantile(counts: pl.DataFrame, q: float) -> int:
    """The q-quantile (lower) of ``y`` weighted by ``n``; ``counts`` sorted by ``y``."""
    if counts.height == 0:
        return 0
    cum = counts["n"].cum_sum()
    target = q * float(cum[-1])
    return int(counts["y"].filter(cum >= target)[0])


def check_frame(frame: pl.DataFrame, *, table: str, file: str, allow: PhiAllowList) -> None:
    """:func:`scan_frame`, raising :class:`PhiError` when there is any finding."""
    findings = scan_frame(frame, table=table, file=file, allow=allow)
    if findings:
        raise PhiError(findings)


# --------------------------------------------------------------------------- ages


#: Ages above this are not real ages but typos; they are left for the range checks.
AGE_MAX_REAL = 120


def cap_age(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Safe Harbor ages: ``age_at_index`` values from 90 to 120 become ``"90"``.

    Text in, text out: a value that is not a number is left as it is for the
    type check. A frame without the column is returned unchanged.

    Returns
    -------
    (DataFrame, int)
        The frame and how many values were changed.
    """
    if AGE_COLUMN not in frame.columns:
        return frame, 0
    text = pl.col(AGE_COLUMN).cast(pl.String)
    number = text.str.strip_chars().cast(pl.Float64, strict=False)
    # Only real ages are aggregated: a typo like 450 stays as it is, so the range
    # checks flag it instead of it turning silently into a plausible 90.
    # Whole numbers only: "95.5" is left for the type check, as "45.5" is.
    over = (number > AGE_CAP) & (number <= AGE_MAX_REAL) & (number == number.floor()) & (text != "90")
    changed = int(frame.select(over.fill_null(False).sum()).item())
    if not changed:
        return frame, 0
    return frame.with_columns(pl.when(over).then(pl.lit("90")).otherwise(text).alias(AGE_COLUMN)), changed
