"""Write a synthetic cohort to a folder in the import format, plus ``truth.json``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ketaoutcomes.contract import OPTIONAL_TABLES, TABLE_ORDER
from ketaoutcomes.registries import Registries, load_registries
from ketaoutcomes.settings import SimulationSettings

from . import cohort as _cohort
from .cohort import (
    GENERATOR_VERSION,
    ROUTE_TABLES,
    SiteParameters,
    iter_chunks,
    n_chunks,
    site_parameters,
)
from .params import GeneratorParameters

__all__ = ["simulate_cohort", "build_truth", "prepare_folder", "write_frame", "TRUTH_FILE", "LATENT_FILE"]

TRUTH_FILE = "truth.json"
#: Optional per-patient latent truth (not an import table), written with write_latent=True.
LATENT_FILE = "truth_latent.parquet"

_CSV_OPTIONS = dict(datetime_format="%Y-%m-%d %H:%M:%S", date_format="%Y-%m-%d", null_value="")


class _TableWriter:
    """Appends chunks to one table file; written under a temporary name and moved
    into place by :meth:`close`, so a failed run leaves no half-written table."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.tmp = path.with_name(path.name + ".partial")
        self._fh = None
        self._pq: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, df: pl.DataFrame) -> None:
        if self.fmt == "csv":
            first = self._fh is None
            if first:
                self._fh = open(self.tmp, "wb")
            df.write_csv(self._fh, include_header=first, **_CSV_OPTIONS)
        else:
            tab = df.to_arrow()
            if self._pq is None:
                self._schema = tab.schema
                self._pq = pq.ParquetWriter(self.tmp, self._schema, compression="zstd")
            self._pq.write_table(tab.cast(self._schema))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._pq is not None:
            self._pq.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        for h in (self._fh, self._pq):
            try:
                if h is not None:
                    h.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass
        self.tmp.unlink(missing_ok=True)


