"""The matching MILP: how many replicas of which (hardware, configuration) to run.

One model, built by `_build` in named phases (variables, constraints C1..C12, objective) and
solved by `_solve_stages`; `solve` (one workload, top-k alternatives, diagnosis) and `plan`
(several workloads sharing inventory and budget) are thin loops around it. docs/matcher.md
states the model in full. Ground rules, after Mélange's solver.py and HADA, but stricter:

* variables live in dicts keyed by meaning: y[(w, hardware, cfg_key)], u[...] (used or not),
  z[(w, cfg_key)] (the workload's one configuration), never fetched by formatted strings;
* the caller's DataFrame is never modified (we work on sorted numpy copies);
* the answer is always a Solution whose status is optimal | infeasible | time_limit | unbounded |
  error with a reason, and, when infeasible, a Diagnosis from an elastic re-solve.

Determinism: candidates are sorted by (hardware, cfg_key) before variables are created, solver
options are fixed (one thread, zero gap, msg off), so the same input gives the same answer.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pulp

from matcher.candidates import config_columns, config_dict, config_keys
from matcher.requirements import Requirements

SOLVERS = ("cbc", "highs")
STATUSES = ("optimal", "infeasible", "time_limit", "unbounded", "error")
_TOL = 1e-9  # relative tolerance for "≤ bound" tests done in Python (screening, binding, checks)

# Constraint names as they appear in `binding`, `blocking` and relaxations.
DEMAND, LATENCY, ACCURACY, ENERGY = "throughput_qps", "latency_p99_ms", "accuracy", "energy_per_sample_j"
BUDGET_H, BUDGET_TOTAL, POWER = "budget_per_hour_usd", "budget_total_usd", "max_power_w"


def inventory_name(hw: str) -> str:
    return f"inventory[{hw}]"


# ----------------------------------------------------------------------------------------------
# Result records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One feasible answer for one workload."""

    rank: int
    replicas: dict[int, int]  # position (iloc) in the caller's candidate table -> replicas
    mix: dict[str, int]  # hardware -> replicas
    cfg_keys: tuple[str, ...]  # configurations used (one when single_config)
    cost_per_hour_usd: float
    objective_value: float  # cost (USD/h), power (W) or worst p99 latency (ms)
    binding: tuple[str, ...] = ()


@dataclass(frozen=True)
class Relaxation:
    constraint: str
    required: float | None  # the value the user asked for
    best_achievable: float | None  # the value that would make it feasible; None: drop the constraint
    message: str


@dataclass(frozen=True)
class Diagnosis:
    blocking: tuple[str, ...]
    message: str
    relaxations: tuple[Relaxation, ...]  # apply all of them together: the smallest joint relaxation
    alternatives: tuple[Relaxation, ...] = ()  # each one alone would also do (where one exists)


@dataclass(frozen=True)
class Solution:
    status: str  # one of STATUSES
    reason: str
    options: tuple[Option, ...] = ()
    diagnosis: Diagnosis | None = None
    solver: str = "cbc"
    solve_time_s: float = 0.0
    candidates_considered: int = 0
    excluded: dict[str, int] = field(default_factory=dict)  # why candidates were screened out
    timings: dict[str, float] = field(default_factory=dict)  # screen_s, build_s, solver_s (perf script)

    @property
    def feasible(self) -> bool:
        return bool(self.options)


@dataclass(frozen=True)
class PlanSolution:
    status: str
    reason: str
    workloads: tuple[Option | None, ...] = ()  # one option per workload, in the input order
    cost_per_hour_usd: float = math.nan
    diagnosis: Diagnosis | None = None
    solver: str = "cbc"
    solve_time_s: float = 0.0
    candidates_considered: int = 0


# ----------------------------------------------------------------------------------------------
# Screening: per-candidate facts, exclusions and replica bounds (pure numpy, no solver)
# ----------------------------------------------------------------------------------------------


@dataclass
class _Workload:
    req: Requirements
    prefix: str  # "" for one workload, "workloads[i]." in a plan: names its constraints
    pos: np.ndarray  # caller's iloc positions of kept candidates, in sorted order
    hw: list[str]
    cfg: list[str]
    describe_cfg: Any  # cfg_key -> readable "batch_size=8, dtype=fp32" (lazy: only answers need it)
    price: np.ndarray
    thr: np.ndarray
    lat: np.ndarray
    acc: np.ndarray
    energy: np.ndarray
    power: np.ndarray
    devices: np.ndarray
    ub: np.ndarray  # max replicas of each candidate (C0, see _screen)
    inventory: dict[str, float]  # devices per hardware; absent = unlimited
    excluded: Counter
    n_total: int

    @property
    def demand(self) -> float:
        return self.req.constraints.throughput_qps or 0.0


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _inventory(req: Requirements, cands: pd.DataFrame) -> dict[str, float]:
    """Devices available per hardware: the table's `inventory` column, overridden by requirements."""
    inv: dict[str, float] = {}
    if "inventory" in cands.columns:
        col = pd.to_numeric(cands["inventory"], errors="coerce")
        for hw, val in zip(cands["hardware"].astype(str), col, strict=True):
            if not math.isnan(val):
                inv[hw] = min(inv.get(hw, math.inf), float(val))
    inv.update({hw: float(n) for hw, n in (req.inventory or {}).items()})
    return inv


