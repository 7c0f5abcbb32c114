"""A latency constraint names the statistic it bounds (#16 item 5): published sets mostly report a
mean or a median, and a p99 bound checked against a mean would pass what the SLO forbids."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_csv, candidates_from_results
from matcher.capacity import read_curve
from matcher.errors import CandidateError, RequirementsError
from matcher.recommend import recommend, recommend_plan

CATALOG = {"box": HardwareSpec(name="box", accelerator_type="cpu", cpu_cores=4, price_per_hour_usd=1.0,
                               price_source="test")}


def _csv(tmp_path, text: str):
    p = tmp_path / "c.csv"
    p.write_text(text)
    return candidates_from_csv(p)


def test_a_table_of_means_answers_a_mean_bound_and_refuses_a_p99_bound(tmp_path):
    cands = _csv(tmp_path, "hardware,price_per_hour_usd,latency_mean_ms,throughput_qps,accuracy\n"
                           "pi,0.01,40,25,0.9\njetson,0.05,6,200,0.9\n")
    ans = recommend({"constraints": {"latency_mean_ms": 10, "throughput_qps": 100}}, cands).model_dump()
    assert ans["feasible"] and ans["latency_statistic"] == "latency_mean_ms"
    assert set(ans["options"][0]["hardware"]) == {"jetson"}
    assert ans["options"][0]["predicted"]["latency_mean_ms"] == 6 and ans["options"][0]["predicted"]["latency_p99_ms"] is None
    with pytest.raises(RequirementsError) as err:
        recommend({"constraints": {"latency_p99_ms": 10, "throughput_qps": 100}}, cands)
    assert err.value.errors[0][0] == "constraints.latency_p99_ms"
    assert "99th percentile" in str(err.value) and "latency_mean_ms" in str(err.value)
    # The latency objective ranks by the statistic the data has when none is bounded.
    fast = recommend({"objective": "latency", "constraints": {"throughput_qps": 10}}, cands).model_dump()
    assert fast["latency_statistic"] == "latency_mean_ms" and set(fast["options"][0]["hardware"]) == {"jetson"}


def test_each_statistic_is_checked_against_its_own_bound(tmp_path):
    # A median that passes and a p99 that does not: a p50 bound keeps the cheap box, a p99 bound does not.
    cands = _csv(tmp_path, "hardware,price_per_hour_usd,latency_p50_ms,latency_p99_ms,throughput_qps,accuracy\n"
                           "cheap,0.1,4,30,100,0.9\ndear,1.0,3,8,100,0.9\n")
    by_p50 = recommend({"constraints": {"latency_p50_ms": 5}}, cands).model_dump()
    by_p99 = recommend({"constraints": {"latency_p99_ms": 10}}, cands).model_dump()
    assert set(by_p50["options"][0]["hardware"]) == {"cheap"} and by_p50["latency_statistic"] == "latency_p50_ms"
    assert set(by_p99["options"][0]["hardware"]) == {"dear"} and by_p99["latency_statistic"] == "latency_p99_ms"
    both = recommend({"constraints": {"latency_p50_ms": 5, "latency_p99_ms": 10}}, cands).model_dump()
    assert set(both["options"][0]["hardware"]) == {"dear"} and both["latency_statistic"] == "latency_p99_ms"
    # An unreachable median bound is diagnosed under its own name.
    none = recommend({"constraints": {"latency_p50_ms": 1}}, cands).model_dump()
    assert not none["feasible"] and none["diagnosis"]["relaxations"][0]["field"] == "constraints.latency_p50_ms"


def test_a_plan_names_the_workload_whose_statistic_is_missing(tmp_path):
    cands = _csv(tmp_path, "hardware,price_per_hour_usd,latency_mean_ms,throughput_qps,accuracy\nbox,1,5,10,0.9\n")
    plan = {"workloads": [{"constraints": {"latency_mean_ms": 9}}, {"constraints": {"latency_p90_ms": 9}}]}
    with pytest.raises(RequirementsError, match=r"workloads\.1\.constraints\.latency_p90_ms"):
        recommend_plan(plan, [cands, cands])
    ok = recommend_plan({"workloads": plan["workloads"][:1]}, [cands]).model_dump()
    assert ok["feasible"] and ok["workloads"][0]["latency_statistic"] == "latency_mean_ms"


def test_a_table_needs_one_latency_statistic_and_each_row_a_value(tmp_path):
    with pytest.raises(CandidateError, match="no latency column"):
        _csv(tmp_path, "hardware,price_per_hour_usd,throughput_qps,accuracy\nbox,1,10,0.9\n")
    with pytest.raises(CandidateError, match="line 3: no latency value"):
        _csv(tmp_path, "hardware,price_per_hour_usd,latency_p50_ms,latency_mean_ms,throughput_qps,accuracy\n"
                       "a,1,5,,10,0.9\nb,1,,,10,0.9\n")


POINTS = [(100, 2.0, 5.0), (200, 3.0, 12.0), (400, 9.0, 60.0)]  # rate, p50, p99


def _curve():
    return [{"offered_qps": q, "completed_qps": q, "latency_p50_ms": p50, "latency_p99_ms": p99, "valid": True}
            for q, p50, p99 in POINTS]


def test_capacity_is_read_at_every_bound_the_request_names():
    assert read_curve(_curve(), {"latency_p50_ms": 6.0}).rate == pytest.approx(300)  # p50 crosses 6 at 300/s
    assert read_curve(_curve(), {"latency_p99_ms": 12.0}).rate == pytest.approx(200)
    both = read_curve(_curve(), {"latency_p50_ms": 6.0, "latency_p99_ms": 36.0})
    assert both.rate == pytest.approx(300) and both.latency["latency_p99_ms"] == pytest.approx(36.0)
    lacks = read_curve(_curve(), {"latency_mean_ms": 5.0})
    assert lacks.rate is None and lacks.lacks == ("latency_mean_ms",)


def test_a_curve_without_the_bounded_statistic_is_not_used_to_size_for_it():
    rows = []
    for r in range(2):
        base = {"sweep_id": "s", "trial_id": "t", "repeat": r, "asset": "enc", "task": "infer", "status": "ok",
                "hardware": "box", "cfg_batch_size": 8, "accuracy": 0.9}
        rows += [{**base, "scenario": "MultiStream", "latency_p50_ms": 1.5, "latency_p99_ms": 4.0, "latency_mean_ms": 1.8},
                 {**base, "scenario": "Offline", "throughput_samples_per_s": 1000.0},
                 {**base, "scenario": "Server", "server_curve": json.dumps(_curve())}]
    cands = candidates_from_results(pd.DataFrame(rows), CATALOG)
    by_p50 = recommend({"constraints": {"latency_p50_ms": 6.0, "throughput_qps": 900}}, cands).model_dump()
    assert by_p50["options"][0]["hardware"] == {"box": 3}  # 300/s a replica at the median bound
    by_mean = recommend({"constraints": {"latency_mean_ms": 6.0, "throughput_qps": 900}}, cands).model_dump()
    assert by_mean["options"][0]["hardware"] == {"box": 1}  # Offline capacity, and the answer says so
    assert any("records no latency_mean_ms" in n and "measured apart" in n for n in by_mean["notes"])
