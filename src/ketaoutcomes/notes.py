"""Notes: what a step says about its result (an exclusion, an estimate withheld, a model not
fitted), as records with the endpoint, arms and severity they concern, so the report and the
warehouse select them by field instead of parsing sentences."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Note", "SEVERITIES", "notes_from_json"]

#: ``info``: how something was done (a sample, a convention); ``warning``: something left out,
#: not estimable or not computed; ``withheld``: an estimate that is not a result to read (its
#: diagnostics failed).
SEVERITIES = ("info", "warning", "withheld")
Severity = Literal["info", "warning", "withheld"]


@dataclass(frozen=True)
class Note:
    """One note.

    Attributes
    ----------
    text : str
        The sentence, without the endpoint code (``str(note)`` adds it).
    step : str
        The step that wrote it: derive, models, propensity, relapse, secondary, modifiers, target_trial.
    endpoint : str or None
        ADTTE PARAMCD it concerns, if one.
    arms : tuple of str
        Arm codes it concerns (empty: none in particular).
    severity : {"info", "warning", "withheld"}
    """

    text: str
    step: str = ""
    endpoint: str | None = None
    arms: tuple[str, ...] = ()
    severity: Severity = "info"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"note severity must be one of {SEVERITIES}, not {self.severity!r}")
        if not isinstance(self.arms, tuple):
            object.__setattr__(self, "arms", tuple(self.arms))

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.text}" if self.endpoint else self.text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["arms"] = list(self.arms)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Note":
        return cls(text=d["text"], step=d.get("step", ""), endpoint=d.get("endpoint"),
                   arms=tuple(d.get("arms") or ()), severity=d.get("severity", "info"))

    def concerns(self, *, endpoint: str | None = None, arm: str | None = None) -> bool:
        return (endpoint is None or self.endpoint == endpoint) and (arm is None or arm in self.arms)


def notes_from_json(items: Iterable[Any], endpoints: Iterable[str] = ()) -> list[Note]:
    """Notes stored in ``results_runs.notes``: records, or the plain strings of runs written before
    notes were records (their ``"CODE: "`` prefix, for a code in ``endpoints``, becomes the endpoint)."""
    codes = set(endpoints)
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append(Note.from_dict(item))
            continue
        code, sep, rest = str(item).partition(": ")
        out.append(Note(rest, endpoint=code) if sep and code in codes else Note(str(item)))
    return out