def _screen(req: Requirements, cands: pd.DataFrame, *, objective: str, elastic: bool, prefix: str = "",
            extra_inventory: Mapping[str, float] | None = None) -> _Workload:
    """Turn the candidate table into arrays and decide, per candidate, whether it may be used.

    Missing data excludes a candidate wherever that number matters (no throughput with a demand,
    no accuracy under a floor, ...): no slack can make an unknown number acceptable. Threshold
    constraints (C2-C4) exclude candidates here in the ordinary model; the elastic model keeps them
    and prices the violation with slack instead. C0: no candidate gets more replicas than it needs
    to carry the whole demand alone (more can never lower cost, power or worst latency), nor more
    than inventory, budget or power cap allow one candidate alone."""
    c = req.constraints
    n_total = len(cands)
    keys = config_keys(cands)
    order = np.lexsort((np.arange(n_total), keys.to_numpy(dtype=str), cands["hardware"].astype(str).to_numpy()))
    hw_all = cands["hardware"].astype(str).to_numpy()[order]
    cfg_all = keys.to_numpy(dtype=object)[order]
    price = _num(cands, "price_per_hour_usd")[order]
    thr = _num(cands, "throughput_qps")[order]
    lat = _num(cands, "latency_p99_ms")[order]
    acc = _num(cands, "accuracy")[order]
    energy = _num(cands, "energy_per_sample_j")[order]
    power = _num(cands, "power_w")[order]
    # Average power at full load = energy per sample x samples per second (both Offline figures).
    derived = np.isnan(power) & ~np.isnan(energy) & ~np.isnan(thr)
    power = np.where(derived, energy * thr, power)
    devices = _num(cands, "devices")[order] if "devices" in cands.columns else np.ones(n_total)
    devices = np.where(np.isnan(devices), 1.0, devices)

    keep = np.ones(n_total, dtype=bool)
    excluded: Counter = Counter()

    def drop(mask: np.ndarray, reason: str) -> None:
        hit = mask & keep
        if hit.any():
            excluded[reason] += int(hit.sum())
            keep[hit] = False

    demand = c.throughput_qps or 0.0
    drop(np.isnan(price) | (price < 0), "missing:price_per_hour_usd")
    if demand > 0:
        drop(np.isnan(thr) | (thr <= 0), "missing:throughput_qps")
    if c.latency_p99_ms is not None or objective == "latency":
        drop(np.isnan(lat), "missing:latency_p99_ms")
    if c.accuracy is not None:
        drop(np.isnan(acc), "missing:accuracy")
    if c.energy_per_sample_j is not None:
        drop(np.isnan(energy), "missing:energy_per_sample_j")
    if c.max_power_w is not None:
        drop(np.isnan(power), "missing:power_w")
    if objective == "energy":
        drop(np.isnan(power), "missing:power_w (energy objective)")
    if not elastic:
        if c.latency_p99_ms is not None:
            drop(lat > c.latency_p99_ms * (1 + _TOL), LATENCY)
        if c.accuracy is not None:
            drop(acc < c.accuracy * (1 - _TOL), ACCURACY)
        if c.energy_per_sample_j is not None:
            drop(energy > c.energy_per_sample_j * (1 + _TOL), ENERGY)

    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.ceil(demand / thr - _TOL) if demand > 0 else np.ones(n_total)
    need = np.where(np.isfinite(need), np.maximum(need, 1), 1)
    ub = need.copy()
    inventory = _inventory(req, cands)
    for hw, n in (extra_inventory or {}).items():
        inventory[hw] = min(inventory.get(hw, math.inf), float(n))
    if not elastic:
        caps: list[tuple[str, np.ndarray]] = []
        inv_arr = np.array([inventory.get(h, math.inf) for h in hw_all], dtype=float)
        caps.append(("inventory", inv_arr / devices))
        with np.errstate(divide="ignore", invalid="ignore"):
            if c.budget_per_hour_usd is not None:
                caps.append((BUDGET_H, np.where(price > 0, c.budget_per_hour_usd / price, math.inf)))
            if c.budget_total_usd is not None and c.duration_h is not None:
                per_h = c.budget_total_usd / c.duration_h
                caps.append((BUDGET_TOTAL, np.where(price > 0, per_h / price, math.inf)))
            if c.max_power_w is not None:
                caps.append((POWER, np.where(power > 0, c.max_power_w / power, math.inf)))
        for reason, cap in caps:
            cap = np.floor(cap + _TOL)
            drop(cap < 1, reason)
            ub = np.minimum(ub, cap)
    ub = np.where(np.isfinite(ub), ub, need).astype(int)

    cfg_cols = config_columns(cands)
    first_pos = {key: int(order[i]) for i, key in reversed(list(enumerate(cfg_all)))}

    def describe_cfg(key: str) -> str:
        d = config_dict(cands.iloc[first_pos[key]], cfg_cols) if key in first_pos else {}
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "the default configuration"

    k = keep
    return _Workload(
        req=req, prefix=prefix, pos=order[k], hw=list(hw_all[k]), cfg=list(cfg_all[k]), describe_cfg=describe_cfg,
        price=price[k], thr=np.nan_to_num(thr[k], nan=0.0), lat=lat[k], acc=acc[k], energy=energy[k],
        power=power[k], devices=devices[k], ub=ub[k], inventory=inventory, excluded=excluded, n_total=n_total,
    )


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


