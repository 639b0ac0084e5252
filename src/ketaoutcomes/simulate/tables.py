"""The import-format tables of one simulated chunk, built from the chunk's generated state
(a mixin of the chunk generator in :mod:`ketaoutcomes.simulate.cohort`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ketaoutcomes.contract import polars_schema

from .arrays import DAY, expand, ids, last_per_owner, null_where

__all__ = ["ChunkTables"]


class ChunkTables:
    """Frames of the five import tables, the latent truth and the row counts of a chunk, from the
    state the generator's steps left on ``self``."""

    def _pid(self, owner: np.ndarray, prefix: str = "P") -> pl.Series:
        """Patient ("P0000001") or course ("C0000001") ids from the global patient index."""
        if prefix not in self._id_cache:
            self._id_cache[prefix] = ids(prefix, self.gid + 1, 7)
        return self._id_cache[prefix].gather(owner)

    def _ts(self, owner: np.ndarray, minute: np.ndarray) -> np.ndarray:
        base = (np.datetime64(self.settings.origin_date, "D") + self.start_day[owner]).astype("datetime64[m]")
        return (base + minute.astype("timedelta64[m]")).astype("datetime64[us]")

    def _date(self, owner: np.ndarray, minute: np.ndarray) -> np.ndarray:
        return np.datetime64(self.settings.origin_date, "D") + self.start_day[owner] + (minute // DAY).astype("timedelta64[D]")

    @staticmethod
    def _conform(name: str, df: pl.DataFrame) -> pl.DataFrame:
        schema = polars_schema(name)
        return df.select([pl.col(c).cast(t) for c, t in schema.items()])

    def _patients_frame(self) -> pl.DataFrame:
        idx = np.arange(self.n)
        return self._conform("patients", pl.DataFrame({
            "patient_id": self._pid(idx),
            "site": pl.Series(self.sites.codes).gather(self.site),
            "sex": pl.Series(self.sex_labels).gather(self.sex),
            "age_at_index": self.age,
            "prior_failed_trials": self.prior,
            "diagnosis": pl.Series(self.dx_labels).gather(self.dx),
            "weight_kg": pl.Series(np.where(self.weight_missing, np.nan, self.weight)).fill_nan(None),
            "observation_start": null_where(
                np.datetime64(self.settings.origin_date, "D") + self.start_day - self.lookback, self.lookback_missing),
        }))

    def _courses_frame(self) -> pl.DataFrame:
        A, P, n = self.A, self.P, self.n
        idx = np.arange(n)
        # last contact: last session or post-baseline rating
        last = np.maximum(last_per_owner(self.ses["owner"], self.ses["minute"].astype(float), n),
                          last_per_owner(self.post["owner"], self.post["minute"].astype(float), n))
        self.last_contact_abs = last
        admin = self.admin_abs < np.minimum(self.plan_end_abs, self.drop_abs)
        dropped = ~admin & (self.drop_abs < self.plan_end_abs)
        switch = ~self.responder & (self.switch_u < A.col("p_switch_if_no_response")[self.arm])
        reason = np.select([admin, dropped, switch], [5, 4, 1], 0)
        self.end_reason = reason
        reasons = ["completed", "switched", "new_antidepressant", "adverse_event", "lost_to_follow_up", "ongoing"]
        drug_names = [p.drug for p in A.p]
        ssri_names = list(P.ssri_drugs)
        drug = np.where(np.array(drug_names)[self.arm] == "ssri", np.array(ssri_names)[self.ssri_drug], np.array(drug_names)[self.arm])
        end_date = self._date(idx, last.astype(np.int64))
        is_ssri_arm = np.array([p.dose_mode == "ssri" for p in A.p])[self.arm]
        conc_ssri = ~is_ssri_arm & (self.conc_ssri_u < A.col("p_concomitant_ssri")[self.arm])
        benzo = self.conc_benzo_u < P.p_concomitant_benzodiazepine
        miss = self.conc_missing_u < P.p_concomitant_missing
        start = np.datetime64(self.settings.origin_date, "D") + self.start_day
        return self._conform("courses", pl.DataFrame({
            "course_id": self._pid(idx, "C"),
            "patient_id": self._pid(idx),
            "arm": pl.Series(A.names).gather(self.arm),
            "drug": drug,
            "start_date": start,
            "end_date": null_where(end_date, admin),
            "end_reason": pl.Series(reasons).gather(reason),
            "concomitant_ssri": null_where(conc_ssri, miss),
            "concomitant_benzodiazepine": null_where(benzo, miss),
        }))

    def _session_ids(self) -> pl.Series:
        s = self.ses
        return ids(self._pid(s["owner"], "C") + "-", s["seq"] + 1, 3)

    def _sessions_frame(self) -> pl.DataFrame:
        s = self.ses
        self.session_ids = self._session_ids()
        f = lambda a: pl.Series(a).fill_nan(None)  # noqa: E731
        return self._conform("sessions", pl.DataFrame({
            "session_id": self.session_ids,
            "course_id": self._pid(s["owner"], "C"),
            "session_ts": self._ts(s["owner"], s["minute"]),
            "dose_mg": s["dose"],
            "dose_mg_per_kg": f(s["dose_per_kg"]),
            "infusion_minutes": f(s["infusion_minutes"]),
            "phase": pl.Series(["induction", "maintenance"]).gather(s["maint"].astype(np.int64)),
            "sbp_pre": f(s["sbp_pre"]), "dbp_pre": f(s["dbp_pre"]), "hr_pre": f(s["hr_pre"]),
            "sbp_peak": f(s["sbp_peak"]), "dbp_peak": f(s["dbp_peak"]), "hr_peak": f(s["hr_peak"]),
            "dissociation_score": f(s["cadss"]),
        }))

    def _adverse_events_frame(self) -> pl.DataFrame:
        ae = self.ae
        rows = ae["session"]
        _, k = expand(np.bincount(rows, minlength=len(self.ses["owner"])))
        sid = self.session_ids.gather(rows)
        ae_id = ids(sid + "-A", k + 1, 1)
        return self._conform("adverse_events", pl.DataFrame({
            "ae_id": ae_id,
            "session_id": sid,
            "ae_type": pl.Series(ae["types"]).gather(ae["type"]),
            "severity": pl.Series(["mild", "moderate", "severe"]).gather(ae["severity"]),
        }))

    def _latent_frame(self) -> pl.DataFrame:
        """Per-patient latent truth (not an import table)."""
        fd = self.fd
        days = lambda a: (a - fd) / DAY  # noqa: E731
        out = {
            "patient_id": self._pid(np.arange(self.n)),
            "arm": pl.Series(self.A.names).gather(self.arm),
            "linear_predictor": self.lp,
            "linear_predictor_covariates": self.lp_cov,
            "site_log_hr": self.sites.response_log_hr[self.site],
            "latent_severity": self.severity,
            "baseline_madrs": self.base_madrs,
            "has_baseline": ~self.no_baseline,
            "t_response_days": self.t_resp_days,
            "decision_days": days(self.decision_abs),
            "dropout_days": self.drop_days,
            "admin_days": days(self.admin_abs.astype(float)),
            "latent_response_in_window": self.t_resp_abs <= np.minimum(self.decision_abs, np.minimum(self.drop_abs, self.admin_abs)),
            "observed_response": self.responder,
            "t_observed_response_days": days(self.t_obs_abs),
            "remitter": self.remitter & self.responder,
            "maintenance": self.maintained & self.responder,
            "relapse_days_after_response": np.where(self.responder, self.relapse_days, np.nan),
            "relapse_before_end": self.t_rel_abs <= self.end_abs,
            "end_days": days(self.end_abs),
            "end_reason_code": self.end_reason,
        }
        for j, a in enumerate(self.A.names):
            out[f"propensity_{a}"] = self.propensity[:, j]
        return pl.DataFrame(out)

    def _counts(self, frames: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        ses_arm = self.arm[self.ses["owner"]]
        ae_arm = ses_arm[self.ae["session"]]
        lat_in = self.t_resp_abs <= np.minimum(self.decision_abs, np.minimum(self.drop_abs, self.admin_abs))
        for j, a in enumerate(self.A.names):
            m = self.arm == j
            counts[a] = {
                "patients": int(m.sum()),
                "no_baseline": int((m & self.no_baseline).sum()),
                "latent_response_in_window": int((m & lat_in).sum()),
                "observed_response": int((m & self.responder).sum()),
                "remitters": int((m & self.responder & self.remitter & (self.t_rem_abs <= self.end_abs) & (self.t_rem_abs < self.t_rel_abs)).sum()),
                "maintenance": int((m & self.responder & self.maintained).sum()),
                "relapse_before_end": int((m & (self.t_rel_abs <= self.end_abs)).sum()),
                "lost_to_follow_up": int((m & (self.end_reason == 4)).sum()),
                "switched": int((m & (self.end_reason == 1)).sum()),
                "ongoing": int((m & (self.end_reason == 5)).sum()),
                "sessions": int((ses_arm == j).sum()),
                "adverse_events": int((ae_arm == j).sum()),
            }
        return counts
