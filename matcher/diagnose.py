"""Explaining answers: which constraints an option sits at (`binding`), and, when nothing is
feasible, which constraints block and the smallest relaxation that unblocks them (`diagnose`).

The diagnosis is the elastic model (milp.py with Mode(elastic=True)): every constraint gets a
non-negative slack, and the sum of slacks, each divided by its constraint's own value, is
minimised (then cost). The relaxation reported is the value the elastic solution needs, computed
exactly from its integer replicas, so applying it (`apply_relaxations`) gives a feasible problem.
Then each constraint alone (every other slack held at 0) gives the other fixes, the budgets
and inventories among them, so that every fix the answer lists is enough on its own. A plan
(`diagnose_plan`) is diagnosed the same way, its shared inventory and budget included.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from matcher.metrics import METRICS
from matcher.milp import Mode, Model, build
from matcher.requirements import Requirements
from matcher.screen import TOO_MANY_REPLICAS, Workload, screen
from matcher.solution import (
    BUDGET_H,
    BUDGET_TOTAL,
    DEMAND,
    POWER,
    TOL,
    Diagnosis,
    Fix,
    Relaxation,
    inventory_name,
    requirement_field,
)


def fmt(x: float) -> str:
    return f"{x:.4g}"


# Screening reason -> the constraint that needs the missing number.
_MISSING_TO_CONSTRAINT = {f"missing:{m.name}": m.requirement for m in METRICS if m.requirement}


# ----------------------------------------------------------------------------------------------
# Binding constraints of an option
# ----------------------------------------------------------------------------------------------


def binding(wl: Workload, idx: np.ndarray, n: np.ndarray, objective: str, full: Workload) -> tuple[str, ...]:
    """Constraints at their limit for this option (docs/matcher.md "Binding constraints").

    Sums (demand, budgets, inventory, power) are binding when one replica more (for a cap) or
    fewer (for the demand) of a candidate in the option would break them. A threshold (SLO,
    accuracy floor, energy cap) is binding when it screened out a candidate that is more efficient
    on the objective (price or power per sample/s; latency itself) than every candidate used:
    without the threshold a better option may exist. `full` is the screen that keeps violators."""
    c = wl.req.constraints
    out = []
    if wl.demand > 0 and float(n @ wl.thr[idx]) - wl.demand < wl.thr[idx].min() * (1 - TOL):
        out.append(DEMAND)

    def efficiency(w: Workload, sel: np.ndarray) -> np.ndarray:
        if objective == "latency":
            return w.lat[sel]
        num = w.power[sel] if objective == "energy" else w.price[sel]
        return num / w.thr[sel] if wl.demand > 0 else num

    best_used = efficiency(wl, idx).min()
    for t in wl.thresholds:
        bound = t.bound(wl.req)
        if bound is None:
            continue
        violates = t.breaks(full.values[t.metric], bound)
        with np.errstate(divide="ignore", invalid="ignore"):
            if violates.any() and (efficiency(full, violates) < best_used * (1 - TOL)).any():
                out.append(t.name)

    cost = float(n @ wl.price[idx])
    step_price = wl.price[idx].min()
    if c.budget_per_hour_usd is not None and cost + step_price > c.budget_per_hour_usd * (1 + TOL):
        out.append(BUDGET_H)
    if c.budget_total_usd is not None and c.duration_h is not None and \
            (cost + step_price) * c.duration_h > c.budget_total_usd * (1 + TOL):
        out.append(BUDGET_TOTAL)
    for hw in sorted(set(wl.hw[i] for i in idx)):
        cap = wl.inventory.get(hw, math.inf)
        used = sum(k * wl.devices[i] for i, k in zip(idx, n, strict=True) if wl.hw[i] == hw)
        step = min(wl.devices[i] for i in idx if wl.hw[i] == hw)
        if used + step > cap + TOL:
            out.append(inventory_name(hw))
    if c.max_power_w is not None and float(n @ wl.power[idx]) + wl.power[idx].min() > c.max_power_w * (1 + TOL):
        out.append(POWER)
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# One workload
# ----------------------------------------------------------------------------------------------


def diagnose(
    req: Requirements,
    candidates: pd.DataFrame,
    *,
    single_config: bool = True,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
) -> Diagnosis | None:
    """Why nothing is feasible, and the smallest relaxation that fixes it (module docstring).
    Also, for each constraint alone, whether relaxing just that one would do (`alternatives`).
    Returns None if the problem is in fact feasible."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    wl = screen(req, candidates, objective=req.objective, elastic=True)
    if not wl.hw:
        return _then(missing_diagnosis(req, wl), lambda fix: diagnose(
            apply_relaxations(req, fix), candidates, single_config=single_config, solver=solver,
            time_limit_s=max(deadline - time.perf_counter(), 1.0)))
    m = build([wl], Mode(objective=req.objective, single_config=single_config, elastic=True))
    return _elastic(m, lambda chosen: relaxations(req, wl, chosen[0]), solver, deadline, [wl])