@dataclass
class _Model:
    prob: pulp.LpProblem
    ws: list[_Workload]
    y: dict[tuple[int, str, str], pulp.LpVariable]
    u: dict[tuple[int, str, str], pulp.LpVariable]
    z: dict[tuple[int, str], pulp.LpVariable]
    lmax: dict[int, pulp.LpVariable]
    slack: dict[str, tuple[pulp.LpVariable, float]]  # constraint name -> (slack, normaliser)
    stages: list[tuple[str, pulp.LpAffineExpression]]  # lexicographic objectives, first = primary
    pins: list[pulp.LpVariable]  # pins[i] >= stage i's expression; bounded once stage i is solved
    cuts: int = 0
    solver_s: float = 0.0  # wall time inside PuLP's solve (model transfer + solver)


def _lin(pairs: list[tuple[pulp.LpVariable, float]], constant: float = 0.0) -> pulp.LpAffineExpression:
    # LpAffineExpression from pairs is much faster than lpSum over generators at 10^5 terms.
    return pulp.LpAffineExpression([(v, float(a)) for v, a in pairs if a != 0], constant=constant)


def _build(ws: list[_Workload], *, objective: str, single_config: bool, elastic: bool, need_u: bool,
           shared_inventory: Mapping[str, float] | None = None,
           shared_budget_per_hour_usd: float | None = None) -> _Model:
    prob = pulp.LpProblem("benchmatch", pulp.LpMinimize)
    y: dict[tuple[int, str, str], pulp.LpVariable] = {}
    u: dict[tuple[int, str, str], pulp.LpVariable] = {}
    z: dict[tuple[int, str], pulp.LpVariable] = {}
    lmax: dict[int, pulp.LpVariable] = {}
    slack: dict[str, tuple[pulp.LpVariable, float]] = {}
    n_vars = Counter()

    def var(kind: str, low: float | None = 0, up: float | None = None, cat: str = pulp.LpContinuous):
        # Solver-side names are opaque counters; meaning lives in the dict keys.
        n_vars[kind] += 1
        return prob.add_variable(f"{kind}{n_vars[kind]}", low, up, cat=cat)

    def relax(name: str, scale: float) -> list[tuple[pulp.LpVariable, float]]:
        """Elastic mode: a non-negative slack on this constraint, weighted 1/scale in the objective."""
        if not elastic:
            return []
        s = var("s")
        slack[name] = (s, max(abs(scale), 1e-9))
        return [(s, 1.0)]

    # ---- Phase 1: variables -------------------------------------------------------------------
    for w, wl in enumerate(ws):
        for i, (hw, cfg) in enumerate(zip(wl.hw, wl.cfg, strict=True)):
            y[w, hw, cfg] = var("y", 0, int(wl.ub[i]), pulp.LpInteger)  # replicas (C0 bound)
            if need_u:
                u[w, hw, cfg] = var("u", 0, 1, pulp.LpBinary)  # 1 iff y >= 1
        if single_config:
            for cfg in sorted(set(wl.cfg)):
                z[w, cfg] = var("z", 0, 1, pulp.LpBinary)  # 1 iff cfg is this workload's configuration
        if objective == "latency":
            lmax[w] = var("lmax", 0)  # worst p99 latency among the candidates used

    def add(expr: pulp.LpAffineExpression | pulp.LpConstraint, name: str) -> None:
        prob.addConstraint(expr, name)

    # ---- Phase 2: constraints -----------------------------------------------------------------
    for w, wl in enumerate(ws):
        c, p = wl.req.constraints, wl.prefix
        keys = list(zip(wl.hw, wl.cfg, strict=True))
        ys = [y[w, hw, cfg] for hw, cfg in keys]

        # C1 demand: replicas together carry the demand. C1b: a deployment has at least one
        # replica (the whole answer when no demand is given; in the elastic model it stops the
        # demand slack from "solving" everything with an empty deployment).
        if wl.demand > 0:
            add(_lin([*zip(ys, wl.thr, strict=True), *relax(p + DEMAND, wl.demand)]) >= wl.demand, f"C1_demand_{w}")
        add(_lin([(v, 1.0) for v in ys]) >= 1, f"C1b_one_replica_{w}")

        # C2-C4 thresholds. Ordinary model: candidates over the SLO / under the accuracy floor /
        # over the energy cap were screened out (y fixed to 0 by absence). Elastic model: any
        # candidate used may exceed the bound by at most the constraint's slack.
        if elastic:
            for name, bound, values, sign in (
                (LATENCY, c.latency_p99_ms, wl.lat, +1),  # C2: L_i - SLO <= s  when used
                (ACCURACY, c.accuracy, wl.acc, -1),  # C3: floor - A_i <= s  when used
                (ENERGY, c.energy_per_sample_j, wl.energy, +1),  # C4: E_i - cap <= s  when used
            ):
                if bound is None:
                    continue
                excess = sign * (values - bound)
                over = [i for i in np.flatnonzero(excess > 0)]
                if not over:
                    continue
                s = relax(p + name, bound)
                tag = {LATENCY: "C2", ACCURACY: "C3", ENERGY: "C4"}[name]
                for i in over:
                    hw, cfg = keys[i]
                    add(_lin([(u[w, hw, cfg], float(excess[i])), *((v, -a) for v, a in s)]) <= 0, f"{tag}_{w}_{i}")

        # C5 one configuration per workload (a mix of hardware is allowed within it).
        if single_config:
            add(_lin([(z[w, cfg], 1.0) for cfg in sorted(set(wl.cfg))]) == 1, f"C5_one_config_{w}")

        # C6 linking: u = 1 iff y >= 1, and only the chosen configuration may be used.
        for i, (hw, cfg) in enumerate(keys):
            gate = u.get((w, hw, cfg)) if need_u else (z[w, cfg] if single_config else None)
            if gate is None:
                continue
            add(_lin([(y[w, hw, cfg], 1.0), (gate, -float(wl.ub[i]))]) <= 0, f"C6_ub_{w}_{i}")
            if need_u:
                add(_lin([(u[w, hw, cfg], 1.0), (y[w, hw, cfg], -1.0)]) <= 0, f"C6_lb_{w}_{i}")
                if single_config:
                    add(_lin([(u[w, hw, cfg], 1.0), (z[w, cfg], -1.0)]) <= 0, f"C6_cfg_{w}_{i}")

        # C7 inventory (this workload's own): devices used per hardware within what exists.
        for hw in sorted(set(wl.hw)):
            if hw in wl.inventory and math.isfinite(wl.inventory[hw]):
                terms = [(y[w, h, cf], d) for h, cf, d in zip(wl.hw, wl.cfg, wl.devices, strict=True) if h == hw]
                cap = wl.inventory[hw]
                add(_lin([*terms, *((v, -a) for v, a in relax(p + inventory_name(hw), max(cap, 1)))]) <= cap,
                    f"C7_inventory_{w}_{len(prob.constraints())}")

        cost = list(zip(ys, wl.price, strict=True))
        # C8 budget per hour.
        if c.budget_per_hour_usd is not None:
            b = c.budget_per_hour_usd
            add(_lin([*cost, *((v, -a) for v, a in relax(p + BUDGET_H, b))]) <= b, f"C8_budget_h_{w}")
        # C9 total budget over the stated duration.
        if c.budget_total_usd is not None and c.duration_h is not None:
            b = c.budget_total_usd
            terms = [(v, a * c.duration_h) for v, a in cost]
            add(_lin([*terms, *((v, -a) for v, a in relax(p + BUDGET_TOTAL, b))]) <= b, f"C9_budget_total_{w}")
        # C10 power cap over all replicas.
        if c.max_power_w is not None:
            cap = c.max_power_w
            terms = list(zip(ys, wl.power, strict=True))
            add(_lin([*terms, *((v, -a) for v, a in relax(p + POWER, cap))]) <= cap, f"C10_power_{w}")

        # C11 latency objective epigraph: lmax >= L_i for every candidate used.
        if objective == "latency":
            for i, (hw, cfg) in enumerate(keys):
                add(_lin([(lmax[w], 1.0), (u[w, hw, cfg], -float(wl.lat[i]))]) >= 0, f"C11_lmax_{w}_{i}")

    # C7'/C8' shared across workloads (plan): one inventory and one budget for all of them.
    for hw, cap in sorted((shared_inventory or {}).items()):
        terms = [(y[w, h, cf], d) for w, wl in enumerate(ws)
                 for h, cf, d in zip(wl.hw, wl.cfg, wl.devices, strict=True) if h == hw]
        if terms:
            add(_lin([*terms, *((v, -a) for v, a in relax(inventory_name(hw), max(cap, 1)))]) <= cap,
                f"C7_shared_inventory_{len(prob.constraints())}")
    if shared_budget_per_hour_usd is not None:
        b = shared_budget_per_hour_usd
        terms = [(y[w, h, cf], pr) for w, wl in enumerate(ws) for h, cf, pr in zip(wl.hw, wl.cfg, wl.price, strict=True)]
        add(_lin([*terms, *((v, -a) for v, a in relax(BUDGET_H, b))]) <= b, "C8_shared_budget_h")

    # ---- Phase 3: objective (lexicographic stages) ---------------------------------------------
    cost_expr = _lin([(y[w, h, cf], pr) for w, wl in enumerate(ws)
                      for h, cf, pr in zip(wl.hw, wl.cfg, wl.price, strict=True)])
    stages: list[tuple[str, pulp.LpAffineExpression]] = []
    if elastic:
        # Smallest relative relaxation: each slack divided by its constraint's own value.
        stages.append(("slack", _lin([(s, 1.0 / scale) for s, scale in slack.values()])))
    elif objective == "energy":
        stages.append(("power_w", _lin([(y[w, h, cf], pw) for w, wl in enumerate(ws)
                                        for h, cf, pw in zip(wl.hw, wl.cfg, wl.power, strict=True)])))
    elif objective == "latency":
        stages.append(("latency_p99_ms", _lin([(v, 1.0) for v in lmax.values()])))
    stages.append(("cost_per_hour_usd", cost_expr))  # the objective, or the tie-break after one

    # C12 pins: after stage i is solved, its value is held (within tolerance) while later stages
    # break ties; the pin variable's upper bound carries the value so it can be released again.
    pins = []
    for i, (_, expr) in enumerate(stages[:-1]):
        t = var("pin", None, None)
        add(expr - t <= 0, f"C12_pin_{i}")
        pins.append(t)
    return _Model(prob, ws, y, u, z, lmax, slack, stages, pins)


