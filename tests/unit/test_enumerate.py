"""Exact enumeration (matcher/enumerate.py) answers what the MILP answers, stage by stage: the
objective, cost, worst latency, capacity and replicas of every rank, feasible or not, on random
instances with budgets, a power cap, inventories and both objectives (#12 item 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matcher.enumerate import ENUMERATION, MAX_VECTORS, applicable
from matcher.requirements import Requirements
from matcher.screen import screen
from matcher.solve import solve
from tests.fixtures.instances import random_candidates


def _keys(sol, cands: pd.DataFrame, objective: str) -> list[tuple]:
    out = []
    for o in sol.options:
        rows = cands.iloc[list(o.replicas)]
        n = np.array(list(o.replicas.values()), dtype=float)
        power = float(n @ rows["power_w"].to_numpy()) if "power_w" in rows else 0.0
        out.append((round(power if objective == "energy" else o.cost_per_hour_usd, 6), round(o.cost_per_hour_usd, 6),
                    round(float(rows["latency_p99_ms"].max()), 9), round(float(n @ rows["throughput_qps"].to_numpy()), 4),
                    int(n.sum())))
    return out


def _same_ranks(req: Requirements, fast, milp, cands: pd.DataFrame, objective: str) -> None:
    """The same status and first option, stage by stage; later ranks depend on which option was
    cut, so they are compared while the earlier ones are the same."""
    assert fast.status == milp.status, (fast.reason, milp.reason)
    a, b = _keys(fast, cands, objective), _keys(milp, cands, objective)
    assert a[:1] == b[:1], (req, a, b)
    for r in range(1, min(len(a), len(b))):
        if fast.options[r - 1].replicas != milp.options[r - 1].replicas:
            break
        assert a[r] == b[r], (req, r, a, b)


def _request(rng: np.random.Generator, cands: pd.DataFrame, objective: str, k: int) -> Requirements:
    slo = float(np.quantile(cands["latency_p99_ms"], rng.uniform(0.3, 1.0)))
    demand = float(cands["throughput_qps"].max() * rng.uniform(0.2, 3.0))
    c: dict = {"throughput_qps": demand, "latency_p99_ms": slo}
    if rng.random() < 0.4:
        c["budget_per_hour_usd"] = float(cands["price_per_hour_usd"].max() * rng.uniform(0.5, 4))
    if rng.random() < 0.3:
        c["max_power_w"] = float(cands["power_w"].max() * rng.uniform(1, 5))
    if rng.random() < 0.2:
        c["budget_total_usd"], c["duration_h"] = float(cands["price_per_hour_usd"].max() * rng.uniform(5, 40)), 10.0
    inv = {h: int(rng.integers(0, 4)) for h in sorted(set(cands["hardware"])) if rng.random() < 0.4}
    return Requirements(constraints=c, objective=objective, top_k=k, inventory=inv or None)


# 136 and 274: CBC with its integer preprocessing answered a dearer mix as "Optimal" (milp.solver_command).
@pytest.mark.parametrize("seed", [*range(38), 136, 274])
def test_enumeration_answers_what_the_milp_answers(seed):
    rng = np.random.default_rng(seed)
    cands = random_candidates(rng, int(rng.integers(2, 6)), int(rng.integers(2, 8)), with_energy=True,
                              inventory=int(rng.integers(2, 5)) if rng.random() < 0.7 else None)
    objective = "energy" if seed % 3 == 0 else "cost"
    req = _request(rng, cands, objective, k=int(rng.integers(1, 4)))
    fast = solve(req, cands)
    milp = solve(req, cands, method="milp")
    assert milp.solver == "cbc"
    if fast.solver != ENUMERATION:  # a box too large (uncapped demand): the MILP answered both
        assert not applicable(screen(req, cands, objective=objective, elastic=False), objective=objective,
                              single_config=True)
        return
    _same_ranks(req, fast, milp, cands, objective)
    if fast.status == "infeasible":
        assert fast.diagnosis is not None and milp.diagnosis is not None
        assert [f[0].field for f in fast.diagnosis.fixes] == [f[0].field for f in milp.diagnosis.fixes]


def test_a_box_too_large_to_enumerate_is_searched_with_pruning_and_answers_what_the_milp_answers():
    rng = np.random.default_rng(1)
    cands = random_candidates(rng, 8, 4)  # no inventory: a demand of many replicas makes huge boxes
    req = Requirements(constraints={"throughput_qps": float(cands["throughput_qps"].max() * 40)}, top_k=1)
    wl = screen(req, cands, objective="cost", elastic=False)
    assert float(np.prod(wl.ub[:8].astype(float) + 1)) > MAX_VECTORS
    fast, milp = solve(req, cands), solve(req, cands, method="milp")
    assert fast.solver == ENUMERATION and milp.solver == "cbc"
    assert _keys(fast, cands, "cost") == _keys(milp, cands, "cost")
    assert solve(req.model_copy(update={"objective": "latency"}), random_candidates(rng, 2, 2, inventory=2)).solver == "cbc"
    fast = solve(Requirements(constraints={"throughput_qps": 10.0}, top_k=1), random_candidates(rng, 3, 3, inventory=2))
    assert fast.solver == ENUMERATION and fast.status == "optimal" and "enumerate_s" in fast.timings


def test_where_even_the_pruned_search_holds_too_much_the_milp_answers(monkeypatch):
    import matcher.enumerate as en

    rng = np.random.default_rng(1)
    cands = random_candidates(rng, 8, 4)
    req = Requirements(constraints={"throughput_qps": float(cands["throughput_qps"].max() * 40)}, top_k=1)
    monkeypatch.setattr(en, "MAX_PARTIALS", 0)
    assert solve(req, cands).solver == "cbc"


# Boxes past MAX_VECTORS (no inventory, demands of tens of replicas): the pruned search, rank by rank.
@pytest.mark.parametrize("seed", range(24))
def test_the_pruned_search_answers_what_the_milp_answers_on_large_boxes(seed):
    rng = np.random.default_rng(1000 + seed)
    cands = random_candidates(rng, int(rng.integers(4, 9)), int(rng.integers(2, 6)), with_energy=True)
    objective = "energy" if seed % 3 == 0 else "cost"
    req = _request(rng, cands, objective, k=int(rng.integers(1, 4)))
    req = req.model_copy(update={"inventory": None, "constraints": req.constraints.model_copy(update={
        "throughput_qps": float(cands["throughput_qps"].max() * rng.uniform(3, 30))})})
    fast, milp = solve(req, cands), solve(req, cands, method="milp")
    _same_ranks(req, fast, milp, cands, objective)


@pytest.mark.parametrize("seed", range(16))
def test_a_presolved_plan_costs_what_the_whole_milp_finds(seed):
    """plan(): own optima when they fit the shared limits, else the MILP on the configurations an
    optimal plan can use; the same objective and cost as the MILP on everything."""
    from matcher.solve import plan

    rng = np.random.default_rng(100 + seed)
    items = []
    for _ in range(int(rng.integers(2, 5))):
        cands = random_candidates(rng, 3, int(rng.integers(2, 6)), with_energy=True, inventory=3)
        slo = float(np.quantile(cands["latency_p99_ms"], 0.7))
        items.append((Requirements(constraints={"throughput_qps": float(cands["throughput_qps"].max() * rng.uniform(0.3, 1.5)),
                                                "latency_p99_ms": slo}, top_k=1), cands))
    objective = "energy" if seed % 4 == 0 else "cost"
    inventory = {f"hw{h:03d}": int(rng.integers(1, 6)) for h in range(3)}
    budget = float(rng.uniform(2, 12)) if seed % 3 == 0 else None
    fast = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective)
    milp = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective, method="milp")
    assert fast.status == milp.status, (fast.reason, milp.reason)
    if milp.status == "optimal":
        assert fast.cost_per_hour_usd == pytest.approx(milp.cost_per_hour_usd, rel=1e-6)
        value = [sum(o.objective_value for o in p.workloads) for p in (fast, milp)]
        assert value[0] == pytest.approx(value[1], rel=1e-6) and fast.gap == 0


def test_the_plan_milp_starts_from_the_greedy_plan_and_still_finds_the_optimum(monkeypatch):
    """Where the own optima do not fit together and column generation proves nothing (here: made
    to give up), the greedy plan (the presolve's upper bound) seeds CBC as a MIP start; the answer
    is the whole MILP's, at no more than the greedy plan's cost."""
    from matcher import columns, milp
    from matcher.solve import plan

    monkeypatch.setattr(columns, "solve", lambda *a, **k: columns.Outcome())
    seeded: list[list[dict]] = []
    real = milp.Model.warm_start
    monkeypatch.setattr(milp.Model, "warm_start", lambda self, inc: (seeded.append(inc), real(self, inc))[1])
    greedy_costs: list[float] = []
    import matcher.solve as solve_mod

    real_greedy = solve_mod._greedy_plan

    def spy(*args, **kw):
        out = real_greedy(*args, **kw)
        if out is not None:
            greedy_costs.append(out[0])
        return out

    monkeypatch.setattr(solve_mod, "_greedy_plan", spy)
    checked = 0
    for seed in range(40):
        rng = np.random.default_rng(500 + seed)
        items = [(Requirements(constraints={"throughput_qps": float(c["throughput_qps"].max() * 1.2)}, top_k=1), c)
                 for c in (random_candidates(rng, 3, 3, inventory=4) for _ in range(3))]
        inventory = {f"hw{h:03d}": 2 for h in range(3)}
        before = len(seeded)
        fast = plan(items, inventory=inventory)
        if len(seeded) == before or fast.status != "optimal":
            continue
        whole = plan(items, inventory=inventory, method="milp")
        assert fast.cost_per_hour_usd == pytest.approx(whole.cost_per_hour_usd, rel=1e-6)
        assert fast.cost_per_hour_usd <= greedy_costs[-1] * (1 + 1e-9)
        checked += 1
    assert checked >= 3, "no seed made the shared inventory bind the greedy plan"


def test_a_solver_crash_in_the_p99_descent_still_breaks_ties_by_fewest_replicas():
    """Found by a hostile probe (2026-12-02): at rank 3 the MILP's tie-break asked CBC "anything
    faster?" on an infeasible model, CBC 2.10.3 crashed, and the capacity and replica stages never
    ran: {h0 x3} came before the equal-cost, equal-p99, equal-capacity {h0, h1} of 2 replicas."""
    from matcher.candidates import validate_candidates
    from matcher.recommend import sized
    from matcher.requirements import parse_requirements

    df = pd.DataFrame({"hardware": ["h0", "h0", "h0", "h1", "h2", "h3", "h3", "h3"],
                       "price_per_hour_usd": [.5, .5, .5, 1, 2.5, 4, 4, 4],
                       "latency_p99_ms": [23.5, 45.4, 32.2, 21.4, 30.8, 38.6, 36.2, 31.1],
                       "throughput_qps": [100, 550.8, 100, 200, 100, 200, 200, 100], "accuracy": [.9] * 8,
                       "cfg_batch_size": [2, 1, 8, 8, 4, 2, 4, 8]})
    req = parse_requirements({"constraints": {"throughput_qps": 300, "budget_per_hour_usd": 2.0}, "top_k": 5})
    cands = sized(validate_candidates(df), req)
    fast, milp = solve(req, cands, method="auto"), solve(req, cands, method="milp")
    assert [dict(o.replicas) for o in milp.options] == [dict(o.replicas) for o in fast.options]
    assert len(milp.options) == 5
    third = milp.options[2]
    assert dict(third.mix) == {"h0": 1, "h1": 1} and third.cost_per_hour_usd == pytest.approx(1.5)


@pytest.mark.parametrize("seed", range(8))
def test_a_plan_whose_own_optima_need_the_pruned_search_costs_what_the_whole_milp_finds(seed):
    """Workloads without an inventory and demands of many replicas: their own optima (the plan's
    presolve) come from the pruned search; the plan still equals the MILP on everything."""
    from matcher.solve import plan

    rng = np.random.default_rng(500 + seed)
    items = []
    for _ in range(int(rng.integers(2, 4))):
        cands = random_candidates(rng, 6, int(rng.integers(2, 4)), with_energy=True)
        slo = float(np.quantile(cands["latency_p99_ms"], 0.8))
        items.append((Requirements(constraints={"throughput_qps": float(cands["throughput_qps"].max() * rng.uniform(4, 12)),
                                                "latency_p99_ms": slo}, top_k=1), cands))
    objective = "energy" if seed % 4 == 0 else "cost"
    inventory = {f"hw{h:03d}": int(rng.integers(5, 40)) for h in range(6)}
    fast = plan(items, inventory=inventory, objective=objective)
    milp = plan(items, inventory=inventory, objective=objective, method="milp")
    assert fast.status == milp.status, (fast.reason, milp.reason)
    if milp.status == "optimal":
        assert fast.cost_per_hour_usd == pytest.approx(milp.cost_per_hour_usd, rel=1e-6)
        value = [sum(o.objective_value for o in p.workloads) for p in (fast, milp)]
        assert value[0] == pytest.approx(value[1], rel=1e-6)


def test_a_candidate_allowed_a_billion_replicas_does_not_exhaust_memory():
    """A hostile demand on a near-zero throughput, no inventory: its replica bound is 10^9, which
    the pruned search must not try to lay out (it gives way to the MILP, which answers)."""
    cands = pd.DataFrame({"hardware": ["slow", "fast"], "price_per_hour_usd": [0.001, 5.0],
                          "latency_p99_ms": [5.0, 5.0], "throughput_qps": [0.001, 1e6], "accuracy": [0.9, 0.9]})
    req = Requirements(constraints={"throughput_qps": 9e5}, top_k=1)
    wl = screen(req, cands, objective="cost", elastic=False)
    assert int(wl.ub.max()) >= 10**8
    sol = solve(req, cands)
    assert sol.status == "optimal" and sol.options[0].cost_per_hour_usd == pytest.approx(5.0)
