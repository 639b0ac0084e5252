"""Write ``data/ate_synthetic.csv``, the synthetic cohort of ``ate_reference.R`` (run once; the file is
committed, and the tests read it, not this script).

A cohort of this project's simulator (600 patients, seed 2024), derived to ADSL/ADTTE with the default
study, time to response (TTRESP) of intravenous ketamine vs SSRI: ``time`` (AVAL, whole days: many
tied event and censoring days), ``status`` (1 response, 0 censored), ``treat`` (1 IV ketamine) and
``x1``... the design columns of the study's propensity model as the analysis builds them
(:func:`ketaoutcomes.analysis.ate.pair_arrays`: x1 age, x2 sex M, x3 baseline MADRS, x4 prior
failed trials, x5-x9 sites S02-S06; the 3 patients of sex U, 1.1%, coded as the reference level F by the
rare-level rule).

    uv run python tests/reference/ate_synthetic_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ketaoutcomes.analysis.ate import pair_arrays
from ketaoutcomes.analysis.common import model_frame
from ketaoutcomes.derive import derive_all
from ketaoutcomes.registries import load_registries
from ketaoutcomes.settings import SimulationSettings, StudySettings
from ketaoutcomes.simulate import simulate_frames

OUT = Path(__file__).parent / "data" / "ate_synthetic.csv"


def main() -> None:
    frames = simulate_frames(SimulationSettings(n_patients=600, seed=2024))
    study = StudySettings(endpoints=("TTRESP",))
    d = derive_all(frames["patients"], frames["courses"], frames["sessions"], frames["mood_scores"],
                   registries=load_registries(), study=study)
    arrays = pair_arrays(model_frame(d.adsl, d.adtte, "TTRESP"), "ketamine_iv", study)
    assert arrays is not None
    time, event, route, X = arrays
    out = pl.DataFrame({"time": time, "status": event.astype(np.int64), "treat": route.astype(np.int64)})
    out = out.with_columns(pl.Series(f"x{j + 1}", X[:, j]) for j in range(X.shape[1]))
    out.write_csv(OUT)
    print(f"wrote {OUT} ({out.height} patients, {X.shape[1]} covariates)")


if __name__ == "__main__":
    main()