def _solver(name: str, time_limit_s: float | None) -> pulp.LpSolver:
    limit = None if time_limit_s is None or not math.isfinite(time_limit_s) else max(float(time_limit_s), 0.01)
    if name == "highs":
        s = pulp.HiGHS(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9, threads=1, random_seed=0)
        if not s.available():
            raise _SolverMissing("HiGHS is not installed (pip install highspy, or benchmatch[highs])")
        return s
    if name != "cbc":
        raise _SolverMissing(f"unknown solver '{name}'; choose one of {', '.join(SOLVERS)}")
    cmd = pulp.COIN_CMD(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9)
    if cmd.available():
        return cmd
    with warnings.catch_warnings():  # the bundled CBC, deprecated for PuLP 4 but still shipped
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9)


class _SolverMissing(RuntimeError):
    pass


def _solve_stages(m: _Model, solver: str, deadline: float) -> tuple[str, str]:
    """Solve the stages in order, pinning each before the next. Returns (status, reason)."""
    status, reason = "optimal", ""
    for i, (_stage, expr) in enumerate(m.stages):
        m.prob.setObjective(expr)
        left = deadline - time.perf_counter()
        if left <= 0:
            status, reason = "time_limit", "time limit reached before the solve finished"
            break
        try:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                m.prob.solve(_solver(solver, left))
            m.solver_s += time.perf_counter() - t0
        except _SolverMissing:
            raise
        except Exception as exc:  # a solver crash is reported, not raised: the caller gets a record
            return "error", f"{solver} failed: {exc}"
        sol = m.prob.sol_status
        if sol == pulp.LpSolutionOptimal:
            pass
        elif sol == pulp.LpSolutionIntegerFeasible:
            status, reason = "time_limit", "time limit reached; the best option found is returned, optimality not proven"
        elif sol == pulp.LpSolutionInfeasible:
            return "infeasible", "no assignment satisfies every constraint"
        elif sol == pulp.LpSolutionUnbounded:
            return "unbounded", "the objective is unbounded (a candidate with a negative price or power?)"
        else:
            if time.perf_counter() >= deadline - 0.05:
                return "time_limit", "time limit reached before any feasible option was found"
            return "error", f"{solver} returned status {pulp.LpStatus.get(m.prob.status, m.prob.status)}"
        if i < len(m.pins):
            value = pulp.value(expr) or 0.0
            m.pins[i].upBound = value + 1e-7 * max(1.0, abs(value))
    for t in m.pins:
        t.upBound = None
    return status, reason


