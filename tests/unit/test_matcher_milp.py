"""The MILP against brute force, its properties (feasibility, top-k, determinism, diagnosis),
plan(), greedy, and the recommend() answer shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pulp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.baselines.bruteforce import brute_force
from matcher.baselines.greedy import greedy
from matcher.diagnose import apply_relaxations
from matcher.errors import RequirementsError
from matcher.recommend import recommend
from matcher.requirements import Requirements
from matcher.solution import STATUSES
from matcher.solve import plan, solve
from matcher.workspace import Sources, Workspace
from tests.fixtures.instances import random_candidates, random_requirements, small_table

HIGHS = pulp.HiGHS().available()


def small_instance(rng, *, objective="cost", top_k=1, single_config=True, max_vectors=20_000):
    """A random instance small enough for brute force (regenerated until it is)."""
    while True:
        c = random_candidates(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)), with_energy=True,
                              missing_accuracy=0.1)
        r = random_requirements(rng, c, objective=objective, top_k=top_k)
        b = brute_force(r, c, single_config=single_config, top_k=top_k, max_vectors=max_vectors)
        if not b.timed_out:
            return c, r, b


def rank_key(req: Requirements, cands: pd.DataFrame, replicas: dict[int, int]) -> tuple:
    """What an answer is ranked by (docs/matcher.md "Ties"), from the raw table: objective, cost,
    worst p99 (unknown = slowest), capacity, replicas."""
    rows = cands.iloc[list(replicas)]
    n = np.array(list(replicas.values()), dtype=float)
    cost = float(n @ rows["price_per_hour_usd"].to_numpy(float))
    worst = float(np.nan_to_num(rows["latency_p99_ms"].to_numpy(float), nan=np.inf).max())
    primary = {"cost": cost, "latency": worst,
               "energy": float(n @ rows["power_w"].to_numpy(float)) if "power_w" in rows else np.nan}[req.objective]
    return primary, cost, worst, float(n @ np.nan_to_num(rows["throughput_qps"].to_numpy(float))), int(n.sum())


def assert_same_rank(got: tuple, want: tuple, context) -> None:
    # The MILP holds each stage within 1e-7·max(1, |value|) (its pins), brute force ties alike.
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), (got, want, context)


def violations(req: Requirements, cands: pd.DataFrame, replicas: dict[int, int], single_config: bool = True):
    """Every constraint an answer breaks, checked from the raw table (independent of milp.py)."""
    c = req.constraints
    rows = cands.iloc[list(replicas)]
    n = np.array(list(replicas.values()), dtype=float)
    out = []
    if n.sum() < 1:
        out.append("no replica")
    thr = rows["throughput_qps"].to_numpy(float)
    if c.throughput_qps and n @ thr < c.throughput_qps * (1 - 1e-9):
        out.append("demand")
    if c.latency_p99_ms and not (rows["latency_p99_ms"] <= c.latency_p99_ms * (1 + 1e-9)).all():
        out.append("latency")
    if c.accuracy is not None and not (rows["accuracy"] >= c.accuracy * (1 - 1e-9)).all():
        out.append("accuracy")  # NaN accuracy fails this too, as it must
    cost = n @ rows["price_per_hour_usd"].to_numpy(float)
    if c.budget_per_hour_usd and cost > c.budget_per_hour_usd * (1 + 1e-9):
        out.append("budget")
    if c.max_power_w:
        p = rows["power_w"].to_numpy(float) if "power_w" in rows else np.full(len(rows), np.nan)
        if np.isnan(p).any() or n @ p > c.max_power_w * (1 + 1e-9):
            out.append("power")
    for hw, cap in (req.inventory or {}).items():
        used = sum(k * d for k, d, h in zip(n, rows["devices"], rows["hardware"], strict=True) if h == hw)
        if used > cap + 1e-9:
            out.append(f"inventory[{hw}]")
    cfg_cols = [col for col in cands.columns if col.startswith("cfg_")]
    if single_config and len(rows[cfg_cols].drop_duplicates()) > 1:
        out.append("single config")
    return out


# ----------------------------------------------------------------------------------------------
# Agreement with brute force
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["cost", "energy", "latency"])
def test_top1_equals_brute_force(objective):
    rng = np.random.default_rng({"cost": 11, "energy": 12, "latency": 13}[objective])
    feasible = infeasible = 0
    for i in range(20):  # 3 x 20 = 60 instances
        single = i % 4 != 3
        c, r, b = small_instance(rng, objective=objective, single_config=single)
        solver = "highs" if (HIGHS and i % 2) else "cbc"
        s = solve(r, c, single_config=single, solver=solver, top_k=1)
        assert s.status in STATUSES and s.reason
        if not b.feasible:
            infeasible += 1
            assert s.status == "infeasible" and not s.options, (i, r)
            continue
        feasible += 1
        assert s.status == "optimal", (i, s.reason)
        got, want = s.options[0], b.best
        assert got.objective_value == pytest.approx(want.objective_value, rel=1e-7, abs=1e-9), (i, r)
        assert got.cost_per_hour_usd == pytest.approx(want.cost_per_hour_usd, rel=1e-7, abs=1e-9), (i, r)
        assert_same_rank(rank_key(r, c, got.replicas), rank_key(r, c, want.replicas), (i, solver, r))
        assert violations(r, c, got.replicas, single) == []
    assert feasible >= 5 and infeasible >= 2  # the generator exercises both outcomes


def test_top_k_sequence_equals_brute_force():
    # Ties are common (the same hardware and count under two configurations cost the same) and
    # are broken the same way on both sides; only options equal on every key could make a later
    # cut exclude different supports, which these seeded instances do not hit.
    rng = np.random.default_rng(5)
    compared = 0
    for _ in range(20):
        c, r, b = small_instance(rng, top_k=3)
        s = solve(r, c, top_k=3)
        assert [o.objective_value for o in s.options] == pytest.approx([o.objective_value for o in b.options], rel=1e-7)
        for got, want in zip(s.options, b.options, strict=True):
            assert_same_rank(rank_key(r, c, got.replicas), rank_key(r, c, want.replicas), r)
        compared += len(b.options) >= 2
    assert compared >= 5


# ----------------------------------------------------------------------------------------------
# Ties: broken by dominance, never by name
# ----------------------------------------------------------------------------------------------


def tie_table(fast: str = "fp32") -> pd.DataFrame:
    """The issue's tie: one hardware, bf16 at 4.9 ms and fp32 at 1.1 ms (or, fast="bf16", the
    other way round), the same price and capacity, so the same cost at any demand. The old model
    never saw latency, so one of the two ways round had to lose."""
    lat = [4.9, 1.1] if fast == "fp32" else [1.1, 4.9]
    return pd.DataFrame({"hardware": ["local-1c", "local-1c"], "price_per_hour_usd": [0.0446, 0.0446],
                         "latency_p99_ms": lat, "throughput_qps": [500.0, 500.0],
                         "accuracy": [0.9, 0.9], "power_w": [20.0, 20.0], "cfg_dtype": ["bf16", "fp32"]})


@pytest.mark.parametrize("fast", ["fp32", "bf16"])
@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("objective", ["cost", "energy"])
def test_a_cost_tie_goes_to_the_lower_latency_not_the_name(solver, objective, fast):
    if solver == "highs" and not HIGHS:
        pytest.skip("highspy not installed")
    slow = {"fp32": "bf16", "bf16": "fp32"}[fast]
    req = Requirements(objective=objective, constraints={"throughput_qps": 900}, top_k=2)
    s = solve(req, tie_table(fast), solver=solver)
    assert [o.cfg_keys for o in s.options] == [(f"dtype={fast}",), (f"dtype={slow}",)]
    assert s.options[0].cost_per_hour_usd == s.options[1].cost_per_hour_usd == pytest.approx(2 * 0.0446)
    ans = recommend(req, tie_table(fast), solver=solver).model_dump()
    assert [o["config"] for o in ans["options"]] == [{"dtype": fast}, {"dtype": slow}]
    assert ans["options"][0]["predicted"]["latency_p99_ms"] == 1.1


@pytest.mark.parametrize("fast", ["fp32", "bf16"])
def test_plan_breaks_ties_by_dominance_too(fast):
    t = tie_table(fast)
    p = plan([(Requirements(constraints={"throughput_qps": 900}), t), (Requirements(constraints={"throughput_qps": 400}), t)],
             inventory={"local-1c": 3})
    assert p.status == "optimal" and [o.cfg_keys for o in p.workloads] == [(f"dtype={fast}",)] * 2


def test_then_higher_capacity_then_fewer_replicas():
    same_latency = pd.DataFrame({
        "hardware": ["a-small", "a-small", "b-large"],
        "price_per_hour_usd": [1.0, 1.0, 2.0],
        "latency_p99_ms": [2.0, 2.0, 2.0],
        "throughput_qps": [100.0, 120.0, 240.0],
        "cfg_batch_size": [1, 2, 2],
    })
    # batch 1 and batch 2 cost 2 USD/h for 2 replicas; batch 2 carries more
    s = solve(Requirements(constraints={"throughput_qps": 200}, top_k=1), same_latency.iloc[:2])
    assert s.options[0].cfg_keys == ("batch_size=2",) and s.options[0].mix == {"a-small": 2}
    # 2 x a-small and 1 x b-large: the same cost and capacity (240); fewer replicas wins
    s = solve(Requirements(constraints={"throughput_qps": 200}, top_k=1), same_latency)
    assert s.options[0].mix == {"b-large": 1}


def test_an_unknown_latency_ranks_as_the_slowest():
    t = tie_table().assign(latency_p99_ms=[np.nan, 1.1])
    s = solve(Requirements(constraints={"throughput_qps": 900}, top_k=1), t)
    assert s.options[0].cfg_keys == ("dtype=fp32",)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["cost", "energy", "latency"]),
       single=st.booleans())
def test_ties_are_broken_as_brute_force_breaks_them(seed, objective, single):
    """Tables built to tie: two prices, few latencies and throughputs, so many answers share the
    objective; the MILP's rank 1 has the same (objective, cost, worst p99, capacity, replicas)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    c = pd.DataFrame({
        "hardware": rng.choice(["h0", "h1", "h2"], n),
        "price_per_hour_usd": rng.choice([0.5, 1.0], n),
        "latency_p99_ms": rng.choice([1.0, 2.0, 5.0], n),
        "throughput_qps": rng.choice([100.0, 200.0], n),
        "power_w": rng.choice([50.0, 100.0], n),
        "cfg_batch_size": rng.choice([1, 2], n),
    }).drop_duplicates(["hardware", "cfg_batch_size"]).reset_index(drop=True)
    r = Requirements(objective=objective, constraints={"throughput_qps": float(rng.choice([100, 300, 450]))},
                     top_k=1)
    b = brute_force(r, c, single_config=single)
    s = solve(r, c, single_config=single, solver="highs" if HIGHS and seed % 2 else "cbc")
    assert s.feasible == b.feasible
    if b.feasible:
        assert_same_rank(rank_key(r, c, s.options[0].replicas), rank_key(r, c, b.best.replicas), (seed, c, r))


