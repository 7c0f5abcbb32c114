"""The diagnosis of an infeasible request as the answer states it: every relaxation (budgets and
inventories included) a structured fix {field, from, to} in CLI JSON and over HTTP, a plan's shared
budget and inventory diagnosed the same way, each listed fix enough on its own (hypothesis), and
`max_power_w` alone answered honestly with no solver path in any message (#11 item 7)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pulp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.baselines.bruteforce import brute_force
from matcher.recommend import recommend, recommend_plan
from matcher.requirements import Requirements
from matcher.solve import plan, solve
from matcher.workspace import Sources, Workspace
from tests.fixtures.instances import random_candidates, random_requirements, small_table

HIGHS = pulp.HiGHS().available()
SOLVERS = ["cbc", "highs"] if HIGHS else ["cbc"]


table = small_table  # tests/fixtures/instances.py


def changes(fix: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(c["field"], c["from"], c["to"]) for c in [fix, *fix["together_with"]]]


def apply_fix(doc: dict[str, Any], fix: dict[str, Any]) -> dict[str, Any]:
    """What a client does with one listed fix: put each `to` at its `field` (null: remove it).
    Written from the documented field paths, not with the matcher's own helper."""
    doc = copy.deepcopy(doc)
    for field, _, to in changes(fix):
        target, path = doc, field
        if path.startswith("workloads."):
            i, path = path[len("workloads."):].split(".", 1)
            target = doc["workloads"][int(i)]
        if path.startswith("inventory."):
            inv = target.get("inventory") or {}
            if to is None:
                inv.pop(path[len("inventory."):], None)
            else:
                inv[path[len("inventory."):]] = to
            target["inventory"] = inv
        elif path.startswith("constraints."):
            target.setdefault("constraints", {})[path[len("constraints."):]] = to
        else:
            target[path] = to
    return doc


# ----------------------------------------------------------------------------------------------
# Every relaxation is a structured entry
# ----------------------------------------------------------------------------------------------


def test_the_budget_is_a_structured_fix_even_when_it_is_not_the_smallest(tmp_path: Path):
    # Demand 650 under a 20 ms SLO: one local-2c at batch 8 gives 600 for 0.08 USD/h; two give
    # 1200 for 0.16. The smallest relaxation is the demand (650 -> 600); the budget alone (0.09 ->
    # 0.16) is the other fix, and it used to exist only inside the message text.
    p = tmp_path / "c.csv"
    table().to_csv(p, index=False)
    ans = Workspace.open(Sources(candidates_csv=p)).recommend(
        {"constraints": {"throughput_qps": 650, "budget_per_hour_usd": 0.09, "latency_p99_ms": 20}})
    assert ans["feasible"] is False and ans["status"] == "infeasible"
    fixes = ans["diagnosis"]["relaxations"]
    assert [changes(f) for f in fixes] == [[("constraints.throughput_qps", 650.0, 600.0)],
                                           [("constraints.budget_per_hour_usd", 0.09, pytest.approx(0.16))]]
    assert fixes[1]["message"] == "budget 0.09 USD/h is short by 0.07 USD/h (needs 0.16 USD/h)"
    assert fixes[1]["constraint"] == "budget_per_hour_usd" and fixes[1]["best_achievable"] == fixes[1]["to"]
    json.dumps(ans, allow_nan=False)


def test_the_total_budget_and_inventory_are_structured_fixes():
    ans = recommend({"constraints": {"throughput_qps": 650, "budget_total_usd": 0.9, "duration_h": 10,
                                     "latency_p99_ms": 20}}, table()).model_dump()
    assert ("constraints.budget_total_usd", 0.9, pytest.approx(1.6)) in [changes(f)[0] for f in
                                                                        ans["diagnosis"]["relaxations"]]
    ans = recommend({"constraints": {"throughput_qps": 1200}, "inventory": {"local-1c": 1, "local-2c": 1}},
                    table()).model_dump()
    got = [changes(f) for f in ans["diagnosis"]["relaxations"]]
    assert [("inventory.local-2c", 1, 2)] in got and [("inventory.local-1c", 1, 2)] in got
    assert all(isinstance(c[2], int) for f in got for c in f if c[0].startswith("inventory."))


