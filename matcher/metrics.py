"""The metric table: every per-replica number the matcher knows, in one place.

A candidate row describes ONE replica of an asset on one (hardware, configuration). Each number it
carries is one MetricSpec in METRICS: what it is (name, unit), which side of an uncertainty band is
the conservative one, how the replicas of a mix combine it, where a result row measures it, and how
a requirement bounds it. Everything downstream reads the table instead of listing metrics itself:

* candidates.py: the columns of a candidate table and their validation, and the result rows each
  candidate number is the median of (`measured_rows`);
* models.py: one model per metric, trained on the same rows, on log scale unless a fraction;
* recommend.py: the predicted metrics of a mix (`combine`) and their band (`side`);
* screen.py: the threshold constraints (per-replica caps and floors) of the MILP;
* suggest.py: the models a requirement needs, and the optimistic side of a band.

So a new metric is one entry here plus its measurement (a result-row column written by benchmarks/),
and, if users may bound it, a field of requirements.Constraints named by `requirement`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Side = Literal["upper", "lower"]
Combine = Literal["sum", "max", "min"]
ConstraintKind = Literal["cap", "floor", "demand"]
Presence = Literal["value", "column", "optional"]

TRAIN_SCENARIO = "train"  # a training row's scenario; train candidates read every metric from it
_REPEAT_KEY = ("sweep_id", "trial_id", "repeat")


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the candidate column, the model's metric, the key in an answer's `predicted`
    unit: str  # "fraction" for a share in 0..1 (linear scale, clipped; no unit in messages)
    side: Side  # the conservative side of a band: "upper" where more is worse
    combine: Combine  # over the replicas of a mix: capacities add up, per-query figures take the worst
    row_column: str  # the result-row column (results/schema.py) it is measured as
    # infer scenarios it is read from, in order of preference (the first with a value wins); None:
    # every scenario measures it alike, so every row counts once per (sweep, trial, repeat)
    row_scenarios: tuple[str, ...] | None
    constraint: ConstraintKind | None = None  # how a requirement bounds it, if one can
    requirement: str | None = None  # the requirements.Constraints field that does
    # "value": a candidate table must have the column and a CSV row a number; "column": the column
    # must exist but may be blank (unknown); "optional": the column may be absent
    presence: Presence = "optional"
    positive: bool = False  # > 0 (a time or a rate); else >= 0
    spread: bool = False  # measured candidates carry `<name>_iqr` over repeats, shown in the answer's band
    derived_from: tuple[str, str] | None = None  # the product of these two where not measured
    # How the metric follows the hardware's speed (models.py scales predictions by it): +1 a rate
    # (more peak FLOP/s, more samples/s), -1 a time per query, 0 neither (accuracy, energy, power).
    speed: int = 0

    @property
    def fraction(self) -> bool:
        return self.unit == "fraction"

    @property
    def per_replica(self) -> bool:
        """Bounded replica by replica (the worst one used decides), rather than summed over the mix."""
        return self.combine != "sum"

    def bound(self, constraints: Any) -> float | None:
        """The requirement's value for this metric (None: unconstrained)."""
        return getattr(constraints, self.requirement) if self.requirement else None


# The latency statistics a result row records and a requirement may bound, each by its own name:
# published sets mostly report a mean or a median, and a p99 bound checked against a mean would
# pass what the SLO forbids. A candidate table needs at least one of them (LATENCY_REQUIRED).
_LATENCY_STATS = (("latency_p50_ms", "median"), ("latency_p90_ms", "90th percentile"),
                  ("latency_p95_ms", "95th percentile"), ("latency_p99_ms", "99th percentile"),
                  ("latency_p999_ms", "99.9th percentile"), ("latency_mean_ms", "mean"))


