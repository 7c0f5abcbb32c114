"""plan() by column generation: the joint placement as a choice of one option per workload.

An option k of workload w (a column) is one configuration and a replica vector that meets w's own
constraints; it has an objective o_k (cost or power), a cost c_k and devices a_hk on each shared
hardware h. The plan is the master problem

    min Σ_k o_k·x_k   s.t.  Σ_{k of w} x_k = 1 (each w),  Σ_k a_hk·x_k <= I_h (each shared h),
                            Σ_k c_k·x_k <= B (shared budget),  x_k ∈ {0, 1}

whose LP relaxation is far tighter than the replica MILP's (milp.py): each workload's options
enter whole. It is solved over a growing pool (HiGHS through scipy): the LP's duals π_h >= 0 and
β >= 0 price each replica of candidate i at v_i + π_h(i)·d_i + β·p_i (v = price or power), and
each workload's least option at those prices (enumerate.Priced, exact) joins the pool when its
reduced cost is negative. Any π, β >= 0 bound every plan from below (Lagrangian relaxation):

    LB(π, β) = Σ_w m_w - π·I - β·B,    m_w = w's least option at the prices

Proof of optimality. A feasible plan of objective C satisfies C >= LB + Σ_w r_w, r_w >= 0 the
reduced cost of w's option (its value at the prices minus m_w). So every plan within the stage
tolerance of the optimum, the optimum itself and every plan its tie-break may move to, uses per
workload an option with r_w <= UB - LB + slack, UB the objective of any feasible plan. The pool is
completed with every such option (Priced.within) and the master solved as an integer program
over it with the requested solver: its optimum is the plan's, and its tie-break (worst p99, then
capacity, then replicas, workload by workload with the others held, as milp.py's) picks from
complete sets. Where no feasible plan is known and the pool holds none (the LP's optimum is
fractional), options join by reduced cost under a growing threshold until the master finds one,
and its objective is then the UB. Where that set is too large or time runs out, the caller's MILP
answers, warm started from the best plan found and with the Lagrangian bound for its reported gap.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pulp
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from matcher.enumerate import Priced, TooLarge, per_replica
from matcher.milp import solver_command
from matcher.screen import Workload
from matcher.solution import TOL

COLUMN = "column generation"  # the answer's `solver` when the plan was proven here
MAX_ROUNDS = 60  # LP rounds of column generation before the bound is taken as it stands
MAX_COLUMNS = 20_000  # options in the completed pool (every workload together) before giving way to the MILP
_HOLD = 1e-7  # milp.Model.solve's stage tolerance
_PENALTY = 1e3  # the LP's price of overrunning a shared limit by one unit, per unit of the dearest option


def _slack(value: float) -> float:
    return _HOLD * max(1.0, abs(value))


@dataclass(frozen=True)
class Column:
    """One option of one workload: positions within the workload -> replicas, and its numbers."""

    w: int
    chosen: tuple[tuple[int, int], ...]
    obj: float
    cost: float
    worst: float
    cap: float
    reps: int
    use: np.ndarray  # devices on each shared hardware, in Columns.hardware's order


@dataclass
class Outcome:
    """What column generation found: a proven plan (`answer`, positions within each workload ->
    replicas), or the best plan found and the best lower bound for the MILP that then answers, and
    per workload the configurations an optimal plan can still use (reduced-cost fixing)."""

    answer: list[dict[int, int]] | None = None
    incumbent: list[dict[tuple[str, str], int]] | None = None
    upper: float = math.inf
    lower: float = -math.inf
    usable: list[set[str]] | None = None
    rounds: int = 0
    columns: int = 0


class Pool:
    """The options generated so far, per workload, without repeats."""

    def __init__(self, ws: list[Workload], objective: str, hardware: list[str]):
        self.ws, self.objective, self.hardware = ws, objective, hardware
        self.cols: list[Column] = []
        self.seen: set[tuple[int, tuple[tuple[int, int], ...]]] = set()
        slot = {h: j for j, h in enumerate(hardware)}
        self.slot = [np.array([slot.get(h, -1) for h in wl.hw], dtype=int) for wl in ws]

    def add(self, w: int, chosen: Mapping[int, int]) -> bool:
        """Adds w's option (position -> replicas); False if the pool had it."""
        key = tuple(sorted((int(i), int(n)) for i, n in chosen.items() if n > 0))
        if (w, key) in self.seen or not key:
            return False
        wl = self.ws[w]
        idx = np.array([i for i, _ in key], dtype=int)
        n = np.array([k for _, k in key], dtype=float)
        use = np.zeros(len(self.hardware))
        slots = self.slot[w][idx]
        np.add.at(use, slots[slots >= 0], (n * wl.devices[idx])[slots >= 0])
        per = per_replica(wl, self.objective)[idx]
        self.cols.append(Column(w, key, float(n @ per), float(n @ wl.price[idx]),
                                float(wl.lat_or_inf[idx].max()), float(n @ wl.thr[idx]),
                                int(n.sum()), use))
        self.seen.add((w, key))
        return True

    def add_box(self, w: int, box_ix: np.ndarray, ys: np.ndarray) -> int:
        """Adds each replica vector in ys (over the configuration's positions box_ix)."""
        return sum(self.add(w, {int(box_ix[j]): int(n) for j, n in enumerate(y) if n > 0}) for y in ys)

    def values(self, w: int, pi: np.ndarray, beta: float) -> np.ndarray:
        """Per candidate of w, what one replica adds at prices π, β."""
        wl = self.ws[w]
        base = per_replica(wl, self.objective)
        slots = self.slot[w]
        extra = np.where(slots >= 0, pi[np.maximum(slots, 0)] * wl.devices, 0.0) if len(pi) else 0.0
        return base + extra + beta * wl.price

    def at(self, col: Column, pi: np.ndarray, beta: float) -> float:
        return col.obj + float(pi @ col.use) + beta * col.cost