def test_a_joint_fix_lists_every_change_it_needs():
    # SLO 5 ms is below every candidate and 650 samples/s is beyond one replica at the best p99:
    # no single change is enough, so the one fix carries both.
    ans = recommend({"constraints": {"throughput_qps": 650, "budget_per_hour_usd": 0.09, "latency_p99_ms": 5}},
                    table()).model_dump()
    fixes = ans["diagnosis"]["relaxations"]
    assert len(fixes) == 1 and len(changes(fixes[0])) == 2
    assert {c[0] for c in changes(fixes[0])} <= {"constraints.latency_p99_ms", "constraints.throughput_qps",
                                                 "constraints.budget_per_hour_usd"}
    assert recommend(apply_fix({"constraints": {"throughput_qps": 650, "budget_per_hour_usd": 0.09,
                                                "latency_p99_ms": 5}}, fixes[0]), table()).feasible


def test_http_answers_the_same_fields(tmp_path: Path):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.core import ServiceCore, ServiceSettings

    p = tmp_path / "c.csv"
    table().to_csv(p, index=False)
    app = create_app()
    app.state.core = ServiceCore(ServiceSettings(candidates_csv=str(p)))
    client = TestClient(app, raise_server_exceptions=False)
    req = {"constraints": {"throughput_qps": 650, "budget_per_hour_usd": 0.09, "latency_p99_ms": 20}}
    r = client.post("/recommend", json=req)
    assert r.status_code == 200, r.text
    direct = Workspace.open(Sources(candidates_csv=p)).recommend(req)
    assert r.json()["diagnosis"] == json.loads(json.dumps(direct["diagnosis"]))
    assert {"field", "from", "to", "together_with"} <= set(r.json()["diagnosis"]["relaxations"][1])
    doc = {"workloads": [{"constraints": {"throughput_qps": 600}}, {"constraints": {"throughput_qps": 300}}],
           "budget_per_hour_usd": 0.1}
    r = client.post("/plan", json=doc)
    assert r.status_code == 200, r.text
    assert [changes(f) for f in r.json()["diagnosis"]["relaxations"]][0] == \
        [("budget_per_hour_usd", 0.1, pytest.approx(0.1246))]


# ----------------------------------------------------------------------------------------------
# plan: its shared budget and inventory
# ----------------------------------------------------------------------------------------------


def test_plan_names_its_shared_budget_and_inventory_as_fields():
    t = table()
    both = [{"constraints": {"throughput_qps": 600}}, {"constraints": {"throughput_qps": 300}}]
    ans = recommend_plan({"workloads": both, "budget_per_hour_usd": 0.1}, [t, t]).model_dump()
    assert ans["feasible"] is False
    # the shared budget, smallest; or workload 0 on one local-1c at batch 8 beside workload 1's
    assert [changes(f) for f in ans["diagnosis"]["relaxations"]] == [
        [("budget_per_hour_usd", 0.1, pytest.approx(0.1246))], [("workloads.0.constraints.throughput_qps", 600.0, 300.0)]]
    # 1500 + 300 samples/s on at most 1 local-2c and 1 local-1c: the shared inventory must grow,
    # or workload 0's demand shrink
    doc = {"workloads": [{"constraints": {"throughput_qps": 1500}}, {"constraints": {"throughput_qps": 300}}],
           "inventory": {"local-1c": 1, "local-2c": 1}}
    ans = recommend_plan(doc, [t, t]).model_dump()
    got = [changes(f) for f in ans["diagnosis"]["relaxations"]]
    assert any(c[0] == "inventory.local-2c" and c[1] == 1 and c[2] >= 2 for f in got for c in f), got
    assert [("workloads.0.constraints.throughput_qps", 1500.0, 600.0)] in got, got
    for fix in ans["diagnosis"]["relaxations"]:
        assert recommend_plan(apply_fix(doc, fix), [t, t]).feasible, fix