def _read(m: _Model) -> list[dict[int, int]]:
    """Replicas per workload, keyed by the index of the candidate within the workload."""
    out = []
    for w, wl in enumerate(m.ws):
        got = {}
        for i, (hw, cfg) in enumerate(zip(wl.hw, wl.cfg, strict=True)):
            v = m.y[w, hw, cfg].varValue
            n = int(round(v)) if v is not None else 0
            if n > 0:
                got[i] = n
        out.append(got)
    return out


# ----------------------------------------------------------------------------------------------
# Reading an answer: cost, binding constraints
# ----------------------------------------------------------------------------------------------


def _option(wl: _Workload, chosen: dict[int, int], rank: int, objective: str,
            full: _Workload | None = None) -> Option:
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
        binding=_binding(wl, idx, n, objective, full) if full is not None else (),
    )


def _binding(wl: _Workload, idx: np.ndarray, n: np.ndarray, objective: str, full: _Workload) -> tuple[str, ...]:
    """Constraints at their limit for this option (docs/matcher.md "Binding constraints").

    Sums (demand, budgets, inventory, power) are binding when one replica more (for a cap) or
    fewer (for the demand) of a candidate in the option would break them. A threshold (SLO,
    accuracy floor, energy cap) is binding when it screened out a candidate that is more efficient
    on the objective (price or power per sample/s; latency itself) than every candidate used:
    without the threshold a better option may exist. `full` is the screen that keeps violators."""
    c = wl.req.constraints
    out = []
    if wl.demand > 0 and float(n @ wl.thr[idx]) - wl.demand < wl.thr[idx].min() * (1 - _TOL):
        out.append(DEMAND)

    def efficiency(w: _Workload, sel: np.ndarray) -> np.ndarray:
        if objective == "latency":
            return w.lat[sel]
        num = w.power[sel] if objective == "energy" else w.price[sel]
        return num / w.thr[sel] if wl.demand > 0 else num

    best_used = efficiency(wl, idx).min()
    for name, bound, values, sign in ((LATENCY, c.latency_p99_ms, full.lat, +1),
                                      (ACCURACY, c.accuracy, full.acc, -1),
                                      (ENERGY, c.energy_per_sample_j, full.energy, +1)):
        if bound is None:
            continue
        violates = sign * (values - bound) > _TOL * abs(bound)
        with np.errstate(divide="ignore", invalid="ignore"):
            if violates.any() and (efficiency(full, violates) < best_used * (1 - _TOL)).any():
                out.append(name)

    cost = float(n @ wl.price[idx])
    step_price = wl.price[idx].min()
    if c.budget_per_hour_usd is not None and cost + step_price > c.budget_per_hour_usd * (1 + _TOL):
        out.append(BUDGET_H)
    if c.budget_total_usd is not None and c.duration_h is not None and \
            (cost + step_price) * c.duration_h > c.budget_total_usd * (1 + _TOL):
        out.append(BUDGET_TOTAL)
    for hw in sorted(set(wl.hw[i] for i in idx)):
        cap = wl.inventory.get(hw, math.inf)
        used = sum(k * wl.devices[i] for i, k in zip(idx, n, strict=True) if wl.hw[i] == hw)
        step = min(wl.devices[i] for i in idx if wl.hw[i] == hw)
        if used + step > cap + _TOL:
            out.append(inventory_name(hw))
    if c.max_power_w is not None and float(n @ wl.power[idx]) + wl.power[idx].min() > c.max_power_w * (1 + _TOL):
        out.append(POWER)
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# One workload: top-k options, or a diagnosis
# ----------------------------------------------------------------------------------------------


