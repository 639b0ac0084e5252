"""An export's arms.csv / instruments.csv read like a data file (issue 9, part 6 leftovers).

* A message about a bad registry file names the file, the row (the N-th after the header, as
  quarantine.row_number), the column and what to fix, and never echoes a cell's value, nor a header
  that is not a column of the registry (that one by its position). They used to quote values
  ("dose_min_mg 777.0 > dose_max_mg 55.0", "duplicate arm 'okafor_arm'", the header of an unknown
  column).
* A cell of white space only is missing, as in the data files; white space around a value is not
  part of it.
Each bad file is also ingested through the CLI: one line, exit 1, the value nowhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ketaoutcomes.cli import app
from ketaoutcomes.registries import read_registry
from tests.conftest import query_db, write_export

runner = CliRunner()

ARMS = "arm,label,route,drug_class,is_ketamine,session_based,dose_min_mg,dose_max_mg,dose_max_mg_per_kg,description\n"
ECT = "ect,ECT,device,ect,false,true,0,1,,\n"
INSTRUMENTS = ("instrument,label,rater,score_min,score_max,response_reduction,remission_max,relapse_min,si_item,"
               "si_item_min,si_item_max\n")

#: (file, text, secret that must not be printed, what the message must say)
BAD = {
    "dose_range_reversed": ("arms.csv", ARMS + ECT + "tms,TMS,device,tms,false,true,777,55,,\n", "777",
                            "row 2: dose_min_mg is above dose_max_mg"),
    "dose_not_a_number": ("arms.csv", ARMS + "tms,TMS,device,tms,false,true,Jane Doe,55,,\n", "Jane Doe",
                          "row 1: column dose_min_mg: Input should be a valid number"),
    "boolean_free_text": ("arms.csv", ARMS + "tms,TMS,device,tms,per Okafor,true,0,1,,\n", "Okafor",
                          "row 1: column is_ketamine: Input should be a valid boolean"),
    "code_not_a_code": ("arms.csv", ARMS + "Jane Doe,TMS,device,tms,false,true,0,1,,\n", "Jane Doe",
                        "row 1: column arm: a key is a letter, then letters"),
    "unknown_column_named_after_someone": ("arms.csv", ARMS.replace("\n", ",Okonkwo Chidi\n") + ECT.replace("\n", ",x\n"),
                                           "Okonkwo", "row 1: column #11 is not a column of the arm registry"),
    "code_twice": ("arms.csv", ARMS + ECT + "okafor_arm,A,device,x,false,true,0,1,,\n"
                   "okafor_arm,B,device,x,false,true,0,1,,\n", "okafor", "row 3: column arm: the same arm as row 2"),
    "required_white_space_only": ("arms.csv", ARMS + "tms,\t ,device,tms,false,true,0,1,,\n", "tms,",
                                  "row 1: column label: required, and empty or missing"),
    "threshold_outside_range": ("instruments.csv", INSTRUMENTS + "BDI2,BDI-II,self,0,63,0.5,6174,20,,,\n", "6174",
                                "row 1: remission_max must lie within score_min-score_max"),
    "range_reversed": ("instruments.csv", INSTRUMENTS + "BDI2,BDI-II,self,4155,63,0.5,10,20,,,\n", "4155",
                       "row 1: score_min must be below score_max"),
    "thresholds_crossed": ("instruments.csv", INSTRUMENTS + "BDI2,BDI-II,self,0,63,0.5,31,29,,,\n", "31",
                           "row 1: remission_max must be below relapse_min"),
    "not_utf8": ("arms.csv", None, "Malm", "cannot read registry file"),
}


def write(folder: Path, name: str, text: str | None) -> Path:
    path = folder / name
    if text is None:  # Latin-1 bytes with a name in them
        path.write_bytes((ARMS + "ect,Malm\xf6 Jane,device,ect,false,true,0,1,,\n").encode("latin-1"))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_registry_file_is_named_by_row_and_column_without_its_values(tmp_path, case):
    name, text, secret, says = BAD[case]
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError) as info:
        read_registry(path, name.removesuffix(".csv"))
    msg = str(info.value)
    assert msg.startswith(f"{path}") and says in msg, msg
    assert secret not in msg.removeprefix(str(path)) and "\n" not in msg, msg  # (pytest's tmp path has digits)
    assert info.value.__cause__ is None and info.value.__context__ is None  # nothing behind it quotes the file


@pytest.mark.parametrize("case", ["dose_range_reversed", "unknown_column_named_after_someone", "code_twice",
                                  "threshold_outside_range", "not_utf8"])
def test_ingest_of_a_bad_registry_file_is_one_line_without_its_values(tmp_path, case):
    name, text, secret, says = BAD[case]
    export = write_export(tmp_path / "export")
    write(export, name, text)
    db = tmp_path / "w.duckdb"
    res = runner.invoke(app, ["ingest", str(export), "--db", str(db)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: {export / name}") and says in line, line
    assert secret not in res.output.replace(str(tmp_path), ""), line  # (pytest's tmp path has digits)
    assert not db.exists()


def test_white_space_around_registry_values_is_not_part_of_them_and_white_space_only_is_missing(tmp_path):
    export = write_export(tmp_path / "export")
    (export / "arms.csv").write_text(ARMS + "\tect ,ECT\u00a0,device,ect,true\t,true,0, 1 ,\t,\u3000\n")
    db = tmp_path / "w.duckdb"
    res = runner.invoke(app, ["ingest", str(export), "--db", str(db)])
    assert res.exit_code == 0, res.output
    row = query_db(db, "SELECT * FROM ref_arms WHERE arm = 'ect'").row(0, named=True)
    assert (row["label"], row["is_ketamine"], row["dose_max_mg"], row["dose_max_mg_per_kg"], row["description"]) \
        == ("ECT", True, 1.0, None, "")
