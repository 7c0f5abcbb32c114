"""Exhaustive enumeration of replica counts: the reference the MILP is tested against.

Written independently of the MILP (own screening, own feasibility test) so that a shared bug
does not hide. It enumerates every replica vector y with 0 <= y_i <= ub_i, where ub_i is what
candidate i needs to carry the demand alone (more never helps any objective) capped by inventory,
within one configuration at a time when `single_config` (the default), vectorised with numpy.
Exponential in the number of candidates per group: for small instances and the perf script.

Ranking, as docs/matcher.md states it: the objective, then cost, then by dominance the worst p99
used (lowest; unknown = slowest), the capacity (highest), the replicas (fewest). A value within
1e-7·max(1, |best|) of the best ties with it, as the MILP's pins allow; the worst p99 compares
exactly. Whatever still ties is taken in enumeration order, which need not be the solver's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from matcher.candidates import config_keys
from matcher.requirements import Requirements

_EPS = 1e-9
_CHUNK = 2_000_000  # replica vectors evaluated per numpy batch


@dataclass(frozen=True)
class BruteOption:
    objective_value: float
    cost_per_hour_usd: float
    replicas: dict[int, int]  # iloc position in the caller's table -> replicas
    latency_p99_ms: float = math.nan  # the worst p99 used (inf: one used has none)
    capacity_qps: float = math.nan  # Σ replicas × throughput
    n_replicas: int = 0

    @property
    def rank_key(self) -> tuple[float, float, float, float, int]:
        return (self.objective_value, self.cost_per_hour_usd, self.latency_p99_ms, -self.capacity_qps,
                self.n_replicas)


@dataclass
class BruteResult:
    feasible: bool
    options: list[BruteOption] = field(default_factory=list)
    vectors_checked: int = 0
    search_space: int = 0  # replica vectors in the box (before any time cap)
    timed_out: bool = False  # stopped at time_cap_s, or search_space > max_vectors
    seconds: float = 0.0

    @property
    def best(self) -> BruteOption | None:
        return self.options[0] if self.options else None


def _arr(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _pin(best: float) -> float:
    return best + 1e-7 * max(1.0, abs(best))


def _best_rows(keys: list[tuple[np.ndarray, bool]]) -> np.ndarray:
    """Rows best on the first key, among them on the second, ... (key, exact): an inexact key
    ties within the MILP's pin tolerance."""
    rows = np.arange(len(keys[0][0]))
    for key, exact in keys:
        v = key[rows]
        best = v.min()
        rows = rows[v <= (best if exact else _pin(best))]
    return rows


def _grid(ub: np.ndarray):
    """Yield arrays of replica vectors covering the box 0..ub, at most ~_CHUNK rows at a time."""
    sizes = ub + 1
    if len(ub) == 0:
        return
    total = math.prod(int(s) for s in sizes)
    if total <= _CHUNK or len(ub) == 1:
        mesh = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
        yield np.stack([m.reshape(-1) for m in mesh], axis=1)
        return
    for v in range(int(sizes[0])):
        for rest in _grid(ub[1:]):
            yield np.column_stack([np.full(len(rest), v), rest])


