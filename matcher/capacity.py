"""Capacity at the SLO: the samples/s one replica serves while its latency stays under the bound.

A replica's latency and its throughput must be measured together: the p99 of a lightly loaded
replica (MultiStream) paired with its saturated throughput (Offline) promises a latency it never
shows at that load. LoadGen's Server scenario at several offered rates (Poisson arrivals; the
`server_curve` column) gives the latency-vs-load curve, and this module reads capacity off it:

* the highest offered rate up to which every measured point is within every latency bound of the
  request (each statistic it bounds: p99, median, mean, ... as each point records them); between
  the last passing and the first failing point, linear interpolation (latency grows convexly with
  load, so the chord lies above the curve and the rate it gives is on the safe side); never beyond
  the heaviest point measured;
* per repeat, then the lowest over repeats sizes the replicas (the bound) and the median is the
  point estimate: the run-to-run spread is in the answer's band, not hidden in a median;
* with an `slo_confidence` c, the bound is instead set for a fresh run: the worst of n repeats is
  beaten by the next run about once in n + 1, far more often than an SLO allows. The noise is in
  the latency measured at a load, not in the capacity read off it (a threshold crossing of a flat
  curve jumps between runs), so the bound is on latency: at each load the repeats measured, each
  bounded statistic's log is taken as normal with a spread common to one hardware type (pooled
  over its configurations: 8 configurations x 3 repeats give 16 degrees of freedom, not 2); its
  one-sided prediction bound exp(mean + t(c, df) * s * sqrt(1 + 1/n)), never below the worst
  repeat, must stay within the SLO up to the capacity, walked up as one curve is;
* derated by the requirement's `max_utilization`;
* a candidate whose lightest measured load already breaks the SLO keeps that latency, so the
  screen removes it and the diagnosis reports it as the best achievable;
* a curve that does not record a bounded statistic (older rows kept p50 and p99 only) cannot size
  for it: the candidate keeps its Offline figures and the answer says they were measured apart.

Candidates without a curve (a user's table, predictions, older rows) keep the figures they have,
and the answer says that their latency was not measured at the load they are sized for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from matcher.metrics import CURVE_STATS, DEFAULT_LATENCY
from matcher.requirements import MAX_THROUGHPUT_QPS as MAX_VALUE

CURVES = "server_curves"  # candidate column: JSON list of curves, one per measured repeat
FROM_CURVE = "Server curve"
CURVE_QUERIES = "curve_queries"  # at_slo's column: the fewest queries of a Server run the capacity rests on
CAPACITY_BOUND = "capacity_bound"  # at_slo's column: how the capacity's conservative side was set
Bounds = Mapping[str, float]  # latency statistic or TTFT / TPOT (metrics.CURVE_STATS) -> its bound, ms


@dataclass(frozen=True)
class Reading:
    """One curve read at the request's bounds. rate None: no usable rate (`latency` holds the
    lightest point's figures when even that breaks a bound; `lacks` the bounded statistics the
    curve does not record)."""

    rate: float | None
    latency: dict[str, float] = field(default_factory=dict)  # statistic -> ms at `rate`
    lacks: tuple[str, ...] = ()
    # The fewest queries of a point the reading rests on (None: a point does not say): a p99 of a
    # run of 60 queries is its slowest one, and varies between runs far more than its median.
    queries: int | None = None


Point = tuple[float, dict[str, float], int | None]  # (rate, latency statistics, queries)


def _stat(v: Any) -> float | None:
    """A latency statistic of a point: a number (not a bool); +inf (a run that never finished a
    query in time) is kept as the largest value the matcher takes, NaN and text are not numbers."""
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v < 0:
        return None
    return min(float(v), MAX_VALUE)


class _Parsed(list):
    """A curve's usable points, parsed once (every statistic each records), lightest first."""


def _parse(curve: Sequence[Any]) -> _Parsed:
    """(rate, latency statistics, queries) of the points LoadGen ran long enough to count. The rate
    is what was both offered and completed: near saturation a replica completes less than offered.
    A point that is not a mapping, or whose rate is not a positive finite number, is no point."""
    if isinstance(curve, _Parsed):
        return curve
    out = _Parsed()
    for p in curve:
        if not isinstance(p, Mapping) or not p.get("valid", True) or isinstance(p.get("offered_qps"), bool):
            continue
        offered, done = finite_number(p.get("offered_qps")), p.get("completed_qps")
        done = finite_number(done) if done is not None else offered
        if offered is None or done is None or min(offered, done) <= 0:
            continue
        queries = p.get("queries")
        out.append((min(offered, done), {s: v for s in CURVE_STATS if (v := _stat(p.get(s))) is not None},
                    int(queries) if isinstance(queries, int | float) and not isinstance(queries, bool)
                    and math.isfinite(queries) and queries > 0 else None))
    out.sort(key=lambda pt: pt[0])
    return out


