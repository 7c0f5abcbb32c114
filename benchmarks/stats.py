"""Reproducibility statistics over result rows: median and spread per group, flags, baselines.

A group is one measured configuration: (asset, task, scenario, hardware, every `cfg_*` column);
its rows are the repeats. Per group and metric `summarize` gives

- `n`: repeats with a value (missing values are left out, never counted as 0),
- `median`, `q25`, `q75` and `iqr = q75 - q25` (numpy's linear interpolation),
- `cv = std / mean` (sample std, ddof=1),
- `ci_low`, `ci_high`, `ci_level`: a distribution-free confidence interval of the median from
  order statistics (the binomial method; see `median_ci`). No resampling, so no seed and the same
  rows always give the same interval,
- `rel_iqr = iqr / median` and `noisy = rel_iqr > 0.10` (DESIGN.md's rule).

With fewer than two repeats there is no spread: iqr, cv, the interval and `noisy` are missing.

`baseline_ratios` adds each group's median relative to a reference measurement of the same
(asset, task, scenario, metric); `reference_rows` documents the rule. `flags` lists rows that must
not be read as clean measurements (LoadGen INVALID, background load, failed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from results.schema import CONFIG_PREFIX

BASE_GROUP = ("asset", "task", "scenario", "hardware")
DEFAULT_METRICS = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "throughput_samples_per_s",
    "accuracy",
    "time_to_accuracy_s",
    "energy_per_sample_j",
    "peak_memory_mb",
)
NOISY_THRESHOLD = 0.10
# Metrics where more is better; every other metric is read as "less is better" (latency, energy...).
HIGHER_IS_BETTER = frozenset({"throughput_samples_per_s", "accuracy"})

STAT_COLUMNS = ("metric", "n", "median", "q25", "q75", "iqr", "cv", "ci_low", "ci_high", "ci_level",
                "rel_iqr", "noisy")


def group_columns(df: pd.DataFrame) -> list[str]:
    """The default grouping: asset, task, scenario, hardware and every `cfg_*` column present."""
    base = [c for c in BASE_GROUP if c in df.columns]
    return base + sorted(c for c in df.columns if c.startswith(CONFIG_PREFIX))


def present_metrics(df: pd.DataFrame, metrics: Iterable[str] = DEFAULT_METRICS) -> list[str]:
    """The metrics of `metrics` that have at least one value in `df`."""
    return [m for m in metrics if m in df.columns and pd.to_numeric(df[m], errors="coerce").notna().any()]


def _binom_cdf(k: int, n: int) -> float:
    """P(B <= k) for B ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2.0**n


def median_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free confidence interval of the median: (low, high, achieved coverage).

    The sample median's rank among n sorted values is Binomial(n, 1/2), so [x_(l), x_(n+1-l)] (1-based
    order statistics) covers the true median with probability 1 - 2 P(B <= l-1). We take the largest l
    whose coverage is still >= `confidence`. Below n = 6 no pair reaches 95 %: the interval is then
    [min, max] and its coverage is what it is (n=5: 93.75 %, n=3: 75 %), reported rather than hidden.
    Fewer than two values: no interval (NaN).
    """
    x = np.sort(np.asarray(values, dtype=float))
    x = x[~np.isnan(x)]
    n = len(x)
    if n < 2:
        return math.nan, math.nan, math.nan
    best = 1
    for lo in range(1, n // 2 + 1):
        if 1.0 - 2.0 * _binom_cdf(lo - 1, n) >= confidence:
            best = lo
        else:
            break
    coverage = 1.0 - 2.0 * _binom_cdf(best - 1, n)
    return float(x[best - 1]), float(x[n - best]), coverage


def describe(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """The statistics of one group's values (one metric): see the module docstring."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return {**out, **dict.fromkeys(STAT_COLUMNS[2:], math.nan), "noisy": pd.NA}
    med = float(np.median(x))
    if n < 2:
        return {**out, "median": med, "q25": math.nan, "q75": math.nan, "iqr": math.nan, "cv": math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan, "rel_iqr": math.nan,
                "noisy": pd.NA}
    q25, q75 = (float(v) for v in np.percentile(x, [25, 75]))
    iqr = q75 - q25
    mean = float(np.mean(x))
    cv = float(np.std(x, ddof=1) / mean) if mean != 0 else math.nan
    lo, hi, level = median_ci(x, confidence)
    rel = iqr / med if med != 0 else math.nan
    noisy: Any = bool(rel > NOISY_THRESHOLD) if not math.isnan(rel) else pd.NA
    return {**out, "median": med, "q25": q25, "q75": q75, "iqr": iqr, "cv": cv, "ci_low": lo,
            "ci_high": hi, "ci_level": level, "rel_iqr": rel, "noisy": noisy}


