"""Greedy baseline: the feasible candidate with the lowest price per unit of throughput, with as
many replicas as the demand needs (ceil). One hardware type, one configuration, no mixing. The perf
script prints its cost beside the MILP's to show what the MILP buys."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matcher.metrics import metric_values, numeric
from matcher.requirements import Requirements
from matcher.screen import THRESHOLDS

_EPS = 1e-9


@dataclass(frozen=True)
class GreedyResult:
    feasible: bool
    position: int | None = None  # iloc in the caller's table
    replicas: int = 0
    cost_per_hour_usd: float = math.nan
    reason: str = ""


def greedy(req: Requirements, candidates: pd.DataFrame) -> GreedyResult:
    c = req.constraints
    demand = c.throughput_qps or 0.0
    price = numeric(candidates, "price_per_hour_usd")
    thr, power = metric_values(candidates, "throughput_qps"), metric_values(candidates, "power_w")
    devices = np.nan_to_num(numeric(candidates, "devices"), nan=1.0) if "devices" in candidates else np.ones(len(price))
    inv_col = numeric(candidates, "inventory")
    hw = candidates["hardware"].astype(str).to_numpy()
    inventory = dict(req.inventory or {})

    ok = ~np.isnan(price) & (~np.isnan(thr) & (thr > 0) if demand > 0 else True)
    for t in THRESHOLDS:
        bound = t.bound(req)
        if bound is not None:
            v = metric_values(candidates, t.metric)
            ok &= ~np.isnan(v) & ~t.breaks(v, bound)
    if c.max_power_w is not None:
        ok &= ~np.isnan(power)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = price / thr if demand > 0 else price
    order = sorted(np.flatnonzero(ok), key=lambda i: (score[i], hw[i], i))
    for i in order:
        n = max(1, math.ceil(demand / thr[i] - _EPS)) if demand > 0 else 1
        cost = n * price[i]
        cap = inventory.get(hw[i], inv_col[i] if not np.isnan(inv_col[i]) else math.inf)
        if n * devices[i] > cap + _EPS:
            continue
        if c.budget_per_hour_usd is not None and cost > c.budget_per_hour_usd * (1 + _EPS):
            continue
        if c.budget_total_usd is not None and c.duration_h is not None and cost * c.duration_h > c.budget_total_usd * (1 + _EPS):
            continue
        if c.max_power_w is not None and n * power[i] > c.max_power_w * (1 + _EPS):
            continue
        return GreedyResult(True, int(i), n, float(cost), "cheapest feasible price per throughput")
    return GreedyResult(False, reason="no single candidate meets every constraint on its own")
