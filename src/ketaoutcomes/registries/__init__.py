"""Registries of arms and instruments: data, not code.

The defaults ship as CSV files beside this module (``arms.csv``,
``instruments.csv``; thresholds and their sources in docs/clinical-reference.md). A study
adds an arm (ECT, TMS, another drug) or an instrument, or changes a threshold,
by putting a file of the same name and columns in its export folder: its rows
are added to the defaults, and a row whose key is already there replaces the
default row. Nothing in the code names an arm or an instrument except as a
default study setting.

A registry file is read like a data file: a cell of white space only is missing, white space
around a value is not part of it, and a message about a bad file names the file, the row (the
N-th row after the header, as ``quarantine.row_number``), the column and what to fix, never a
cell's value (a column the registry does not have is named by its position, never by its header).
Which registry rows are in force in a warehouse, batch by batch: :mod:`.history`.

Keys (an arm's ``arm``, an instrument's ``instrument``) are written as the export writes them:
a letter, then letters, digits, ``_`` and ``-``, at most 40 characters (``ketamine_iv``,
``TAU``, ``BDI-II``, ``QIDS_SR16``); case matters, and two keys of one registry may not differ
only in case, ``-`` or ``_`` (``TAU`` and ``tau``: which one would a course mean?).

An arm is a **drug arm** when it has a dose range (``dose_min_mg`` and ``dose_max_mg``): its
courses name their ``drug`` and its sessions their ``dose_mg``, checked against the range. An arm
without one (psychotherapy, treatment as usual, ECT) is not a drug: it needs no drug, no dose
and no ``drug_class``; a dose recorded for it is refused (rule ``dose_implausible``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ketaoutcomes.contract import WHITESPACE

__all__ = ["Arm", "DEFAULT_DIR", "Instrument", "KEY_PATTERN", "KEY_RULE", "REGISTRY_FILES", "Registries", "key_folded",
           "load_registries", "read_registry", "registry_frame"]

DEFAULT_DIR = Path(__file__).parent


#: A registry key: a letter, then letters, digits, '_' and '-' (at most 40 characters).
KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
#: The rule in words (the data dictionary and the errors say it).
KEY_RULE = "a letter, then letters, digits, _ and - (at most 40 characters; case matters)"


def key_folded(key: str) -> str:
    """A key with case, '-' and '_' ignored: two keys of one registry must not fold alike."""
    return key.lower().replace("-", "").replace("_", "")


class Arm(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    arm: str = Field(pattern=KEY_PATTERN)
    label: str
    route: str = ""
    drug_class: str = ""
    is_ketamine: bool = False
    session_based: bool = False
    #: The dose range of a drug arm; both empty for an arm that is not a drug.
    dose_min_mg: float | None = Field(default=None, ge=0)
    dose_max_mg: float | None = Field(default=None, gt=0)
    dose_max_mg_per_kg: float | None = Field(default=None, gt=0)
    description: str = ""

    @property
    def is_drug(self) -> bool:
        """A drug arm has a dose range; its courses name a drug and its sessions a dose."""
        return self.dose_min_mg is not None

    @model_validator(mode="after")
    def _dose_range(self) -> "Arm":
        if (self.dose_min_mg is None) != (self.dose_max_mg is None):
            raise ValueError("dose_min_mg and dose_max_mg go together: give both for a drug arm, neither for an arm "
                             "that is not a drug (psychotherapy, treatment as usual, ECT)")
        if self.dose_min_mg is None and self.dose_max_mg_per_kg is not None:
            raise ValueError("dose_max_mg_per_kg needs a dose range (dose_min_mg, dose_max_mg): an arm without one "
                             "is not a drug")
        if self.dose_min_mg is None and self.is_ketamine:
            raise ValueError("a ketamine arm (is_ketamine true) is a drug arm: give its dose range (dose_min_mg, "
                             "dose_max_mg)")
        if self.dose_min_mg is not None and self.dose_min_mg > self.dose_max_mg:  # type: ignore[operator]
            # the message never quotes a value (it is shown to users)
            raise ValueError("dose_min_mg is above dose_max_mg; give the lower dose first")
        return self


class Instrument(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    instrument: str = Field(pattern=KEY_PATTERN)
    label: str
    rater: str
    score_min: float
    score_max: float
    response_reduction: float = Field(gt=0, le=1, description="fractional reduction from baseline that counts as response")
    remission_max: float = Field(description="a score <= this is remission")
    relapse_min: float = Field(description="a score >= this (after response) is relapse, if confirmed")
    si_item: str = ""
    si_item_min: float | None = None
    si_item_max: float | None = None

    @model_validator(mode="after")
    def _thresholds_inside_range(self) -> "Instrument":
        lo, hi = self.score_min, self.score_max
        if not lo < hi:  # the messages never quote a value (they are shown to users)
            raise ValueError("score_min must be below score_max")
        for name in ("remission_max", "relapse_min"):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{name} must lie within score_min-score_max")
        if self.remission_max >= self.relapse_min:
            raise ValueError("remission_max must be below relapse_min")
        return self


@dataclass(frozen=True)
class Registries:
    arms: dict[str, Arm]
    instruments: dict[str, Instrument]

    def arms_frame(self) -> pl.DataFrame:
        return registry_frame("arms", list(self.arms.values()))

    def instruments_frame(self) -> pl.DataFrame:
        return registry_frame("instruments", list(self.instruments.values()))

    def with_rows(self, name: str, items: dict[str, BaseModel]) -> "Registries":
        """These registries with ``items`` (code -> row) added to registry ``name`` (same code: the item wins)."""
        rows = {"arms": dict(self.arms), "instruments": dict(self.instruments)}
        rows[name].update(items)
        _check_folded(name, list(rows[name]))
        return Registries(arms=rows["arms"], instruments=rows["instruments"])  # type: ignore[arg-type]

    def extended(self, folder: Path | str) -> "Registries":
        """These registries with ``arms.csv`` / ``instruments.csv`` of ``folder`` added (same key: the file wins)."""
        reg = self
        for name, (file_name, _, _) in REGISTRY_FILES.items():
            if (Path(folder) / file_name).exists():
                reg = reg.with_rows(name, read_registry(Path(folder) / file_name, name))
        return reg

    @property
    def fingerprint(self) -> str:
        """Hash of the registry content; part of what makes a validation or analysis stale."""
        h = hashlib.sha256()
        h.update(self.arms_frame().write_csv().encode())
        h.update(self.instruments_frame().write_csv().encode())
        return h.hexdigest()[:16]


#: The registries an export may extend: name -> (file, model, key column).
REGISTRY_FILES: dict[str, tuple[str, type[BaseModel], str]] = {
    "arms": ("arms.csv", Arm, "arm"),
    "instruments": ("instruments.csv", Instrument, "instrument"),
}

_POLARS = {str: pl.String, bool: pl.Boolean, float: pl.Float64, float | None: pl.Float64}


def registry_frame(name: str, items) -> pl.DataFrame:
    """The rows of registry ``name`` ("arms" or "instruments") as a frame with the model's
    columns and types (also when no row has a value in an optional column, or there is no row)."""
    model = REGISTRY_FILES[name][1]
    schema = {f: _POLARS[info.annotation] for f, info in model.model_fields.items()}
    return pl.DataFrame([item.model_dump() for item in items], schema=schema, orient="row") if items \
        else pl.DataFrame(schema=schema)


def _problem(error: dict, columns: list[str], label: str, key: str) -> str:
    """One pydantic error as "column X: what to fix", without the value (nor a header that is not
    a column of the registry: that one by its position)."""
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        at = columns.index(loc[0]) + 1 if loc and loc[0] in columns else "?"
        return f"column #{at} is not a column of the {label} registry (remove it)"
    if error["type"] == "missing":
        return f"column {loc[0]}: required, and empty or missing"
    if error["type"] == "string_pattern_mismatch" and tuple(loc) == (key,):
        return f"column {key}: a key is {KEY_RULE}"
    msg = error["msg"].removeprefix("Value error, ")
    return f"column {loc[0]}: {msg}" if loc else msg


def read_registry(path: Path, name: str) -> dict[str, BaseModel]:
    """The rows of the registry file ``path`` of registry ``name`` ("arms" or "instruments"), by code.

    Raises
    ------
    ValueError
        One line naming the file, the row (the N-th after the header), the column and what to fix;
        never a cell's value.
    """
    _, model, key = REGISTRY_FILES[name]
    label = name.removesuffix("s")
    # Raised outside the except blocks: the reader's and pydantic's own errors can quote the file's
    # content, and an exception raised while handling one keeps it as its __context__.
    failed = None
    try:
        frame = pl.read_csv(path, infer_schema=False)  # all strings; pydantic converts
    except Exception as exc:  # noqa: BLE001 - any read failure is reported the same way
        failed = type(exc).__name__
    if failed is not None:
        raise ValueError(f"{path}: cannot read registry file ({failed}): it must be a CSV file in UTF-8 with a header "
                         f"row and the columns of the {label} registry")
    out: dict[str, BaseModel] = {}
    first: dict[str, int] = {}
    for i, row in enumerate(frame.iter_rows(named=True), start=1):
        clean = {k: v.strip(WHITESPACE) for k, v in row.items() if v is not None and v.strip(WHITESPACE)}
        problems = None
        try:
            item = model.model_validate(clean)
        except ValidationError as exc:
            problems = "; ".join(_problem(e, frame.columns, label, key) for e in exc.errors())
        if problems is not None:
            raise ValueError(f"{path}, row {i}: {problems}")
        k = getattr(item, key)
        if k in out:
            raise ValueError(f"{path}, row {i}: column {key}: the same {key} as row {first[k]}; give each {key} once")
        same = [o for o in out if key_folded(o) == key_folded(k)]
        if same:
            raise ValueError(f"{path}, row {i}: column {key}: differs from the {key} of row {first[same[0]]} only in "
                             f"case, - or _; keep one key per {label}")
        out[k], first[k] = item, i
    return out


def _check_folded(kind: str, keys: list[str]) -> None:
    """Keys of the merged registry (defaults, warehouse, export) must not fold alike either."""
    seen: dict[str, str] = {}
    for k in keys:
        other = seen.setdefault(key_folded(k), k)
        if other != k:
            raise ValueError(f"{kind}.csv: an {kind[:-1]} key differs from one in force already only in case, - or _ "
                             "(keys are compared without them); use the registered key, or a name of its own")


def load_registries(*extra_dirs: Path | str | None) -> Registries:
    """The default registries, extended or overridden by ``arms.csv`` /
    ``instruments.csv`` found in any of ``extra_dirs`` (later wins)."""
    reg = Registries(arms=read_registry(DEFAULT_DIR / "arms.csv", "arms"),  # type: ignore[arg-type]
                     instruments=read_registry(DEFAULT_DIR / "instruments.csv", "instruments"))
    for d in extra_dirs:
        if d is not None:
            reg = reg.extended(d)
    return reg
