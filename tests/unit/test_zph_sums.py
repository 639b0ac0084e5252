"""The PH test's score and information sums (ketaoutcomes.models.diagnostics._zph_score_info), checked
against their definition computed death by death in plain Python: tied and untied times, strata, Efron
and Breslow, several chunks of rows. (The whole test is checked against R's cox.zph in
tests/reference/test_diagnostics_vs_R.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import ketaoutcomes.models.diagnostics as diagnostics
from ketaoutcomes.models.diagnostics import _zph_score_info


def _by_definition(time, status, X, beta, gtime, strata, efron):
    n, p = X.shape
    Xc = X - X.mean(axis=0)
    u, info = np.zeros(p), np.zeros((2 * p, 2 * p))
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        r = np.exp(Xc[rows] @ beta - (Xc[rows] @ beta).max())
        for et in np.unique(time[rows][status[rows] == 1]):
            risk = time[rows] >= et
            dead = risk & (time[rows] == et) & (status[rows] == 1)
            d = int(dead.sum())
            g = gtime[rows][dead][0]
            V = np.zeros((p, p))
            resid = Xc[rows][dead].sum(axis=0)
            for k in range(d):
                f = k / d if efron else 0.0
                w = r * (risk - f * dead)
                mean = w @ Xc[rows] / w.sum()
                V += (Xc[rows] * w[:, None]).T @ Xc[rows] / w.sum() - np.outer(mean, mean)
                resid -= mean
            u += g * resid
            info[:p, :p] += V
            info[:p, p:] += g * V
            info[p:, :p] += g * V
            info[p:, p:] += g * g * V
    return u, info


@pytest.mark.parametrize("efron", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_zph_sums_equal_their_definition_death_by_death(efron, tied, monkeypatch):
    monkeypatch.setattr(diagnostics, "_CROSS_CHUNK", 37)  # blocks of rows that straddle chunks
    rng = np.random.default_rng(5 + tied)
    n = 300
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)])
    t = rng.exponential(10, n)
    t = np.ceil(t) if tied else t
    status = (rng.uniform(size=n) < 0.7).astype(int)
    strata = rng.integers(0, 3, n)
    beta = np.array([0.3, -0.5, 0.1])
    gtime = t - t[status == 1].mean()
    got = _zph_score_info(t, status, X, beta, gtime, strata, efron)
    want = _by_definition(t, status, X, beta, gtime, strata, efron)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-10)