def test_top_k_options_are_distinct_and_non_decreasing():
    rng = np.random.default_rng(3)
    c = random_candidates(rng, 4, 6)
    r = Requirements(constraints={"throughput_qps": float(c.throughput_qps.median() * 3)}, top_k=8)
    s = solve(r, c)
    assert len(s.options) == 8
    costs = [o.cost_per_hour_usd for o in s.options]
    assert costs == sorted(costs)
    supports = [frozenset(o.replicas) for o in s.options]
    for i, a in enumerate(supports):
        for b in supports[i + 1:]:
            assert not a <= b  # a later option never contains all of an earlier one
    assert [o.rank for o in s.options] == list(range(1, 9))


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["cost", "energy", "latency"]),
       tight=st.sampled_from([1.0, 2.0, 4.0]))
def test_no_answer_violates_a_constraint_and_relaxation_restores_feasibility(seed, objective, tight):
    rng = np.random.default_rng(seed)
    c = random_candidates(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)), with_energy=True,
                          missing_accuracy=0.2)
    r = random_requirements(rng, c, objective=objective, top_k=2, tight=tight)
    s = solve(r, c)
    for opt in s.options:
        assert violations(r, c, opt.replicas) == [], opt
    if s.status == "infeasible":
        d = s.diagnosis
        assert d is not None and d.blocking and d.message
        relaxed = apply_relaxations(r, d)
        again = solve(relaxed, c, top_k=1)
        assert again.status == "optimal", (d, relaxed)
        assert violations(relaxed, c, again.options[0].replicas) == []
        for fix in d.fixes:  # each fix found works on its own
            assert solve(apply_relaxations(r, fix), c, top_k=1).status == "optimal", fix