def test_plan_with_a_workload_missing_numbers_chains_the_fixes():
    t = table()
    doc = {"workloads": [{"constraints": {"throughput_qps": 600}},
                         {"constraints": {"throughput_qps": 300, "accuracy": 0.5}}],
           "budget_per_hour_usd": 0.05}
    ans = recommend_plan(doc, [t, t.assign(accuracy=np.nan)]).model_dump()
    fixes = ans["diagnosis"]["relaxations"]
    assert fixes and all(changes(f)[0] == ("workloads.1.constraints.accuracy", 0.5, None) for f in fixes)
    for fix in fixes:
        assert recommend_plan(apply_fix(doc, fix), [t, t.assign(accuracy=np.nan)]).feasible, fix


# ----------------------------------------------------------------------------------------------
# Each listed fix alone makes the request feasible
# ----------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["cost", "energy", "latency"]),
       tight=st.sampled_from([1.0, 2.0, 4.0]), total=st.booleans())
def test_every_listed_fix_makes_the_request_feasible(seed, objective, tight, total):
    rng = np.random.default_rng(seed)
    c = random_candidates(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)), with_energy=True,
                          missing_accuracy=0.2)
    doc = random_requirements(rng, c, objective=objective, top_k=1, tight=tight).model_dump(exclude_none=True)
    if total:  # the total budget too, over a random duration
        hours = float(rng.uniform(1, 100))
        doc["constraints"].update(duration_h=hours, budget_total_usd=float(
            c["price_per_hour_usd"].median() * hours * rng.uniform(1, 6) / tight))
    ans = recommend(doc, c).model_dump()
    if ans["feasible"]:
        return
    fixes = ans["diagnosis"]["relaxations"]
    assert fixes, ans["diagnosis"]
    for fix in fixes:
        again = recommend(apply_fix(doc, fix), c)
        assert again.feasible, (doc, fix, again.diagnosis)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), n_workloads=st.integers(1, 3), shared_budget=st.booleans(),
       shared_inventory=st.booleans())
def test_every_listed_fix_makes_the_plan_feasible(seed, n_workloads, shared_budget, shared_inventory):
    rng = np.random.default_rng(seed)
    tables, workloads = [], []
    for _ in range(n_workloads):
        c = random_candidates(rng, 2, int(rng.integers(1, 3)), with_energy=True, missing_accuracy=0.1)
        tables.append(c)
        w = random_requirements(rng, c, top_k=1).model_dump(exclude_none=True)
        w.pop("top_k")
        workloads.append(w)
    doc: dict[str, Any] = {"workloads": workloads}
    if shared_budget:
        doc["budget_per_hour_usd"] = float(sum(t["price_per_hour_usd"].median() for t in tables)
                                           * rng.uniform(0.5, 4))
    if shared_inventory:
        doc["inventory"] = {h: int(rng.integers(0, 3)) for h in sorted(tables[0]["hardware"].unique())}
    ans = recommend_plan(doc, tables).model_dump()
    if ans["feasible"]:
        return
    fixes = ans["diagnosis"]["relaxations"]
    assert fixes, ans["diagnosis"]
    for fix in fixes:
        again = recommend_plan(apply_fix(doc, fix), tables)
        assert again.feasible, (doc, fix, again.diagnosis)


def curve_table(rng: np.random.Generator):
    """Measured candidates sized from Server curves: 2 hardware x 2 batch sizes x 3 repeats, each
    curve flat then rising to saturation, each repeat off by its own factor."""
    from cluster.hardware import HardwareSpec
    from matcher.candidates import candidates_from_results

    catalog = {h: HardwareSpec(name=h, accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=p, price_source="test")
               for h, p in (("small", float(rng.uniform(0.2, 1))), ("big", float(rng.uniform(1, 4))))}
    rows = []
    for h in catalog:
        for b in (1, 8):
            base, top = float(rng.uniform(1, 10)), float(rng.uniform(500, 5000))
            for r in range(3):
                f = float(np.exp(0.3 * rng.standard_normal()))
                curve = [{"offered_qps": top * x, "completed_qps": top * x, "valid": True,
                          "latency_p99_ms": base * f * (1 + 6 * x ** 3)} for x in (0.1, 0.3, 0.5, 0.7, 0.9)]
                key = {"sweep_id": "s", "trial_id": f"{h}-{b}", "repeat": r, "asset": "a", "task": "infer",
                       "status": "ok", "hardware": h, "cfg_batch_size": b, "accuracy": 0.9}
                rows += [{**key, "scenario": "MultiStream", "latency_p99_ms": base * f},
                         {**key, "scenario": "Offline", "throughput_samples_per_s": top},
                         {**key, "scenario": "Server", "latency_p99_ms": base * f * 7,
                          "server_curve": json.dumps(curve)}]
    import pandas as pd

    return candidates_from_results(pd.DataFrame(rows), catalog)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), confidence=st.sampled_from([None, 0.9, 0.99]), plan_of=st.integers(0, 2))
