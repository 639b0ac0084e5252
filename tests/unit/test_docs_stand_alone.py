"""The repository stands on its own: a user's clone has no ../shared folder, so no tracked file
may send a reader there, and every relative link in the docs points at a file that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_no_tracked_file_refers_to_the_shared_folder():
    pattern = re.compile(r"(\.\./shared|/work/shared|shared/reference|shared/design)")
    offenders = []
    for path in _tracked():
        if path.suffix not in {".md", ".py", ".toml", ".txt", ".R", ".cfg", ".ini", ".yaml", ".yml"}:
            continue
        if path == Path(__file__).resolve():
            continue
        if pattern.search(path.read_text(errors="replace")):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"files pointing outside the clone: {offenders}"


def test_relative_links_in_markdown_docs_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    for path in _tracked():
        if path.suffix != ".md":
            continue
        for target in link.findall(path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_clinical_reference_holds_the_registry_thresholds():
    """docs/clinical-reference.md and the shipped instrument registry say the same thresholds."""
    import polars as pl

    doc = (ROOT / "docs" / "clinical-reference.md").read_text()
    reg = pl.read_csv(ROOT / "src" / "ketaoutcomes" / "registries" / "instruments.csv")
    for row in reg.iter_rows(named=True):
        line = next(ln for ln in doc.splitlines() if f"(`{row['instrument']}`)" in ln)
        cells = [c.strip() for c in line.split("|")]
        assert f"{row['score_min']}-{row['score_max']}" in cells, line
        assert cells[5].startswith(f"<= {row['remission_max']}"), line
        assert cells[6] == f">= {row['relapse_min']}", line
