"""Exact answers without a solver, where enumerating is cheaper than building a MILP.

One workload, one configuration, objective cost or energy: the MILP then picks a configuration c
and, for each hardware h that runs c, a replica count y_h in 0..ub_h (the screen's bound: C0,
which already holds inventory, budget and power for one candidate alone). Per configuration that
is a box of prod(ub_h + 1) replica vectors, and the joint rows (demand C1, one replica C1b,
budgets C8/C9, power C10) are checks on each vector. So:

* a configuration's objective is at least LB_c (`Priced.bounds`) = max(min_h v_h, D·min_h v_h/T_h) (v = price or
  power per replica: the fractional cover of the demand), so configurations are visited in LB
  order and the visit stops once LB_c exceeds the best objective found (with the stage tolerance);
* each visited box is enumerated whole with numpy, its infeasible vectors dropped, and only those
  within the stage tolerance of its own least objective kept (nothing else can tie the optimum);
* the kept vectors of every visited configuration are ranked by the MILP's own stages
  (milp.py): the objective, then cost (energy objective), then the worst latency (exact), then the
  highest capacity, then the fewest replicas, each held at its best with the same tolerance
  (1e-7 relative); what still ties comes in the order visited (deterministic, as the solver's is);
* top-k: the next rank must leave out at least one candidate of each earlier option (C13).

* a box larger than MAX_VECTORS (no inventory cap, a demand of tens of replicas) is searched
  instead of enumerated (`_box_pruned`): replica counts are fixed one candidate at a time and a
  partial vector is dropped once its objective plus the least fractional cover of the rest of the
  demand exceeds the rank's bound (the best found so far, or a greedy vector's, plus the slack).
  Every vector that could tie the best survives, so the ranking above is unchanged.

`applicable` says when this answers instead of the MILP: a single workload, single_config, cost or
energy. A pruned search holding more than MAX_PARTIALS partial vectors (or about to form more
than MAX_EXPANSION in one step) raises TooLarge, and the MILP answers. tests/unit/test_enumerate.py
checks equality with the MILP stage by stage on random instances, small boxes and large ones.
"""

from __future__ import annotations

import math
import time

import numpy as np

from matcher.screen import Workload
from matcher.solution import TOL

ENUMERATION = "enumeration"  # the answer's `solver` when no solver was needed
MAX_VECTORS = 100_000  # per configuration; beyond it the box is searched with pruning
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
    """Whether solve_enumerated may answer: a box larger than MAX_VECTORS is searched with pruning,
    which raises TooLarge where even that holds too many partial vectors (the MILP answers then)."""
    return bool(single_config and objective in ("cost", "energy") and wl.hw)


class TooLarge(Exception):
    """A configuration's pruned search held more than MAX_PARTIALS partial vectors at once, or was
    about to form more than MAX_EXPANSION in one step: the MILP is the cheaper exact method here."""


MAX_PARTIALS = 200_000
MAX_EXPANSION = 1_000_000  # partial vectors one step of the search may form before pruning them