def solve(ws: list[Workload], objective: str, shared_inv: Mapping[str, float], budget: float | None,
          start: Sequence[Mapping[int, int]], solver: str, deadline: float) -> Outcome:
    """The plan over ws (every workload single-configuration, objective cost or energy), from the
    options in `start` (each workload's own optimum, positions within it -> replicas)."""
    hardware = sorted(h for h in shared_inv if any(h in wl.hw for wl in ws))
    pool = Pool(ws, objective, hardware)
    for w, ch in enumerate(start):
        pool.add(w, ch)
    caps = np.array([shared_inv[h] + TOL for h in hardware])
    limit = budget * (1 + TOL) if budget is not None else None
    priced = [Priced(wl, objective) for wl in ws]
    out = Outcome()
    best: tuple[float, np.ndarray, float, list[float]] | None = None  # LB, π, β, each m_w
    try:
        for out.rounds in range(1, MAX_ROUNDS + 1):
            if time.perf_counter() >= deadline:
                break
            lp = _lp(pool, len(ws), caps, limit)
            if lp is None:
                break  # the pool's LP is infeasible (no incumbent) or HiGHS failed: the MILP answers
            value, pi, beta, mu, overrun = lp
            least, added = [], 0
            own_at = [math.inf] * len(ws)
            for c in pool.cols:
                own_at[c.w] = min(own_at[c.w], pool.at(c, pi, beta))
            for w in range(len(ws)):
                if time.perf_counter() >= deadline:
                    break  # a round priced in part gives no bound: the bound so far stands
                v = pool.values(w, pi, beta)
                own = own_at[w]
                found = priced[w].cheapest(v, own)
                if found is None:
                    least.append(own)
                    continue
                m, cfg, y = found
                least.append(m)
                if m < mu[w] - 1e-9 * max(1.0, abs(mu[w])):
                    added += pool.add_box(w, priced[w].boxes[cfg], y[None, :])
            if len(least) < len(ws):
                break
            lb = float(sum(least) - pi @ caps - (beta * limit if limit is not None else 0.0))
            if best is None or lb > best[0]:
                best = (lb, pi, beta, least)
            if not added or value - lb <= _slack(value):
                break
        if best is None:
            return out
        lb, pi, beta, least = best
        out.lower = lb
        at = [pool.values(w, pi, beta) for w in range(len(ws))]

        def complete(spare: float) -> bool:
            """Adds every option whose reduced cost is at most `spare`; False when time ran out."""
            room = MAX_COLUMNS - len(pool.cols)
            for w in range(len(ws)):
                if time.perf_counter() >= deadline:
                    return False
                bound = least[w] + spare + _slack(least[w] + spare)
                for cfg, box in priced[w].within(at[w], bound, limit=max(room, 0)):
                    room -= pool.add_box(w, priced[w].boxes[cfg], box["y"])
            return True

        # Where the pool holds no integer plan (the LP's optimum is fractional and no feasible plan
        # was known), options are added by reduced cost, a threshold growing tenfold from 1e-4 of
        # the bound, until one does: what it then costs bounds the threshold that proves it.
        # An LP that still overruns a shared limit says no plan may exist: the MILP decides.
        if overrun > 1e-6:
            return out
        first = _master(pool, caps, limit, solver, deadline)
        scale = max(abs(lb), 1e-9)
        spare = 1e-5 * scale
        while first is None:
            spare *= 10
            if spare > scale or not complete(spare):
                return out
            first = _master(pool, caps, limit, solver, deadline)
        out.upper = sum(pool.cols[k].obj for k in first)
        out.incumbent = _incumbent(pool, first)
        spare = out.upper - lb + _slack(out.upper)
        out.usable = [{priced[w].names[g] for g in np.flatnonzero(
            priced[w].bounds(at[w]) <= least[w] + spare + _slack(least[w] + spare))} for w in range(len(ws))]
        if not complete(spare):
            return out
        final = _master(pool, caps, limit, solver, deadline, tie_break=True)
    except TooLarge:
        return out
    out.columns = len(pool.cols)
    if final is None:
        return out
    out.answer = [dict(pool.cols[k].chosen) for k in final]
    out.upper = sum(pool.cols[k].obj for k in final)
    out.lower = out.upper
    return out