def summarize(
    df: pd.DataFrame,
    by: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    only_ok: bool = True,
) -> pd.DataFrame:
    """One row per (group, metric) with n, median, q25, q75, iqr, cv, ci_low/high/level, rel_iqr, noisy.

    `by` defaults to `group_columns(df)`, `metrics` to the `DEFAULT_METRICS` that have values.
    Failed rows are left out (`only_ok`): they carry no metrics, and counting them would shrink n.
    Groups whose metric is missing in every repeat (Offline latencies) get no row for that metric.
    """
    by = list(by) if by is not None else group_columns(df)
    metrics = list(metrics) if metrics is not None else present_metrics(df)
    cols = by + list(STAT_COLUMNS)
    if df.empty or not metrics:
        return pd.DataFrame(columns=cols)
    if only_ok and "status" in df.columns:
        df = df[df["status"].fillna("ok").astype(str) == "ok"]
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise KeyError(f"summarize: grouping column(s) {missing} not in the rows")
    out: list[dict[str, Any]] = []
    # dropna=False: a config column that is empty for some sweeps is a value of its own, not a reason
    # to drop the rows.
    for key, grp in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(by, key, strict=True))
        for metric in metrics:
            if metric not in grp.columns:
                continue
            values = pd.to_numeric(grp[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            stats = describe(values, confidence)
            if stats["n"] == 0:
                continue
            out.append({**ident, "metric": metric, **stats})
    res = pd.DataFrame(out, columns=cols)
    res["n"] = res["n"].astype("int64")
    res["noisy"] = res["noisy"].astype("boolean")
    return res


# ---------------------------------------------------------------- flags
def flags(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that are not clean measurements, one line per (row, reason).

    Reasons: `failed` (status failed; detail = the error), `skipped` (the configuration cannot run
    there, never measured; detail = the reason), `loadgen INVALID` (LoadGen did not accept
    the run; detail = the scenario), `background load` (other processes used > 0.5 core during the
    window; detail = load averages before/after).
    """
    ident = [c for c in ("sweep_id", "trial_id", "repeat", *BASE_GROUP) if c in df.columns]
    ident += sorted(c for c in df.columns if c.startswith(CONFIG_PREFIX))
    cols = ident + ["flag", "detail"]
    out: list[dict[str, Any]] = []
    for _, row in df.iterrows():
        base = {c: row[c] for c in ident}
        status = str(row.get("status") or "ok")
        if status == "skipped":
            out.append({**base, "flag": "skipped", "detail": str(row.get("error") or status)})
        elif status != "ok":
            out.append({**base, "flag": "failed", "detail": str(row.get("error") or status)})
        if str(row.get("loadgen_result") or "").upper() == "INVALID":
            out.append({**base, "flag": "loadgen INVALID", "detail": f"LoadGen {row.get('scenario')} run"})
        bg = row.get("env_background_load")
        if bg is not None and not pd.isna(bg) and bool(bg):
            before, after = row.get("env_loadavg_before"), row.get("env_loadavg_after")
            detail = "other processes > 0.5 core"
            if before is not None and not pd.isna(before) and after is not None and not pd.isna(after):
                detail += f"; load average {float(before):.2f} → {float(after):.2f}"
            out.append({**base, "flag": "background load", "detail": detail})
    return pd.DataFrame(out, columns=cols)


# ---------------------------------------------------------------- baselines
@dataclass(frozen=True)
class Reference:
    """Which measurement every other one is shown relative to.

    `hardware`: the reference hardware; None picks, per (asset, task, scenario), the first of
    `preferred_hardware` that was measured there, else the cheapest measured hardware (by
    `price_per_hour_usd`), else the first by name. `config`: cfg values the reference must have
    (`{"cfg_batch_size": 1}`); a cfg column not named here takes its smallest value, except
    `cfg_dtype`, `cfg_engine` and `cfg_quantization`, which take their defaults (float32, eager,
    none: REFERENCE_DEFAULTS) when measured.
    """

    hardware: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    preferred_hardware: tuple[str, ...] = ("local-1c",)


# The plain configuration a cfg column is compared against, where "smallest" would mean nothing.
REFERENCE_DEFAULTS = {"cfg_dtype": "float32", "cfg_engine": "eager", "cfg_quantization": "none"}


def _smallest(values: pd.Series, column: str) -> Any:
    vals = values.dropna().unique().tolist()
    if not vals:
        return None
    if column in REFERENCE_DEFAULTS and REFERENCE_DEFAULTS[column] in vals:
        return REFERENCE_DEFAULTS[column]
    try:
        return min(vals)
    except TypeError:  # mixed types: compare their text, deterministically
        return min(vals, key=str)


def _matches(values: pd.Series, want: Any) -> pd.Series:
    """values == want, numerically when both are numbers (16 matches 16.0 in a float column)."""
    num = pd.to_numeric(values, errors="coerce")
    if isinstance(want, int | float) and not isinstance(want, bool) and num.notna().any():
        return num == float(want)
    return values.astype(str) == str(want)


def _pick_hardware(grp: pd.DataFrame, ref: Reference) -> str | None:
    measured = set(grp["hardware"].astype(str))
    if ref.hardware is not None:
        return ref.hardware if ref.hardware in measured else None
    for hw in ref.preferred_hardware:
        if hw in measured:
            return hw
    if "price_per_hour_usd" in grp.columns:
        prices = grp.groupby("hardware")["price_per_hour_usd"].median().dropna()
        if not prices.empty:
            return str(prices.sort_values(kind="stable").index[0])
    return sorted(measured)[0] if measured else None


def reference_rows(summary: pd.DataFrame, reference: Reference | None = None) -> pd.DataFrame:
    """The reference row of `summary` for each (asset, task, scenario, metric).

    Rule: on the reference hardware (see `Reference`), the configuration with the given cfg values,
    and for every other cfg column its smallest value (float32 for cfg_dtype). If that exact
    measurement has no value for a metric, that metric has no reference and no ratio ("—").
    """
    ref = reference or Reference()
    scope = [c for c in ("asset", "task", "scenario", "metric") if c in summary.columns]
    cfg_cols = [c for c in summary.columns if c.startswith(CONFIG_PREFIX)]
    picked: list[pd.DataFrame] = []
    if summary.empty or "hardware" not in summary.columns:
        return summary.iloc[0:0]
    for _, grp in summary.groupby([c for c in scope if c != "metric"], dropna=False, sort=True):
        hw = _pick_hardware(grp, ref)
        if hw is None:
            continue
        cand = grp[grp["hardware"].astype(str) == hw]
        for col in cfg_cols:
            want = ref.config.get(col, ref.config.get(col[len(CONFIG_PREFIX):], None))
            if want is None:
                want = _smallest(cand[col], col)
            if want is None:
                cand = cand[cand[col].isna()]
            else:
                cand = cand[_matches(cand[col], want)]
        picked.append(cand)
    if not picked:
        return summary.iloc[0:0]
    return pd.concat(picked).drop_duplicates(subset=scope, keep="first")


def baseline_ratios(summary: pd.DataFrame, reference: Reference | None = None) -> pd.DataFrame:
    """`summary` plus `ref_hardware`, `ref_config`, `ref_median` and `vs_ref = median / ref_median`.

    For throughput `vs_ref` is the speed-up over the reference (> 1 is faster); for latency it is the
    latency ratio (< 1 is faster). Rows without a reference get missing values, never 1 or 0.
    """
    out = summary.copy()
    scope = [c for c in ("asset", "task", "scenario", "metric") if c in out.columns]
    refs = reference_rows(summary, reference)
    cfg_cols = [c for c in summary.columns if c.startswith(CONFIG_PREFIX)]
    lookup: dict[tuple[Any, ...], tuple[str, str, float]] = {}
    for _, r in refs.iterrows():
        key = tuple(str(r[c]) for c in scope)
        lookup[key] = (str(r["hardware"]), config_label(r, cfg_cols), float(r["median"]))
    ref_hw, ref_cfg, ref_med = [], [], []
    for _, r in out.iterrows():
        hit = lookup.get(tuple(str(r[c]) for c in scope))
        ref_hw.append(hit[0] if hit else None)
        ref_cfg.append(hit[1] if hit else None)
        ref_med.append(hit[2] if hit else math.nan)
    out["ref_hardware"] = ref_hw
    out["ref_config"] = ref_cfg
    out["ref_median"] = pd.Series(ref_med, index=out.index, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["median"].astype(float) / out["ref_median"]
    out["vs_ref"] = ratio.where(np.isfinite(ratio))
    return out


def config_label(row: Mapping[str, Any] | pd.Series, cfg_cols: Iterable[str] | None = None) -> str:
    """`batch_size=16 dtype=float32` for a row's cfg columns (missing values left out)."""
    cols = list(cfg_cols) if cfg_cols is not None else sorted(k for k in row.keys() if str(k).startswith(CONFIG_PREFIX))
    parts = []
    for c in cols:
        v = row.get(c) if isinstance(row, Mapping) else row[c]
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{c[len(CONFIG_PREFIX):]}={v}")
    return " ".join(parts)
