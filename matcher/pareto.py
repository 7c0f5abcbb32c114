"""The cost–latency Pareto front by the ε-constraint method.

Minimise cost subject to p99 ≤ ε, starting from the user's SLO (or none). Each solution's latency
L is the worst conservative p99 among the candidates it uses. The next ε is the largest candidate
latency strictly below L, so every distinct latency level is tried exactly once and no point of the
front is skipped. Stop when nothing is feasible or `max_points` is reached. Costs never fall as ε
tightens; a point that costs the same as a faster one is dominated and dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matcher.candidates import clean_value
from matcher.recommend import check_inventory, check_statistics, sized
from matcher.requirements import Requirements
from matcher.solution import Option
from matcher.solve import solve
from matcher.tokens import solver_view


@dataclass(frozen=True)
class ParetoPoint:
    latency_p99_ms: float  # worst conservative p99 of the candidates used
    cost_per_hour_usd: float
    option: Option


def option_latency(option: Option, candidates: pd.DataFrame) -> float:
    lat = pd.to_numeric(candidates["latency_p99_ms"], errors="coerce").to_numpy()
    return float(max(lat[i] for i in option.replicas))


def pareto_front(req: Requirements, candidates: pd.DataFrame, *, solver: str = "cbc", max_points: int = 25,
                 time_limit_s: float = 60.0) -> list[ParetoPoint]:
    """Points from the slowest-cheapest to the fastest, each the least cost at its latency."""
    eps = req.constraints.latency_p99_ms
    points: list[ParetoPoint] = []
    for _ in range(max_points):
        constraints = req.constraints.model_copy(update={"latency_p99_ms": eps})
        r = req.model_copy(update={"objective": "cost", "top_k": 1, "constraints": constraints})
        at = sized(candidates, r)  # a tighter bound lowers the capacity read off a measured curve
        sol = solve(*solver_view(r, at), solver=solver, top_k=1, explain=False, time_limit_s=time_limit_s)
        if not sol.options:
            break
        opt = sol.options[0]
        latency = option_latency(opt, at)
        if points and math.isclose(points[-1].cost_per_hour_usd, opt.cost_per_hour_usd, rel_tol=1e-9):
            points.pop()  # same cost, lower latency: the earlier point is dominated
        points.append(ParetoPoint(latency, opt.cost_per_hour_usd, opt))
        # Distinct latencies as this bound sized them (a curve's p99 moves with the bound), ascending.
        lat = pd.to_numeric(at["latency_p99_ms"], errors="coerce").to_numpy(dtype=float)
        levels = np.unique(lat[np.isfinite(lat)])
        below = levels[levels < latency]
        if below.size == 0:
            break
        eps = float(below[-1])
    return points


def pareto_answer(req: Requirements, candidates: pd.DataFrame, *, solver: str = "cbc",
                  time_limit_s: float = 60.0) -> dict:
    """The JSON answer of `recommend --pareto` and `POST /pareto`: the front as plain data."""
    check_statistics(req, candidates)
    check_inventory(req.inventory, candidates)
    front = pareto_front(req, candidates, solver=solver, time_limit_s=time_limit_s)
    cfg_cols = [c for c in candidates.columns if c.startswith("cfg_")]
    points = []
    for p in front:
        used = candidates.iloc[list(p.option.replicas)]
        config = {c[4:]: used[c].iloc[0] for c in cfg_cols}
        points.append({"latency_p99_ms": p.latency_p99_ms, "cost_per_hour_usd": p.cost_per_hour_usd,
                       "hardware": dict(p.option.mix),
                       "config": {k: clean_value(v) for k, v in config.items()}})
    # The front is cost against p99 whatever the request ranks by: say so rather than answer
    # another objective's question silently.
    notes = ([] if req.objective == "cost" else
             [f"the front trades cost against p99 latency; the request's objective '{req.objective}' is not used here "
              "(POST /recommend ranks by it)"])
    return {"feasible": bool(points), "objective": "cost", "method": "epsilon-constraint on latency_p99_ms",
            "points": points, "notes": notes}