def _elastic(m: Model, needed: Callable[[list[dict[int, int]]], list[Relaxation]], solver: str,
             deadline: float, ws: Sequence[Workload]) -> Diagnosis | None:
    """The elastic model's smallest joint relaxation, then each constraint alone; None if
    nothing needs relaxing. `needed` turns an elastic answer into the relaxations it needs."""
    if not m.slack:  # nothing that could be relaxed, so nothing needs to be: C1b, C5, C6 always hold
        return None
    status, why = m.solve(solver, deadline)
    if not m.has_answer:
        return Diagnosis((), f"the elastic model could not be solved ({status}: {why})", ())
    joint = tuple(needed(m.read()))
    if not joint:
        return None
    # Single-constraint fixes: hold every other slack at 0 and see if this one alone suffices.
    alternatives: list[Fix] = []
    if len(m.slack) > 1:
        for name in sorted(m.slack):
            if time.perf_counter() > deadline:
                break
            for other, (s, _) in m.slack.items():
                s.upBound = None if other == name else 0.0
            m.solve(solver, deadline)
            if m.has_answer:
                alone = needed(m.read())
                if len(alone) == 1:
                    alternatives.append((alone[0],))
        for s, _ in m.slack.values():
            s.upBound = None
    d = Diagnosis(tuple(r.constraint for r in joint), "; ".join(r.message for r in joint), joint, tuple(alternatives))
    msg = d.message
    unknown = [(f"{wl.prefix[:-1]}: " if wl.prefix else "") + f"{v} without {k.split(':', 1)[1]}"
               for wl in ws for k, v in sorted(wl.excluded.items()) if k.startswith("missing:")]
    if unknown:
        msg += " (not considered, numbers missing: " + ", ".join(unknown) + ")"
    extra = [fix[0] for fix in d.fixes[1:] if len(fix) == 1]
    if extra:
        msg += ". Alternatively, relax one constraint alone: " + "; or ".join(
            f"{a.constraint} to {fmt(a.best_achievable)}" for a in extra)
    return replace(d, message=msg)


def _then(first: Diagnosis, rediagnose: Callable[[Fix], Diagnosis | None]) -> Diagnosis:
    """Numbers missing: only dropping the constraints that need them can help (`first`); once
    dropped, the rest may still be infeasible, so diagnose the remainder too and report both."""
    if not first.relaxations:
        return first
    rest = rediagnose(first.relaxations)
    if rest is None:
        return first
    blocking, msg = first.blocking + rest.blocking, f"{first.message}; then {rest.message}"
    if not rest.relaxations:  # the rest could not be diagnosed: no fix is known to be enough
        return Diagnosis(blocking, msg, ())
    return Diagnosis(blocking, msg, first.relaxations + rest.relaxations,
                     tuple(first.relaxations + fix for fix in rest.alternatives))