def _points(curve: Sequence[Any], need: Sequence[str], partial: bool = False) -> list[Point]:
    """The curve's points (`_parse`) that record every statistic in `need` (`partial`: any)."""
    if partial and need:
        return [p for p in _parse(curve) if any(s in p[1] for s in need)]
    return [p for p in _parse(curve) if all(s in p[1] for s in need)]


def _fewest(points: Sequence[Point]) -> int | None:
    counts = [q for _, _, q in points]
    return None if not counts or None in counts else min(c for c in counts if c is not None)


def _first_over(curve: Sequence[Any], bounds: Bounds, incomplete_only: bool = False) -> float:
    """The lightest rate at which a point breaks a bound it records, even one that does not record
    every bounded statistic (a saturated point may lack its median): no capacity reaches it."""
    over = [q for q, stats, _ in _points(curve, list(bounds), partial=True)
            if any(stats[s] > b for s, b in bounds.items() if s in stats)
            and not (incomplete_only and all(s in stats for s in bounds))]
    return min(over, default=math.inf)


def read_curve(curve: Sequence[dict[str, Any]], bounds: Bounds) -> Reading:
    """The highest rate of one curve within every bound (module docstring); without bounds, the
    heaviest point measured."""
    curve = _parse(curve)
    lacks = tuple(s for s in bounds if not any(s in stats for _, stats, _ in curve))
    if lacks:
        return Reading(None, lacks=lacks)
    stop = _first_over(curve, bounds)
    pts = _points(curve, list(bounds))  # without bounds: the heaviest valid point, whatever it records
    if stop < math.inf:  # a partial point breaking a bound is the first failure at its load
        fail = next((p for p in _points(curve, list(bounds), partial=True) if p[0] == stop), None)
        pts = [p for p in pts if p[0] < stop] + ([fail] if fail is not None else [])
    if not pts:
        return Reading(None)

    def over(stats: dict[str, float]) -> list[str]:
        return [s for s, b in bounds.items() if s in stats and stats[s] > b]

    # Walk up from the lightest load and stop at the first point over a bound: a noisy point that
    # passes again above a failing one is not evidence that the heavier load is safe.
    first_fail = next((i for i, (_, stats, _) in enumerate(pts) if over(stats)), len(pts))
    if first_fail == 0:
        return Reading(None, pts[0][1], queries=pts[0][2])
    q1, v1, _ = pts[first_fail - 1]
    if first_fail == len(pts):
        return Reading(q1, v1, queries=_fewest(pts))  # the heaviest point passes: never extrapolate beyond it
    q2, v2, _ = pts[first_fail]
    t = min((bounds[s] - v1[s]) / (v2[s] - v1[s]) for s in over(v2))
    at = {s: v1[s] + t * (v2[s] - v1[s]) for s in v1 if s in v2}
    return Reading(q1 + t * (q2 - q1), at, queries=_fewest(pts[:first_fail + 1]))


def capacity_at(curve: Sequence[dict[str, Any]], slo_ms: float | None) -> tuple[float | None, float | None]:
    """(samples/s, p99 ms there) of one curve at a p99 SLO; (None, lightest p99) when even the
    lightest load breaks it; (None, None) for a curve with no usable point."""
    r = read_curve(curve, {} if slo_ms is None else {DEFAULT_LATENCY: slo_ms})
    return r.rate, r.latency.get(DEFAULT_LATENCY)


def llm_points(curve: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """An LLM rate curve (result column llm_curve, benchmarks/llm) as capacity points: the rate is
    requests/s, a point with a failed request is not valid, and TTFT / TPOT are statistics a
    request may bound beside the end-to-end latency."""
    out = []
    for p in curve:
        if not isinstance(p, dict) or p.get("offered_rps") is None:
            continue
        # A run that kept up with its arrivals sustained the offered rate; its completed count over
        # a window that includes draining the last requests would understate it. One that fell
        # behind is read at what it completed.
        done = p["offered_rps"] if p.get("keeps_up") else p.get("requests_per_s")
        point = {"offered_qps": p["offered_rps"], "completed_qps": done,
                 "valid": not p.get("failed") and bool(p.get("completed", 1))}
        point.update({s: p[s] for s in CURVE_STATS if isinstance(p.get(s), int | float)})
        out.append(point)
    return out


# Configuration columns that are a load level, not a deployment choice: imported LLM serving runs
# (vLLM, GuideLLM, AIPerf) at several request rates or concurrencies are points of one curve.
LOAD_LEVELS = ("cfg_request_rate", "cfg_max_concurrency", "cfg_strategy")  # strategy: GuideLLM's load pattern
_CURVE_KEYS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "latency_p50_ms", "latency_p90_ms",
               "latency_p95_ms", "latency_p99_ms", "latency_p999_ms", "latency_mean_ms")


