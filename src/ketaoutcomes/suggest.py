"""Near misses: the name a user probably meant (a misspelt arm, a file named like a table).

Matching is case-insensitive (``difflib.get_close_matches`` on lowercased names) and the
suggestion is given as the choice is spelt.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches

__all__ = ["closest", "did_you_mean"]


def closest(name: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice nearest to ``name`` (ignoring case), or None when none is near enough."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    found = get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``'; did you mean "x"?'`` for the nearest choice, else ``' (choose from a, b, c)'``."""
    choices = sorted(set(choices))
    match = closest(name, choices, cutoff=cutoff)
    if match is not None:
        return f'; did you mean "{match}"?'
    return f" (choose from {', '.join(choices)})" if choices else ""
