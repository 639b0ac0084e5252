"""The endpoint registry: every time-to-event endpoint (ADTTE PARAMCD) is declared here, once.

Settings read it (which endpoints a study may name, what each needs), derive/ looks up the
function that derives each one (:data:`ketaoutcomes.derive.DERIVATIONS`, keyed by code), the
analysis runs the models an endpoint lists in ``analyses``, and the report takes its labels
and wording from here. Adding an endpoint is one :class:`Endpoint` below plus its derivation
function (registered with :func:`ketaoutcomes.derive.derivation`); a test fails when either
half is missing.

The order of :data:`ENDPOINTS` is the order of derivation (an endpoint after the ones it
``requires``), of the analysis and of the report.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ANALYSES", "MAIN_ANALYSES", "Endpoint", "ENDPOINTS", "DEFAULT_ENDPOINTS", "endpoint"]

#: Per-endpoint analyses (see :mod:`ketaoutcomes.analysis`): Kaplan-Meier curves and medians,
#: log-rank test, adjusted and naive Cox models, proportional-hazards test, restricted mean time,
#: the propensity-score comparison per route; the discrete-time (interval-censored) sensitivity
#: analysis, the relapse analyses (maintenance as a time-varying exposure, competing risks) and
#: the effect-modifier models; and the primary contrasts of each route vs the reference arm (shares
#: with the event by fixed days, median and restricted-mean differences from the weighted curves,
#: with bootstrap intervals: the summary at the top of the report).
ANALYSES = ("km", "logrank", "cox", "ph", "rmst", "ps", "discrete", "relapse", "modifiers", "contrasts")
MAIN_ANALYSES = frozenset({"km", "logrank", "cox", "ph", "rmst", "ps"})


@dataclass(frozen=True)
class Endpoint:
    """One time-to-event endpoint.

    Attributes
    ----------
    code : str
        ADTTE PARAMCD.
    label : str
        Heading in the report ("Time to response").
    event : str
        The event in one word, for sentences ("response").
    short : str
        The endpoint's name in tables ("response", "resolution of suicidal ideation").
    origin : str
        Time zero in words ("first dose", "response").
    hr_above_1, hr_below_1 : str
        What a hazard ratio above (below) 1 means for the route against the reference arm.
    favourable_above_1 : bool
        Whether an HR above 1 is good news (an earlier response is; an earlier relapse is not).
    analyses : frozenset of str
        The analyses run on it (names in :data:`ANALYSES`).
    requires : tuple of str
        Endpoints it is derived from (relapse starts at the response).
    empty_reason : str
        Why the endpoint can have no rows, said when it has none.
    in_default_study : bool
        Whether a study that does not list its endpoints analyses this one.
    """

    code: str
    label: str
    event: str
    short: str
    origin: str
    hr_above_1: str
    hr_below_1: str
    favourable_above_1: bool = True
    analyses: frozenset[str] = MAIN_ANALYSES
    requires: tuple[str, ...] = ()
    empty_reason: str = "no courses in the analysis population have this endpoint"
    in_default_study: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.analyses) - set(ANALYSES)
        if unknown:
            raise ValueError(f"endpoint {self.code}: unknown analyses {sorted(unknown)}; choose from {ANALYSES}")

    def runs(self, analysis: str) -> bool:
        return analysis in self.analyses


ENDPOINTS: dict[str, Endpoint] = {e.code: e for e in (
    Endpoint("TTRESP", "Time to response", "response", "response", "first dose",
             "faster response", "slower response", analyses=MAIN_ANALYSES | {"discrete", "modifiers", "contrasts"}),
    Endpoint("TTREM", "Time to remission", "remission", "remission", "first dose",
             "faster remission", "slower remission", analyses=MAIN_ANALYSES | {"discrete"}),
    Endpoint("TTRELAPS", "Time from response to relapse (responders only)", "relapse", "relapse", "response",
             "earlier relapse", "later relapse", favourable_above_1=False, analyses=MAIN_ANALYSES | {"relapse"},
             requires=("TTRESP",), empty_reason="no responders, so no relapse follow-up"),
    Endpoint("TTSIRES", "Time to resolution of suicidal ideation (ideation at baseline only)", "resolution",
             "resolution of suicidal ideation", "first dose", "faster resolution", "slower resolution"),
)}

#: The endpoints of a study that does not list its own.
DEFAULT_ENDPOINTS: tuple[str, ...] = tuple(c for c, e in ENDPOINTS.items() if e.in_default_study)


def endpoint(code: str) -> Endpoint:
    """The registered endpoint, or a neutral stand-in for a code the registry does not know
    (a report of results written by another version)."""
    return ENDPOINTS.get(code) or Endpoint(code, code, "event", code, "time origin", "event sooner", "event later")