def fold_load_levels(rows: pd.DataFrame) -> pd.DataFrame:
    """LLM serving Server rows of one (hardware, configuration) measured at several load levels,
    without a curve of their own, become one rate curve (`llm_curve`, on the first row of each
    repeat), and the load-level columns of every LLM row are cleared, so the Server rows and the
    Offline row of the same configuration are one candidate whose capacity is read off that curve
    at the request's bounds. A level's rate is what was offered (the completed rate where only a
    concurrency was set)."""
    levels = [c for c in LOAD_LEVELS if c in rows.columns and rows[c].notna().any()]
    if not levels or "scenario" not in rows.columns or "sample_unit" not in rows.columns:
        return rows
    llm = rows["sample_unit"].fillna("").astype(str) == "request"  # only LLM serving rows have load levels
    server = llm & (rows["scenario"].astype(str) == "Server")
    if "llm_curve" in rows.columns:
        server &= rows["llm_curve"].fillna("").astype(str) == ""
    if not server.any():
        return rows
    out = rows.copy()
    if "llm_curve" not in out.columns:
        out["llm_curve"] = ""
    keys = ["hardware", *[c for c in out.columns if c.startswith("cfg_") and c not in levels]]
    if "repeat" in out.columns:
        keys.append("repeat")
    for _, grp in out[server].groupby(keys, dropna=False, sort=False):
        points = []
        for _, r in grp.iterrows():
            done = finite_number(r.get("requests_per_s"))
            done = done if done is not None else finite_number(r.get("throughput_samples_per_s"))
            offered = finite_number(r.get("target_qps"))
            offered = offered if offered is not None else done
            if offered is None:
                continue
            failed = finite_number(r.get("failed_requests"))
            points.append({"offered_rps": offered, "requests_per_s": done, "failed": int(failed or 0),
                           **{k: v for k in _CURVE_KEYS if (v := finite_number(r.get(k))) is not None}})
        if points:
            out.loc[grp.index[0], "llm_curve"] = json.dumps(sorted(points, key=lambda p: p["offered_rps"]))
    out.loc[llm, levels] = np.nan  # the Offline row too: the saturated end of the same curve
    return out.drop(columns=[c for c in levels if out[c].isna().all()])