def relaxations(req: Requirements, wl: Workload, chosen: dict[int, int]) -> list[Relaxation]:
    """Each constraint the (elastic) answer `chosen` breaks, with the value that it needs. In a
    plan (wl.prefix "workloads[i].") names, fields and messages say which workload."""
    c = req.constraints
    idx = np.array(sorted(chosen), dtype=int)
    n = np.array([chosen[i] for i in idx], dtype=float)

    def where(i: int) -> str:
        return f"{wl.hw[i]} with {wl.describe_cfg(wl.cfg[i])}"

    rels: list[Relaxation] = []

    def need(name: str, required: float | None, to: float | None, message: str) -> None:
        rels.append(_relaxation(wl.prefix + name, required, to, message))

    for t in wl.thresholds:
        bound = t.bound(req)
        if bound is None:
            continue
        values = wl.values[t.metric]
        j = idx[np.argmax(t.sign * values[idx])]  # the worst replica used
        if t.breaks(values[j], bound):
            unit = f" {t.unit}" if t.unit else ""
            need(t.name, bound, float(values[j]), f"{t.name} {t.relation} {fmt(bound)} is unreachable; the best is "
                                                  f"{fmt(values[j])}{unit} on {where(j)}")
    if wl.demand > 0:
        got = float(n @ wl.thr[idx])
        if got < wl.demand * (1 - TOL):
            need(DEMAND, wl.demand, got, f"throughput_qps >= {fmt(wl.demand)} is unreachable within the other "
                                         f"constraints; the most is {fmt(got)} samples/s")
    cost = float(n @ wl.price[idx])
    if c.budget_per_hour_usd is not None and cost > c.budget_per_hour_usd * (1 + TOL):
        need(BUDGET_H, c.budget_per_hour_usd, cost, f"budget {fmt(c.budget_per_hour_usd)} USD/h is short by "
                                                    f"{fmt(cost - c.budget_per_hour_usd)} USD/h (needs {fmt(cost)} USD/h)")
    if c.budget_total_usd is not None and c.duration_h is not None:
        total = cost * c.duration_h
        if total > c.budget_total_usd * (1 + TOL):
            need(BUDGET_TOTAL, c.budget_total_usd, total,
                 f"total budget {fmt(c.budget_total_usd)} USD over {fmt(c.duration_h)} h is "
                 f"short by {fmt(total - c.budget_total_usd)} USD (needs {fmt(total)} USD)")
    for hw in sorted(set(wl.hw[i] for i in idx)):
        cap = wl.inventory.get(hw, math.inf)
        used = float(sum(k * wl.devices[i] for i, k in zip(idx, n, strict=True) if wl.hw[i] == hw))
        if used > cap + TOL:
            need(inventory_name(hw), _count(cap), _devices(used),
                 f"inventory of {hw} is {fmt(cap)} device(s); {fmt(used)} are needed")
    if c.max_power_w is not None:
        pw = float(n @ wl.power[idx])
        if pw > c.max_power_w * (1 + TOL):
            need(POWER, c.max_power_w, pw, f"max_power_w {fmt(c.max_power_w)} W is short by "
                                           f"{fmt(pw - c.max_power_w)} W (needs {fmt(pw)} W)")
    return rels


def _relaxation(name: str, required: float | None, to: float | None, message: str, *,
                shared: bool = False) -> Relaxation:
    """A Relaxation of constraint `name` (a plan's workload prefix included; `shared`: one of a
    plan's shared limits), its message saying which workload."""
    prefix = name.split(".", 1)[0] + ": " if name.startswith("workloads[") else ""
    return Relaxation(name, requirement_field(name, plan=shared), required, to, prefix + message)


def _devices(used: float) -> int:
    # Inventory counts whole devices (an integer in the request), and the relaxation is applied as is.
    return int(math.ceil(used - TOL))


def _count(cap: float) -> float | int:
    return int(cap) if float(cap).is_integer() else cap


def missing_diagnosis(req: Requirements, wl: Workload) -> Diagnosis:
    """Every candidate lacks a number some constraint needs: only dropping that constraint helps."""
    rels, parts = [], []
    for reason, count in sorted(wl.excluded.items()):
        what = reason.split(":", 1)[1] if reason.startswith("missing:") else reason
        parts.append(f"{count} without {what}" if reason.startswith("missing:") else f"{count} over {what}")
        name = _MISSING_TO_CONSTRAINT.get(reason)
        score = reason[len("missing:quality_"):] if reason.startswith("missing:quality_") else None
        if score is not None:
            name = f"quality.{score}"
        if name is None:
            continue
        required = (req.constraints.quality or {}).get(score) if score is not None else getattr(req.constraints, name, None)
        rels.append(_relaxation(wl.prefix + name, required, None, f"{name} cannot be checked: {count} candidate(s) "
                                f"have no {what}; remove the constraint or measure {what}"))
    where = wl.prefix[:-1] + ": " if wl.prefix else ""
    msg = f"{where}all {wl.n_total} candidates were screened out ({'; '.join(parts)})"
    if "missing:power_w (energy objective)" in wl.excluded:
        msg += "; the energy objective needs measured power (or energy per sample): choose objective cost or latency"
    elif TOO_MANY_REPLICAS in wl.excluded and not rels:
        msg += ("; no candidate carries the demand with a fleet of any real size: lower the demand or raise "
                "max_utilization")
    elif not rels:
        msg += "; fix the candidate table (prices must be known)"
    return Diagnosis(tuple(r.constraint for r in rels), msg, tuple(rels))


