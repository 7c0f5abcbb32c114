"""Explaining answers: which constraints an option sits at (`binding`), and, when nothing is
feasible, which constraints block and the smallest relaxation that unblocks them (`diagnose`).

The diagnosis is the elastic model (milp.py with Mode(elastic=True)): every constraint gets a
non-negative slack, and the sum of slacks, each divided by its constraint's own value, is
minimised (then cost). The relaxation reported is the value the elastic solution needs, computed
exactly from its integer replicas, so applying it (`apply_relaxations`) gives a feasible problem.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from matcher.metrics import METRICS
from matcher.milp import Mode, build
from matcher.requirements import Requirements
from matcher.screen import THRESHOLDS, Workload, screen
from matcher.solution import (
    BUDGET_H,
    BUDGET_TOTAL,
    DEMAND,
    POWER,
    TOL,
    Diagnosis,
    Relaxation,
    inventory_name,
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
    for t in THRESHOLDS:
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
        # Only dropping the constraints that need the missing numbers can help; once dropped,
        # the rest may still be infeasible, so diagnose the remainder too and report both.
        first = missing_diagnosis(req, wl)
        if not first.relaxations:
            return first
        rest = diagnose(apply_relaxations(req, first), candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        if rest is None:
            return first
        return Diagnosis(first.blocking + rest.blocking, f"{first.message}; then {rest.message}",
                         first.relaxations + rest.relaxations)
    m = build([wl], Mode(objective=req.objective, single_config=single_config, elastic=True))
    status, why = m.solve(solver, deadline)
    if status not in ("optimal", "time_limit") or not m.has_answer:
        return Diagnosis((), f"the elastic model could not be solved ({status}: {why})", ())
    rels = relaxations(req, wl, m.read()[0])
    if not rels:
        return None
    # Single-constraint fixes: hold every other slack at 0 and see if this one alone suffices.
    alternatives: list[Relaxation] = []
    if len(m.slack) > 1:
        for name in sorted(m.slack):
            if time.perf_counter() > deadline:
                break
            for other, (s, _) in m.slack.items():
                s.upBound = None if other == name else 0.0
            st, _ = m.solve(solver, deadline)
            if st == "optimal":
                alone = relaxations(req, wl, m.read()[0])
                if len(alone) == 1:
                    alternatives.append(alone[0])
        for s, _ in m.slack.values():
            s.upBound = None
    msg = "; ".join(r.message for r in rels)
    unknown = {k.split(":", 1)[1]: v for k, v in wl.excluded.items() if k.startswith("missing:")}
    if unknown:
        msg += " (not considered, numbers missing: " + ", ".join(f"{v} without {k}" for k, v in sorted(unknown.items())) + ")"
    extra = [a for a in alternatives if (a.constraint, a.best_achievable) not in
             {(r.constraint, r.best_achievable) for r in rels}]
    if extra:
        msg += ". Alternatively, relax one constraint alone: " + "; or ".join(
            f"{a.constraint} to {fmt(a.best_achievable)}" for a in extra)
    return Diagnosis(tuple(r.constraint for r in rels), msg, tuple(rels), tuple(alternatives))


def relaxations(req: Requirements, wl: Workload, chosen: dict[int, int]) -> list[Relaxation]:
    """Each constraint the (elastic) answer `chosen` breaks, with the value that it needs."""
    c = req.constraints
    idx = np.array(sorted(chosen), dtype=int)
    n = np.array([chosen[i] for i in idx], dtype=float)

    def where(i: int) -> str:
        return f"{wl.hw[i]} with {wl.describe_cfg(wl.cfg[i])}"

    rels: list[Relaxation] = []
    for t in THRESHOLDS:
        bound = t.bound(req)
        if bound is None:
            continue
        values = wl.values[t.metric]
        j = idx[np.argmax(t.sign * values[idx])]  # the worst replica used
        if t.breaks(values[j], bound):
            unit = f" {t.unit}" if t.unit else ""
            rels.append(Relaxation(t.name, bound, float(values[j]),
                                   f"{t.name} {t.relation} {fmt(bound)} is unreachable; the best is "
                                   f"{fmt(values[j])}{unit} on {where(j)}"))
    if wl.demand > 0:
        got = float(n @ wl.thr[idx])
        if got < wl.demand * (1 - TOL):
            rels.append(Relaxation(DEMAND, wl.demand, got,
                                   f"throughput_qps >= {fmt(wl.demand)} is unreachable within the other "
                                   f"constraints; the most is {fmt(got)} samples/s"))
    cost = float(n @ wl.price[idx])
    if c.budget_per_hour_usd is not None and cost > c.budget_per_hour_usd * (1 + TOL):
        rels.append(Relaxation(BUDGET_H, c.budget_per_hour_usd, cost,
                               f"budget {fmt(c.budget_per_hour_usd)} USD/h is short by "
                               f"{fmt(cost - c.budget_per_hour_usd)} USD/h (needs {fmt(cost)} USD/h)"))
    if c.budget_total_usd is not None and c.duration_h is not None:
        total = cost * c.duration_h
        if total > c.budget_total_usd * (1 + TOL):
            rels.append(Relaxation(BUDGET_TOTAL, c.budget_total_usd, total,
                                   f"total budget {fmt(c.budget_total_usd)} USD over {fmt(c.duration_h)} h is "
                                   f"short by {fmt(total - c.budget_total_usd)} USD (needs {fmt(total)} USD)"))
    for hw in sorted(set(wl.hw[i] for i in idx)):
        cap = wl.inventory.get(hw, math.inf)
        used = float(sum(k * wl.devices[i] for i, k in zip(idx, n, strict=True) if wl.hw[i] == hw))
        if used > cap + TOL:
            rels.append(Relaxation(inventory_name(hw), cap, used,
                                   f"inventory of {hw} is {fmt(cap)} device(s); {fmt(used)} are needed"))
    if c.max_power_w is not None:
        pw = float(n @ wl.power[idx])
        if pw > c.max_power_w * (1 + TOL):
            rels.append(Relaxation(POWER, c.max_power_w, pw,
                                   f"max_power_w {fmt(c.max_power_w)} W is short by {fmt(pw - c.max_power_w)} W "
                                   f"(needs {fmt(pw)} W)"))
    return rels


def missing_diagnosis(req: Requirements, wl: Workload) -> Diagnosis:
    """Every candidate lacks a number some constraint needs: only dropping that constraint helps."""
    rels, blocking, parts = [], [], []
    for reason, count in sorted(wl.excluded.items()):
        what = reason.split(":", 1)[1] if reason.startswith("missing:") else reason
        parts.append(f"{count} without {what}" if reason.startswith("missing:") else f"{count} over {what}")
        name = _MISSING_TO_CONSTRAINT.get(reason)
        if name is None:
            continue
        required = getattr(req.constraints, name, None)
        blocking.append(name)
        rels.append(Relaxation(name, required, None,
                               f"{name} cannot be checked: {count} candidate(s) have no {what}; "
                               f"remove the constraint or measure {what}"))
    msg = f"all {wl.n_total} candidates were screened out ({'; '.join(parts)})"
    if "missing:power_w (energy objective)" in wl.excluded:
        msg += "; the energy objective needs measured power (or energy per sample): choose objective cost or latency"
    elif not rels:
        msg += "; fix the candidate table (prices must be known)"
    return Diagnosis(tuple(blocking), msg, tuple(rels))


def apply_relaxations(req: Requirements, diagnosis: Diagnosis) -> Requirements:
    """The requirements with every relaxation of `diagnosis` applied (None = constraint dropped)."""
    cons = req.constraints.model_dump()
    inventory = dict(req.inventory or {})
    for r in diagnosis.relaxations:
        if r.constraint.startswith("inventory["):
            hw = r.constraint[len("inventory["):-1]
            if r.best_achievable is None:
                inventory.pop(hw, None)
            else:
                inventory[hw] = int(math.ceil(r.best_achievable - TOL))
        else:
            cons[r.constraint] = r.best_achievable
    data = req.model_dump()
    data["constraints"] = cons
    data["inventory"] = inventory if (req.inventory is not None or inventory) else None
    return Requirements.model_validate(data)


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
    """The elastic plan: which workload's constraint, or which shared limit, blocks."""
    ws = [screen(r, c, objective=objective, elastic=True, prefix=f"workloads[{w}].")
          for w, (r, c) in enumerate(workloads)]
    if not all(wl.hw for wl in ws):
        w = next(i for i, wl in enumerate(ws) if not wl.hw)
        d = missing_diagnosis(workloads[w][0], ws[w])
        return Diagnosis(tuple(f"workloads[{w}].{b}" for b in d.blocking), f"workloads[{w}]: {d.message}",
                         d.relaxations)
    m = build(ws, Mode(objective=objective, single_config=single_config, elastic=True,
                       shared_inventory=shared_inventory, shared_budget_per_hour_usd=budget_per_hour_usd))
    st, _ = m.solve(solver, deadline)
    if st not in ("optimal", "time_limit"):
        return None
    chosen = m.read()
    rels: list[Relaxation] = []
    for w, (wl, ch) in enumerate(zip(ws, chosen, strict=True)):
        for r in relaxations(workloads[w][0], wl, ch):
            rels.append(Relaxation(f"workloads[{w}].{r.constraint}", r.required, r.best_achievable,
                                   f"workloads[{w}]: {r.message}"))
    used: Counter = Counter()
    cost = 0.0
    for wl, ch in zip(ws, chosen, strict=True):
        for i, k in ch.items():
            used[wl.hw[i]] += k * wl.devices[i]
            cost += k * wl.price[i]
    for hw, cap in sorted(shared_inventory.items()):
        if used[hw] > cap + TOL:
            rels.append(Relaxation(inventory_name(hw), cap, float(used[hw]),
                                   f"shared inventory of {hw} is {fmt(cap)} device(s); {fmt(used[hw])} are needed"))
    budget = budget_per_hour_usd
    if budget is not None and cost > budget * (1 + TOL):
        rels.append(Relaxation(BUDGET_H, budget, cost,
                               f"shared budget {fmt(budget)} USD/h is short by {fmt(cost - budget)} USD/h"))
    if not rels:
        return None
    return Diagnosis(tuple(r.constraint for r in rels), "; ".join(r.message for r in rels), tuple(rels))