def finite_number(v: Any) -> float | None:
    """`v` as a float, None when it is not a finite number (a cell of a table or a JSON value)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def curves_of(cell: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(cell, str) or not cell:
        return []
    try:
        curves = json.loads(cell)
    except json.JSONDecodeError:
        return []
    return [c for c in curves if isinstance(c, list)]


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float, copy=True)


def at_slo(cands: pd.DataFrame, bounds: Bounds | float | None, max_utilization: float = 1.0,
           confidence: float | None = None) -> pd.DataFrame:
    """A copy of the candidate table with each replica's throughput the capacity at the latency
    bounds (where a curve was measured), derated by `max_utilization`, and its latency statistics
    those at that load (worst repeat; `_point` the median; NaN for one the curve does not record).
    `confidence`: the capacity is the prediction bound for a fresh run (module docstring), not the
    worst repeat."""
    if not isinstance(bounds, Mapping):
        bounds = {} if bounds is None else {DEFAULT_LATENCY: float(bounds)}
    out = cands.copy()
    if CURVES not in out.columns:
        if max_utilization < 1.0:
            out["throughput_qps"] = pd.to_numeric(out["throughput_qps"], errors="coerce") * max_utilization
            if "throughput_qps_point" in out.columns:
                out["throughput_qps_point"] = pd.to_numeric(out["throughput_qps_point"], errors="coerce") * max_utilization
        return out
    tput = _column(out, "throughput_qps") * max_utilization
    tput_point = (_column(out, "throughput_qps_point") if "throughput_qps_point" in out.columns
                  else _column(out, "throughput_qps")) * max_utilization
    lat = {s: _column(out, s) for s in CURVE_STATS}
    lat_point = {s: _column(out, f"{s}_point") if f"{s}_point" in out.columns else lat[s].copy() for s in CURVE_STATS}
    source = out["latency_source"].astype(object).to_numpy(copy=True) if "latency_source" in out.columns \
        else np.array([""] * len(out), dtype=object)
    queries = np.full(len(out), np.nan)
    how = np.full(len(out), "", dtype=object)
    parsed = {i: [_parse(c) for c in cs] for i, cell in enumerate(out[CURVES].to_numpy()) if (cs := curves_of(cell))}
    hardware = out["hardware"].astype(str).to_numpy() if "hardware" in out.columns else np.array([""] * len(out))
    spreads = latency_spreads(parsed, hardware, bounds) if confidence is not None and bounds else {}
    for i, curves in parsed.items():
        checks = bounds  # the bounds this candidate's curves can be read at
        read = [read_curve(c, checks) for c in curves]
        lacks = sorted({s for r in read for s in r.lacks})
        if lacks:
            checks = {s: b for s, b in bounds.items() if s not in lacks}
            apart = f"{source[i] or 'MultiStream'} for {', '.join(lacks)} ({FROM_CURVE.lower()} records no {', '.join(lacks)})"
            if not checks:
                # Keeps its Offline capacity and MultiStream latency: latency_notes says they were measured apart.
                source[i] = apart
                continue
            # Sized from the curve at the bounds it records, the rest checked on figures measured
            # apart: never more capacity than the curve alone gives (latency_notes says which).
            read = [read_curve(c, checks) for c in curves]
        else:
            apart = ""
        for s in CURVE_STATS:
            if s in lacks:
                continue
            vals = [r.latency[s] for r in read if s in r.latency]
            have = len(vals) == len(read) and bool(vals)
            lat[s][i] = max(vals) if have else np.nan
            lat_point[s][i] = float(np.median(vals)) if have else np.nan
        spread = next((sp for key in (hardware[i], _EVERY) if (sp := spreads.get(key)) is not None
                       and all(s in sp.s for s in checks)), None)
        if confidence is not None and checks:
            if spread is None:
                how[i] = "one repeat: no spread to set a prediction bound from (measure repeats); worst repeat used"
            else:
                bound = read_bound(curves, checks, confidence, spread)
                for s, v in bound.latency.items():
                    lat[s][i] = v
                if bound.rate is None:
                    source[i] = f"{FROM_CURVE} (above the bound at the lightest load measured, at confidence {confidence:g})"
                    continue
                tput[i] = bound.rate * max_utilization
                tput_point[i] = float(np.median([r.rate for r in read if r.rate is not None] or [np.nan])) * max_utilization
                source[i], queries[i] = f"{apart}; {FROM_CURVE} for the rest" if apart else FROM_CURVE, np.nan if bound.queries is None else bound.queries
                scope = spread.scope if spread.scope == _EVERY else f"{spread.scope}'s configurations"
                how[i] = (f"capacity at the SLO: latency bounded for a fresh run with probability {confidence:g} "
                          f"({len(curves)} repeats, log-normal, log spread {max(spread.s[c] for c in checks):.2f} pooled over "
                          f"{scope}, {min(spread.df[c] for c in checks)} d.o.f.)")
                continue
        if any(r.rate is None for r in read):
            # Some repeat breaks a bound at its lightest load: the replica cannot be promised it.
            source[i] = f"{FROM_CURVE} (above the bound at the lightest load measured)"
            continue
        rates = np.array([r.rate for r in read], dtype=float)
        tput[i], tput_point[i] = rates.min() * max_utilization, float(np.median(rates)) * max_utilization
        source[i] = f"{apart}; {FROM_CURVE} for the rest" if apart else FROM_CURVE
        counts = [r.queries for r in read]
        queries[i] = np.nan if None in counts else min(c for c in counts if c is not None)
    out["throughput_qps"], out["throughput_qps_point"] = tput, tput_point
    for s in CURVE_STATS:
        if s in out.columns or not np.isnan(lat[s]).all():
            out[s], out[f"{s}_point"] = lat[s], lat_point[s]
    out["latency_source"] = source
    out[CURVE_QUERIES] = queries
    if confidence is not None:
        out[CAPACITY_BOUND] = how
    return out


_EVERY = "every configuration measured"


@dataclass(frozen=True)
class Spread:
    """The run-to-run spread of log latency at a given load, pooled over configurations."""

    s: dict[str, float]  # bounded statistic -> pooled standard deviation of its log
    df: dict[str, int]  # bounded statistic -> its degrees of freedom
    scope: str


def _aligned(curves: Sequence[Sequence[dict[str, Any]]], bounds: Bounds) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The loads every repeat measured up to (the union of their points, up to the lightest of
    their heaviest: never extrapolated; below any load where a repeat's point broke a bound it
    records) and, per bounded statistic, each repeat's log value there (linear between its points;
    below its lightest point, that point's value)."""
    need = list(bounds)
    pts = [_points(c, need) for c in curves]
    if not all(pts):
        return None
    top = min(p[-1][0] for p in pts)
    # A point that breaks a bound but does not record every bounded statistic cannot be aligned:
    # no load from it on is a candidate (complete points that break a bound are walked as usual).
    stop = min(_first_over(c, bounds, incomplete_only=True) for c in curves)
    grid = np.unique([q for p in pts for q, _, _ in p if q <= top * (1 + 1e-12) and q < stop])
    if not grid.size:
        return None
    logs = {}
    for s in need:
        rows = []
        for p in pts:
            qs = np.array([q for q, _, _ in p])
            vs = np.array([max(st[s], 1e-12) for _, st, _ in p])
            rows.append(np.log(np.interp(grid, qs, vs)))
        logs[s] = np.vstack(rows)
    return grid, logs


