"""The questions put to the MILP (milp.py): the best options for one workload (`solve`), and one
option per workload placed jointly under shared inventory and budget (`plan`).

Every answer is a record (solution.py) whose status is optimal | infeasible | time_limit |
unbounded | error with a reason, and, when infeasible, a Diagnosis from the elastic model
(diagnose.py). `time_limit_s` bounds the whole call, diagnosis included. Options that tie on the
objective are ranked by dominance, never by name: lower worst p99, then higher capacity, then
fewer replicas (the stages of milp.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matcher import columns
from matcher.diagnose import binding, diagnose, diagnose_plan
from matcher.enumerate import ENUMERATION, Priced, TooLarge, applicable, per_replica, solve_enumerated
from matcher.metrics import Columns
from matcher.milp import Mode, build, unknown_solver
from matcher.requirements import Requirements
from matcher.screen import TableView, Workload, screen, table_view
from matcher.solution import TOL, Option, PlanSolution, Solution, Status


def solve(
    req: Requirements,
    candidates: pd.DataFrame,
    *,
    single_config: bool = True,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
    top_k: int | None = None,
    explain: bool = True,
    method: str = "auto",
    columns: Columns | None = None,
) -> Solution:
    """Best `top_k` (default req.top_k) options for one workload, or why there is none.

    Alternatives come from no-good cuts (C13): after each option, at least one (hardware,
    configuration) it used must be left out, so the next option is neither the same support nor
    that support with extra replicas bolted on. `explain` adds each option's binding constraints.
    method "auto": exact enumeration (enumerate.py) where it applies and is cheaper, else the
    MILP; "milp": always the MILP (the tests compare the two). `columns`: the candidates' Columns
    where the caller has them already."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    k = req.top_k if top_k is None else top_k
    objective = req.objective
    n_total = len(candidates)
    if (why := unknown_solver(solver)) is not None:
        return Solution("error", why, solver=solver, candidates_considered=n_total)

    view = table_view(candidates, columns)
    wl = screen(req, candidates, objective=objective, elastic=False, view=view)
    excluded = dict(wl.excluded)
    t_screen = time.perf_counter() - t0
    if not wl.hw:
        diag = diagnose(req, candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        return Solution("infeasible", diag.message if diag else "every candidate was screened out", (), diag,
                        solver, time.perf_counter() - t0, n_total, excluded)

    if method == "auto" and applicable(wl, objective=objective, single_config=single_config):
        try:
            return _enumerated(req, candidates, wl, k, objective, single_config, solver, explain, t0, deadline,
                               excluded, t_screen, view)
        except TooLarge:
            pass  # a box too large even pruned: the MILP below
    t1 = time.perf_counter()
    m = build([wl], Mode(objective=objective, single_config=single_config, alternatives=k > 1))
    timings = {"screen_s": t_screen, "build_s": time.perf_counter() - t1}
    full = screen(req, candidates, objective=objective, elastic=True, view=view) if explain else None
    options: list[Option] = []
    status: Status = "optimal"
    reason = ""
    for rank in range(1, k + 1):
        st, why = m.solve(solver, deadline)
        if st not in ("optimal", "time_limit") or not m.has_answer:
            if rank == 1:
                status, reason = st, why  # later ranks: simply no further alternative
            break
        chosen = m.read()[0]
        options.append(_option(wl, chosen, rank, objective, full))
        if st == "time_limit":
            status, reason = st, why
            break
        if rank == k:
            break
        m.exclude(0, [(wl.hw[i], wl.cfg[i]) for i in chosen])

    diag = None
    if status == "infeasible":
        diag = diagnose(req, candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        reason = diag.message if diag else reason
    if status == "optimal" and options:
        reason = f"{len(options)} option(s); requested {k}" + ("" if len(options) == k else ", no further feasible option")
    timings["solver_s"] = m.solver_s
    return Solution(status, reason, tuple(options), diag, solver, time.perf_counter() - t0, n_total, excluded,
                    timings)


def _enumerated(req: Requirements, candidates: pd.DataFrame, wl: Workload, k: int, objective: str,
                single_config: bool, solver: str, explain: bool, t0: float, deadline: float,
                excluded: dict[str, int], t_screen: float, view: TableView) -> Solution:
    """solve() answered by enumeration: the same options, status and diagnosis as the MILP's."""
    t1 = time.perf_counter()
    chosen, cut_short = solve_enumerated(wl, objective=objective, k=k, deadline=deadline)
    timings = {"screen_s": t_screen, "enumerate_s": time.perf_counter() - t1}
    full = screen(req, candidates, objective=objective, elastic=True, view=view) if explain and chosen else None
    options = tuple(_option(wl, ch, rank, objective, full) for rank, ch in enumerate(chosen, start=1))
    n_total = len(candidates)
    if cut_short:  # the MILP's wording for the same outcome (milp.Model._run)
        why = ("time limit reached; the best option found is returned, optimality not proven" if options else
               "time limit reached before any feasible option was found")
        return Solution("time_limit", why, options, None, ENUMERATION, time.perf_counter() - t0, n_total, excluded,
                        timings)
    if not options:
        diag = diagnose(req, candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        return Solution("infeasible", diag.message if diag else "no feasible option", (), diag, ENUMERATION,
                        time.perf_counter() - t0, n_total, excluded, timings)
    reason = f"{len(options)} option(s); requested {k}" + ("" if len(options) == k else ", no further feasible option")
    return Solution("optimal", reason, options, None, ENUMERATION, time.perf_counter() - t0, n_total, excluded,
                    timings)


def plan(
    workloads: Sequence[tuple[Requirements, pd.DataFrame]],
    *,
    inventory: Mapping[str, int] | None = None,
    budget_per_hour_usd: float | None = None,
    objective: str = "cost",
    single_config: bool = True,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
    method: str = "auto",
) -> PlanSolution:
    """One option per workload, jointly: each workload's own constraints hold, and together they
    fit the shared inventory (devices per hardware) and the shared budget per hour. Objective
    `cost` or `energy` sums over workloads; `latency` sums each workload's worst p99. method "auto":
    the exact reductions of _plan_presolve first; "milp": the whole MILP (the tests compare)."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    n_total = sum(len(c) for _, c in workloads)
    if not workloads:
        return PlanSolution("error", "no workloads given", solver=solver)
    if (why := unknown_solver(solver)) is not None:
        return PlanSolution("error", why, solver=solver)
    shared_inv = {h: float(n) for h, n in (inventory or {}).items()}

    # Each workload is screened under the shared budget too (its own can be no larger in a plan):
    # a replica dearer than the whole budget never enters a model, where its price over the budget
    # (1e7 / 1e-9 USD/h) was past what HiGHS accepts.
    ws = [screen(_budget_at_most(r, budget_per_hour_usd), c, objective=objective, elastic=False,
                 prefix=f"workloads[{w}].", extra_inventory=shared_inv)
          for w, (r, c) in enumerate(workloads)]
    status: Status = "infeasible"
    reason = ""
    if all(wl.hw for wl in ws):
        pre = (_plan_presolve(workloads, ws, shared_inv, budget_per_hour_usd, objective, single_config, solver,
                              deadline) if method == "auto" else _Presolved(ws))
        if pre.answer is not None:
            opts = tuple(_option(wl, ch, 1, objective) for wl, ch in zip(ws, pre.answer, strict=True))
            return PlanSolution("optimal", f"{len(opts)} workloads placed; {pre.how}", opts,
                                sum(o.cost_per_hour_usd for o in opts), None, pre.solver, time.perf_counter() - t0,
                                n_total, gap=0.0)
        if pre.infeasible:
            ws = []  # a workload infeasible on its own: the diagnosis below says which
        else:
            ws = pre.workloads
    if ws and all(wl.hw for wl in ws):
        m = build(ws, Mode(objective=objective, single_config=single_config, shared_inventory=shared_inv,
                           shared_budget_per_hour_usd=budget_per_hour_usd))
        if pre.incumbent is not None and solver == "cbc":
            m.warm_start(pre.incumbent)
        status, reason = m.solve(solver, deadline)
        if m.has_answer and status in ("optimal", "time_limit"):
            opts = tuple(_option(wl, ch, 1, objective) for wl, ch in zip(ws, m.read(), strict=True))
            total = sum(o.cost_per_hour_usd for o in opts)
            found = sum(o.objective_value for o in opts)
            gap = 0.0 if status == "optimal" else (
                (found - pre.lower_bound) / max(abs(found), 1e-12) if math.isfinite(pre.lower_bound) else None)
            return PlanSolution(status, reason or f"{len(opts)} workloads placed", opts, total, None, solver,
                                time.perf_counter() - t0, n_total, gap=gap)
    elif ws:
        empty = [w for w, wl in enumerate(ws) if not wl.hw]
        reason = f"every candidate of workload(s) {empty} was screened out"

    diag = None
    if status == "infeasible":
        # An infeasible plan is answered with the limit that blocks it, which takes solves of its
        # own: up to half the time limit more (at most 30 s), so a request stays within 1.5x its
        # limit (a hostile 64-workload plan held a replica for the limit + 30 s).
        extra = min(30.0, 0.5 * time_limit_s) if time_limit_s is not None else 30.0
        diag = diagnose_plan(workloads, shared_inventory=shared_inv, budget_per_hour_usd=budget_per_hour_usd,
                             objective=objective, single_config=single_config, solver=solver,
                             deadline=deadline + extra)
        if diag is not None:
            reason = diag.message
    return PlanSolution(status, reason, tuple(None for _ in workloads), math.nan, diag, solver,
                        time.perf_counter() - t0, n_total)


@dataclass
class _Presolved:
    """What _plan_presolve found: the answer itself, or the workloads cut to what an optimal plan
    can use, and the sum of the workloads' own optima (a lower bound on the plan's objective)."""

    workloads: list[Workload]
    lower_bound: float = math.nan
    answer: list[dict[int, int]] | None = None
    how: str = "each workload's own best answer fits the shared limits"  # why the answer is proven
    solver: str = ENUMERATION
    infeasible: bool = False
    # a feasible plan (the greedy upper bound's), per workload replicas per (hardware, configuration):
    # the MILP's warm start; every configuration it uses survives the cut above (its own bound <= UB)
    incumbent: list[dict[tuple[str, str], int]] | None = None


def _plan_presolve(workloads: Sequence[tuple[Requirements, pd.DataFrame]], ws: list[Workload],
                   shared_inv: Mapping[str, float], budget: float | None, objective: str, single_config: bool,
                   solver: str, deadline: float) -> _Presolved:
    """Exact reductions of a plan before its MILP (cost or energy objective, every workload small
    enough to enumerate; otherwise the workloads as they are):

    * each workload's own optimum opt_w (enumerate.py, the shared inventory as its own cap) is a
      lower bound on its part of any plan, so LB = Σ opt_w bounds the plan. If the own optima fit
      the shared inventory and budget together, they are the plan (each workload keeps its own
      tie-break), proven optimal;
    * else column generation (columns.py) answers, with a proof, where it can;
    * where it cannot, a feasible plan from placing workloads one by one, largest first, each on
      what the earlier ones left, or column generation's best plan if cheaper, gives an upper
      bound UB and the MILP's warm start, and column generation's Lagrangian bound raises LB. In an
      optimal plan workload w spends at most opt_w + (UB - Σ opt), so a configuration whose own
      lower bound (enumerate.Priced.bounds) exceeds that is never used, by any optimal plan or its
      tie-break: it is dropped from the MILP, as is one whose reduced cost already exceeds UB - LB."""
    if objective not in ("cost", "energy") or not single_config:
        return _Presolved(ws)
    own = []
    for (req, cands), wl in zip(workloads, ws, strict=True):
        chosen = _own_best(req, cands, wl, objective, deadline)
        if chosen is None:
            return _Presolved(ws)
        if not chosen:
            return _Presolved(ws, infeasible=True)
        own.append(chosen)
    value = [_value(wl, ch, objective) for wl, ch in zip(ws, own, strict=True)]
    lower = float(sum(value))
    if _fits(ws, own, shared_inv, budget):
        return _Presolved(ws, lower, answer=own)
    # At most half the time left: where it proves nothing, the MILP keeps the other half.
    now = time.perf_counter()
    cg = columns.solve(ws, objective, shared_inv, budget, own, solver, now + 0.5 * (deadline - now))
    if cg.answer is not None:
        return _Presolved(ws, cg.upper, answer=cg.answer, solver=columns.COLUMN,
                          how=f"proven optimal by column generation ({cg.rounds} LP rounds, {cg.columns} options)")
    lower = max(lower, cg.lower)
    greedy = _greedy_plan(workloads, ws, value, shared_inv, budget, objective, deadline)
    found = [g for g in (greedy, (cg.upper, cg.incumbent) if cg.incumbent is not None else None) if g is not None]
    if not found:
        return _Presolved(ws, lower)
    upper, incumbent = min(found, key=lambda g: g[0])
    spare = upper - float(sum(value))
    keep = []
    for w, (wl, v) in enumerate(zip(ws, value, strict=True)):
        limit = v + spare + 1e-7 * max(1.0, abs(v + spare))
        priced = Priced(wl, objective)
        lbs = dict(zip(priced.names, priced.bounds(per_replica(wl, objective)).tolist(), strict=True))
        usable = cg.usable[w] if cg.usable is not None else set(lbs)
        keep.append(wl.take(np.array([lbs[c] <= limit and c in usable for c in wl.cfg], dtype=bool)))
    return _Presolved(keep, lower, incumbent=incumbent)


def _value(wl: Workload, chosen: Mapping[int, int], objective: str) -> float:
    per = wl.power if objective == "energy" else wl.price
    return float(sum(n * per[i] for i, n in chosen.items()))


def _fits(ws: list[Workload], answers: list[dict[int, int]], shared_inv: Mapping[str, float],
          budget: float | None) -> bool:
    used: dict[str, float] = {}
    cost = 0.0
    for wl, ch in zip(ws, answers, strict=True):
        for i, n in ch.items():
            used[wl.hw[i]] = used.get(wl.hw[i], 0.0) + n * wl.devices[i]
            cost += n * wl.price[i]
    if budget is not None and cost > budget * (1 + TOL):
        return False
    return all(used.get(hw, 0.0) <= cap + TOL for hw, cap in shared_inv.items())


def _greedy_plan(workloads: Sequence[tuple[Requirements, pd.DataFrame]], ws: list[Workload], value: list[float],
                 shared_inv: Mapping[str, float], budget: float | None, objective: str,
                 deadline: float) -> tuple[float, list[dict[tuple[str, str], int]]] | None:
    """A feasible plan built one workload at a time (largest own optimum first), each on the shared
    inventory and budget the earlier ones left: its objective and its replicas per (hardware,
    configuration) of each workload; None when that gets stuck."""
    left = dict(shared_inv)
    money = budget
    total = 0.0
    answer: list[dict[tuple[str, str], int]] = [{} for _ in ws]
    for w in sorted(range(len(ws)), key=lambda v: -value[v]):
        req, cands = workloads[w]
        req = _budget_at_most(req, None if money is None else max(money, 1e-12))
        wl = screen(req, cands, objective=objective, elastic=False, prefix=ws[w].prefix, extra_inventory=left)
        chosen = _own_best(req, cands, wl, objective, deadline) if wl.hw else {}
        if not chosen:
            return None
        for i, n in chosen.items():
            if wl.hw[i] in left:
                left[wl.hw[i]] -= n * wl.devices[i]
        if money is not None:
            money -= sum(n * wl.price[i] for i, n in chosen.items())
        total += _value(wl, chosen, objective)
        answer[w] = {(wl.hw[i], wl.cfg[i]): n for i, n in chosen.items()}
    return total, answer


def _budget_at_most(req: Requirements, cap: float | None) -> Requirements:
    """req with its budget per hour lowered to `cap` where that is lower (None: as it is)."""
    own = req.constraints.budget_per_hour_usd
    if cap is None or (own is not None and own <= cap):
        return req
    return req.model_copy(update={"constraints": req.constraints.model_copy(update={"budget_per_hour_usd": cap})})


def _own_best(req: Requirements, cands: pd.DataFrame, wl: Workload, objective: str,
              deadline: float) -> dict[int, int] | None:
    """One workload's best answer on its screened candidates `wl` (their inventory as its own
    cap), as positions within wl: by enumeration where it applies, else its own small MILP. {}
    when it has none; None when the time ran out."""
    if applicable(wl, objective=objective, single_config=True):
        try:
            chosen, cut_short = solve_enumerated(wl, objective=objective, k=1, deadline=deadline)
            return None if cut_short else (chosen[0] if chosen else {})
        except TooLarge:
            pass  # the MILP below
    m = build([wl], Mode(objective=objective, single_config=True))
    status, _ = m.solve("cbc", deadline)
    if status == "infeasible":
        return {}
    return m.read()[0] if status == "optimal" and m.has_answer else None


def _option(wl: Workload, chosen: dict[int, int], rank: int, objective: str,
            full: Workload | None = None) -> Option:
    idx = np.array(sorted(chosen), dtype=int)
    n = np.array([chosen[i] for i in idx], dtype=float)
    cost = float(n @ wl.price[idx])
    if objective == "energy":
        value = float(n @ wl.power[idx])
    elif objective == "latency":
        value = float(wl.lat[idx].max())
    else:
        value = cost
    mix: dict[str, int] = {}
    for i, k in zip(idx, n, strict=True):
        mix[wl.hw[i]] = mix.get(wl.hw[i], 0) + int(k)
    return Option(
        rank=rank,
        replicas={int(wl.pos[i]): int(k) for i, k in zip(idx, n, strict=True)},
        mix=dict(sorted(mix.items())),
        cfg_keys=tuple(sorted({wl.cfg[i] for i in idx})),
        cost_per_hour_usd=cost,
        objective_value=value,
        binding=binding(wl, idx, n, objective, full) if full is not None else (),
    )
