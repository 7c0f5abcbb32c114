"""plan() by column generation (matcher/columns.py) answers what the whole MILP answers where the
shared inventory or budget binds: the same status, objective and cost on random plans with
devices per replica, own inventories, budgets and both objectives; its tie-break leaves no
workload an option that dominates its own; where it cannot prove a plan, the MILP answers (#12)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from matcher import columns
from matcher import solve as solve_mod
from matcher.enumerate import _box, config_boxes
from matcher.requirements import Requirements
from matcher.screen import screen
from matcher.solution import TOL
from matcher.solve import plan
from tests.fixtures.instances import random_candidates


def _plan_instance(seed: int):
    rng = np.random.default_rng(7000 + seed)
    n_hw = int(rng.integers(2, 5))
    items = []
    for _ in range(int(rng.integers(2, 7))):
        cands = random_candidates(rng, n_hw, int(rng.integers(2, 5)), with_energy=True,
                                  inventory=int(rng.integers(2, 6)) if seed % 5 == 1 else None)
        cands["devices"] = rng.choice([1, 1, 2], len(cands))
        slo = float(np.quantile(cands["latency_p99_ms"], 0.75))
        items.append((Requirements(constraints={"throughput_qps": float(cands["throughput_qps"].max() * rng.uniform(0.5, 2.5)),
                                                "latency_p99_ms": slo}, top_k=1), cands))
    objective = "energy" if seed % 4 == 0 else "cost"
    inventory = {f"hw{h:03d}": int(rng.integers(2, 3 + 2 * len(items))) for h in range(n_hw)}
    budget = float(rng.uniform(1, 4) * len(items)) if seed % 3 == 0 else None
    return items, inventory, budget, objective


def _total(p, objective: str) -> float:
    return sum(o.objective_value for o in p.workloads) if objective == "energy" else p.cost_per_hour_usd


def test_column_generation_proves_what_the_whole_milp_finds():
    # Only the plans column generation answers are compared here: what the own optima or the MILP
    # answer is compared with the whole MILP in tests/unit/test_enumerate.py.
    answered = 0
    for seed in range(40):
        items, inventory, budget, objective = _plan_instance(seed)
        fast = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective)
        if fast.solver != columns.COLUMN:
            continue
        answered += 1
        whole = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective, method="milp")
        assert fast.status == whole.status == "optimal", (seed, fast.reason, whole.reason)
        assert _total(fast, objective) == pytest.approx(_total(whole, objective), rel=1e-6), seed
        assert fast.cost_per_hour_usd == pytest.approx(whole.cost_per_hour_usd, rel=1e-6), seed
        assert fast.gap == 0
        _within_limits(fast, items, inventory, budget)
        _no_workload_has_a_dominating_alternative(fast, items, inventory, budget, objective)
    assert answered >= 10, f"only {answered} plans needed column generation: the instances no longer bind"


def _within_limits(p, items, inventory, budget) -> None:
    used: dict[str, float] = {}
    for o, (_, cands) in zip(p.workloads, items, strict=True):
        for pos, n in o.replicas.items():
            row = cands.iloc[pos]
            used[row["hardware"]] = used.get(row["hardware"], 0) + n * row["devices"]
    assert all(used.get(h, 0) <= cap + TOL for h, cap in inventory.items()), (used, inventory)
    if budget is not None:
        assert p.cost_per_hour_usd <= budget * (1 + TOL)


def _no_workload_has_a_dominating_alternative(p, items, inventory, budget, objective) -> None:
    """Each workload, the others held: no option within the shared limits and the plan's objective
    and cost (with the stage tolerance) has a lower worst p99, or the same and a higher capacity,
    or the same and fewer replicas (brute force over its boxes)."""
    shared = {h: float(n) for h, n in inventory.items()}
    for w, ((req, cands), o) in enumerate(zip(items, p.workloads, strict=True)):
        wl = screen(req, cands, objective=objective, elastic=False, extra_inventory=shared)
        rows = cands.iloc[list(o.replicas)]
        n = np.array(list(o.replicas.values()), dtype=float)
        mine = (float(rows["latency_p99_ms"].max()), float(n @ rows["throughput_qps"].to_numpy()), int(n.sum()))
        others = [q for v, q in enumerate(p.workloads) if v != w]
        left = dict(shared)
        money = budget * (1 + TOL) if budget is not None else math.inf
        pin_obj = _total(p, objective) * (1 + 1e-7) + 1e-7
        pin_cost = p.cost_per_hour_usd * (1 + 1e-7) + 1e-7
        other_obj = sum(q.objective_value for q in others)
        other_cost = sum(q.cost_per_hour_usd for q in others)
        for q, (_, c) in zip(others, [it for v, it in enumerate(items) if v != w], strict=True):
            for pos, k in q.replicas.items():
                left[c.iloc[pos]["hardware"]] -= k * c.iloc[pos]["devices"]
        for ix in config_boxes(wl).values():
            box = _box(wl, ix, objective)
            for y, obj, cost, worst, cap, reps in zip(box["y"], box["obj"], box["cost"], box["worst"], box["cap"],
                                                      box["reps"], strict=True):
                use: dict[str, float] = {}
                for j, k in enumerate(y):
                    use[wl.hw[ix[j]]] = use.get(wl.hw[ix[j]], 0) + k * wl.devices[ix[j]]
                if any(use.get(h, 0) > left.get(h, math.inf) + TOL for h in use) or cost + other_cost > money:
                    continue
                if obj + other_obj > pin_obj or cost + other_cost > pin_cost:
                    continue
                better = (worst, -cap, reps) < (mine[0], -mine[1] * (1 + 1e-7) - 1e-7, mine[2])
                assert not better, (w, (worst, cap, reps), mine)


def test_where_its_pool_would_grow_too_large_the_milp_answers(monkeypatch):
    monkeypatch.setattr(columns, "MAX_COLUMNS", 0)
    checked = 0
    for seed in range(16):
        items, inventory, budget, objective = _plan_instance(seed)
        fast = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective)
        whole = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective, method="milp")
        assert fast.solver != columns.COLUMN and fast.status == whole.status
        if whole.status == "optimal" and fast.solver == "cbc":
            assert fast.cost_per_hour_usd == pytest.approx(whole.cost_per_hour_usd, rel=1e-6)
            checked += 1
    assert checked >= 5


def test_a_plan_the_greedy_placement_cannot_start_is_still_proven(monkeypatch):
    """Without a feasible plan to start from, the LP overruns the shared limits at a steep price
    (Phase I) until its options fit: the answer is still proven and equals the MILP's."""
    monkeypatch.setattr(solve_mod, "_greedy_plan", lambda *a, **k: None)  # (the MILP then starts cold)
    answered = 0
    for seed in range(24):
        items, inventory, budget, objective = _plan_instance(seed)
        fast = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective)
        if fast.solver == columns.COLUMN:
            whole = plan(items, inventory=inventory, budget_per_hour_usd=budget, objective=objective, method="milp")
            assert whole.status == "optimal"
            assert fast.cost_per_hour_usd == pytest.approx(whole.cost_per_hour_usd, rel=1e-6)
            answered += 1
    assert answered >= 5