def solve(
    req: Requirements,
    candidates: pd.DataFrame,
    *,
    single_config: bool = True,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
    top_k: int | None = None,
    explain: bool = True,
) -> Solution:
    """Best `top_k` (default req.top_k) options for one workload, or why there is none.

    Alternatives come from no-good cuts: after each option, at least one (hardware, configuration)
    it used must be left out, so the next option is neither the same support nor that support
    with extra replicas bolted on."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    k = req.top_k if top_k is None else top_k
    objective = req.objective
    n_total = len(candidates)
    base = {"solver": solver, "candidates_considered": n_total}
    if solver not in SOLVERS:
        return Solution("error", f"unknown solver '{solver}'; choose one of {', '.join(SOLVERS)}", **base)

    wl = _screen(req, candidates, objective=objective, elastic=False)
    excluded = dict(wl.excluded)
    t_screen = time.perf_counter() - t0
    if not wl.hw:
        diag = diagnose(req, candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        return Solution("infeasible", diag.message if diag else "every candidate was screened out", (), diag,
                        solver, time.perf_counter() - t0, n_total, excluded)

    need_u = k > 1 or objective == "latency"
    t1 = time.perf_counter()
    m = _build([wl], objective=objective, single_config=single_config, elastic=False, need_u=need_u)
    timings = {"screen_s": t_screen, "build_s": time.perf_counter() - t1}
    full = _screen(req, candidates, objective=objective, elastic=True) if explain else None
    options: list[Option] = []
    status, reason = "optimal", ""
    try:
        for rank in range(1, k + 1):
            st, why = _solve_stages(m, solver, deadline)
            has_answer = m.prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
            if st not in ("optimal", "time_limit") or not has_answer:
                if rank == 1:
                    status, reason = st, why  # later ranks: simply no further alternative
                break
            chosen = _read(m)[0]
            options.append(_option(wl, chosen, rank, objective, full))
            if st == "time_limit":
                status, reason = st, why
                break
            if rank == k:
                break
            # C12 no-good cut: drop at least one (hardware, configuration) of this option.
            support = [m.u[0, wl.hw[i], wl.cfg[i]] for i in chosen]
            m.prob.addConstraint(_lin([(v, 1.0) for v in support]) <= len(support) - 1, f"C12_cut_{m.cuts}")
            m.cuts += 1
    except _SolverMissing as exc:
        return Solution("error", str(exc), **base, excluded=excluded, solve_time_s=time.perf_counter() - t0)

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


# ----------------------------------------------------------------------------------------------
# Diagnosis: the elastic model
# ----------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.4g}"


_MISSING_TO_CONSTRAINT = {
    "missing:throughput_qps": DEMAND,
    "missing:latency_p99_ms": LATENCY,
    "missing:accuracy": ACCURACY,
    "missing:energy_per_sample_j": ENERGY,
    "missing:power_w": POWER,
}


def _missing_diagnosis(req: Requirements, wl: _Workload) -> Diagnosis:
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


def diagnose(
    req: Requirements,
    candidates: pd.DataFrame,
    *,
    single_config: bool = True,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
) -> Diagnosis | None:
    """Why nothing is feasible, and the smallest relaxation that fixes it.

    Elastic model: every constraint gets a non-negative slack, the sum of slacks divided by their
    constraint's own value is minimised (then cost); the relaxation reported is the value the
    elastic solution needs, computed exactly from its integer replicas, so applying it gives a
    feasible problem. Returns None if the problem is in fact feasible."""
    t0 = time.perf_counter()
    deadline = t0 + (time_limit_s if time_limit_s is not None else math.inf)
    wl = _screen(req, candidates, objective=req.objective, elastic=True)
    if not wl.hw:
        # Only dropping the constraints that need the missing numbers can help; once dropped,
        # the rest may still be infeasible, so diagnose the remainder too and report both.
        first = _missing_diagnosis(req, wl)
        if not first.relaxations:
            return first
        rest = diagnose(apply_relaxations(req, first), candidates, single_config=single_config, solver=solver,
                        time_limit_s=max(deadline - time.perf_counter(), 1.0))
        if rest is None:
            return first
        return Diagnosis(first.blocking + rest.blocking, f"{first.message}; then {rest.message}",
                         first.relaxations + rest.relaxations)
    m = _build([wl], objective=req.objective, single_config=single_config, elastic=True, need_u=True)
    try:
        status, why = _solve_stages(m, solver, deadline)
    except _SolverMissing as exc:
        return Diagnosis((), str(exc), ())
    if status not in ("optimal", "time_limit") or m.prob.sol_status not in (pulp.LpSolutionOptimal,
                                                                             pulp.LpSolutionIntegerFeasible):
        return Diagnosis((), f"the elastic model could not be solved ({status}: {why})", ())
    rels = _relaxations(req, wl, _read(m)[0])
    if not rels:
        return None
    # Single-constraint fixes: hold every other slack at 0 and see if this one alone suffices.
    alternatives: list[Relaxation] = []
    if len(m.slack) > 1:
        for name in sorted(m.slack):
            if time.perf_counter() > deadline:
                break
            for other, (t, _) in m.slack.items():
                t.upBound = None if other == name else 0.0
            st, _ = _solve_stages(m, solver, deadline)
            if st == "optimal":
                alone = _relaxations(req, wl, _read(m)[0])
                if len(alone) == 1:
                    alternatives.append(alone[0])
        for t, _ in m.slack.values():
            t.upBound = None
    msg = "; ".join(r.message for r in rels)
    unknown = {k.split(":", 1)[1]: v for k, v in wl.excluded.items() if k.startswith("missing:")}
    if unknown:
        msg += " (not considered, numbers missing: " + ", ".join(f"{v} without {k}" for k, v in sorted(unknown.items())) + ")"
    extra = [a for a in alternatives if (a.constraint, a.best_achievable) not in
             {(r.constraint, r.best_achievable) for r in rels}]
    if extra:
        msg += ". Alternatively, relax one constraint alone: " + "; or ".join(
            f"{a.constraint} to {_fmt(a.best_achievable)}" for a in extra)
    return Diagnosis(tuple(r.constraint for r in rels), msg, tuple(rels), tuple(alternatives))


def _relaxations(req: Requirements, wl: _Workload, chosen: dict[int, int]) -> list[Relaxation]:
    c = req.constraints
    idx = np.array(sorted(chosen), dtype=int)
    n = np.array([chosen[i] for i in idx], dtype=float)

    def where(i: int) -> str:
        return f"{wl.hw[i]} with {wl.describe_cfg(wl.cfg[i])}"

    rels: list[Relaxation] = []
    if c.latency_p99_ms is not None:
        j = idx[np.argmax(wl.lat[idx])]
        if wl.lat[j] > c.latency_p99_ms * (1 + _TOL):
            rels.append(Relaxation(LATENCY, c.latency_p99_ms, float(wl.lat[j]),
                                   f"latency_p99_ms <= {_fmt(c.latency_p99_ms)} is unreachable; the best is "
                                   f"{_fmt(wl.lat[j])} ms on {where(j)}"))
    if c.accuracy is not None:
        j = idx[np.argmin(wl.acc[idx])]
        if wl.acc[j] < c.accuracy * (1 - _TOL):
            rels.append(Relaxation(ACCURACY, c.accuracy, float(wl.acc[j]),
                                   f"accuracy >= {_fmt(c.accuracy)} is unreachable; the best is "
                                   f"{_fmt(wl.acc[j])} on {where(j)}"))
    if c.energy_per_sample_j is not None:
        j = idx[np.argmax(wl.energy[idx])]
        if wl.energy[j] > c.energy_per_sample_j * (1 + _TOL):
            rels.append(Relaxation(ENERGY, c.energy_per_sample_j, float(wl.energy[j]),
                                   f"energy_per_sample_j <= {_fmt(c.energy_per_sample_j)} is unreachable; the best "
                                   f"is {_fmt(wl.energy[j])} J on {where(j)}"))
    if wl.demand > 0:
        got = float(n @ wl.thr[idx])
        if got < wl.demand * (1 - _TOL):
            rels.append(Relaxation(DEMAND, wl.demand, got,
                                   f"throughput_qps >= {_fmt(wl.demand)} is unreachable within the other "
                                   f"constraints; the most is {_fmt(got)} samples/s"))
    cost = float(n @ wl.price[idx])
    if c.budget_per_hour_usd is not None and cost > c.budget_per_hour_usd * (1 + _TOL):
        rels.append(Relaxation(BUDGET_H, c.budget_per_hour_usd, cost,
                               f"budget {_fmt(c.budget_per_hour_usd)} USD/h is short by "
                               f"{_fmt(cost - c.budget_per_hour_usd)} USD/h (needs {_fmt(cost)} USD/h)"))
    if c.budget_total_usd is not None and c.duration_h is not None:
        total = cost * c.duration_h
        if total > c.budget_total_usd * (1 + _TOL):
            rels.append(Relaxation(BUDGET_TOTAL, c.budget_total_usd, total,
                                   f"total budget {_fmt(c.budget_total_usd)} USD over {_fmt(c.duration_h)} h is "
                                   f"short by {_fmt(total - c.budget_total_usd)} USD (needs {_fmt(total)} USD)"))
    for hw in sorted(set(wl.hw[i] for i in idx)):
        cap = wl.inventory.get(hw, math.inf)
        used = float(sum(k * wl.devices[i] for i, k in zip(idx, n, strict=True) if wl.hw[i] == hw))
        if used > cap + _TOL:
            rels.append(Relaxation(inventory_name(hw), cap, used,
                                   f"inventory of {hw} is {_fmt(cap)} device(s); {_fmt(used)} are needed"))
    if c.max_power_w is not None:
        pw = float(n @ wl.power[idx])
        if pw > c.max_power_w * (1 + _TOL):
            rels.append(Relaxation(POWER, c.max_power_w, pw,
                                   f"max_power_w {_fmt(c.max_power_w)} W is short by {_fmt(pw - c.max_power_w)} W "
                                   f"(needs {_fmt(pw)} W)"))
    return rels


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
                inventory[hw] = int(math.ceil(r.best_achievable - _TOL))
        else:
            cons[r.constraint] = r.best_achievable
    data = req.model_dump()
    data["constraints"] = cons
    data["inventory"] = inventory if (req.inventory is not None or inventory) else None
    return Requirements.model_validate(data)


# ----------------------------------------------------------------------------------------------
# Several workloads sharing inventory and budget
# ----------------------------------------------------------------------------------------------


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
    if solver not in SOLVERS:
        return PlanSolution("error", f"unknown solver '{solver}'; choose one of {', '.join(SOLVERS)}", solver=solver)
    shared_inv = {h: float(n) for h, n in (inventory or {}).items()}

    def screened(elastic: bool) -> list[_Workload]:
        return [_screen(r, c, objective=objective, elastic=elastic, prefix=f"workloads[{w}].",
                        extra_inventory=None if elastic else shared_inv)
                for w, (r, c) in enumerate(workloads)]

    ws = screened(False)
    status, reason, chosen = "infeasible", "", None
    try:
        if all(wl.hw for wl in ws):
            m = _build(ws, objective=objective, single_config=single_config, elastic=False,
                       need_u=objective == "latency", shared_inventory=shared_inv,
                       shared_budget_per_hour_usd=budget_per_hour_usd)
            status, reason = _solve_stages(m, solver, deadline)
            if m.prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) and status in ("optimal", "time_limit"):
                chosen = _read(m)
        else:
            empty = [w for w, wl in enumerate(ws) if not wl.hw]
            reason = f"every candidate of workload(s) {empty} was screened out"
    except _SolverMissing as exc:
        return PlanSolution("error", str(exc), solver=solver, candidates_considered=n_total)
    if chosen is not None:
        opts = tuple(_option(wl, ch, 1, objective) for wl, ch in zip(ws, chosen, strict=True))
        total = sum(o.cost_per_hour_usd for o in opts)
        return PlanSolution(status, reason or f"{len(opts)} workloads placed", opts, total, None, solver,
                            time.perf_counter() - t0, n_total)

    # Elastic plan: which workload's constraint, or which shared limit, blocks.
    diag = None
    if status == "infeasible":
        ews = screened(True)
        if not all(wl.hw for wl in ews):
            w = next(i for i, wl in enumerate(ews) if not wl.hw)
            d = _missing_diagnosis(workloads[w][0], ews[w])
            diag = Diagnosis(tuple(f"workloads[{w}].{b}" for b in d.blocking), f"workloads[{w}]: {d.message}",
                             d.relaxations)
        else:
            m = _build(ews, objective=objective, single_config=single_config, elastic=True, need_u=True,
                       shared_inventory=shared_inv, shared_budget_per_hour_usd=budget_per_hour_usd)
            st, _ = _solve_stages(m, solver, deadline + 30)
            if st in ("optimal", "time_limit"):
                diag = _plan_relaxations(workloads, ews, _read(m), shared_inv, budget_per_hour_usd)
        if diag is not None:
            reason = diag.message
    return PlanSolution(status, reason, tuple(None for _ in workloads), math.nan, diag, solver,
                        time.perf_counter() - t0, n_total)


def _plan_relaxations(workloads, ws: list[_Workload], chosen: list[dict[int, int]],
                      shared_inv: Mapping[str, float], budget: float | None) -> Diagnosis | None:
    rels: list[Relaxation] = []
    for w, (wl, ch) in enumerate(zip(ws, chosen, strict=True)):
        for r in _relaxations(workloads[w][0], wl, ch):
            rels.append(Relaxation(f"workloads[{w}].{r.constraint}", r.required, r.best_achievable,
                                   f"workloads[{w}]: {r.message}"))
    used: Counter = Counter()
    cost = 0.0
    for wl, ch in zip(ws, chosen, strict=True):
        for i, k in ch.items():
            used[wl.hw[i]] += k * wl.devices[i]
            cost += k * wl.price[i]
    for hw, cap in sorted(shared_inv.items()):
        if used[hw] > cap + _TOL:
            rels.append(Relaxation(inventory_name(hw), cap, float(used[hw]),
                                   f"shared inventory of {hw} is {_fmt(cap)} device(s); {_fmt(used[hw])} are needed"))
    if budget is not None and cost > budget * (1 + _TOL):
        rels.append(Relaxation(BUDGET_H, budget, cost,
                               f"shared budget {_fmt(budget)} USD/h is short by {_fmt(cost - budget)} USD/h"))
    if not rels:
        return None
    return Diagnosis(tuple(r.constraint for r in rels), "; ".join(r.message for r in rels), tuple(rels))