def _box(wl: Workload, ix: np.ndarray, objective: str, values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every feasible replica vector of one configuration and its stage values."""
    grids = np.indices(tuple(int(u) + 1 for u in wl.ub[ix])).reshape(len(ix), -1).T
    return _vectors(wl, ix, grids, objective, values)


def per_replica(wl: Workload, objective: str, values: np.ndarray | None = None) -> np.ndarray:
    """What one replica of each candidate adds to the objective searched: `values` where given
    (columns.py prices the shared limits into it), else power (energy) or price."""
    if values is not None:
        return values
    return wl.power_or_0 if objective == "energy" else wl.price


def _vectors(wl: Workload, ix: np.ndarray, grids: np.ndarray, objective: str,
             values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The feasible ones of `grids` (replica vectors of one configuration) and their stage values;
    "obj" is the objective searched (`per_replica`)."""
    c = wl.req.constraints
    thr, price = wl.thr[ix], wl.price[ix]
    power = wl.power_or_0[ix]
    lat = wl.lat_or_inf[ix]  # a candidate without a latency counts as the slowest
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
    obj = grids @ values[ix] if values is not None else (watts if objective == "energy" else cost)
    return {"y": g, "obj": obj[ok], "cost": cost[ok], "watts": watts[ok], "worst": worst, "cap": cap[ok],
            "reps": reps[ok]}


def _cover(v: np.ndarray, thr: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints of the least objective that covers a demand with these candidates taken
    fractionally, each up to its bound (cheapest per sample/s first): a convex piecewise-linear
    lower bound on any integer cover; np.interp reads it, past the last point nothing covers."""
    useful = (thr > 0) & (ub > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(useful, v / np.where(thr > 0, thr, 1.0), math.inf)
    order = [i for i in np.argsort(ratio, kind="stable") if useful[i]]
    caps = np.concatenate([[0.0], np.cumsum([ub[i] * thr[i] for i in order])])
    vals = np.concatenate([[0.0], np.cumsum([ub[i] * v[i] for i in order])])
    return caps, vals


def _box_pruned(wl: Workload, ix: np.ndarray, objective: str, bound: float,
                values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """_box's vectors whose objective is at most `bound`, without enumerating the whole box: the
    replica counts are fixed one candidate at a time, and a partial vector is dropped once its
    objective plus the least it needs to cover the rest of the demand (`_cover`) exceeds the bound,
    or once a budget or power cap is exceeded (every term is non-negative). The leaves are checked
    by _vectors, as _box's. Raises TooLarge past MAX_PARTIALS partial vectors."""
    c = wl.req.constraints
    thr, price, ub = wl.thr[ix], wl.price[ix], wl.ub[ix].astype(int)
    power = wl.power_or_0[ix]
    v = per_replica(wl, objective, values)[ix]
    need = wl.demand * (1 - TOL) if wl.demand > 0 else 0.0
    budget = min((x for x in (c.budget_per_hour_usd,
                              c.budget_total_usd / c.duration_h if c.budget_total_usd is not None
                              and c.duration_h is not None else None) if x is not None), default=math.inf)
    watts_cap = c.max_power_w if c.max_power_w is not None else math.inf
    limit = bound * (1 + 1e-9) + 1e-12  # float sums in another order than the leaves' dot products
    m = len(ix)
    y = np.zeros((1, 0), dtype=np.int64)
    obj = cap = cost = watts = np.zeros(1)
    for j in range(m):
        if (int(ub[j]) + 1) * len(obj) > MAX_EXPANSION:  # a bound of 10^9 replicas would not fit in memory
            raise TooLarge
        n = np.arange(ub[j] + 1)
        y = np.concatenate([np.repeat(y, len(n), axis=0), np.tile(n, len(obj))[:, None]], axis=1)
        obj = (obj[:, None] + n * v[j]).ravel()
        cap = (cap[:, None] + n * thr[j]).ravel()
        cost = (cost[:, None] + n * price[j]).ravel()
        watts = (watts[:, None] + n * power[j]).ravel()
        caps, vals = _cover(v[j + 1:], thr[j + 1:], ub[j + 1:])
        short = np.maximum(need - cap, 0.0)
        rest = np.interp(short, caps, vals)
        keep = (short <= caps[-1] * (1 + 1e-9) + 1e-9) & (obj + rest <= limit)
        keep &= (cost <= budget * (1 + TOL) + 1e-12) & (watts <= watts_cap * (1 + TOL) + 1e-12)
        if not keep.any():
            return _vectors(wl, ix, np.zeros((0, m), dtype=np.int64), objective, values)
        y, obj, cap, cost, watts = y[keep], obj[keep], cap[keep], cost[keep], watts[keep]
        if len(obj) > MAX_PARTIALS:
            raise TooLarge
    box = _vectors(wl, ix, y, objective, values)
    within = box["obj"] <= limit
    return {name: arr[within] for name, arr in box.items()}


def _greedy_bound(wl: Workload, ix: np.ndarray, objective: str, cut: list[np.ndarray],
                  values: np.ndarray | None = None) -> float:
    """The objective of one feasible vector of the box (cheapest per sample/s first, rounded up),
    plus the stage slack, or inf: a first bound for _box_pruned. A vector an earlier option's cut
    (C13) forbids is no bound for what the cut leaves."""
    v = per_replica(wl, objective, values)[ix]
    thr, ub = wl.thr[ix], wl.ub[ix].astype(int)
    y = np.zeros(len(ix), dtype=np.int64)
    left = wl.demand * (1 - TOL)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(thr > 0, v / np.where(thr > 0, thr, 1.0), math.inf)
    for i in np.argsort(ratio, kind="stable"):
        if left <= 0 and y.sum() >= 1:
            break
        if thr[i] <= 0 or ub[i] <= 0:
            continue
        y[i] = min(int(ub[i]), max(1, math.ceil(left / thr[i]))) if left > 0 else 1
        left -= y[i] * thr[i]
    box = _vectors(wl, ix, y[None, :], objective, values)
    if not len(box["obj"]) or any((y[cols] > 0).all() for cols in cut):
        return math.inf
    best = float(box["obj"][0])
    return best + _slack(best)


def solve_enumerated(wl: Workload, *, objective: str, k: int,
                     deadline: float = math.inf) -> tuple[list[dict[int, int]], bool]:
    """Up to k options (position within wl -> replicas), best first ([] when none is feasible), and
    whether the deadline cut the search short (the options are then the best found, not proven)."""
    priced = Priced(wl, objective)
    boxes = priced.boxes
    lbs = dict(zip(priced.names, priced.bounds(per_replica(wl, objective, None)).tolist(), strict=True))
    order = sorted(boxes, key=lambda cfg: (lbs[cfg], int(boxes[cfg][0])))
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
            # the earlier options that lie in this configuration: the next must leave one of each out
            cuts = [cols for s in supports if len(cols := np.flatnonzero(np.isin(ix, s))) == len(s)]
            if float(np.prod(wl.ub[ix].astype(float) + 1.0)) <= MAX_VECTORS:
                if cfg not in cache:
                    cache[cfg] = _box(wl, ix, objective)
                box = cache[cfg]
            else:  # searched with this rank's bound: what it prunes cannot tie this rank's best
                bound = best + _slack(best) if math.isfinite(best) else math.inf
                box = _box_pruned(wl, ix, objective, min(bound, _greedy_bound(wl, ix, objective, cuts)))
            keep = np.ones(len(box["y"]), dtype=bool)
            for cols in cuts:
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


class Priced:
    """One workload's options at per-replica values other than its own prices (columns.py prices
    the shared inventory and budget into them): the configurations' boxes and a lower bound per
    configuration at those values, computed for all configurations at once."""

    def __init__(self, wl: Workload, objective: str):
        self.wl, self.objective = wl, objective
        self.boxes = config_boxes(wl)
        self.names = list(self.boxes)
        self.group = np.empty(len(wl.hw), dtype=int)
        for g, ix in enumerate(self.boxes.values()):
            self.group[ix] = g
        self.small = {c: float(np.prod(wl.ub[ix].astype(float) + 1.0)) <= MAX_VECTORS for c, ix in self.boxes.items()}

    def bounds(self, values: np.ndarray) -> np.ndarray:
        """Per configuration, in self.names' order, a lower bound on its options' objective at
        `values` (non-negative): max(least value, D x least value per sample/s), the fractional
        cover of the demand."""
        wl, n = self.wl, len(self.names)
        least = np.full(n, math.inf)
        np.minimum.at(least, self.group, values)
        if wl.demand > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                per = np.where(wl.thr > 0, values / np.where(wl.thr > 0, wl.thr, 1.0), math.inf)
            ratio = np.full(n, math.inf)
            np.minimum.at(ratio, self.group, per)
            least = np.maximum(least, wl.demand * (1 - TOL) * ratio)
        return least

    def within(self, values: np.ndarray, bound: float, limit: int | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Every feasible option whose objective at `values` is at most `bound`, per configuration
        (configurations whose lower bound passes it are skipped). Raises TooLarge where a pruned
        search does, or once more than `limit` options would be returned."""
        out = []
        count = 0
        lbs = self.bounds(values)
        for g in np.flatnonzero(lbs <= bound * (1 + 1e-9) + 1e-12):
            cfg = self.names[g]
            ix = self.boxes[cfg]
            box = (_box(self.wl, ix, self.objective, values) if self.small[cfg]
                   else _box_pruned(self.wl, ix, self.objective, bound, values))
            keep = box["obj"] <= bound * (1 + 1e-9) + 1e-12
            if keep.any():
                count += int(keep.sum())
                if limit is not None and count > limit:
                    raise TooLarge
                out.append((cfg, {name: arr[keep] for name, arr in box.items()}))
        return out

    def cheapest(self, values: np.ndarray, bound: float = math.inf) -> tuple[float, str, np.ndarray] | None:
        """The least objective at `values` over the feasible options, its configuration and replica
        vector (over that configuration's candidates), or None when no option is at most `bound`.
        Configurations are visited in lower-bound order, each searched with the best so far."""
        lbs = self.bounds(values)
        best: tuple[float, str, np.ndarray] | None = None
        for g in np.argsort(lbs, kind="stable"):
            if lbs[g] > bound * (1 + 1e-9) + 1e-12:
                break
            cfg = self.names[g]
            ix = self.boxes[cfg]
            greedy = _greedy_bound(self.wl, ix, self.objective, [], values)
            box = _box_pruned(self.wl, ix, self.objective, min(bound, greedy), values) if math.isfinite(
                min(bound, greedy)) or not self.small[cfg] else _box(self.wl, ix, self.objective, values)
            if len(box["obj"]):
                j = int(np.argmin(box["obj"]))
                if box["obj"][j] <= bound:
                    bound = float(box["obj"][j])
                    best = (bound, cfg, box["y"][j])
        return best