def _tiny(prices: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"hardware": ["a", "b", "c"][:len(prices)], "price_per_hour_usd": prices,
                         "latency_p99_ms": [10.0, 20.0, 5.0][:len(prices)],
                         "throughput_qps": [100.0] * len(prices), "cfg_batch_size": [1] * len(prices)})


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_a_budget_of_a_hundred_millionth_of_a_dollar_holds(solver):
    """Found by a hostile probe (2026-12-02): a solver's feasibility tolerance is absolute (about
    1e-7), so 2e-8 USD/h passed a shared budget of 1e-8 USD/h, in column generation's master and
    in the whole MILP (HiGHS). Rows are now in units of their bound, and the master's answer is
    checked against the limits exactly."""
    items = [(Requirements(constraints={"throughput_qps": 100.0}, top_k=1), _tiny([1e-8, 0.5])) for _ in range(2)]
    for method in ("auto", "milp"):
        p = plan(items, budget_per_hour_usd=1e-8, solver=solver, method=method)
        assert p.status == "infeasible", (method, p.cost_per_hour_usd)
    p = plan(items, budget_per_hour_usd=2e-8, solver=solver)
    assert p.status == "optimal" and p.cost_per_hour_usd == pytest.approx(2e-8, rel=1e-9)


def test_prices_of_a_millionth_of_a_dollar_are_still_told_apart():
    """Found by the same probe: on prices of 1e-8 and 2e-6 USD/h, CBC's own cutoff increment let
    the master call a plan of 6.04e-6 USD/h optimal where 4.04e-6 exists."""
    items = [(Requirements(constraints={"throughput_qps": 300.0}, top_k=1), _tiny([1e-8, 2e-6, 1.0])) for _ in range(2)]
    p = plan(items, inventory={"a": 4})
    assert p.status == "optimal" and p.solver == columns.COLUMN
    assert p.cost_per_hour_usd == pytest.approx(4.04e-6, rel=1e-9)