def test_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(8)
    c = random_candidates(rng, 5, 8)
    r = Requirements(constraints={"throughput_qps": float(c.throughput_qps.quantile(0.8) * 2.5),
                                  "latency_p99_ms": float(c.latency_p99_ms.median())}, top_k=4)
    a, b = solve(r, c), solve(r, c)
    shuffled = c.sample(frac=1.0, random_state=1).reset_index(drop=True)
    s = solve(r, shuffled)

    def canon(sol, table):
        return [(o.mix, o.cfg_keys, sorted((table.iloc[p]["hardware"], n) for p, n in o.replicas.items()))
                for o in sol.options]

    assert a.options == b.options
    assert canon(a, c) == canon(s, shuffled)


def test_callers_dataframe_is_unchanged():
    rng = np.random.default_rng(2)
    c = random_candidates(rng, 3, 3, with_energy=True)
    before = c.copy(deep=True)
    r = Requirements(objective="energy", constraints={"throughput_qps": 500.0, "max_power_w": 1e6})
    solve(r, c)
    recommend(r, c)
    solve(Requirements(constraints={"latency_p99_ms": 1e-6}), c)  # infeasible path + diagnosis
    pd.testing.assert_frame_equal(c, before)


# ----------------------------------------------------------------------------------------------
# Diagnosis
# ----------------------------------------------------------------------------------------------