def prepare_folder(out_dir: Path | str, fmt: str) -> Path:
    """Create ``out_dir`` and remove what a cohort written there before leaves behind: the table
    files of the other format (the folder holds exactly one cohort), those of an optional table in
    either format (a cohort that has one writes it afterwards), the truth and latent files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    other = "parquet" if fmt == "csv" else "csv"
    for name in TABLE_ORDER:
        (out / f"{name}.{other}").unlink(missing_ok=True)
    for name in OPTIONAL_TABLES:
        (out / f"{name}.{fmt}").unlink(missing_ok=True)
    (out / TRUTH_FILE).unlink(missing_ok=True)
    (out / LATENT_FILE).unlink(missing_ok=True)
    return out


def write_frame(path: Path, fmt: str, df: pl.DataFrame) -> None:
    """Write one whole table file as :func:`simulate_cohort` writes its chunks (``fmt`` csv or parquet)."""
    w = _TableWriter(path, fmt)
    try:
        w.write(df)
    except BaseException:
        w.abort()
        raise
    w.close()


def simulate_cohort(
    settings: SimulationSettings,
    out_dir: Path | str,
    *,
    params: GeneratorParameters | None = None,
    force_arm: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    write_latent: bool = False,
) -> Path:
    """Write a synthetic cohort with known truth into ``out_dir``.

    One file per import table (``patients``, ``courses``, ``sessions``,
    ``adverse_events``, ``mood_scores``; ``.csv`` or ``.parquet`` per
    ``settings.file_format``) with exactly the contract's columns, and
    ``truth.json``. Patients are generated and appended in chunks of
    :data:`~ketaoutcomes.simulate.cohort.CHUNK_SIZE`, so memory does not grow
    with ``n_patients``. The same settings give byte-identical files.

    Parameters
    ----------
    settings : SimulationSettings
        Size, seed, number of sites, date origin and file format.
    out_dir : Path
        Created if missing. Contract table files of the *other* format are removed
        so that the folder holds exactly one cohort.
    params : GeneratorParameters, optional
        How the cohort is generated; the defaults follow clinical-parameters.md.
    force_arm : str, optional
        Put every patient on this arm, keeping patients and their latent
        uniforms (common random numbers): the way to compute marginal truths.
    progress : callable, optional
        Called as ``progress(patients_done, n_patients)`` after each chunk.
    write_latent : bool
        Also write ``truth_latent.parquet`` (one row per patient: latent times,
        linear predictor, true propensities). Not an import table.

    Returns
    -------
    Path
        ``out_dir``.
    """
    params = params or GeneratorParameters()
    reg = load_registries()
    out = prepare_folder(out_dir, settings.file_format)
    ext = settings.file_format
    writers = {name: _TableWriter(out / f"{name}.{ext}", ext) for name in ROUTE_TABLES}
    latent_writer = _TableWriter(out / LATENT_FILE, "parquet") if write_latent else None
    totals: dict[str, dict[str, int]] = {}
    rows = {name: 0 for name in ROUTE_TABLES}
    done = 0
    try:
        for chunk in iter_chunks(settings, params=params, force_arm=force_arm, registries=reg):
            for name in ROUTE_TABLES:
                writers[name].write(chunk.frames[name])
                rows[name] += chunk.frames[name].height
            if latent_writer is not None:
                latent_writer.write(chunk.latent)
            for arm, c in chunk.counts.items():
                acc = totals.setdefault(arm, dict.fromkeys(c, 0))
                for k, v in c.items():
                    acc[k] += v
            done += chunk.frames["patients"].height
            if progress is not None:
                progress(done, settings.n_patients)
    except BaseException:
        for w in writers.values():
            w.abort()
        if latent_writer is not None:
            latent_writer.abort()
        raise
    for w in writers.values():
        w.close()
    if latent_writer is not None:
        latent_writer.close()
    truth = build_truth(settings, params, force_arm=force_arm, counts=totals, rows=rows,
                        sites=site_parameters(settings, params), registries=reg)
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n")
    return out


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def build_truth(
    settings: SimulationSettings,
    params: GeneratorParameters,
    *,
    force_arm: str | None = None,
    counts: dict[str, dict[str, int]] | None = None,
    rows: dict[str, int] | None = None,
    sites: SiteParameters | None = None,
    registries: Registries | None = None,
) -> dict:
    """The known truth of a cohort as a JSON-ready dict (layout in the module README of simulate)."""
    reg = registries or load_registries()
    sites = sites or site_parameters(settings, params)
    arms = list(params.arms)
    ref = params.reference_arm
    c = params.covariate_centre
    k = params.response_weibull_shape
    kr = params.relapse_weibull_shape

    def cov(log_hr_per_unit: float, unit: str, column: str, centre: float | None, note: str = "") -> dict:
        d = {"column": column, "unit": unit, "log_hr_per_unit": _r(log_hr_per_unit, 8),
             "hr_per_unit": _r(math.exp(log_hr_per_unit), 8), "centre": centre}
        if note:
            d["note"] = note
        return d

    relapse_scale = {a: p.relapse_median_days / math.log(2.0) ** (1.0 / kr) for a, p in params.arms.items()}
    ref_scale = relapse_scale[ref]
    return {
        "generator": "ketaoutcomes.simulate",
        "generator_version": GENERATOR_VERSION,
        "chunk_size": _cohort.CHUNK_SIZE,
        "n_chunks": n_chunks(settings.n_patients),
        "seed": settings.seed,
        "n_patients": settings.n_patients,
        "settings": settings.model_dump(mode="json"),
        "settings_id": settings.settings_id,
        "registries_fingerprint": reg.fingerprint,
        "force_arm": force_arm,
        "reference_arm": ref,
        "time_origin": "first dose (first session of the course); times in days",
        "response": {
            "instrument": "MADRS",
            "definition": "first rating with total <= (1 - response_reduction) x baseline, baseline = the last MADRS "
                          "in the 14 days up to the first dose (the baseline rating the generator writes)",
            "model": "h(t|x) = h0(t) * exp(log_hr_arm + sum_j log_hr_j * (x_j - centre_j) + site_log_hr); "
                     "h0 Weibull: H0(t) = (t / scale_days) ** shape",
            "weibull_shape": k,
            "weibull_scale_days": params.response_weibull_scale_days,
            "log_hr_arm": {a: _r(p.response_log_hr) for a, p in params.arms.items()},
            "hr_arm": {a: _r(math.exp(p.response_log_hr)) for a, p in params.arms.items()},
            "covariates": {
                "age_at_index": cov(params.response_log_hr_age_per_10y / 10.0, "1 year", "patients.age_at_index",
                                    c["age_at_index"], "applies to the stored value (90 = 90 and over); "
                                    f"per 10 years: {params.response_log_hr_age_per_10y}"),
                "sex_M": cov(params.response_log_hr_male, "M vs F", "patients.sex", None, "U has the same hazard as F"),
                "baseline_score": cov(params.response_log_hr_baseline_per_point, "1 MADRS point",
                                      "baseline MADRS (observed rating value)", c["baseline_score"],
                                      "the observed baseline rating, not the latent severity, so a Cox fit on the "
                                      "observed baseline targets this number"),
                "prior_failed_trials": cov(params.response_log_hr_prior_failure, "1 failed trial",
                                           "patients.prior_failed_trials", c["prior_failed_trials"]),
            },
            "site_log_hr": {code: _r(sites.response_log_hr[i]) for i, code in enumerate(sites.codes)},
            "site_note": "site multiplies the baseline hazard: exact with site as Cox strata",
            "estimand_note": "conditional hazard ratios (given age, sex, baseline, prior failures and site). Hazard "
                             "ratios are non-collapsible: marginal HRs (what IPTW targets) differ and are found by "
                             "simulating every patient under each arm (force_arm). Real ketamine-vs-SSRI hazards are "
                             "not proportional; the generator makes them proportional on purpose.",
            "observation": "ratings on an arm-specific grid; the observed response is the first rating at or after "
                           "the latent time. Non-responders are followed to the decision rating at the end of "
                           "induction, then the course ends.",
        },
        "remission": {
            "threshold": "MADRS <= remission_max of the instruments registry",
            "p_remission_given_response": {a: p.p_remission_given_response for a, p in params.arms.items()},
            "timing": "half of the remitters remit at the response visit, the others Exp(remission_delay_mean_days) later",
        },
        "relapse": {
            "time_origin": "the observed response visit",
            "definition": "ratings are >= relapse_min (22 MADRS) from the latent relapse time on and below it before; "
                          "the first rating after relapse is followed by a check rating 5-10 days later (90%)",
            "model": "h(r|x) = h0_arm(r) * exp(log(maintenance_hr_arm) * maintenance + log_hr_prior_failure * (prior - centre)); "
                     "h0_arm Weibull with common shape",
            "weibull_shape": kr,
            "scale_days": {a: _r(s, 4) for a, s in relapse_scale.items()},
            "median_days_without_maintenance": {a: p.relapse_median_days for a, p in params.arms.items()},
            "log_hr_arm_vs_reference_without_maintenance": {a: _r(kr * math.log(ref_scale / s)) for a, s in relapse_scale.items()},
            "maintenance_share": {a: p.maintenance_share for a, p in params.arms.items()},
            "maintenance_hr": {a: p.maintenance_hr for a, p in params.arms.items()},
            "maintenance_log_hr": {a: _r(math.log(p.maintenance_hr)) for a, p in params.arms.items()},
            "maintenance_assignment": "a random share of responders per arm, independent of covariates",
            "log_hr_prior_failure": params.relapse_log_hr_prior_failure,
            "prior_failure_centre": c["prior_failed_trials"],
            "followup_after_response_days": list(params.followup_after_response_days),
        },
        "assignment": {
            "model": "multinomial logit, P(arm) proportional to exp(intercept + b_prior (prior - centre) + "
                     "b_baseline (baseline - centre) + b_age (age - centre) / 10 + site offset); reference arm logit 0",
            "covariate_centre": dict(c),
            "intercept": {a: p.assign_intercept for a, p in params.arms.items()},
            "per_prior_failure": {a: p.assign_per_prior_failure for a, p in params.arms.items()},
            "per_baseline_point": {a: p.assign_per_baseline_point for a, p in params.arms.items()},
            "per_10y_age": {a: p.assign_per_10y_age for a, p in params.arms.items()},
            "site_offsets_sd": params.site_preference_sd,
            "forced": force_arm,
        },
        "censoring": {
            "dropout_per_week_before_response": params.dropout_per_week_before_response,
            "dropout_per_week_after_response": params.dropout_per_week_after_response,
            "administrative_export_date": str(np.datetime64(settings.origin_date, "D") + params.export_after_days),
            "note": "dropout hazard is constant within each state, so non-informative for response and for relapse",
        },
        "sites": sites.to_json(arms),
        "parameters": params.model_dump(mode="json"),
        "counts": {
            "per_arm": counts or {},
            "rows": rows or {},
            "note": "realised counts over all patients, including those without a baseline rating in the window "
                    "(whom an analysis excludes); relapse_before_end counts latent relapses before the end of follow-up",
        },
    }