def test_no_workload_is_left_a_faster_option_that_a_later_move_freed():
    """Found by a hostile probe (2026-12-02): one tie-break pass left hw000 idle after workload 4
    moved off it, while workload 1 kept 12 ms where hw000 gives it 10 ms at the same cost. The
    passes now repeat until no workload can do better on its own."""
    def t(d):
        n = len(d["hardware"])
        return pd.DataFrame({"price_per_hour_usd": [1.0] * n, "devices": [1] * n, **d})

    tables = [
        (500.0, t({"hardware": ["hw002"], "latency_p99_ms": [12.0], "throughput_qps": [150.0], "cfg_batch_size": [1]})),
        (150.0, t({"hardware": ["hw000", "hw000", "hw002", "hw002"], "latency_p99_ms": [10.0, 10.0, 12.0, 12.0],
                   "throughput_qps": [200.0, 300.0, 200.0, 200.0], "cfg_batch_size": [0, 1, 0, 1]})),
        (500.0, t({"hardware": ["hw000", "hw002"], "latency_p99_ms": [20.0, 7.0], "throughput_qps": [200.0, 300.0],
                   "cfg_batch_size": [1, 1]})),
        (150.0, t({"hardware": ["hw000"] * 3 + ["hw002"] * 4, "latency_p99_ms": [5.0, 10.0, 5.0, 22.0, 32.0, 12.0, 22.0],
                   "throughput_qps": [200.0] * 6 + [300.0], "cfg_batch_size": [1, 2, 3, 0, 1, 2, 3]})),
        (300.0, t({"hardware": ["hw000", "hw001", "hw002", "hw002", "hw002"],
                   "price_per_hour_usd": [1.0, 2.0, 1.0, 1.0, 1.0], "latency_p99_ms": [5.0, 6.0, 7.0, 7.0, 32.0],
                   "throughput_qps": [100.0, 300.0, 200.0, 200.0, 200.0], "devices": [1, 4, 1, 1, 1],
                   "cfg_batch_size": [2, 0, 0, 1, 2]})),
    ]
    items = [(Requirements(constraints={"throughput_qps": d}, top_k=1), c) for d, c in tables]
    inventory = {"hw000": 1, "hw001": 72, "hw002": 11}
    p = plan(items, inventory=inventory)
    assert p.status == "optimal" and p.solver == columns.COLUMN and p.cost_per_hour_usd == pytest.approx(10.0)
    _no_workload_has_a_dominating_alternative(p, items, inventory, None, "cost")


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_a_replica_dearer_than_the_shared_budget_never_reaches_the_solver(solver):
    """Found by the probe: with budget rows in units of the budget, a 1e7 USD/h candidate under a
    1e-9 USD/h shared budget became a coefficient of 1e16, HiGHS returned nothing and plan()
    raised IndexError. Workloads are now screened under the shared budget."""
    table = pd.DataFrame({"hardware": ["a", "b"], "price_per_hour_usd": [0.0, 1e7], "latency_p99_ms": [10.0, 10.0],
                          "throughput_qps": [100.0, 100.0], "power_w": [100.0, 50.0], "cfg_batch_size": [1, 1]})
    items = [(Requirements(constraints={"throughput_qps": 100.0}, top_k=1), table) for _ in range(2)]
    for method in ("auto", "milp"):
        p = plan(items, inventory={"a": 2}, budget_per_hour_usd=1e-9, objective="energy", solver=solver, method=method)
        assert p.status == "optimal" and p.cost_per_hour_usd == 0.0
        assert [dict(o.mix) for o in p.workloads] == [{"a": 1}, {"a": 1}]


