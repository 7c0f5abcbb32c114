"""Exact answers without a solver, where enumerating is cheaper than building a MILP.

One workload, one configuration, objective cost or energy: the MILP then picks a configuration c
and, for each hardware h that runs c, a replica count y_h in 0..ub_h (the screen's bound: C0,
which already holds inventory, budget and power for one candidate alone). Per configuration that
is a box of prod(ub_h + 1) replica vectors, and the joint rows (demand C1, one replica C1b,
budgets C8/C9, power C10) are checks on each vector. So:

* a configuration's objective is at least LB_c (`lower_bound`) = max(min_h v_h, D·min_h v_h/T_h) (v = price or
  power per replica: the fractional cover of the demand), so configurations are visited in LB
  order and the visit stops once LB_c exceeds the best objective found (with the stage tolerance);
* each visited box is enumerated whole with numpy, its infeasible vectors dropped, and only those
  within the stage tolerance of its own least objective kept (nothing else can tie the optimum);
* the kept vectors of every visited configuration are ranked by the MILP's own stages
  (milp.py): the objective, then cost (energy objective), then the worst latency (exact), then the
  highest capacity, then the fewest replicas, each held at its best with the same tolerance
  (1e-7 relative); what still ties comes in the order visited (deterministic, as the solver's is);
* top-k: the next rank must leave out at least one candidate of each earlier option (C13).

`applicable` says when this answers instead of the MILP: a single workload, single_config, cost or
energy, and every configuration's box at most MAX_VECTORS. tests/unit/test_enumerate.py checks
equality with the MILP stage by stage on random instances.
"""

from __future__ import annotations

import math
import time

import numpy as np

from matcher.screen import Workload
from matcher.solution import TOL

ENUMERATION = "enumeration"  # the answer's `solver` when no solver was needed
MAX_VECTORS = 100_000  # per configuration; beyond it the MILP is the cheaper exact method
_HOLD = 1e-7  # milp.Model.solve: a stage is held at its value + 1e-7·max(1, |value|)


def _slack(value: float) -> float:
    return _HOLD * max(1.0, abs(value))