def latency_spreads(parsed: Mapping[int, list[list[dict[str, Any]]]], hardware: np.ndarray,
                    bounds: Bounds) -> dict[str, Spread]:
    """Per hardware type (and `_EVERY`, over all of them), the pooled spread of each bounded
    statistic's log between repeats of one configuration at the same load, over the configurations
    whose curves record it. A configuration of n repeats adds n - 1 degrees of freedom (its loads
    are not independent draws, so they add none)."""
    acc: dict[str, dict[str, tuple[float, int]]] = {}
    for i, curves in parsed.items():
        if len(curves) < 2:
            continue
        for stat, b in bounds.items():
            got = _aligned(curves, {stat: b})
            if got is None:
                continue
            df = len(curves) - 1
            # The median over loads: near saturation one repeat's knee comes earlier and its log
            # latency jumps, but there the curve is steep, so that spread moves the capacity little;
            # the mean let the knee set the spread of the flat part (quickstart: 0.75 against 0.4).
            var = float(np.median(got[1][stat].var(axis=0, ddof=1)))
            for key in (hardware[i], _EVERY):
                ss, dof = acc.setdefault(key, {}).get(stat, (0.0, 0))
                acc[key][stat] = (ss + df * var, dof + df)
    return {key: Spread({st: math.sqrt(ss / dof) for st, (ss, dof) in stats.items()},
                        {st: dof for st, (_, dof) in stats.items()}, key)
            for key, stats in acc.items() if stats}


def read_bound(curves: Sequence[Sequence[dict[str, Any]]], bounds: Bounds, confidence: float, spread: Spread) -> Reading:
    """The highest load at which a fresh run's latency stays within every bound with probability
    `confidence`: per statistic, the one-sided prediction bound exp(mean log + t(c, df) s
    sqrt(1 + 1/n)) over the n repeats at each load (never below the worst repeat), walked up from
    the lightest load as `read_curve` walks one curve."""
    from scipy.stats import t as student_t  # scipy is heavy to import; only this path needs it

    need = list(bounds)
    got = _aligned(curves, bounds)
    if got is None:
        return Reading(None)
    grid, logs = got
    n = len(curves)
    k = {s: float(student_t.ppf(confidence, spread.df[s])) for s in need}
    # In logs, capped at the largest value the matcher takes: 2 repeats at 0.9999 give t = 3,183.
    upper = {s: np.exp(np.minimum(np.maximum(v.mean(axis=0) + k[s] * spread.s[s] * math.sqrt(1 + 1 / n), v.max(axis=0)),
                                  math.log(MAX_VALUE)))
             for s, v in logs.items()}
    fails = np.array([any(upper[s][g] > bounds[s] for s in need) for g in range(grid.size)])
    first = int(np.argmax(fails)) if fails.any() else grid.size
    queries = min((_fewest(_points(c, need)) or 0) for c in curves) or None
    if first == 0:
        return Reading(None, {s: float(upper[s][0]) for s in need}, queries=queries)
    if first == grid.size:
        return Reading(float(grid[-1]), {s: float(upper[s][-1]) for s in need}, queries=queries)
    a, b = first - 1, first
    t = min((bounds[s] - upper[s][a]) / (upper[s][b] - upper[s][a]) for s in need if upper[s][b] > bounds[s])
    return Reading(float(grid[a] + t * (grid[b] - grid[a])),
                   {s: float(upper[s][a] + t * (upper[s][b] - upper[s][a])) for s in need}, queries=queries)