def _incumbent(pool: Pool, chosen: list[int]) -> list[dict[tuple[str, str], int]]:
    return [{(pool.ws[c.w].hw[i], pool.ws[c.w].cfg[i]): n for i, n in c.chosen}
            for c in (pool.cols[k] for k in chosen)]


def _lp(pool: Pool, n_w: int, caps: np.ndarray, limit: float | None
        ) -> tuple[float, np.ndarray, float, np.ndarray, float] | None:
    """The master's LP relaxation over the pool: its value, π (per shared hardware), β, the
    workloads' duals μ and how far it overruns the shared limits (Phase I); None when it has no
    solution."""
    cols = pool.cols
    k = len(cols)
    obj = np.array([c.obj for c in cols])
    rows = [np.array([c.use for c in cols]).T] if len(caps) else []
    rhs = list(caps)
    if limit is not None:
        rows.append(np.array([[c.cost for c in cols]]))
        rhs.append(limit)
    # Each shared limit may be overrun at a steep price (Phase I of the simplex method, in big-M
    # form): the pool starts from the own optima, which overrun it, where no feasible plan is known.
    # Its duals then price the overrun hardware high and the next options avoid it. The integer
    # master has no such slack.
    n_s = len(rows and rhs)
    penalty = _PENALTY * max(1.0, float(np.abs(obj).max()))
    obj = np.concatenate([obj, np.full(n_s, penalty)])
    a_eq = csr_matrix((np.ones(k), ([c.w for c in cols], np.arange(k))), shape=(n_w, k + n_s))
    a_ub = np.hstack([np.vstack(rows), -np.eye(n_s)]) if rows else None
    res = linprog(obj, A_ub=a_ub, b_ub=np.array(rhs) if rows else None, A_eq=a_eq, b_eq=np.ones(n_w),
                  bounds=(0, None), method="highs")
    if res.status != 0:
        return None
    duals = -np.asarray(res.ineqlin.marginals) if rows else np.zeros(0)
    duals = np.maximum(duals, 0.0)
    pi = duals[:len(caps)]
    beta = float(duals[len(caps)]) if limit is not None else 0.0
    return float(res.fun), pi, beta, np.asarray(res.eqlin.marginals), float(np.asarray(res.x)[k:].sum())


