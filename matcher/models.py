"""Performance models: predict a metric of an asset for a (hardware, configuration) never measured,
with a conservative bound and an honest account of the error.

* One PerformanceModel per (asset, metric), scikit-learn estimator API (parameters in __init__,
  fit/predict). Features: the HardwareSpec (cores, peak TFLOP/s, memory bandwidth, memory, device
  count, GPU or not, accelerator type one-hot), the configuration (numeric as-is, text one-hot)
  and the asset's complexity (parameters, FLOPs per sample) where the rows have it. Numeric
  features enter as sign(x)·log1p(|x|): performance scales multiplicatively with them.
* Positive metrics are fitted on log scale (errors are relative; predictions stay positive);
  accuracy on its own scale.
* Scaled by the hardware's speed: a rate or a time per query (MetricSpec.speed) is fitted relative
  to the hardware's peak FLOP/s, or its core count where the catalog gives no peak for every
  hardware measured (SCALES). log(samples/s) - log(peak) is what the estimators learn. Hardware
  never measured then starts from "scales with its peak", and the data learn how far the asset
  departs from that. Without it, ridge shrinks toward "like the average hardware measured".
  The scale is kept only where it cross-validates at least as well across hardware as the
  unscaled fit (two CPU profiles sharing a host do not follow their cores). On Gavel's public
  measurements, leave-one-GPU-out MdAPE fell from 28-54% to 18-39% (docs/performance.md).
* Uncertainty: cross-conformal, one-sided. The out-of-fold residuals of the cross-validation
  below give a (1-alpha) quantile q; the bound is point·exp(+q) for latency/energy/power (upper)
  and point·exp(-q) for throughput/accuracy (lower, additive on accuracy's scale). Residuals of
  held-out *configurations* bound predictions on hardware the model has seen; residuals of
  leave-one-hardware-out bound predictions on hardware it has not. No residuals, no bound (NaN):
  the MILP then cannot use the prediction where that metric matters.
* Cross-validated error stored with the model: MdAPE and the share within ±10 % for (a) held-out
  configurations (GroupKFold over configurations) and (b) leave-one-hardware-out (>= 2 hardware
  types); missing, with the reason, when there are too few groups.
* Persistence: skops (never pickle). The fitted scikit-learn estimator goes to a .skops file and is
  loaded with an explicit list of trusted types; everything else is JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from matcher.candidates import (
    CFG,
    REQUIRED,
    clean_value,
    config_columns,
    config_dict,
    config_keys,
    select_rows,
)
from matcher.errors import ModelError
from matcher.metrics import BY_NAME, NAMES, measured_rows, numeric
from matcher.model_files import (
    design_width,
    entry_problem,
    estimator_problem,
    foreign_classes,
    index_problem,
    skops_schema,
)

HW_NUMERIC = ("cpu_cores", "peak_tflops", "memory_bandwidth_gbps", "memory_gb", "device_count")
# The hardware number a speed-following metric is scaled by: the first that every hardware of the
# training rows has (a catalog gives GPUs a peak, CPU profiles often only cores).
SCALES = ("peak_tflops", "cpu_cores")
COMPLEXITY = ("parameters", "flops_per_sample")
MODEL_METRICS = NAMES
# Types in our .skops files beyond skops' default-trusted scikit-learn/numpy types. Anything else
# in a file is refused: a models folder is data, not code.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


def is_gpu(spec: Any) -> bool:
    return spec is not None and str(spec.accelerator_type).lower() != "cpu"


def hardware_features(hardware: Iterable[str], catalog: Mapping[str, Any]) -> pd.DataFrame:
    """hw_* feature columns for each hardware name; NaN where the catalog does not know a number."""
    rows = []
    for name in hardware:
        spec = catalog.get(str(name))
        row: dict[str, Any] = {f"hw_{k}": (float(getattr(spec, k)) if spec is not None and getattr(spec, k) is not None
                                          else np.nan) for k in HW_NUMERIC}
        row["hw_is_gpu"] = float(is_gpu(spec)) if spec is not None else np.nan
        row["hw_accelerator_type"] = str(spec.accelerator_type) if spec is not None else "unknown"
        rows.append(row)
    return pd.DataFrame(rows)


def _slog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _log_scale(X: pd.DataFrame, kind: str) -> np.ndarray:
    """log of the hardware number `kind` (SCALES) per row; NaN where unknown or not positive."""
    col = f"hw_{kind}"
    v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if col in X \
        else np.full(len(X), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)


def _pick_scale(X: pd.DataFrame) -> str | None:
    for kind in SCALES:
        if len(X) and np.isfinite(_log_scale(X, kind)).all():
            return kind
    return None


def _feature_spec(X: pd.DataFrame) -> dict[str, Any]:
    numeric, categorical = [], {}
    for col in X.columns:
        if col == "hardware":
            continue
        if not (col.startswith("hw_") or col.startswith(CFG) or col in COMPLEXITY):
            continue
        s = X[col]
        if s.isna().all():
            continue
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            numeric.append(col)
        else:
            categorical[col] = sorted({str(v) for v in s.dropna()})
    return {"numeric": sorted(numeric), "categorical": dict(sorted(categorical.items()))}


def _design(X: pd.DataFrame, spec: Mapping[str, Any]) -> np.ndarray:
    """The design matrix. Missing numbers become 0 after the log transform (hw_is_gpu tells a CPU's
    unknown peak TFLOP/s from a small one); unseen categories are all-zero rows of the one-hot."""
    cols = []
    for col in spec["numeric"]:
        v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan) if col in X else np.full(len(X), np.nan)
        cols.append(np.nan_to_num(_slog(v), nan=0.0))
    for col, levels in spec["categorical"].items():
        v = X[col].astype(str).to_numpy() if col in X else np.full(len(X), "")
        for lev in levels:
            cols.append((v == lev).astype(float))
    if not cols:
        return np.zeros((len(X), 1))
    return np.column_stack(cols)


# ----------------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------------


def _conformal(scores: np.ndarray, alpha: float) -> tuple[float, bool]:
    """One-sided split-conformal quantile of `scores`; (q, guaranteed). With fewer than
    ceil(1/alpha) - 1 scores the (1-alpha) guarantee needs a larger sample; we then use the largest
    score and say so."""
    n = len(scores)
    if n == 0:
        return math.nan, False
    k = math.ceil((n + 1) * (1 - alpha))
    s = np.sort(scores)
    if k <= n:
        return max(float(s[k - 1]), 0.0), True
    return max(float(s[-1]), 0.0), False


def _coverage(scores: np.ndarray, groups: np.ndarray, alpha: float) -> float | None:
    """The share of held-out truths inside their band, each band calibrated without its own group:
    for every group, the conformal quantile of the other groups' out-of-fold scores, and whether
    the group's scores fall under it. A 90% band should hold about 90% (fewer: the band is too
    narrow for this data; it is reported, not corrected). None with fewer than 2 groups."""
    uniq = np.unique(groups)
    if len(uniq) < 2:
        return None
    inside = []
    for g in uniq:
        mine = groups == g
        q, _ = _conformal(scores[~mine], alpha)
        inside.append(scores[mine] <= q + 1e-12)
    return float(np.concatenate(inside).mean())


def _selection_error(cv: Mapping[str, Any]) -> float:
    """What the scale is chosen by: the leave-one-hardware-out error, else the held-out one."""
    for regime in ("loho", "heldout_config"):
        mdape = cv.get(regime, {}).get("mdape")
        if mdape is not None and math.isfinite(mdape):
            return float(mdape)
    return math.inf


def _errors(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    ape = np.abs(pred - y) / np.abs(y)
    return {"mdape": float(np.median(ape)), "within10": float(np.mean(ape <= 0.10)), "n": int(len(y))}


_REGIMES = {"heldout_config": "seen", "loho": "new"}


class PerformanceModel(RegressorMixin, BaseEstimator):
    """Predicts one metric. `X` is a DataFrame with a `hardware` column, hw_* features
    (hardware_features), cfg_* columns and optional complexity columns; `y` the metric.

    estimator: "gbr" (GradientBoostingRegressor, depth 2, 100 trees, learning rate 0.1), "ridge"
    (standardised ridge regression on the log features: a power law, which extrapolates smoothly
    beyond the measured range), or "auto" (default). "auto" uses ridge for hardware the model was
    not fitted on: trees cannot extrapolate, and would predict an 8-core machine like the largest
    one measured. For hardware it was fitted on, "auto" uses whichever of gbr and ridge predicted
    held-out configurations better in the cross-validation (`select`; without it, gbr). Trees win
    where a hyperparameter acts non-smoothly (threads beyond the cores); the power law wins on a
    few batch sizes per GPU (Gavel).
    Each regime is scored and calibrated with its own estimator: held-out configurations for the
    first, leave-one-hardware-out for the second. The held-out-configuration error of a selected
    estimator is the better of two, so it is slightly optimistic.
    scale: fit speed-following metrics relative to the hardware's peak FLOP/s or cores (module doc).
    alpha: miscoverage of the one-sided band."""

    def __init__(self, metric: str = "latency_p99_ms", estimator: str = "auto", alpha: float = 0.1,
                 n_splits: int = 5, random_state: int = 0, scale: bool = True, select: bool = True):
        self.metric = metric
        self.estimator = estimator
        self.alpha = alpha
        self.n_splits = n_splits
        self.random_state = random_state
        self.scale = scale
        self.select = select

    # --- helpers -------------------------------------------------------------------------------
    def _kind(self, regime: str) -> str:
        if self.estimator == "auto":
            return getattr(self, "seen_kind_", "gbr") if regime == "seen" else "ridge"
        return self.estimator

    def _offset(self, X: pd.DataFrame, scale: str | None, fill: float) -> np.ndarray:
        """What the scale contributes on the fitted scale: speed x log(peak or cores). Hardware
        without the number gets `fill` (the training rows' median), and answers abstain on it."""
        if not scale:
            return np.zeros(len(X))
        v = _log_scale(X, scale)
        return BY_NAME[self.metric].speed * np.where(np.isfinite(v), v, fill)

    def _make(self, kind: str):
        if kind == "gbr":
            return GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.1,
                                             random_state=self.random_state)
        if kind == "ridge":
            return make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        raise ModelError(f"estimator must be 'auto', 'gbr' or 'ridge', got {self.estimator!r}")

    def _to_t(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.log_ else y

    def _from_t(self, t: np.ndarray) -> np.ndarray:
        return np.exp(t) if self.log_ else t

    def _cv(self, F: np.ndarray, t: np.ndarray, groups: np.ndarray, splitter, kind: str) -> np.ndarray:
        """Out-of-fold predictions on the fitted scale."""
        out = np.full(len(t), np.nan)
        for train, test in splitter.split(F, t, groups):
            est = clone(self._make(kind)).fit(F[train], t[train])
            out[test] = est.predict(F[test])
        return out

    # --- API -----------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Sequence[float]) -> PerformanceModel:
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        X, y = X.loc[ok].reset_index(drop=True), y[ok]
        if len(y) == 0:
            raise ModelError(f"{self.metric}: no finite values to fit on")
        if self.metric not in BY_NAME:
            raise ModelError(f"metric must be one of {sorted(BY_NAME)}, got {self.metric!r}")
        if self.estimator not in ("auto", "gbr", "ridge"):
            raise ModelError(f"estimator must be 'auto', 'gbr' or 'ridge', got {self.estimator!r}")
        self.side_ = BY_NAME[self.metric].side
        self.log_ = bool(not BY_NAME[self.metric].fraction and (y > 0).all())
        self.spec_ = _feature_spec(X)
        self.hardware_seen_ = sorted(set(X["hardware"].astype(str)))
        self.gpu_classes_ = sorted({int(v) for v in X.get("hw_is_gpu", pd.Series(dtype=float)).dropna()})
        self.n_ = int(len(y))
        F = _design(X, self.spec_)
        scale = _pick_scale(X) if self.scale and self.log_ and BY_NAME[self.metric].speed else None
        # Scaled and unscaled, each cross-validated; the scale stays where it predicts hardware it
        # was not fitted on at least as well. Peak FLOP/s carries GPUs (Gavel, MLPerf), but two
        # emulated CPU profiles on one host are no faster with twice the cores for a tiny model.
        tried = [self._cross_validate(X, y, F, kind) for kind in ([scale, None] if scale else [None])]
        best = min(tried, key=lambda r: (_selection_error(r["cv"]), tried.index(r)))
        for key, value in best.items():
            setattr(self, f"{key}_", value)
        if len(tried) > 1 and "mdape" in self.cv_.get("loho", {}):
            self.cv_["loho"]["mdape_by_scale"] = {str(r["scale"] or "none"): r["cv"]["loho"].get("mdape")
                                                  for r in tried}
        t = self._to_t(y) - self._offset(X, self.scale_, self.scale_fill_)
        with warnings.catch_warnings(), config_context(skip_parameter_validation=True, assume_finite=True):
            warnings.simplefilter("ignore")
            seen = self._make(self._kind("seen")).fit(F, t)
            same = self._kind("new") == self._kind("seen")
            self.estimators_ = {"seen": seen, "new": seen if same else self._make(self._kind("new")).fit(F, t)}
        return self

    def _cross_validate(self, X: pd.DataFrame, y: np.ndarray, F: np.ndarray, scale: str | None) -> dict[str, Any]:
        """Errors, bands and the estimator on measured hardware, with the target scaled by `scale`."""
        fill = float(np.median(_log_scale(X, scale))) if scale else 0.0
        out: dict[str, Any] = {"scale": scale, "scale_fill": fill, "seen_kind": "gbr", "cv": {},
                               "q": {}, "guaranteed": {}, "oof": {}}
        off = self._offset(X, scale, fill)
        t = self._to_t(y) - off
        cfg_groups = config_keys(X).to_numpy(dtype=str)
        hw_groups = X["hardware"].astype(str).to_numpy()
        for name, groups, what in (("heldout_config", cfg_groups, "configuration"),
                                   ("loho", hw_groups, "hardware type")):
            n_groups = len(set(groups))
            if n_groups < 2:
                out["cv"][name] = {"missing": f"only {n_groups} {what} measured; needs >= 2"}
                out["q"][name] = math.nan
                out["guaranteed"][name] = False
                continue
            splitter = (GroupKFold(n_splits=min(self.n_splits, n_groups)) if name == "heldout_config"
                        else LeaveOneGroupOut())
            kinds = [self._kind(_REGIMES[name])]
            if name == "heldout_config" and self.estimator == "auto":
                kinds = ["gbr", "ridge"] if self.select else ["gbr"]
            # The design matrix is ours and finite: skip sklearn's per-tree input checks (3x faster).
            with warnings.catch_warnings(), config_context(skip_parameter_validation=True, assume_finite=True):
                warnings.simplefilter("ignore")  # tiny data: sklearn may warn about degenerate folds
                tried = {k: self._cv(F, t, groups, splitter, k) for k in kinds}
            errors = {k: _errors(y, self._from_t(oof + off)) for k, oof in tried.items()}
            kind = min(kinds, key=lambda k: (errors[k]["mdape"], kinds.index(k)))
            if name == "heldout_config":
                out["seen_kind"] = kind
            oof = tried[kind]
            cv = {**errors[kind], "folds": int(splitter.get_n_splits(F, t, groups)), "estimator": kind}
            if len(kinds) > 1:
                cv["mdape_by_estimator"] = {k: e["mdape"] for k, e in errors.items()}
            scores = (t - oof) if self.side_ == "upper" else (oof - t)
            out["q"][name], out["guaranteed"][name] = _conformal(scores, self.alpha)
            cv["coverage"] = _coverage(scores, groups, self.alpha)
            out["cv"][name] = cv
            # Out-of-fold (truth, prediction, bound) of this fit, for the report's predicted-vs-measured
            # plot; not saved with the model (a loaded model has none).
            sign = 1.0 if self.side_ == "upper" else -1.0
            out["oof"][name] = (y, self._from_t(oof + off), self._from_t(oof + off + sign * out["q"][name]))
        return out

    def predict(self, X: pd.DataFrame, return_bound: bool = False):
        """Point predictions; with return_bound=True, (point, bound) where bound is the
        conservative side (upper for latency/energy/power, lower for throughput/accuracy), NaN
        when no residuals exist to calibrate it."""
        F = _design(X, self.spec_)
        seen = X["hardware"].astype(str).isin(self.hardware_seen_).to_numpy() if "hardware" in X else np.ones(len(X), bool)
        t = np.empty(len(X))
        for regime, mask in (("seen", seen), ("new", ~seen)):
            if mask.any():
                t[mask] = self.estimators_[regime].predict(F[mask])
        t += self._offset(X, self.scale_, self.scale_fill_)
        fraction = BY_NAME[self.metric].fraction
        point = self._from_t(t)
        if fraction:
            point = np.clip(point, 0.0, 1.0)
        if not return_bound:
            return point
        q = np.where(seen, self.q_["heldout_config"], self.q_["loho"])
        sign = 1.0 if self.side_ == "upper" else -1.0
        bound = self._from_t(t + sign * q)
        if fraction:
            bound = np.clip(bound, 0.0, 1.0)
        return point, bound

    # --- persistence of the non-estimator state -------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"params": self.get_params(), "side": self.side_, "log": self.log_, "spec": self.spec_,
                "hardware_seen": self.hardware_seen_, "gpu_classes": self.gpu_classes_, "n": self.n_,
                "cv": self.cv_, "q": {k: (None if math.isnan(v) else v) for k, v in self.q_.items()},
                "guaranteed": self.guaranteed_, "scale": self.scale_, "scale_fill": self.scale_fill_,
                "seen_kind": self.seen_kind_}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], estimator: Any) -> PerformanceModel:
        m = cls(**state["params"])
        m.side_, m.log_, m.spec_ = state["side"], state["log"], state["spec"]
        m.hardware_seen_, m.gpu_classes_, m.n_ = state["hardware_seen"], state["gpu_classes"], state["n"]
        m.cv_ = state["cv"]
        m.q_ = {k: (math.nan if v is None else float(v)) for k, v in state["q"].items()}
        m.guaranteed_ = state["guaranteed"]
        # Files written before scaling and selection existed: unscaled, gbr on measured hardware.
        m.scale_, m.scale_fill_ = state.get("scale"), float(state.get("scale_fill") or 0.0)
        m.seen_kind_ = state.get("seen_kind", "gbr")
        m.estimators_ = {"seen": estimator["seen"], "new": estimator.get("new", estimator["seen"])}
        return m

    def persisted_estimators(self) -> dict[str, Any]:
        """What goes into the .skops file: each distinct fitted estimator once."""
        if self.estimators_["new"] is self.estimators_["seen"]:
            return {"seen": self.estimators_["seen"]}
        return dict(self.estimators_)

    @property
    def band_method(self) -> str:
        kinds = self._kind("seen") if self._kind("seen") == self._kind("new") else \
            f"{self._kind('seen')} on measured hardware, {self._kind('new')} on new hardware"
        scaled = f", relative to {self.scale_.replace('_', ' ')}" if self.scale_ else ""
        return (f"cross-conformal one-sided {int(round((1 - self.alpha) * 100))}% "
                f"({'log' if self.log_ else 'linear'} scale{scaled}, {kinds})")