table = small_table  # tests/fixtures/instances.py


def test_diagnosis_names_unreachable_latency_with_the_best():
    s = solve(Requirements(constraints={"latency_p99_ms": 5}), table())
    assert s.status == "infeasible" and not s.options
    assert s.diagnosis.blocking == ("latency_p99_ms",)
    assert s.diagnosis.message == "latency_p99_ms <= 5 is unreachable; the best is 7.2 ms on local-2c with batch_size=1"
    assert s.diagnosis.relaxations[0].best_achievable == pytest.approx(7.2)


def test_diagnosis_budget_shortfall():
    req = Requirements(constraints={"throughput_qps": 600, "budget_per_hour_usd": 0.05, "latency_p99_ms": 20})
    s = solve(req, table())
    assert s.status == "infeasible"
    # one local-2c at batch 8 (600 samples/s, 18 ms) would do, at 0.08 USD/h
    assert s.diagnosis.blocking == ("budget_per_hour_usd",)
    assert s.diagnosis.message.startswith("budget 0.05 USD/h is short by 0.03 USD/h (needs 0.08 USD/h)")
    # alone, the demand could also give: one local-1c at batch 1 fits the budget and the SLO
    alt = {fix[0].constraint: fix[0].best_achievable for fix in s.diagnosis.alternatives}
    assert alt == {"budget_per_hour_usd": pytest.approx(0.08), "throughput_qps": pytest.approx(100.0)}
    assert "Alternatively, relax one constraint alone: throughput_qps to 100" in s.diagnosis.message


def test_diagnosis_inventory_and_missing_accuracy():
    s = solve(Requirements(constraints={"throughput_qps": 1200}, inventory={"local-1c": 1, "local-2c": 1}),
                   table())
    assert s.status == "infeasible"
    assert any(b.startswith("inventory[") or b == "throughput_qps" for b in s.diagnosis.blocking)
    nothing = table().assign(accuracy=np.nan)
    s = solve(Requirements(constraints={"accuracy": 0.5}), nothing)
    assert s.diagnosis.blocking == ("accuracy",)
    assert "4 without accuracy" in s.diagnosis.message
    assert "have no accuracy" in s.diagnosis.relaxations[0].message
    assert s.diagnosis.relaxations[0].best_achievable is None


def test_errors_are_records_not_none():
    s = solve(Requirements(), table(), solver="gurobi-please")
    assert s.status == "error" and "unknown solver" in s.reason


