"""Capacity at the SLO: the samples/s one replica serves while its p99 stays under the bound.

A replica's latency and its throughput must be measured together: the p99 of a lightly loaded
replica (MultiStream) paired with its saturated throughput (Offline) promises a latency it never
shows at that load. LoadGen's Server scenario at several offered rates (Poisson arrivals; the
`server_curve` column) gives the latency-vs-load curve, and this module reads capacity off it:

* the highest offered rate up to which every measured point's p99 is within the SLO; between the
  last passing and the first failing point, linear interpolation (latency grows convexly with load, so the chord lies above
  the curve and the rate it gives is on the safe side); never beyond the heaviest point measured;
* per repeat, then the lowest over repeats sizes the replicas (the bound) and the median is the
  point estimate: the run-to-run spread is in the answer's band, not hidden in a median;
* derated by the requirement's `max_utilization`;
* a candidate whose lightest measured load already breaks the SLO keeps that p99 as its latency,
  so the screen removes it and the diagnosis reports it as the best achievable.

Candidates without a curve (a user's table, predictions, older rows) keep the figures they have,
and the answer says that their latency was not measured at the load they are sized for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

CURVES = "server_curves"  # candidate column: JSON list of curves, one per measured repeat
FROM_CURVE = "Server curve"


def _points(curve: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """(rate, p99) of the points LoadGen ran long enough to count, lightest first. The rate is
    what was both offered and completed: near saturation a replica completes less than offered."""
    out = []
    for p in curve:
        offered, done, p99 = p.get("offered_qps"), p.get("completed_qps"), p.get("latency_p99_ms")
        if not p.get("valid", True) or offered is None or p99 is None:
            continue
        rate = min(float(offered), float(done)) if done is not None else float(offered)
        if rate > 0 and math.isfinite(float(p99)):
            out.append((rate, float(p99)))
    return sorted(out)


def capacity_at(curve: Sequence[dict[str, Any]], slo_ms: float | None) -> tuple[float | None, float | None]:
    """(samples/s, p99 ms there) of one curve at the SLO; (None, lightest p99) when even the
    lightest load breaks it; (None, None) for a curve with no usable point. Without an SLO, the
    heaviest point measured."""
    pts = _points(curve)
    if not pts:
        return None, None
    if slo_ms is None:
        return pts[-1]
    # Walk up from the lightest load and stop at the first point over the bound: a noisy point that
    # passes again above a failing one is not evidence that the heavier load is safe.
    first_fail = next((i for i, (_, p99) in enumerate(pts) if p99 > slo_ms), len(pts))
    if first_fail == 0:
        return None, pts[0][1]
    (q1, l1) = pts[first_fail - 1]
    if first_fail == len(pts):
        return q1, l1  # the heaviest point passes: never extrapolate beyond it
    (q2, l2) = pts[first_fail]
    return q1 + (slo_ms - l1) / (l2 - l1) * (q2 - q1), slo_ms


def curves_of(cell: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(cell, str) or not cell:
        return []
    try:
        curves = json.loads(cell)
    except json.JSONDecodeError:
        return []
    return [c for c in curves if isinstance(c, list)]


def at_slo(cands: pd.DataFrame, slo_ms: float | None, max_utilization: float = 1.0) -> pd.DataFrame:
    """A copy of the candidate table with each replica's throughput the capacity at the SLO (where a
    curve was measured), derated by `max_utilization`, and its latency the p99 at that load."""
    out = cands.copy()
    if CURVES not in out.columns:
        if max_utilization < 1.0:
            out["throughput_qps"] = pd.to_numeric(out["throughput_qps"], errors="coerce") * max_utilization
            if "throughput_qps_point" in out.columns:
                out["throughput_qps_point"] = pd.to_numeric(out["throughput_qps_point"], errors="coerce") * max_utilization
        return out
    tput = pd.to_numeric(out["throughput_qps"], errors="coerce").to_numpy(dtype=float, copy=True) * max_utilization
    tput_point = (pd.to_numeric(out["throughput_qps_point"], errors="coerce").to_numpy(dtype=float, copy=True) * max_utilization
                  if "throughput_qps_point" in out.columns else tput.copy())
    lat = pd.to_numeric(out["latency_p99_ms"], errors="coerce").to_numpy(dtype=float, copy=True)
    lat_point = (pd.to_numeric(out["latency_p99_ms_point"], errors="coerce").to_numpy(dtype=float, copy=True)
                 if "latency_p99_ms_point" in out.columns else lat.copy())
    source = out["latency_source"].astype(object).to_numpy(copy=True) if "latency_source" in out.columns \
        else np.array([""] * len(out), dtype=object)
    for i, cell in enumerate(out[CURVES].to_numpy()):
        curves = curves_of(cell)
        if not curves:
            continue
        read = [capacity_at(c, slo_ms) for c in curves]
        if any(q is None for q, _ in read):
            # Some repeat breaks the SLO at its lightest load: the replica cannot be promised it.
            worst = [p for _, p in read if p is not None]
            lat[i] = lat_point[i] = max(worst) if worst else np.nan
            source[i] = f"{FROM_CURVE} (p99 above the bound at the lightest load measured)"
            continue
        rates = np.array([q for q, _ in read], dtype=float)
        p99s = np.array([p for _, p in read], dtype=float)
        tput[i], tput_point[i] = rates.min() * max_utilization, float(np.median(rates)) * max_utilization
        lat[i], lat_point[i] = p99s.max(), float(np.median(p99s))
        source[i] = FROM_CURVE
    out["throughput_qps"], out["throughput_qps_point"] = tput, tput_point
    out["latency_p99_ms"], out["latency_p99_ms_point"] = lat, lat_point
    out["latency_source"] = source
    return out