def test_an_infeasible_plan_that_crashes_cbc_is_diagnosed_not_an_error():
    """Found by the probe: without its preprocessing the bundled CBC 2.10.3 segfaults on this
    infeasible plan's first stage, and plan() answered status "error". It is asked again with
    preprocessing, which proves the infeasibility; the diagnosis follows."""
    def t(hw, price, lat, thr, devices, inventory=None):
        d = {"hardware": hw, "price_per_hour_usd": price, "latency_p99_ms": lat, "throughput_qps": thr,
             "devices": devices, "cfg_variant": [0] * len(hw)}
        return pd.DataFrame({**d, "inventory": inventory} if inventory else d)

    def req(slo, demand, budget=None):
        c = {"latency_p99_ms": slo, "throughput_qps": demand}
        return Requirements(constraints={**c, "budget_per_hour_usd": budget} if budget else c, top_k=1)

    items = [
        (req(6.68008461792215, 3594.5148622429188), t(["hw000"], [0.632], [6.68008461792215], [1895.7120953996548], [1], [7])),
        (req(31.338324062536444, 1286.756899334558, 1.6968525905582),
         t(["hw001"], [0.43104], [31.338324062536444], [756.8900777126222], [2])),
        (req(14.95652637728629, 703.8653766515271, 13.823289735775449),
         t(["hw001"], [1.997], [14.95652637728629], [317.7372626642011], [2])),
        (req(46.70749039793712, 1543.3585281148214),
         t(["hw000", "hw001"], [0.17185, 0.15461], [47.251105977066665, 42.99595283221217],
           [1894.4572876430893, 2303.911518169897], [2, 1], [4, 4])),
        (req(26.18533419729508, 16770.075390333954),
         t(["hw000", "hw001"], [0.62558, 0.5303], [27.49791414062985, 9.388959566354165],
           [3523.9760010120985, 7973.13520974756], [1, 1], [3, 3])),
    ]
    for method in ("auto", "milp"):
        p = plan(items, inventory={"hw000": 3, "hw001": 12}, method=method)
        assert p.status == "infeasible", p.reason
        assert p.diagnosis is not None and p.diagnosis.relaxations


def test_a_price_of_millions_elsewhere_does_not_blur_cents_in_the_whole_milp():
    """An objective divided by its largest coefficient (tried on 2026-12-02 against CBC's cutoff
    increment, and reverted) pushed 0.1 USD/h below CBC's tolerance beside an unused 2.6e6 USD/h
    candidate: the whole MILP called 0.3 USD/h optimal where 0.0004 exists."""
    w0 = pd.DataFrame({"hardware": ["hw001", "hw003"], "price_per_hour_usd": [0.1, 0.0001],
                       "latency_p99_ms": [6.763, 10.301], "throughput_qps": [740.4744315498285, 597.4894259567218],
                       "devices": [1, 2], "cfg_variant": [0, 0]})
    w1 = pd.DataFrame({"hardware": ["hw001", "hw003"], "price_per_hour_usd": [0.0, 2635800.0],
                       "latency_p99_ms": [6.395, 15.415], "throughput_qps": [399.75774514159747, 161.1003325521228],
                       "devices": [1, 1], "cfg_variant": [0, 0]})
    items = [(Requirements(constraints={"latency_p99_ms": 22.775827888837114, "throughput_qps": 1985.2234449783894},
                           top_k=1), w0),
             (Requirements(constraints={"latency_p99_ms": 17.844657319265142, "throughput_qps": 596.129259922246},
                           top_k=1), w1)]
    for method in ("auto", "milp"):
        assert plan(items, method=method).cost_per_hour_usd == pytest.approx(0.0004, rel=1e-9), method


def _twelve_workloads():
    rng = np.random.default_rng(99)
    items = []
    for _ in range(12):
        cands = random_candidates(rng, 6, 25)
        slo = float(cands["latency_p99_ms"].median())
        cap = cands[cands["latency_p99_ms"] <= slo].groupby("cfg_variant")["throughput_qps"].sum().max() * 3
        items.append((Requirements(constraints={"throughput_qps": float(cap * 0.15), "latency_p99_ms": slo}, top_k=1),
                      cands))
    return items, {f"hw{h:03d}": 3 for h in range(6)}


def test_a_plan_whose_lp_optimum_is_fractional_is_still_proven():
    """Twelve workloads on 3 devices of each of 6 types: the greedy placement gets stuck, and the
    options column generation priced hold no integer plan, though the LP bound is the optimum.
    Options are then added by reduced cost under a growing threshold until the master finds a
    plan (it used to give way to the MILP, 1.1 s)."""
    items, inventory = _twelve_workloads()
    fast = plan(items, inventory=inventory)
    whole = plan(items, inventory=inventory, method="milp")
    assert fast.status == whole.status == "optimal" and fast.solver == columns.COLUMN
    assert fast.cost_per_hour_usd == pytest.approx(whole.cost_per_hour_usd, rel=1e-9)
    _within_limits(fast, items, inventory, None)


@pytest.mark.parametrize("limit_s", [0.02, 0.2])
def test_a_short_time_limit_gives_a_plan_within_the_limits_or_says_it_ran_out(limit_s):
    items, inventory = _twelve_workloads()
    p = plan(items, inventory=inventory, time_limit_s=limit_s)
    assert p.status in ("optimal", "time_limit", "infeasible"), p.reason
    if p.workloads and p.workloads[0] is not None:
        _within_limits(p, items, inventory, None)
        assert p.gap is not None and p.gap >= 0 and (p.status != "optimal" or p.gap == 0)
