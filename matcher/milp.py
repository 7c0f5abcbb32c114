"""The matching MILP: how many replicas of which (hardware, configuration) each workload runs.

Workloads w (one for solve.solve, several for solve.plan); i = (h, c) a candidate of w that
survived the screen (screen.py), h(i) its hardware and c(i) its configuration. Per candidate:
price p_i (USD/h), throughput T_i, p99 latency L_i, power P_i, devices d_i, replica bound ub_i and
the value v_ti of each threshold metric t (screen.THRESHOLDS: σ_t = +1 for a cap, -1 for a floor).
Per workload: demand D, bounds b_t, inventory I_h, budget B per hour, total budget B_tot over H
hours, power cap P_max. The s terms (slack, >= 0) exist in the elastic model only (diagnose.py).

    y_i ∈ {0..ub_i}  replicas                                      C0: ub_i from the screen
    u_i ∈ {0, 1}     1 iff y_i >= 1                                top-k cuts, latency, elastic
    z_c ∈ {0, 1}     c is the workload's configuration             single_config
    λ_w >= 0         the worst p99 latency used                    latency objective

    C1    Σ_i T_i·y_i + s_D >= D                          demand, when D > 0
    C1b   Σ_i y_i >= 1                                    a deployment has a replica
    C2-4  σ_t·(v_ti - b_t)·u_i <= s_t                     thresholds, for each i with σ_t·(v_ti - b_t)
                                                          > 0: C2 p99 SLO, C3 accuracy floor, C4
                                                          energy cap; the ordinary model screened
                                                          those i out (y_i = 0 by absence)
    C5    Σ_c z_c = 1                                     one configuration per workload
    C6    y_i <= ub_i·u_i,  u_i <= y_i,  u_i <= z_c(i)    linking; without u: y_i <= ub_i·z_c(i)
    C7    Σ_{i: h(i)=h} d_i·y_i - s_h <= I_h              inventory, each listed hardware h
    C8    Σ_i p_i·y_i - s_B <= B                          budget per hour
    C9    H·Σ_i p_i·y_i - s_tot <= B_tot                  total budget
    C10   Σ_i P_i·y_i - s_P <= P_max                      power cap
    C11   λ_w >= L_i·u_i                                  latency epigraph
    C7'   Σ_w Σ_{i: h(i)=h} d_i·y_wi - s_h <= I_h         plan: one inventory shared by all workloads
    C8'   Σ_w Σ_i p_i·y_wi - s_B <= B                     plan: one budget shared by all workloads
    C12   f_j(y) <= π_j                                   lexicographic pins (Model.solve)
    C13   Σ_{i∈S} u_i <= |S| - 1                          no-good cut per earlier option S (top-k)

    min f_1, then f_2 with f_1 held at its optimum through π_1's upper bound (1e-7 relative), where
    f_1 = Σ_k s_k / |b_k| (elastic: the smallest relative relaxation), Σ_i P_i·y_i (energy) or
    Σ_w λ_w (latency); the last stage is always the cost Σ_i p_i·y_i (the only one for `cost`).

Variables live in dicts keyed by meaning, y[w, hw, cfg], u[w, hw, cfg], z[w, cfg], lmax[w], and are
never fetched by formatted strings. Determinism: candidates come sorted (screen.py) and the solver
options are fixed (zero gap, msg off; HiGHS one thread, seed 0), so the same input gives the same
answer. docs/matcher.md states the model in prose.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pulp

from matcher.screen import THRESHOLDS, Workload
from matcher.solution import BUDGET_H, BUDGET_TOTAL, DEMAND, POWER, Status, inventory_name

SOLVERS = ("cbc", "highs")

Terms = Mapping[pulp.LpVariable, float] | Iterable[tuple[pulp.LpVariable, float]]


@dataclass(frozen=True)
class Mode:
    """Which variant of the formulation to build."""

    objective: str = "cost"  # cost | energy | latency: the first lexicographic stage
    single_config: bool = True  # C5
    elastic: bool = False  # every constraint gets a slack; C2-C4 become rows (diagnosis)
    alternatives: bool = False  # top-k: the C13 cuts need u
    shared_inventory: Mapping[str, float] = field(default_factory=dict)  # plan: C7'
    shared_budget_per_hour_usd: float | None = None  # plan: C8'

    @property
    def uses_u(self) -> bool:
        return self.elastic or self.alternatives or self.objective == "latency"


def lin(terms: Terms) -> pulp.LpAffineExpression:
    # An LpAffineExpression from pairs is much faster than lpSum over generators at 10^5 terms.
    pairs = terms.items() if isinstance(terms, Mapping) else terms
    return pulp.LpAffineExpression([(v, float(a)) for v, a in pairs if a != 0])


class _SolverMissing(RuntimeError):
    pass


class Model:
    """The PuLP problem, its variables by meaning, and the lexicographic stages. In the elastic
    model at_least / at_most give each constraint its slack (shared by the rows of one constraint,
    weighted 1/scale in the objective)."""

    def __init__(self, ws: list[Workload], mode: Mode):
        self.prob = pulp.LpProblem("benchmatch", pulp.LpMinimize)
        self.ws, self.mode = ws, mode
        self.y: dict[tuple[int, str, str], pulp.LpVariable] = {}
        self.u: dict[tuple[int, str, str], pulp.LpVariable] = {}
        self.z: dict[tuple[int, str], pulp.LpVariable] = {}
        self.lmax: dict[int, pulp.LpVariable] = {}
        self.slack: dict[str, tuple[pulp.LpVariable, float]] = {}  # constraint name -> (slack, scale)
        self.stages: list[tuple[str, pulp.LpAffineExpression]] = []  # first = primary, last = cost
        self.pins: list[pulp.LpVariable] = []  # pins[j] >= stage j; bounded once stage j is solved
        self.cuts = 0
        self.solver_s = 0.0  # wall time inside PuLP's solve (model transfer + solver)
        self._count: Counter = Counter()
        self._dupes: Counter = Counter()

    def var(self, kind: str, low: float | None = 0, up: float | None = None,
            cat: str = pulp.LpContinuous) -> pulp.LpVariable:
        # Solver-side names are opaque counters; meaning lives in the dict keys.
        self._count[kind] += 1
        return self.prob.add_variable(f"{kind}{self._count[kind]}", low, up, cat=cat)

    def at_least(self, terms: Terms, rhs: float, name: str, slack: str | None = None, scale: float = 1.0) -> None:
        """Σ terms >= rhs; elastic: Σ terms + s[slack] >= rhs."""
        self._row(terms, pulp.LpConstraintGE, rhs, name, slack, scale)

    def at_most(self, terms: Terms, rhs: float, name: str, slack: str | None = None, scale: float = 1.0) -> None:
        """Σ terms <= rhs; elastic: Σ terms - s[slack] <= rhs."""
        self._row(terms, pulp.LpConstraintLE, rhs, name, slack, scale)

    def exactly(self, terms: Terms, rhs: float, name: str) -> None:
        self._row(terms, pulp.LpConstraintEQ, rhs, name, None, 1.0)

    def _row(self, terms: Terms, sense: int, rhs: float, name: str, slack: str | None, scale: float) -> None:
        expr = lin(terms)
        if self.mode.elastic and slack is not None:
            if slack not in self.slack:
                self.slack[slack] = (self.var("s"), max(abs(scale), 1e-9))
            expr[self.slack[slack][0]] = 1.0 if sense == pulp.LpConstraintGE else -1.0
        row, key = pulp.LpConstraint(expr, sense, rhs=rhs), name
        while True:
            try:
                self.prob.addConstraint(row, key)
                return
            except pulp.PulpError:  # PuLP maps " -+[]" to "_" and refuses a name twice: hardware
                self._dupes[name] += 1  # names that differ only there get a counter
                key = f"{name}_{self._dupes[name]}"

    def exclude(self, w: int, used: Iterable[tuple[str, str]]) -> None:
        """C13 no-good cut: the next option leaves out at least one (hardware, configuration) used."""
        support = {self.u[w, hw, cfg]: 1.0 for hw, cfg in used}
        self.at_most(support, len(support) - 1, f"C13_cut_{self.cuts}")
        self.cuts += 1

    @property
    def has_answer(self) -> bool:
        return self.prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)

    def read(self) -> list[dict[int, int]]:
        """Replicas per workload, keyed by the index of the candidate within the workload."""
        out = []
        for w, wl in enumerate(self.ws):
            got = {}
            for i, (hw, cfg) in enumerate(zip(wl.hw, wl.cfg, strict=True)):
                v = self.y[w, hw, cfg].varValue
                n = int(round(v)) if v is not None else 0
                if n > 0:
                    got[i] = n
            out.append(got)
        return out

    def solve(self, solver: str, deadline: float) -> tuple[Status, str]:
        """Solve the stages in order, pinning each (C12) before the next."""
        status: Status = "optimal"
        reason = ""
        for j, (_stage, expr) in enumerate(self.stages):
            self.prob.setObjective(expr)
            left = deadline - time.perf_counter()
            if left <= 0:
                status, reason = "time_limit", "time limit reached before the solve finished"
                break
            try:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.prob.solve(_solver(solver, left))
                self.solver_s += time.perf_counter() - t0
            except _SolverMissing as exc:
                return "error", str(exc)
            except (pulp.PulpSolverError, OSError) as exc:  # a solver crash is an answer, not a raise
                return "error", f"{solver} failed: {exc}"
            sol = self.prob.sol_status
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
                return "error", f"{solver} returned status {pulp.LpStatus.get(self.prob.status, self.prob.status)}"
            if j < len(self.pins):
                value = pulp.value(expr) or 0.0
                self.pins[j].upBound = value + 1e-7 * max(1.0, abs(value))
        for t in self.pins:
            t.upBound = None
        return status, reason


def build(ws: list[Workload], mode: Mode) -> Model:
    """The formulation of the module docstring, block by block in its order. The slack terms are
    not written out: at_least / at_most add them in the elastic model."""
    m = Model(ws, mode)
    y, u, z, lmax = m.y, m.u, m.z, m.lmax
    for w, wl in enumerate(ws):
        for i, (hw, cfg) in enumerate(zip(wl.hw, wl.cfg, strict=True)):
            y[w, hw, cfg] = m.var("y", 0, int(wl.ub[i]), pulp.LpInteger)  # C0  0 <= y_i <= ub_i
            if mode.uses_u:
                u[w, hw, cfg] = m.var("u", 0, 1, pulp.LpBinary)
        if mode.single_config:
            for cfg in sorted(set(wl.cfg)):
                z[w, cfg] = m.var("z", 0, 1, pulp.LpBinary)
        if mode.objective == "latency":
            lmax[w] = m.var("lmax", 0)

    for w, wl in enumerate(ws):
        c, p = wl.req.constraints, wl.prefix
        keys = [(w, hw, cfg) for hw, cfg in zip(wl.hw, wl.cfg, strict=True)]
        ys = [y[k] for k in keys]

        # C1  Σ_i T_i·y_i >= D;  C1b  Σ_i y_i >= 1. Without C1b the elastic model would "meet" any
        # demand with an empty deployment and the demand's slack.
        if wl.demand > 0:
            m.at_least(zip(ys, wl.thr, strict=True), wl.demand, f"C1_demand_{w}", p + DEMAND, wl.demand)
        m.at_least({v: 1.0 for v in ys}, 1, f"C1b_one_replica_{w}")

        # C2-C4  σ_t·(v_ti - b_t)·u_i <= s_t, elastic only: in the ordinary model the violators
        # have no variable at all.
        if mode.elastic:
            for t in THRESHOLDS:
                bound = t.bound(wl.req)
                if bound is None:
                    continue
                excess = t.excess(wl.values[t.metric], bound)
                for i in np.flatnonzero(excess > 0):
                    m.at_most({u[keys[i]]: excess[i]}, 0, f"{t.label}_{w}_{i}", p + t.name, bound)

        # C5  Σ_c z_c = 1: hardware may be mixed within the one configuration (Mélange-style).
        if mode.single_config:
            m.exactly({z[w, cfg]: 1.0 for cfg in sorted(set(wl.cfg))}, 1, f"C5_one_config_{w}")

        # C6  y_i <= ub_i·u_i,  u_i <= y_i,  u_i <= z_c(i)   (without u: y_i <= ub_i·z_c(i))
        for i, k in enumerate(keys):
            chosen_cfg = z[w, k[2]] if mode.single_config else None
            gate = u[k] if mode.uses_u else chosen_cfg
            if gate is None:
                continue
            m.at_most({y[k]: 1.0, gate: -wl.ub[i]}, 0, f"C6_ub_{w}_{i}")
            if mode.uses_u:
                m.at_most({u[k]: 1.0, y[k]: -1.0}, 0, f"C6_lb_{w}_{i}")
                if chosen_cfg is not None:
                    m.at_most({u[k]: 1.0, chosen_cfg: -1.0}, 0, f"C6_cfg_{w}_{i}")

        # C7  Σ_{i on h} d_i·y_i <= I_h
        for hw in sorted(set(wl.hw)):
            cap = wl.inventory.get(hw, math.inf)
            if math.isfinite(cap):
                devices = {y[k]: d for k, d in zip(keys, wl.devices, strict=True) if k[1] == hw}
                m.at_most(devices, cap, f"C7_inventory_{w}_{hw}", p + inventory_name(hw), max(cap, 1))

        # C8  Σ_i p_i·y_i <= B;  C9  H·Σ_i p_i·y_i <= B_tot;  C10  Σ_i P_i·y_i <= P_max
        cost = list(zip(ys, wl.price, strict=True))
        if c.budget_per_hour_usd is not None:
            b = c.budget_per_hour_usd
            m.at_most(cost, b, f"C8_budget_h_{w}", p + BUDGET_H, b)
        if c.budget_total_usd is not None and c.duration_h is not None:
            b, hours = c.budget_total_usd, c.duration_h
            m.at_most([(v, a * hours) for v, a in cost], b, f"C9_budget_total_{w}", p + BUDGET_TOTAL, b)
        if c.max_power_w is not None:
            cap = c.max_power_w
            m.at_most(zip(ys, wl.power, strict=True), cap, f"C10_power_{w}", p + POWER, cap)

        # C11  λ_w >= L_i·u_i
        if mode.objective == "latency":
            for i, k in enumerate(keys):
                m.at_least({lmax[w]: 1.0, u[k]: -wl.lat[i]}, 0, f"C11_lmax_{w}_{i}")

    # C7'  Σ_w Σ_{i on h} d_i·y_wi <= I_h;  C8'  Σ_w Σ_i p_i·y_wi <= B   (all_*: every workload's)
    all_y = [y[w, hw, cfg] for w, wl in enumerate(ws) for hw, cfg in zip(wl.hw, wl.cfg, strict=True)]
    all_hw = [hw for wl in ws for hw in wl.hw]
    all_devices = np.concatenate([wl.devices for wl in ws])
    all_price = np.concatenate([wl.price for wl in ws])
    all_power = np.concatenate([wl.power for wl in ws])
    for hw, cap in sorted(mode.shared_inventory.items()):
        devices = {v: d for v, h, d in zip(all_y, all_hw, all_devices, strict=True) if h == hw}
        if devices:
            m.at_most(devices, cap, f"C7_shared_inventory_{hw}", inventory_name(hw), max(cap, 1))
    if mode.shared_budget_per_hour_usd is not None:
        b = mode.shared_budget_per_hour_usd
        m.at_most(zip(all_y, all_price, strict=True), b, "C8_shared_budget_h", BUDGET_H, b)

    # The stages f_1 (if any), then cost; C12  f_j - π_j <= 0 holds stage j once solved.
    if mode.elastic:
        m.stages.append(("slack", lin({s: 1.0 / scale for s, scale in m.slack.values()})))
    elif mode.objective == "energy":
        m.stages.append(("power_w", lin(zip(all_y, all_power, strict=True))))
    elif mode.objective == "latency":
        m.stages.append(("latency_p99_ms", lin({v: 1.0 for v in lmax.values()})))
    m.stages.append(("cost_per_hour_usd", lin(zip(all_y, all_price, strict=True))))
    for j, (_, expr) in enumerate(m.stages[:-1]):
        pin = m.var("pin", None, None)
        m.at_most({**expr, pin: -1.0}, 0, f"C12_pin_{j}")
        m.pins.append(pin)
    return m


def unknown_solver(name: str) -> str | None:
    """Why `name` is no solver we offer, or None."""
    return None if name in SOLVERS else f"unknown solver '{name}'; choose one of {', '.join(SOLVERS)}"


def _solver(name: str, time_limit_s: float | None) -> pulp.LpSolver:
    limit = None if time_limit_s is None or not math.isfinite(time_limit_s) else max(float(time_limit_s), 0.01)
    if name == "highs":
        s = pulp.HiGHS(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9, threads=1, random_seed=0)
        if not s.available():
            raise _SolverMissing("HiGHS is not installed (pip install highspy, or benchmatch[highs])")
        return s
    if name != "cbc":
        raise _SolverMissing(unknown_solver(name))
    cmd = pulp.COIN_CMD(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9)
    if cmd.available():
        return cmd
    with warnings.catch_warnings():  # the bundled CBC, deprecated for PuLP 4 but still shipped
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=0.0, gapAbs=1e-9)
