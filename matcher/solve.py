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

import numpy as np
import pandas as pd

from matcher.diagnose import binding, diagnose, diagnose_plan
from matcher.enumerate import ENUMERATION, applicable, solve_enumerated
from matcher.milp import Mode, build, unknown_solver
from matcher.requirements import Requirements
from matcher.screen import Workload, screen
from matcher.solution import Option, PlanSolution, Solution, Status


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
) -> Solution:
    """Best `top_k` (default req.top_k) options for one workload, or why there is none.

    Alternatives come from no-good cuts (C13): after each option, at least one (hardware,
    configuration) it used must be left out, so the next option is neither the same support nor
    that support with extra replicas bolted on. `explain` adds each option's binding constraints.
    method "auto": exact enumeration (enumerate.py) where it applies and is cheaper, else the
    MILP; "milp": always the MILP (the tests compare the two)."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    k = req.top_k if top_k is None else top_k
    objective = req.objective
    n_total = len(candidates)
    if (why := unknown_solver(solver)) is not None:
        return Solution("error", why, solver=solver, candidates_considered=n_total)

    wl = screen(req, candidates, objective=objective, elastic=False)
    excluded = dict(wl.excluded)
    t_screen = time.perf_counter() - t0
    if not wl.hw:
        diag = diagnose(req, candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        return Solution("infeasible", diag.message if diag else "every candidate was screened out", (), diag,
                        solver, time.perf_counter() - t0, n_total, excluded)

    if method == "auto" and applicable(wl, objective=objective, single_config=single_config):
        return _enumerated(req, candidates, wl, k, objective, single_config, solver, explain, t0, deadline,
                           excluded, t_screen)
    t1 = time.perf_counter()
    m = build([wl], Mode(objective=objective, single_config=single_config, alternatives=k > 1))
    timings = {"screen_s": t_screen, "build_s": time.perf_counter() - t1}
    full = screen(req, candidates, objective=objective, elastic=True) if explain else None
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
                excluded: dict[str, int], t_screen: float) -> Solution:
    """solve() answered by enumeration: the same options, status and diagnosis as the MILP's."""
    t1 = time.perf_counter()
    chosen, cut_short = solve_enumerated(wl, objective=objective, k=k, deadline=deadline)
    timings = {"screen_s": t_screen, "enumerate_s": time.perf_counter() - t1}
    full = screen(req, candidates, objective=objective, elastic=True) if explain and chosen else None
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
) -> PlanSolution:
    """One option per workload, jointly: each workload's own constraints hold, and together they
    fit the shared inventory (devices per hardware) and the shared budget per hour. Objective
    `cost` or `energy` sums over workloads; `latency` sums each workload's worst p99."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    n_total = sum(len(c) for _, c in workloads)
    if not workloads:
        return PlanSolution("error", "no workloads given", solver=solver)
    if (why := unknown_solver(solver)) is not None:
        return PlanSolution("error", why, solver=solver)
    shared_inv = {h: float(n) for h, n in (inventory or {}).items()}

    ws = [screen(r, c, objective=objective, elastic=False, prefix=f"workloads[{w}].", extra_inventory=shared_inv)
          for w, (r, c) in enumerate(workloads)]
    status: Status = "infeasible"
    reason = ""
    if all(wl.hw for wl in ws):
        m = build(ws, Mode(objective=objective, single_config=single_config, shared_inventory=shared_inv,
                           shared_budget_per_hour_usd=budget_per_hour_usd))
        status, reason = m.solve(solver, deadline)
        if m.has_answer and status in ("optimal", "time_limit"):
            opts = tuple(_option(wl, ch, 1, objective) for wl, ch in zip(ws, m.read(), strict=True))
            total = sum(o.cost_per_hour_usd for o in opts)
            return PlanSolution(status, reason or f"{len(opts)} workloads placed", opts, total, None, solver,
                                time.perf_counter() - t0, n_total)
    else:
        empty = [w for w, wl in enumerate(ws) if not wl.hw]
        reason = f"every candidate of workload(s) {empty} was screened out"

    diag = None
    if status == "infeasible":
        # Up to 30 s past the deadline: an infeasible plan is answered with the limit that blocks it.
        diag = diagnose_plan(workloads, shared_inventory=shared_inv, budget_per_hour_usd=budget_per_hour_usd,
                             objective=objective, single_config=single_config, solver=solver, deadline=deadline + 30)
        if diag is not None:
            reason = diag.message
    return PlanSolution(status, reason, tuple(None for _ in workloads), math.nan, diag, solver,
                        time.perf_counter() - t0, n_total)


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
