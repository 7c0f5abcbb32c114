"""What the matcher answers: records with a status and a reason, never a bare None.

`solve` returns a Solution, `plan` a PlanSolution; when nothing is feasible they carry a Diagnosis
whose Relaxations say which constraint blocks and what value would unblock it. Constraint names
(the `binding`, `blocking` and `Relaxation.constraint` strings) are the requirement fields they
come from, `inventory[<hardware>]`, and in a plan `workloads[<i>].<name>`. A Relaxation also
names its field as a path into the request (`requirement_field`): `constraints.<name>`,
`inventory.<hardware>`, in a plan `workloads.<i>.constraints.<name>`, `workloads.<i>.inventory.<hw>`
and the shared `budget_per_hour_usd`, `inventory.<hardware>`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

Status = Literal["optimal", "infeasible", "time_limit", "unbounded", "error"]
STATUSES: tuple[Status, ...] = get_args(Status)

TOL = 1e-9  # relative tolerance for "≤ bound" tests done in Python (screening, binding, checks)

# Constraint names as they appear in `binding`, `blocking` and relaxations.
DEMAND = "throughput_qps"
BUDGET_H, BUDGET_TOTAL, POWER = "budget_per_hour_usd", "budget_total_usd", "max_power_w"


def inventory_name(hw: str) -> str:
    return f"inventory[{hw}]"


def requirement_field(name: str, *, plan: bool = False) -> str:
    """The request field a constraint name stands for (module docstring). In a plan, a name
    without a workload prefix is one of the plan's shared limits."""
    if m := re.fullmatch(r"workloads\[(\d+)\]\.(.+)", name, flags=re.S):
        return f"workloads.{m[1]}.{requirement_field(m[2])}"
    if name.startswith("inventory[") and name.endswith("]"):
        return "inventory." + name[len("inventory["):-1]
    return name if plan else f"constraints.{name}"


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
    """One change to the request: `field` from `required` to `best_achievable`."""

    constraint: str  # the constraint's name (as in `blocking`)
    field: str  # requirement_field(constraint): where the change goes in the request
    required: float | None  # the value the user asked for
    best_achievable: float | None  # the value that would make it feasible; None: drop the constraint
    message: str


Fix = tuple[Relaxation, ...]  # changes applied together


@dataclass(frozen=True)
class Diagnosis:
    blocking: tuple[str, ...]
    message: str
    relaxations: Fix  # apply all of them together: the smallest joint relaxation
    alternatives: tuple[Fix, ...] = ()  # other fixes found (one constraint alone, where one does)

    @property
    def fixes(self) -> tuple[Fix, ...]:
        """Every fix found, each enough on its own: the smallest joint relaxation first, then the
        alternatives that differ from it."""
        out: list[Fix] = [self.relaxations] if self.relaxations else []
        seen = {tuple((r.field, r.best_achievable) for r in f) for f in out}
        for fix in self.alternatives:
            key = tuple((r.field, r.best_achievable) for r in fix)
            if fix and key not in seen:
                seen.add(key)
                out.append(fix)
        return tuple(out)


@dataclass(frozen=True)
class Solution:
    status: Status
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
    status: Status
    reason: str
    workloads: tuple[Option | None, ...] = ()  # one option per workload, in the input order
    cost_per_hour_usd: float = math.nan
    diagnosis: Diagnosis | None = None
    solver: str = "cbc"
    solve_time_s: float = 0.0
    candidates_considered: int = 0
    # Relative gap to the best bound known: 0 when proven optimal; with a time limit, (found - LB) /
    # found, LB the larger of Σ each workload's own optimum and column generation's Lagrangian
    # bound (columns.py): an upper bound on the solver's own gap; None unknown.
    gap: float | None = None