def _master(pool: Pool, caps: np.ndarray, limit: float | None, solver: str, deadline: float,
            tie_break: bool = False) -> list[int] | None:
    """The master as an integer program over the pool, exactly, with the requested solver: the
    objective, then cost (energy objective), each held; then (tie_break) milp.py's tie-break per
    workload. The chosen column of each workload, or None (infeasible, a failure or the time)."""
    cols = pool.cols
    n_w = len(pool.ws)
    prob = pulp.LpProblem("plan_master", pulp.LpMinimize)
    x = [prob.add_variable(f"x{k}", 0, 1, cat=pulp.LpBinary) for k in range(len(cols))]
    mine: list[list[int]] = [[] for _ in range(n_w)]
    for k, c in enumerate(cols):
        mine[c.w].append(k)
    for w in range(n_w):
        prob.addConstraint(pulp.LpAffineExpression([(x[k], 1.0) for k in mine[w]]) == 1, f"one_{w}")
    for j, cap in enumerate(caps):
        terms = [(x[k], float(c.use[j])) for k, c in enumerate(cols) if c.use[j] > 0]
        if terms:
            prob.addConstraint(pulp.LpAffineExpression(terms) <= float(cap), f"inv_{j}")
    if limit is not None:
        # In units of the budget: a solver's feasibility tolerance is absolute (about 1e-7), which
        # let 2e-8 USD/h pass a budget of 1e-8 USD/h.
        unit = limit if limit > 0 else 1.0
        prob.addConstraint(pulp.LpAffineExpression([(x[k], c.cost / unit) for k, c in enumerate(cols)]) <= limit / unit,
                           "budget")
    stages = [np.array([c.obj for c in cols])]
    if pool.objective != "cost":
        stages.append(np.array([c.cost for c in cols]))
    held: list[float] = []
    chosen: list[int] | None = None
    for s, coef in enumerate(stages):
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        expr = pulp.LpAffineExpression([(x[k], float(a)) for k, a in enumerate(coef)])
        prob.setObjective(expr)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                prob.solve(solver_command(solver, left))
        except (RuntimeError, pulp.PulpSolverError, OSError, IndexError, ValueError):
            return None  # the MILP answers, and says what failed
        if prob.sol_status != pulp.LpSolutionOptimal:
            return None
        chosen = [max(mine[w], key=lambda k: x[k].varValue or 0.0) for w in range(n_w)]
        if not _within(pool, chosen, caps, limit):
            return None  # the solver's tolerance let a shared limit slip: the MILP answers instead
        value = float(sum(coef[k] for k in chosen))
        held.append(value + _slack(value))
        if s + 1 < len(stages):
            prob.addConstraint(expr <= held[-1], f"pin_{s}")
    assert chosen is not None
    if tie_break:
        _tie_break(pool, chosen, caps, limit, stages, held)
    return chosen


def _within(pool: Pool, chosen: list[int], caps: np.ndarray, limit: float | None) -> bool:
    """The plan meets the shared limits exactly as enumeration checks them (caps and limit carry
    the tolerance already), whatever the solver's own tolerance accepted."""
    cols = [pool.cols[k] for k in chosen]
    if len(caps) and (sum(c.use for c in cols) > caps).any():
        return False
    return limit is None or sum(c.cost for c in cols) <= limit


def _tie_break(pool: Pool, chosen: list[int], caps: np.ndarray, limit: float | None, stages: list[np.ndarray],
               held: list[float]) -> None:
    """milp.py's tie-break, workload by workload with the others held: among w's options that keep
    the plan within the shared limits and the held stages, the lowest worst p99, then the highest
    capacity (held with the stage tolerance), then the fewest replicas. In place.

    Unlike the MILP's single pass, passes repeat until no workload can do better on its own: a
    later workload's move can free what an earlier one wanted (a probe found workloads left at
    12 ms beside an idle device that gave one of them 10 ms at the same cost). A workload moves
    only when its option fails a hold, so each move improves its own (p99, capacity, replicas) and
    leaves the others' as they were: the passes end."""
    cols = pool.cols
    use = np.array([c.use for c in cols]) if len(caps) else np.zeros((len(cols), 0))
    cost = np.array([c.cost for c in cols])
    owner = np.array([c.w for c in cols])
    worst = np.array([c.worst for c in cols])
    cap = np.array([c.cap for c in cols])
    reps = np.array([c.reps for c in cols], dtype=float)
    moved = True
    while moved:
        moved = False
        for w in range(len(pool.ws)):
            others = [k for v, k in enumerate(chosen) if v != w]
            ok = owner == w
            if len(caps):
                ok &= (use + use[others].sum(axis=0) <= caps).all(axis=1)
            if limit is not None:
                ok &= cost + cost[others].sum() <= limit
            for coef, pin in zip(stages, held, strict=True):
                ok &= coef + coef[others].sum() <= pin
            ok[chosen[w]] = True  # the answer so far holds its own pins (float sums in another order)
            for values, exact in ((worst, True), (-cap, False), (reps, True)):
                top = values[ok].min()
                ok &= values <= (top if exact else top + _slack(top))
            if not ok[chosen[w]]:
                chosen[w] = int(np.flatnonzero(ok)[0])
                moved = True
