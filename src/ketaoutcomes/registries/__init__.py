"""Registries of arms and instruments: data, not code.

The defaults ship as CSV files beside this module (``arms.csv``,
``instruments.csv``; thresholds and their sources in docs/clinical-reference.md). A study
adds an arm (ECT, TMS, another drug) or an instrument, or changes a threshold,
by putting a file of the same name and columns in its export folder: its rows
are added to the defaults, and a row whose key is already there replaces the
default row. Nothing in the code names an arm or an instrument except as a
default study setting.

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

__all__ = ["Arm", "DEFAULT_DIR", "Instrument", "KEY_PATTERN", "KEY_RULE", "Registries", "key_folded", "load_registries"]

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
            raise ValueError(f"dose_min_mg {self.dose_min_mg} > dose_max_mg {self.dose_max_mg}")
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
        if not lo < hi:
            raise ValueError(f"score_min {lo} must be below score_max {hi}")
        for name in ("remission_max", "relapse_min"):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"{name} {v} lies outside the score range {lo}-{hi}")
        if self.remission_max >= self.relapse_min:
            raise ValueError(f"remission_max {self.remission_max} must be below relapse_min {self.relapse_min}")
        return self


@dataclass(frozen=True)
class Registries:
    arms: dict[str, Arm]
    instruments: dict[str, Instrument]

    def arms_frame(self) -> pl.DataFrame:
        return pl.DataFrame([a.model_dump() for a in self.arms.values()])

    def instruments_frame(self) -> pl.DataFrame:
        return pl.DataFrame([i.model_dump() for i in self.instruments.values()])

    def extended(self, folder: Path | str) -> "Registries":
        """These registries with ``arms.csv`` / ``instruments.csv`` of ``folder`` added (same key: the file wins)."""
        folder = Path(folder)
        arms, instruments = dict(self.arms), dict(self.instruments)
        if (folder / "arms.csv").exists():
            arms.update(_read(folder / "arms.csv", Arm, "arm"))
        if (folder / "instruments.csv").exists():
            instruments.update(_read(folder / "instruments.csv", Instrument, "instrument"))
        _check_folded("arms", list(arms))
        _check_folded("instruments", list(instruments))
        return Registries(arms=arms, instruments=instruments)  # type: ignore[arg-type]

    @property
    def fingerprint(self) -> str:
        """Hash of the registry content; part of what makes a validation or analysis stale."""
        h = hashlib.sha256()
        h.update(self.arms_frame().write_csv().encode())
        h.update(self.instruments_frame().write_csv().encode())
        return h.hexdigest()[:16]


def _read(path: Path, model: type[BaseModel], key: str) -> dict[str, BaseModel]:
    try:
        frame = pl.read_csv(path, infer_schema=False)  # all strings; pydantic converts
    except Exception as exc:  # noqa: BLE001 - any read failure is reported the same way
        raise ValueError(f"{path}: cannot read registry file ({exc})") from exc
    out: dict[str, BaseModel] = {}
    for i, row in enumerate(frame.iter_rows(named=True), start=2):  # row 1 is the header
        clean = {k: (None if v is None or v == "" else v) for k, v in row.items()}
        clean = {k: v for k, v in clean.items() if v is not None}
        try:
            item = model.model_validate(clean)
        except ValidationError as exc:
            problems = "; ".join(_problem(e, key) for e in exc.errors())
            raise ValueError(f"{path}, row {i}: {problems}") from None
        k = getattr(item, key)
        if k in out:
            raise ValueError(f"{path}, row {i}: duplicate {key} {k!r}")
        same = [o for o in out if key_folded(o) == key_folded(k)]
        if same:
            raise ValueError(f"{path}, row {i}: {key} {k!r} differs from {same[0]!r} only in case, - or _; "
                             "keep one key per arm or instrument")
        out[k] = item
    return out


def _problem(error: dict, key: str) -> str:
    where = ".".join(map(str, error["loc"])) or "row"
    if error["type"] == "string_pattern_mismatch" and error["loc"] == (key,):
        return f"{where}: a key is {KEY_RULE}"
    return f"{where}: {error['msg']}"


def _check_folded(kind: str, keys: list[str]) -> None:
    """Keys of the merged registry (defaults, warehouse, export) must not fold alike either."""
    seen: dict[str, str] = {}
    for k in keys:
        other = seen.setdefault(key_folded(k), k)
        if other != k:
            raise ValueError(f"{kind}.csv: {kind[:-1]} {k!r} differs from {other!r} (in force already) only in case, - "
                             "or _; use the registered key, or a name of its own")


def load_registries(*extra_dirs: Path | str | None) -> Registries:
    """The default registries, extended or overridden by ``arms.csv`` /
    ``instruments.csv`` found in any of ``extra_dirs`` (later wins)."""
    reg = Registries(arms=_read(DEFAULT_DIR / "arms.csv", Arm, "arm"),  # type: ignore[arg-type]
                     instruments=_read(DEFAULT_DIR / "instruments.csv", Instrument, "instrument"))
    for d in extra_dirs:
        if d is not None:
            reg = reg.extended(d)
    return reg