def test_binding_constraints():
    s = solve(Requirements(constraints={"throughput_qps": 600, "latency_p99_ms": 10}, top_k=1), table())
    opt = s.options[0]
    assert opt.mix == {"local-2c": 3}
    # demand needs all 3 replicas; the SLO screened out batch 8, which is cheaper per sample/s
    assert opt.binding == ("throughput_qps", "latency_p99_ms")


# ----------------------------------------------------------------------------------------------
# Mixes, plan, greedy
# ----------------------------------------------------------------------------------------------


def test_hardware_mix_under_inventory():
    req = Requirements(constraints={"throughput_qps": 800}, inventory={"local-2c": 1}, top_k=1)
    s = solve(req, table())
    assert s.options[0].mix == {"local-1c": 1, "local-2c": 1}  # 300 + 600 >= 800, one config (batch 8)
    assert s.options[0].cfg_keys == ("batch_size=8",)
    assert "inventory[local-2c]" in s.options[0].binding


def test_mixed_configurations_only_when_allowed():
    # SLO 20 ms rules out batch 8 on local-1c (30 ms). One configuration: batch 8 gives 600 on
    # local-2c alone, batch 1 gives 100 + 200. Mixing batch 8 on local-2c with batch 1 on local-1c: 700.
    req = Requirements(constraints={"throughput_qps": 700, "latency_p99_ms": 20},
                       inventory={"local-2c": 1, "local-1c": 1}, top_k=1)
    assert solve(req, table()).status == "infeasible"
    many = solve(req, table(), single_config=False)
    assert many.status == "optimal" and many.options[0].mix == {"local-1c": 1, "local-2c": 1}
    assert len(many.options[0].cfg_keys) == 2
    ans = recommend(req, table(), single_config=False).model_dump()
    assert [c["batch_size"] for c in ans["options"][0]["config"]["configurations"]] == [1, 8]


def test_plan_shares_inventory_and_matches_independent_solves_without_it():
    rng = np.random.default_rng(0)
    c = random_candidates(rng, 4, 5)
    w = [(Requirements(constraints={"throughput_qps": 2000}), c),
         (Requirements(constraints={"throughput_qps": 3000, "latency_p99_ms": 50}), c)]
    free = plan(w)
    alone = sum(solve(r, cc, top_k=1).options[0].cost_per_hour_usd for r, cc in w)
    assert free.status == "optimal" and free.cost_per_hour_usd == pytest.approx(alone)
    tight = plan(w, inventory={h: 1 for h in c.hardware.unique()})
    assert tight.status == "optimal" and tight.cost_per_hour_usd >= free.cost_per_hour_usd - 1e-9
    used = {}
    for o in tight.workloads:
        for h, n in o.mix.items():
            used[h] = used.get(h, 0) + n
    assert max(used.values()) <= 1
    broke = plan(w, budget_per_hour_usd=0.01)
    assert broke.status == "infeasible" and "budget_per_hour_usd" in broke.diagnosis.blocking


def test_greedy_is_never_cheaper_than_the_milp():
    rng = np.random.default_rng(21)
    compared = 0
    for _ in range(15):
        c, r, _ = small_instance(rng)
        g, s = greedy(r, c), solve(r, c, top_k=1)
        if g.feasible:
            compared += 1
            assert s.options and s.options[0].cost_per_hour_usd <= g.cost_per_hour_usd + 1e-9
    assert compared >= 3


# ----------------------------------------------------------------------------------------------
# The answer
# ----------------------------------------------------------------------------------------------