def config_boxes(wl: Workload) -> dict[str, np.ndarray]:
    """Candidate positions (within wl) of each configuration, in wl's order."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(wl.cfg):
        out.setdefault(c, []).append(i)
    return {c: np.asarray(ix, dtype=int) for c, ix in out.items()}


def applicable(wl: Workload, *, objective: str, single_config: bool) -> bool:
    if not single_config or objective not in ("cost", "energy") or not wl.hw:
        return False
    return all(float(np.prod(wl.ub[ix].astype(float) + 1.0)) <= MAX_VECTORS for ix in config_boxes(wl).values())


def _box(wl: Workload, ix: np.ndarray, objective: str) -> dict[str, np.ndarray]:
    """Every feasible replica vector of one configuration and its stage values."""
    c = wl.req.constraints
    grids = np.indices(tuple(int(u) + 1 for u in wl.ub[ix])).reshape(len(ix), -1).T
    thr, price = wl.thr[ix], wl.price[ix]
    power = np.nan_to_num(wl.power[ix], nan=0.0)
    lat = np.nan_to_num(wl.lat[ix], nan=math.inf)  # a candidate without a latency counts as the slowest
    cap = grids @ thr
    cost = grids @ price
    reps = grids.sum(axis=1)
    ok = reps >= 1
    if wl.demand > 0:
        ok &= cap >= wl.demand * (1 - TOL)
    if c.budget_per_hour_usd is not None:
        ok &= cost <= c.budget_per_hour_usd * (1 + TOL)
    if c.budget_total_usd is not None and c.duration_h is not None:
        ok &= cost * c.duration_h <= c.budget_total_usd * (1 + TOL)
    watts = grids @ power
    if c.max_power_w is not None:
        ok &= watts <= c.max_power_w * (1 + TOL)
    g = grids[ok]
    used = g > 0
    worst = np.where(used, lat, -math.inf).max(axis=1) if len(g) else np.zeros(0)
    return {"y": g, "obj": (watts if objective == "energy" else cost)[ok], "cost": cost[ok], "worst": worst,
            "cap": cap[ok], "reps": reps[ok]}


def lower_bound(wl: Workload, ix: np.ndarray, objective: str) -> float:
    v = wl.power[ix] if objective == "energy" else wl.price[ix]
    v = np.nan_to_num(v, nan=0.0)
    lb = float(v.min())
    if wl.demand > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(wl.thr[ix] > 0, v / wl.thr[ix], math.inf)
        lb = max(lb, wl.demand * (1 - TOL) * float(per.min()))
    return lb


def solve_enumerated(wl: Workload, *, objective: str, k: int,
                     deadline: float = math.inf) -> tuple[list[dict[int, int]], bool]:
    """Up to k options (position within wl -> replicas), best first ([] when none is feasible), and
    whether the deadline cut the search short (the options are then the best found, not proven)."""
    boxes = config_boxes(wl)
    order = sorted(boxes, key=lambda cfg: (lower_bound(wl, boxes[cfg], objective), int(boxes[cfg][0])))
    lbs = {cfg: lower_bound(wl, boxes[cfg], objective) for cfg in boxes}
    cache: dict[str, dict[str, np.ndarray]] = {}
    supports: list[np.ndarray] = []  # positions used by each earlier option (C13)
    out: list[dict[int, int]] = []
    for _ in range(k):
        pool: list[tuple[str, dict[str, np.ndarray]]] = []
        best = math.inf
        for cfg in order:
            if lbs[cfg] > best + _slack(best):
                break
            if time.perf_counter() >= deadline:
                if pool:
                    out.append(_chosen(boxes, *_rank(pool, objective)))
                return out, True
            ix = boxes[cfg]
            if cfg not in cache:
                cache[cfg] = _box(wl, ix, objective)
            box = cache[cfg]
            keep = np.ones(len(box["y"]), dtype=bool)
            for s in supports:
                cols = np.flatnonzero(np.isin(ix, s))
                if len(cols) == len(s):  # the earlier option lies in this configuration: leave one out
                    keep &= (box["y"][:, cols] == 0).any(axis=1)
            if not keep.any():
                continue
            own = box["obj"][keep].min()
            keep &= box["obj"] <= own + _slack(own)
            pool.append((cfg, {name: arr[keep] for name, arr in box.items()}))
            best = min(best, own)
        if not pool:
            break
        chosen = _chosen(boxes, *_rank(pool, objective))
        out.append(chosen)
        supports.append(np.asarray(sorted(chosen), dtype=int))
    return out, False


def _chosen(boxes: dict[str, np.ndarray], cfg: str, y: np.ndarray) -> dict[int, int]:
    return {int(boxes[cfg][j]): int(n) for j, n in enumerate(y) if n > 0}


def _rank(pool: list[tuple[str, dict[str, np.ndarray]]], objective: str) -> tuple[str, np.ndarray]:
    """The lexicographic best of the pooled vectors by the MILP's stages."""
    owner = np.concatenate([np.full(len(b["obj"]), i) for i, (_, b) in enumerate(pool)])
    row = np.concatenate([np.arange(len(b["obj"])) for _, b in pool])
    col = {name: np.concatenate([b[name] for _, b in pool]) for name in ("obj", "cost", "worst", "cap", "reps")}
    keep = np.ones(len(owner), dtype=bool)

    def hold_min(values: np.ndarray, exact: bool = False) -> None:
        best = values[keep].min()
        keep[:] &= values <= (best if exact else best + _slack(best))

    hold_min(col["obj"])
    if objective != "cost":
        hold_min(col["cost"])
    hold_min(col["worst"], exact=True)
    hold_min(-col["cap"])
    hold_min(col["reps"].astype(float), exact=True)
    first = int(np.flatnonzero(keep)[0])
    cfg, box = pool[owner[first]]
    return cfg, box["y"][row[first]]
