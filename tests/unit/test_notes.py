"""Notes are records (endpoint, arms, severity, step), and every analysis step returns the same shape."""

from __future__ import annotations

import polars as pl
import pytest

from ketaoutcomes.analysis import StepResult
from ketaoutcomes.notes import Note, notes_from_json


def test_note_round_trips_through_json_and_prints_with_its_endpoint():
    n = Note("fails the diagnostics gate", step="propensity", endpoint="TTRESP", arms=["ketamine_iv"],
             severity="withheld")
    assert n.arms == ("ketamine_iv",)
    assert Note.from_dict(n.to_dict()) == n
    assert str(n) == "TTRESP: fails the diagnostics gate"
    assert n.concerns(endpoint="TTRESP", arm="ketamine_iv") and not n.concerns(arm="ssri")


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        Note("x", severity="fatal")


def test_notes_of_runs_stored_as_strings_are_read_as_records():
    old = ["TTREM: arm(s) ssri left out", "trajectories: fitted on a sample", {"text": "t", "endpoint": "TTRESP"}]
    notes = notes_from_json(old, endpoints=("TTRESP", "TTREM"))
    assert [n.endpoint for n in notes] == ["TTREM", None, "TTRESP"]
    assert notes[0].text == "arm(s) ssri left out" and notes[1].text == "trajectories: fitted on a sample"


def test_step_results_add_up_and_refuse_to_write_one_table_twice():
    a = StepResult({"results_a": pl.DataFrame({"x": [1]})}, (Note("a"),))
    b = StepResult({"results_b": pl.DataFrame({"x": [2]})}, (Note("b"),))
    both = a + b
    assert set(both.tables) == {"results_a", "results_b"} and [n.text for n in both.notes] == ["a", "b"]
    assert both.table("results_missing").is_empty()
    with pytest.raises(ValueError, match="results_a"):
        a + a