def test_recommendation_shape(tmp_path):
    c = table()
    c["latency_p99_ms_point"] = [np.nan, np.nan, 6.0, np.nan]  # a predicted row: bound 7.2, point 6.0
    c["basis"] = ["measured", "measured", "predicted", "measured"]
    ans = recommend(Requirements(constraints={"throughput_qps": 400, "latency_p99_ms": 10}, top_k=2), c).model_dump()
    assert set(ans) == {"feasible", "objective", "options", "diagnosis", "solver", "solve_time_s",
                        "candidates_considered", "status", "notes", "latency_statistic"}
    assert ans["feasible"] and ans["diagnosis"] is None and ans["candidates_considered"] == 4
    first = ans["options"][0]
    assert set(first) == {"rank", "hardware", "config", "cost_per_hour_usd", "predicted", "basis", "binding", "band"}
    assert first["hardware"] == {"local-2c": 2} and first["config"] == {"batch_size": 1}
    assert first["basis"] == "predicted"
    assert first["predicted"]["latency_p99_ms"] == 6.0 and first["predicted"]["latency_p99_ms_bound"] == 7.2
    assert first["predicted"]["throughput_qps"] == 400.0
    assert first["band"]["latency_p99_ms"]["side"] == "upper"
    assert ans["options"][1]["basis"] == "measured"
    json.dumps(ans, allow_nan=False)  # the CLI and HTTP print it as is


def test_recommend_rejects_unknown_inventory_hardware():
    with pytest.raises(RequirementsError, match=r"inventory: unknown hardware \['h100'\]"):
        recommend(Requirements(inventory={"h100": 2}), table())


def test_recommend_from_csv_infeasible_answer(tmp_path):
    p = tmp_path / "c.csv"
    table().to_csv(p, index=False)
    ans = Workspace.open(Sources(candidates_csv=p)).recommend({"constraints": {"latency_p99_ms": 5}})
    assert ans["feasible"] is False and ans["options"] == []
    assert ans["diagnosis"]["blocking"] == ["latency_p99_ms"]
    rel = ans["diagnosis"]["relaxations"][0]
    assert rel == {"field": "constraints.latency_p99_ms", "from": 5.0, "to": 7.2, "together_with": [],
                   "constraint": "latency_p99_ms", "required": 5.0, "best_achievable": 7.2,
                   "message": ans["diagnosis"]["message"]}
    assert not any(isinstance(v, float) and math.isnan(v) for v in rel.values())


def test_time_limit_is_a_status_not_a_crash():
    rng = np.random.default_rng(4)
    c = random_candidates(rng, 4, 10)
    r = Requirements(constraints={"throughput_qps": float(c.throughput_qps.median() * 5)})
    s = solve(r, c, time_limit_s=0)
    assert s.status == "time_limit" and not s.options and "time limit" in s.reason
    ans = recommend(r, c, time_limit_s=0).model_dump()
    assert ans["feasible"] is False and ans["diagnosis"]["message"].startswith("time_limit:")


def test_plan_answer_and_errors(tmp_path):
    p = tmp_path / "c.csv"
    table().to_csv(p, index=False)
    ws = Workspace.open(Sources(candidates_csv=p))
    doc = {"workloads": [{"constraints": {"throughput_qps": 600}}, {"constraints": {"throughput_qps": 300}}],
           "inventory": {"local-2c": 1}}
    ans = ws.plan(doc)
    assert set(ans) == {"feasible", "objective", "cost_per_hour_usd", "workloads", "diagnosis", "solver",
                        "solve_time_s", "candidates_considered", "status", "notes", "mip_gap"}
    assert ans["feasible"] and ans["candidates_considered"] == 8 and ans["mip_gap"] == 0
    assert [w["latency_statistic"] for w in ans["workloads"]] == ["latency_p99_ms", "latency_p99_ms"]
    used = [w["option"]["hardware"].get("local-2c", 0) for w in ans["workloads"]]
    assert sum(used) <= 1  # the shared inventory holds across workloads
    assert ans["cost_per_hour_usd"] == pytest.approx(sum(w["option"]["cost_per_hour_usd"] for w in ans["workloads"]))
    json.dumps(ans, allow_nan=False)
    broke = ws.plan({**doc, "budget_per_hour_usd": 0.01})
    assert broke["feasible"] is False and "budget_per_hour_usd" in broke["diagnosis"]["blocking"]
    assert [w["option"] for w in broke["workloads"]] == [None, None]
    with pytest.raises(RequirementsError, match=r"workloads\.1\.constraints\.latncy_p99_ms: unknown field"):
        ws.plan({"workloads": [{}, {"constraints": {"latncy_p99_ms": 1}}]})
    with pytest.raises(RequirementsError, match=r"inventory: unknown hardware \['h100'\]"):
        ws.plan({"workloads": [{}], "inventory": {"h100": 1}})
