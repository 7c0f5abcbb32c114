"""What the matcher answers: records with a status and a reason, never a bare None.

`solve` returns a Solution, `plan` a PlanSolution; when nothing is feasible they carry a Diagnosis
whose Relaxations say which constraint blocks and what value would unblock it. Constraint names
(the `binding`, `blocking` and `Relaxation.constraint` strings) are the requirement fields they
come from, `inventory[<hardware>]`, and in a plan `workloads[<i>].<name>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

Status = Literal["optimal", "infeasible", "time_limit", "unbounded", "error"]
STATUSES: tuple[Status, ...] = get_args(Status)

TOL = 1e-9  # relative tolerance for "≤ bound" tests done in Python (screening, binding, checks)

# Constraint names as they appear in `binding`, `blocking` and relaxations.
DEMAND, LATENCY, ACCURACY, ENERGY = "throughput_qps", "latency_p99_ms", "accuracy", "energy_per_sample_j"
BUDGET_H, BUDGET_TOTAL, POWER = "budget_per_hour_usd", "budget_total_usd", "max_power_w"


def inventory_name(hw: str) -> str:
    return f"inventory[{hw}]"


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