def apply_relaxations(req: Requirements, fix: Diagnosis | Sequence[Relaxation]) -> Requirements:
    """The requirements with every relaxation of `fix` applied (a Diagnosis: its joint relaxation;
    None = constraint dropped), each put at its field as a client would."""
    data = req.model_dump()
    for r in fix.relaxations if isinstance(fix, Diagnosis) else fix:
        set_field(data, r.field, r.best_achievable)
    return Requirements.model_validate(data)


def set_field(doc: dict[str, Any], path: str, value: float | None) -> None:
    """Put `value` at a requirement field path (solution.requirement_field) of a request
    document: a requirements mapping, or a plan's. None drops the constraint (an inventory entry:
    the hardware becomes unlimited)."""
    if path.startswith("workloads."):
        i, rest = path[len("workloads."):].split(".", 1)
        set_field(doc["workloads"][int(i)], rest, value)
    elif path.startswith("inventory."):
        inventory = dict(doc.get("inventory") or {})
        hw = path[len("inventory."):]
        if value is None:
            inventory.pop(hw, None)
        else:
            inventory[hw] = int(math.ceil(value - TOL))
        doc["inventory"] = inventory
    elif path.startswith("constraints."):
        doc.setdefault("constraints", {})[path[len("constraints."):]] = value
    else:
        doc[path] = value


# ----------------------------------------------------------------------------------------------
# Several workloads
# ----------------------------------------------------------------------------------------------


def diagnose_plan(
    workloads: Sequence[tuple[Requirements, pd.DataFrame]],
    *,
    shared_inventory: Mapping[str, float],
    budget_per_hour_usd: float | None,
    objective: str,
    single_config: bool,
    solver: str,
    deadline: float,
) -> Diagnosis | None:
    """The elastic plan: which workload's constraint, or which shared limit, blocks, and the fixes
    (as for one workload). Returns None if the plan is in fact feasible."""
    ws = [screen(r, c, objective=objective, elastic=True, prefix=f"workloads[{w}].")
          for w, (r, c) in enumerate(workloads)]
    empty = next((w for w, wl in enumerate(ws) if not wl.hw), None)
    if empty is not None:
        def again(fix: Fix) -> Diagnosis | None:
            doc = {"workloads": [r.model_dump() for r, _ in workloads], "inventory": dict(shared_inventory),
                   "budget_per_hour_usd": budget_per_hour_usd}
            for r in fix:
                set_field(doc, r.field, r.best_achievable)
            reqs = [Requirements.model_validate(d) for d in doc["workloads"]]
            return diagnose_plan(list(zip(reqs, (c for _, c in workloads), strict=True)),
                                 shared_inventory=doc["inventory"], budget_per_hour_usd=doc["budget_per_hour_usd"],
                                 objective=objective, single_config=single_config, solver=solver, deadline=deadline)
        return _then(missing_diagnosis(workloads[empty][0], ws[empty]), again)
    m = build(ws, Mode(objective=objective, single_config=single_config, elastic=True,
                       shared_inventory=shared_inventory, shared_budget_per_hour_usd=budget_per_hour_usd))

    def needed(chosen: list[dict[int, int]]) -> list[Relaxation]:
        rels = [r for (req, _), wl, ch in zip(workloads, ws, chosen, strict=True) for r in relaxations(req, wl, ch)]
        used: Counter = Counter()
        cost = 0.0
        for wl, ch in zip(ws, chosen, strict=True):
            for i, k in ch.items():
                used[wl.hw[i]] += k * wl.devices[i]
                cost += k * wl.price[i]
        for hw, cap in sorted(shared_inventory.items()):
            if used[hw] > cap + TOL:
                rels.append(_relaxation(inventory_name(hw), _count(cap), _devices(used[hw]), f"shared inventory of {hw} is "
                                        f"{fmt(cap)} device(s); {fmt(used[hw])} are needed", shared=True))
        budget = budget_per_hour_usd
        if budget is not None and cost > budget * (1 + TOL):
            rels.append(_relaxation(BUDGET_H, budget, cost, f"shared budget {fmt(budget)} USD/h is short by "
                                    f"{fmt(cost - budget)} USD/h (needs {fmt(cost)} USD/h)", shared=True))
        return rels

    return _elastic(m, needed, solver, deadline, ws)