# ----------------------------------------------------------------------------------------------
# Training tables from result rows
# ----------------------------------------------------------------------------------------------


def _target_rows(rows: pd.DataFrame, metric: str, task: str) -> tuple[pd.DataFrame, np.ndarray]:
    # The rows a candidate's number is the median of, so that a model predicts what a measured
    # candidate would state. candidates_from_results picks a latency scenario per (hardware,
    # configuration); here one scenario serves the whole asset, so the target means one thing.
    spec = BY_NAME[metric]
    sel, _ = measured_rows(rows, spec, task)
    return sel, numeric(sel, spec.row_column)


def training_table(rows: pd.DataFrame, catalog: Mapping[str, Any], metric: str, task: str = "infer"
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """(X, y) for one metric from the ok rows of one asset: one row per measured repeat."""
    sel, y = _target_rows(rows, metric, task)
    keep = np.isfinite(y)
    sel, y = sel.loc[keep], y[keep]
    cfg = config_columns(rows)
    X = pd.concat([sel[["hardware", *cfg]].reset_index(drop=True),
                   hardware_features(sel["hardware"].astype(str), catalog)], axis=1)
    for c in COMPLEXITY:
        if c in sel and pd.to_numeric(sel[c], errors="coerce").notna().any():
            X[c] = pd.to_numeric(sel[c], errors="coerce").to_numpy()
    return X, y


# ----------------------------------------------------------------------------------------------
# ModelSet: all models of a results store
# ----------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


@dataclass
class ModelSet:
    models: dict[tuple[str, str], PerformanceModel] = field(default_factory=dict)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (asset, metric) -> why no model
    configs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # asset -> cfg_ dicts measured
    complexity: dict[str, dict[str, float]] = field(default_factory=dict)  # asset -> parameters, FLOPs
    task: str = "infer"

    def assets(self) -> list[str]:
        return sorted({a for a, _ in self.models} | set(self.configs))

    def summary(self) -> list[dict[str, Any]]:
        """One row per (asset, metric): n and the cross-validated errors (fractions, not %)."""
        out = []
        for (asset, metric), m in sorted(self.models.items()):
            hc, lo = m.cv_.get("heldout_config", {}), m.cv_.get("loho", {})
            notes = [v["missing"] for v in (hc, lo) if "missing" in v]
            notes += [f"{k}: too few residuals for a {int(round((1 - m.alpha) * 100))}% guarantee, bound = largest"
                      for k, g in m.guaranteed_.items() if not g and not math.isnan(m.q_.get(k, math.nan))]
            out.append({"asset": asset, "metric": metric, "n": m.n_,
                        "mdape_heldout_config": hc.get("mdape"), "within10_heldout_config": hc.get("within10"),
                        "mdape_loho": lo.get("mdape"), "within10_loho": lo.get("within10"),
                        "coverage_heldout_config": hc.get("coverage"), "coverage_loho": lo.get("coverage"),
                        "band": int(round((1 - m.alpha) * 100)), "note": "; ".join(notes)})
        for (asset, metric), why in sorted(self.skipped.items()):
            out.append({"asset": asset, "metric": metric, "n": 0, "mdape_heldout_config": None,
                        "within10_heldout_config": None, "mdape_loho": None, "within10_loho": None,
                        "coverage_heldout_config": None, "coverage_loho": None, "band": None, "note": why})
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        import skops.io as sio

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        entries = []
        for (asset, metric), m in sorted(self.models.items()):
            fname = f"{_safe(asset)}__{_safe(metric)}.skops"
            tmp = d / f".{fname}.tmp"
            sio.dump(m.persisted_estimators(), tmp, compression=zipfile.ZIP_DEFLATED)
            os.replace(tmp, d / fname)
            entries.append({"asset": asset, "metric": metric, "file": fname, "state": m.state()})
        index = {"format": "benchmatch-modelset", "version": FORMAT_VERSION, "task": self.task,
                 "models": entries,
                 "skipped": [{"asset": a, "metric": k, "reason": r} for (a, k), r in sorted(self.skipped.items())],
                 "configs": self.configs, "complexity": self.complexity}
        tmp = d / ".modelset.json.tmp"
        tmp.write_text(json.dumps(index, indent=1, default=_json_default))
        os.replace(tmp, d / "modelset.json")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ModelSet:
        """Read a saved model set. A models folder is data from outside: every file is checked
        before scikit-learn's native code can touch it (skops_schema, foreign_classes,
        estimator_problem), and the first bad one is refused with a ModelError naming it."""
        import skops.io as sio

        d = Path(directory)
        index_path = d / "modelset.json"
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{index_path}: no model set here; run `benchmatch train` first") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelError(f"{index_path}: not valid JSON ({exc})") from None
        if not isinstance(index, dict) or not isinstance(index.get("models", []), list):
            raise ModelError(f"{index_path}: not a benchmatch model set (expected an object with a 'models' list)")
        if index.get("format") != "benchmatch-modelset" or index.get("version") != FORMAT_VERSION:
            raise ModelError(f"{index_path}: not a benchmatch model set of version {FORMAT_VERSION}")
        problem = index_problem(index)
        if problem:
            raise ModelError(f"{index_path}: {problem}")
        ms = cls(task=index.get("task", "infer"), configs=index.get("configs", {}),
                 complexity=index.get("complexity", {}))
        for i, e in enumerate(index["models"]):
            problem = entry_problem(e, set(PerformanceModel().get_params()), set(_REGIMES), SCALES)
            if problem:
                raise ModelError(f"{index_path}: models[{i}]: {problem}")
            path = d / e["file"]
            if Path(e["file"]).name != e["file"] or e["file"] in ("", ".", ".."):
                raise ModelError(f"{index_path}: model file name {e['file']!r} must not contain a folder")
            schema = skops_schema(path, index_path)
            try:
                untrusted = sio.get_untrusted_types(file=path)
            except Exception as exc:
                raise ModelError(f"{path}: not a skops file ({exc})") from None
            extra = sorted(set(untrusted) - set(TRUSTED_TYPES))
            if extra:
                raise ModelError(f"{path}: refuses to load types outside the trusted list: {extra}")
            foreign = foreign_classes(schema)
            if foreign:
                raise ModelError(f"{path}: refused: holds types a benchmatch model is not made of: {foreign[:10]}")
            try:
                est = sio.load(path, trusted=TRUSTED_TYPES)
            except Exception as exc:  # whatever a malformed file makes skops or scikit-learn raise
                raise ModelError(f"{path}: could not be loaded ({type(exc).__name__}: {exc})") from None
            problem = estimator_problem(est, design_width(e["state"]["spec"]))
            if problem:
                raise ModelError(f"{path}: refused: {problem}; retrain with `benchmatch train`")
            try:
                ms.models[(e["asset"], e["metric"])] = PerformanceModel.from_state(e["state"], est)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{index_path}: models[{i}]: state unusable ({type(exc).__name__}: {exc})") from None
        for s in index.get("skipped", []):
            ms.skipped[(s["asset"], s["metric"])] = s["reason"]
        return ms


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def train_models(
    df: pd.DataFrame,
    catalog: Mapping[str, Any],
    *,
    assets: Sequence[str] | None = None,
    task: str = "infer",
    metrics: Sequence[str] = MODEL_METRICS,
    estimator: str = "auto",
    alpha: float = 0.1,
    scale: bool = True,
    select: bool = True,
) -> ModelSet:
    """Fit one PerformanceModel per (asset, metric) on the ok rows of `df` (result rows).
    scale=False, select=False: the models as they were before hardware scaling and estimator
    selection (the perf scripts' baseline)."""
    ms = ModelSet(task=task)
    if df is None or df.empty or "asset" not in df:
        return ms
    names = sorted(set(df["asset"].dropna().astype(str))) if assets is None else list(assets)
    for asset in names:
        try:
            rows, _ = select_rows(df, asset, task)
        except ModelError:
            raise
        except ValueError as exc:
            for metric in metrics:
                ms.skipped[(asset, metric)] = str(exc)
            continue
        cfg = config_columns(rows)
        ms.configs[asset] = ([config_dict(r, cfg, strip=False) for r in rows[cfg].drop_duplicates().to_dict("records")]
                             if cfg else [{}])
        ms.complexity[asset] = {c: float(pd.to_numeric(rows[c], errors="coerce").median())
                                for c in COMPLEXITY if c in rows and pd.to_numeric(rows[c], errors="coerce").notna().any()}
        for metric in metrics:
            X, y = training_table(rows, catalog, metric, task)
            if len(y) < 2:
                ms.skipped[(asset, metric)] = f"{len(y)} measured value(s); a model needs >= 2"
                continue
            ms.models[(asset, metric)] = PerformanceModel(metric, estimator=estimator, alpha=alpha, scale=scale,
                                                          select=select).fit(X, y)
    return ms


# A model answers only where its cross-validated median absolute % error is at most this: beyond it,
# a prediction differs from the truth by more than the differences between the options it ranks.
ABSTAIN_MDAPE = 0.25
DECISIVE = ("latency_p99_ms", "throughput_qps")  # what sizes and screens a replica


def predict_candidates(
    modelset: ModelSet,
    catalog: Mapping[str, Any],
    configs: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None,
    hardware_names: Sequence[str] | None = None,
    *,
    asset: str | None = None,
) -> pd.DataFrame:
    """Predicted candidate rows (basis="predicted") for every hardware x configuration.

    The metric columns hold the conservative bound (what the MILP constrains) and `<metric>_point`
    the point estimate. configs default to those measured for the asset; hardware to the catalog
    entries of a class (CPU / GPU) the asset was measured on: extrapolating from CPUs to a GPU, or
    back, is not a prediction we can vouch for, so those are left out (listed in
    `df.attrs["skipped_hardware"]`). Merge with measured rows via merge_candidates()."""
    assets = modelset.assets()
    if asset is None:
        if len(assets) != 1:
            raise ModelError(f"the model set covers assets {assets}; say which one")
        asset = assets[0]
    models = {metric: m for (a, metric), m in modelset.models.items() if a == asset}
    if not models:
        raise ModelError(f"no performance model for asset '{asset}' (models exist for {assets})")
    if configs is None:
        configs = modelset.configs.get(asset, [{}])
    cfg_df = pd.DataFrame(list(configs)) if not isinstance(configs, pd.DataFrame) else configs.copy()
    cfg_df = cfg_df.rename(columns={c: f"{CFG}{c}" for c in cfg_df.columns if not str(c).startswith(CFG)})
    if cfg_df.empty and len(cfg_df.columns) == 0:
        cfg_df = pd.DataFrame([{}])
    classes = set().union(*(m.gpu_classes_ for m in models.values()))
    names = list(hardware_names) if hardware_names is not None else sorted(catalog)
    skipped = {}
    usable = []
    for h in names:
        spec = catalog.get(h)
        if spec is None:
            skipped[h] = "not in the hardware catalog"
        elif int(is_gpu(spec)) not in classes:
            skipped[h] = f"{'GPU' if is_gpu(spec) else 'CPU'} hardware; the asset was only measured on " \
                         f"{'GPUs' if 1 in classes else 'CPUs'}"
        elif spec.price_per_hour_usd is None:
            skipped[h] = "no price in the catalog"
        else:
            usable.append(h)
    grid = pd.DataFrame([{"hardware": h, **r} for h in usable for r in cfg_df.to_dict("records")])
    if grid.empty:
        out = pd.DataFrame(columns=list(REQUIRED))
        out.attrs["skipped_hardware"] = skipped
        return out
    X = pd.concat([grid.reset_index(drop=True), hardware_features(grid["hardware"], catalog)], axis=1)
    for c, v in modelset.complexity.get(asset, {}).items():
        X[c] = v
    out = grid.copy()
    out.insert(0, "asset", asset)
    out["price_per_hour_usd"] = [float(catalog[h].price_per_hour_usd) for h in grid["hardware"]]
    out["devices"] = [float(catalog[h].devices) for h in grid["hardware"]]
    methods = set()
    for metric in MODEL_METRICS:
        m = models.get(metric)
        if m is None:
            out[metric] = np.nan
            continue
        point, bound = m.predict(X, return_bound=True)
        out[metric] = bound
        out[f"{metric}_point"] = point
        methods.add(m.band_method)
    out["basis"] = "predicted"
    out["band_method"] = "; ".join(sorted(methods))
    # Every prediction is returned, each with why an answer must not rest on it (None: it may):
    # `suggest` explores exactly these, answers drop them (without_abstained).
    reasons = abstentions(out, models, modelset.configs.get(asset, []))
    for metric in DECISIVE:
        m = models.get(metric)
        kind = getattr(m, "scale_", None)
        if kind:
            unknown = ~np.isfinite(_log_scale(X, kind))
            reasons = [r if r is not None or not u else
                       f"{metric} model scales by {kind}, which the catalog does not give for {h}"
                       for r, u, h in zip(reasons, unknown, out["hardware"], strict=True)]
    out["abstain_reason"] = reasons
    out.attrs["skipped_hardware"] = skipped
    return out.reset_index(drop=True)


def without_abstained(predicted: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The predictions an answer may rest on, and 'hardware [config]: why' for the others."""
    if "abstain_reason" not in predicted.columns or predicted.empty:
        return predicted, []
    why = predicted["abstain_reason"]
    keep = why.isna() | (why.astype(str) == "") | (why.astype(str) == "None")
    withheld = [f"{r['hardware']} [{_cfg_text(r)}]: {r['abstain_reason']}" for _, r in predicted[~keep].iterrows()]
    return predicted[keep].drop(columns=["abstain_reason"]).reset_index(drop=True), withheld


def _cfg_text(row: pd.Series) -> str:
    return ", ".join(f"{c[len(CFG):]}={clean_value(row[c])}" for c in sorted(row.index)
                     if str(c).startswith(CFG) and pd.notna(row[c]))


def abstentions(rows: pd.DataFrame, models: Mapping[str, PerformanceModel],
                measured: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Why each predicted row must not answer (None: it may). A model answers only where its own
    cross-validation says it can: on measured hardware within ABSTAIN_MDAPE held-out-configuration
    error, on new hardware within ABSTAIN_MDAPE leave-one-hardware-out error, and for numeric
    hyperparameters inside the measured range (a tree model is flat beyond it, a linear one keeps
    going: neither is evidence)."""
    ranges: dict[str, tuple[float, float]] = {}
    for key in {k for c in measured for k in c}:
        vals = [v for c in measured if isinstance(v := c.get(key), int | float) and not isinstance(v, bool)]
        if vals:
            ranges[key if str(key).startswith(CFG) else f"{CFG}{key}"] = (min(vals), max(vals))
    out: list[str | None] = []
    for _, row in rows.iterrows():
        reason = None
        for col, (lo, hi) in ranges.items():
            v = row.get(col)
            if isinstance(v, int | float) and not isinstance(v, bool) and not (lo <= v <= hi):
                reason = f"{col[len(CFG):]}={v} is outside the measured range {lo:g}..{hi:g}"
                break
        for metric in DECISIVE:
            m = models.get(metric)
            if reason is not None or m is None:
                continue
            regime, label = (("heldout_config", "held-out-configuration") if str(row["hardware"]) in m.hardware_seen_
                             else ("loho", "leave-one-hardware-out"))
            cv = m.cv_.get(regime, {})
            mdape = cv.get("mdape")
            if mdape is None or not math.isfinite(mdape):
                reason = f"{metric} model cannot be checked here ({cv.get('missing', 'no cross-validation')})"
            elif mdape > ABSTAIN_MDAPE:
                reason = (f"{metric} model too uncertain here: {label} MdAPE {mdape:.0%} > {ABSTAIN_MDAPE:.0%}; "
                          "measure this pair instead (benchmatch suggest)")
        out.append(reason)
    return out