def brute_force(
    req: Requirements,
    candidates: pd.DataFrame,
    *,
    single_config: bool = True,
    top_k: int = 1,
    time_cap_s: float | None = None,
    max_vectors: int | None = None,
) -> BruteResult:
    """The optimum (and, with top_k > 1, the next options under the same no-good rule as the
    MILP: each later option may not contain every (hardware, configuration) of an earlier one)."""
    t0 = time.perf_counter()
    c = req.constraints
    demand = c.throughput_qps or 0.0
    hw = candidates["hardware"].astype(str).to_numpy()
    cfg = config_keys(candidates).to_numpy(dtype=str)
    price, thr, lat, acc = (_arr(candidates, k) for k in ("price_per_hour_usd", "throughput_qps", "latency_p99_ms", "accuracy"))
    lat_known = np.where(np.isnan(lat), np.inf, lat)  # ranking: a p99 nobody measured is the slowest
    energy, power = _arr(candidates, "energy_per_sample_j"), _arr(candidates, "power_w")
    power = np.where(np.isnan(power), energy * thr, power)
    devices = np.nan_to_num(_arr(candidates, "devices"), nan=1.0) if "devices" in candidates else np.ones(len(hw))

    inventory: dict[str, float] = {}
    if "inventory" in candidates.columns:
        for h, v in zip(hw, _arr(candidates, "inventory"), strict=True):
            if not math.isnan(v):
                inventory[h] = min(inventory.get(h, math.inf), v)
    inventory.update({h: float(v) for h, v in (req.inventory or {}).items()})

    ok = ~np.isnan(price) & (price >= 0)
    if demand > 0:
        ok &= ~np.isnan(thr) & (thr > 0)
    if c.latency_p99_ms is not None:
        ok &= ~np.isnan(lat) & (lat <= c.latency_p99_ms * (1 + _EPS))
    if req.objective == "latency":
        ok &= ~np.isnan(lat)
    if c.accuracy is not None:
        ok &= ~np.isnan(acc) & (acc >= c.accuracy * (1 - _EPS))
    if c.energy_per_sample_j is not None:
        ok &= ~np.isnan(energy) & (energy <= c.energy_per_sample_j * (1 + _EPS))
    if c.max_power_w is not None or req.objective == "energy":
        ok &= ~np.isnan(power)

    with np.errstate(divide="ignore", invalid="ignore"):
        ub = np.ceil(demand / thr - _EPS) if demand > 0 else np.ones(len(hw))
    ub = np.where(np.isfinite(ub), np.maximum(ub, 1), 0)
    for i, h in enumerate(hw):
        if h in inventory:
            ub[i] = min(ub[i], math.floor(inventory[h] / devices[i] + _EPS))
    ub = np.where(ok, ub, 0).astype(int)

    usable = np.flatnonzero(ub > 0)
    if single_config:  # candidates of each configuration, grouped in O(n log n)
        _, group = np.unique(cfg[usable], return_inverse=True)
        order = np.argsort(group, kind="stable")
        cuts = np.flatnonzero(np.diff(group[order])) + 1
        members = [usable[part] for part in np.split(order, cuts)] if len(usable) else []
    else:
        members = [usable]
    result = BruteResult(False)
    result.search_space = sum(math.prod(int(u) + 1 for u in ub[idx]) for idx in members)
    if max_vectors is not None and result.search_space > max_vectors:
        result.timed_out = True
        result.seconds = time.perf_counter() - t0
        return result
    # Feasible vectors (top_k == 1: the best of each batch only), as full-length replica rows.
    found_y: list[np.ndarray] = []
    found_primary: list[np.ndarray] = []
    found_cost: list[np.ndarray] = []
    n_all = len(hw)
    for idx in members:
        hws = sorted(set(hw[idx]))
        for Y in _grid(ub[idx]):
            if time_cap_s is not None and time.perf_counter() - t0 > time_cap_s:
                result.timed_out = True
                break
            result.vectors_checked += len(Y)
            Yf = Y.astype(float)
            cost = Yf @ price[idx]
            feas = Y.sum(axis=1) >= 1
            if demand > 0:
                feas &= Yf @ thr[idx] >= demand * (1 - _EPS)
            if c.budget_per_hour_usd is not None:
                feas &= cost <= c.budget_per_hour_usd * (1 + _EPS)
            if c.budget_total_usd is not None and c.duration_h is not None:
                feas &= cost * c.duration_h <= c.budget_total_usd * (1 + _EPS)
            if c.max_power_w is not None:
                feas &= Yf @ np.nan_to_num(power[idx]) <= c.max_power_w * (1 + _EPS)
            for h in hws:
                if h in inventory:
                    feas &= Yf @ np.where(hw[idx] == h, devices[idx], 0.0) <= inventory[h] + _EPS
            if not feas.any():
                continue
            worst = np.where(Y > 0, lat_known[idx], -np.inf).max(axis=1)
            if req.objective == "energy":
                primary = Yf @ power[idx]
            elif req.objective == "latency":
                primary = worst
            else:
                primary = cost
            rows = np.flatnonzero(feas)
            if top_k == 1:  # only rows that tie with this batch's best can be the best overall
                rows = rows[primary[rows] <= _pin(primary[rows].min())]
            full = np.zeros((len(rows), n_all), dtype=np.int64)
            full[:, idx] = Y[rows]
            found_y.append(full)
            found_primary.append(primary[rows])
            found_cost.append(cost[rows])
        if result.timed_out:
            break
    result.seconds = time.perf_counter() - t0
    if not found_y:
        return result
    G = np.vstack(found_y)
    Gf = G.astype(float)
    prim, cost = np.concatenate(found_primary), np.concatenate(found_cost)
    worst = np.where(G > 0, lat_known, -np.inf).max(axis=1)
    capacity = Gf @ np.nan_to_num(thr)
    replicas = G.sum(axis=1)
    keys = [(prim, False), (cost, False)]
    if req.objective != "latency":
        keys.append((worst, True))
    keys += [(-capacity, False), (replicas.astype(float), True)]
    used = G > 0
    left = np.ones(len(G), dtype=bool)
    while left.any() and len(result.options) < top_k:
        rows = np.flatnonzero(left)
        r = rows[_best_rows([(k[rows], exact) for k, exact in keys])[0]]
        support = np.flatnonzero(used[r])
        result.options.append(BruteOption(float(prim[r]), float(cost[r]), {int(j): int(G[r, j]) for j in support},
                                          float(worst[r]), float(capacity[r]), int(replicas[r])))
        # the no-good rule: nothing that contains every (hardware, configuration) of this option
        left &= ~used[:, support].all(axis=1)
    result.feasible = True
    return result