def _latency(name: str) -> MetricSpec:
    # One query of MultiStream is one batch of cfg_batch_size samples, which is what a replica
    # serves; SingleStream (one sample per query) only for assets measured without MultiStream;
    # Server for LLM serving rows, whose query is a request (the end-to-end latency).
    return MetricSpec(name, "ms", "upper", "max", name, ("MultiStream", "SingleStream", "Server"), "cap", name,
                      positive=True, spread=True, speed=-1)


# LLM serving (benchmarks/llm): time to first token and time per output token, per request. A
# Server row holds them at the highest rate its run kept within its SLO; a request's own bounds
# are read off the row's rate curve (capacity.py), as the latency statistics are.
_TOKEN_STATS = (("ttft_p50_ms", "median time to first token"), ("ttft_p99_ms", "99th percentile time to first token"),
                ("tpot_p50_ms", "median time per output token"), ("tpot_p99_ms", "99th percentile time per output token"))


def _token_latency(name: str) -> MetricSpec:
    return MetricSpec(name, "ms", "upper", "max", name, ("Server", "Offline"), "cap", name, positive=True, spread=True,
                      speed=-1)


METRICS: tuple[MetricSpec, ...] = (
    *(_latency(name) for name, _ in _LATENCY_STATS),
    # Offline's saturated rate; a configuration measured in Server only (an imported MLPerf Server
    # result, an LLM serving run at one rate) has the rate its Server run held.
    MetricSpec("throughput_qps", "samples/s", "lower", "sum", "throughput_samples_per_s", ("Offline", "Server"),
               "demand", "throughput_qps", presence="value", positive=True, spread=True, speed=1),
    # The accuracy of a repeat does not depend on the scenario: count each repeat once.
    MetricSpec("accuracy", "fraction", "lower", "min", "accuracy", None, "floor", "accuracy", presence="column"),
    MetricSpec("energy_per_sample_j", "J", "upper", "max", "energy_per_sample_j", ("Offline",),
               "cap", "energy_per_sample_j"),
    # Average power at full load: without a power reading, energy per sample x samples per second
    # (both Offline figures) is the same quantity.
    MetricSpec("power_w", "W", "upper", "sum", "avg_power_w", ("Offline",), "cap", "max_power_w",
               derived_from=("energy_per_sample_j", "throughput_qps")),
    *(_token_latency(name) for name, _ in _TOKEN_STATS),
    # Output tokens/s of one replica: Offline's, then the capacity at the request's bounds times the
    # output tokens per request (tokens.py); a tokens/s demand is met in this unit.
    MetricSpec("output_tokens_per_s", "tokens/s", "lower", "sum", "output_tokens_per_s", ("Offline", "Server"),
               positive=True, spread=True, speed=1),
    MetricSpec("energy_per_output_token_j", "J", "upper", "max", "energy_per_output_token_j", ("Offline",),
               "cap", "energy_per_output_token_j"),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
SIDE: dict[str, Side] = {m.name: m.side for m in METRICS}
LATENCY: tuple[str, ...] = tuple(name for name, _ in _LATENCY_STATS)
LATENCY_WORDS: dict[str, str] = dict(_LATENCY_STATS)
TOKEN_LATENCY: tuple[str, ...] = tuple(name for name, _ in _TOKEN_STATS)
TOKEN_WORDS: dict[str, str] = dict(_TOKEN_STATS)
CURVE_STATS: tuple[str, ...] = LATENCY + TOKEN_LATENCY  # what a rate curve's points may record
DEFAULT_LATENCY = "latency_p99_ms"  # MLPerf's MultiStream and Server metric: the one sized for when none is named


def latency_bounds(constraints: Any) -> dict[str, float]:
    """The latency statistics a request bounds, and their bounds."""
    return {name: b for name in LATENCY if (b := getattr(constraints, name, None)) is not None}


def curve_bounds(constraints: Any) -> dict[str, float]:
    """Every bound a rate curve is read at: the latency statistics and TTFT / TPOT."""
    return {name: b for name in CURVE_STATS if (b := getattr(constraints, name, None)) is not None}


def latency_metric(constraints: Any, available: Any = None) -> str:
    """The latency statistic a request is ranked and tie-broken by: the one it bounds (the highest
    percentile when it bounds several), else p99, else the first statistic `available` (a candidate
    table) has values for."""
    bounded = latency_bounds(constraints)
    if bounded:
        # p999 > p99 > p95 > p90 > p50; a mean only when no percentile is bounded
        order = ("latency_p999_ms", "latency_p99_ms", "latency_p95_ms", "latency_p90_ms", "latency_p50_ms",
                 "latency_mean_ms")
        return next(n for n in order if n in bounded)
    if available is None or not np.isnan(metric_values(available, DEFAULT_LATENCY)).all():
        return DEFAULT_LATENCY
    return next((n for n in LATENCY if not np.isnan(metric_values(available, n)).all()), DEFAULT_LATENCY)


def numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats: NaN where a value is missing or not a number, all NaN without the column."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    series = df[col]
    if series.dtype.kind in "fiu":  # already numbers (a validated table): to_numeric would only copy slowly
        return series.to_numpy(dtype=float, na_value=np.nan, copy=True)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def metric_values(df: pd.DataFrame, name: str) -> np.ndarray:
    """A metric's column of a candidate table, derived (`derived_from`) where it was not measured.
    validate_candidates stores the derived values; this keeps unvalidated tables (solve() on a
    caller's frame, predicted rows) to the same rule."""
    return _derived(name, lambda col: numeric(df, col))


def _derived(name: str, column: Callable[[str], np.ndarray]) -> np.ndarray:
    values = column(name)
    spec = BY_NAME[name]
    if spec.derived_from is not None:
        a, b = (_derived(n, column) for n in spec.derived_from)
        values = np.where(np.isnan(values), a * b, values)
    return values


class Columns:
    """A table's number columns as float arrays, converted together on construction (one copy of
    the whole block: a column at a time cost about 25 µs each, and a fresh answer reads ~80), and
    any other column as numeric() reads it, once. The table must not change while this is used."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        block = df.select_dtypes("number")  # numpy and nullable numbers; not bool, not text
        arrays = block.to_numpy(dtype=float, na_value=np.nan).T.copy()
        self._cols: dict[Any, np.ndarray] = dict(zip(block.columns, arrays, strict=True))
        self._metrics: dict[str, np.ndarray] = {}

    def numeric(self, col: str) -> np.ndarray:
        """numeric(df, col), shared: callers must not write into it."""
        hit = self._cols.get(col)
        if hit is None:
            hit = self._cols[col] = numeric(self.df, col)
        return hit

    def metric(self, name: str) -> np.ndarray:
        """metric_values(df, name), shared: callers must not write into it."""
        hit = self._metrics.get(name)
        if hit is None:
            hit = self._metrics[name] = _derived(name, self.numeric)
        return hit


def measured_rows(rows: pd.DataFrame, spec: MetricSpec, task: str) -> tuple[pd.DataFrame, str]:
    """The result rows `spec` is read from, and their scenario ("" when read from every scenario).

    train: the training rows. infer: the rows of the first of `spec.row_scenarios` that has a value
    (the last one when none has), or every row with a value, once per (sweep, trial, repeat)."""
    scen = rows["scenario"].astype(str) if "scenario" in rows else pd.Series("", index=rows.index)
    if task == TRAIN_SCENARIO:
        sel, source = rows[scen == TRAIN_SCENARIO], TRAIN_SCENARIO
    elif spec.row_scenarios is None:
        sel, source = rows, ""
    else:
        for source in spec.row_scenarios:
            sel = rows[scen == source]
            if not np.isnan(numeric(sel, spec.row_column)).all():
                break
    if spec.row_scenarios is None:
        sel = sel[~np.isnan(numeric(sel, spec.row_column))]
        if "repeat" in sel:
            sel = sel.drop_duplicates(subset=[c for c in _REPEAT_KEY if c in sel])
    return sel, source