def test_every_listed_fix_holds_once_capacity_is_read_off_the_curves_again(seed, confidence, plan_of):
    """A latency bound relaxed on a Server-curve table changes the capacity read off the curves:
    a fix found with the capacities of the requested bound must still be enough at the relaxed one
    (it once was not: the budget then blocked), for one workload and for a plan (plan_of > 0)."""
    rng = np.random.default_rng(seed)
    tables, docs = [], []
    for _ in range(max(plan_of, 1)):
        t = curve_table(rng)
        doc = {"constraints": {"latency_p99_ms": float(rng.uniform(1, 40)), "throughput_qps": float(rng.uniform(100, 2e4)),
                               "budget_per_hour_usd": float(rng.uniform(0.5, 20))}}
        if confidence is not None:
            doc["slo_confidence"] = confidence
        tables.append(t)
        docs.append(doc)
    if plan_of:
        request = {"workloads": [{k: v for k, v in d.items() if k != "top_k"} for d in docs],
                   "budget_per_hour_usd": float(rng.uniform(1, 30))}
        ans, again = recommend_plan(request, tables).model_dump(), lambda d: recommend_plan(d, tables)
    else:
        request = {**docs[0], "top_k": 1}
        ans, again = recommend(request, tables[0]).model_dump(), lambda d: recommend(d, tables[0])
    if ans["feasible"]:
        return
    for fix in ans["diagnosis"]["relaxations"]:
        fixed = again(apply_fix(request, fix))
        assert fixed.feasible, (request, fix, fixed.diagnosis)


# ----------------------------------------------------------------------------------------------
# #11 item 7: max_power_w alone; no solver paths in answers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("top_k", [1, 3])
def test_max_power_alone_without_power_data_says_so_cleanly(solver, top_k):
    ans = recommend({"constraints": {"max_power_w": 100}, "top_k": top_k}, table(), solver=solver).model_dump()
    assert ans["status"] == "infeasible" and ans["feasible"] is False
    # not a solver failure: nothing can be checked against the cap, and dropping it is the fix
    assert "could not be solved" not in ans["diagnosis"]["message"]
    assert [changes(f) for f in ans["diagnosis"]["relaxations"]] == [[("constraints.max_power_w", 100.0, None)]]
    assert "have no power_w" in ans["diagnosis"]["relaxations"][0]["message"]
    text = json.dumps(ans)
    assert "/" not in text.replace("samples/s", "").replace("USD/h", "")
    assert recommend(apply_fix({"constraints": {"max_power_w": 100}}, ans["diagnosis"]["relaxations"][0]),
                     table(), solver=solver).feasible


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(seed=st.integers(0, 2**32 - 1), demand=st.booleans(), top_k=st.integers(1, 3),
       missing=st.sampled_from([0.0, 0.5, 1.0]), zero=st.booleans())
def test_max_power_alone_with_power_data_agrees_with_brute_force(seed, demand, top_k, missing, zero):
    rng = np.random.default_rng(seed)
    c = random_candidates(rng, int(rng.integers(1, 4)), int(rng.integers(1, 3)), with_energy=True)
    unknown = rng.random(len(c)) < missing  # no power, and none to derive from energy per sample
    c["power_w"] = np.where(unknown, np.nan, c["power_w"])
    c["energy_per_sample_j"] = np.where(unknown, np.nan, c["energy_per_sample_j"])
    if zero:
        c["price_per_hour_usd"] = 0.0  # free hardware: a constant cost objective
    cons: dict[str, float] = {"max_power_w": float(np.nanmedian(c["power_w"]) * rng.uniform(0.5, 4))
                              if c["power_w"].notna().any() else 100.0}
    if demand:
        cons["throughput_qps"] = float(c["throughput_qps"].median() * rng.uniform(0.5, 3))
    r = Requirements(constraints=cons, top_k=top_k)
    s = solve(r, c, solver="highs" if HIGHS and seed % 2 else "cbc")
    b = brute_force(r, c, top_k=1)
    assert s.status in ("optimal", "infeasible"), s.reason
    assert s.feasible == b.feasible, (s.reason, r)
    if b.feasible:
        assert s.options[0].cost_per_hour_usd == pytest.approx(b.best.cost_per_hour_usd, rel=1e-7, abs=1e-9)
        p = c["power_w"].to_numpy(float)
        assert sum(n * p[i] for i, n in s.options[0].replicas.items()) <= cons["max_power_w"] * (1 + 1e-9)
    else:
        assert s.diagnosis is not None and s.diagnosis.fixes, s.reason


def test_a_solver_failure_names_no_install_path(monkeypatch):
    where = "/opt/venv/lib/python3.11/site-packages/pulp/apis/../solverdir/cbc/linux/i64/cbc"

    def crash(self, *args, **kwargs):
        raise pulp.PulpSolverError(f"Pulp: Error while executing {where}")

    monkeypatch.setattr(pulp.LpProblem, "solve", crash)
    for req in ({"constraints": {"throughput_qps": 300}}, {"constraints": {"max_power_w": 100}}):
        ans = recommend(req, table())
        text = ans.model_dump_json()
        assert "solverdir" not in text and "/opt/" not in text, text
    s = solve(Requirements(constraints={"throughput_qps": 300}), table(), method="milp")
    assert s.status == "error" and s.reason == "cbc failed: Pulp: Error while executing cbc"
    p = plan([(Requirements(constraints={"throughput_qps": 300}), table())])
    assert "solverdir" not in p.reason and "/opt/" not in p.reason


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_constant_objective_does_not_break_the_next_solve(solver):
    # PuLP adds a dummy variable for a constant objective, and CBC's next solve with another
    # objective failed on it ("Error while executing .../cbc"): zero power under the energy
    # objective, free hardware under cost (the tie-break stages follow), no slack in the elastic model.
    idle = table().assign(power_w=0.0)
    s = solve(Requirements(objective="energy", constraints={"throughput_qps": 300}, top_k=2), idle, solver=solver)
    assert s.status == "optimal" and len(s.options) == 2, s.reason
    free = table().assign(price_per_hour_usd=0.0)
    s = solve(Requirements(constraints={"throughput_qps": 300}, top_k=3), free, solver=solver)
    assert s.status == "optimal" and len(s.options) == 3, s.reason
    assert not math.isnan(s.options[0].cost_per_hour_usd)


def test_a_fix_is_completed_by_what_the_relaxed_request_still_needs_or_dropped():
    from matcher.recommend import sized_fixes
    from matcher.solution import Diagnosis, Relaxation

    lat = Relaxation("latency_p99_ms", "constraints.latency_p99_ms", 5.0, 8.4, "p99 unreachable")
    budget = Relaxation("budget_per_hour_usd", "constraints.budget_per_hour_usd", 4.0, 12.0, "budget short")
    more_lat = Relaxation("latency_p99_ms", "constraints.latency_p99_ms", 8.4, 9.0, "p99 again")
    first = Diagnosis(("latency_p99_ms",), "p99 unreachable", (lat,))
    asked: list[list[str]] = []

    def answer(fix, seconds):
        asked.append([r.field for r in fix])
        if len(fix) == 1:  # the latency alone: the budget blocks at the capacity read at 8.4 ms
            return False, Diagnosis(("budget_per_hour_usd",), "budget short", (budget, more_lat))
        return True, None

    got = sized_fixes(first, answer, None)
    assert got.relaxations == (replace(more_lat, required=5.0), budget)  # `from` stays the user's 5 ms
    assert "also relax budget_per_hour_usd" in got.message and len(asked) == 2
    never = sized_fixes(first, lambda fix, s: (False, Diagnosis((), "still infeasible", ())), None)
    assert never.relaxations == () and "none was found" in never.message
    late = sized_fixes(first, lambda fix, s: (_ for _ in ()).throw(AssertionError("not called")), 1e-9)
    assert late.relaxations == () and "time limit" in late.message
