"""Capacity at the SLO (matcher/capacity.py): a replica is sized from the rate at which its measured
p99 meets the bound, not from its saturated throughput paired with a latency measured at low load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from matcher.capacity import capacity_at, prediction_bounds
from matcher.recommend import recommend

# The case: a batch-8 replica whose MultiStream p99 is 10.9 ms and whose Offline throughput
# is 1,000 samples/s, but whose p99 under Poisson arrivals grows with the load.
CURVE = [(250, 8.0), (500, 15.0), (750, 40.0), (900, 90.0)]
CATALOG = {"box": HardwareSpec(name="box", accelerator_type="cpu", cpu_cores=4, price_per_hour_usd=1.0,
                               price_source="test")}


def _curve(points, jitter=1.0):
    return [{"offered_qps": q, "completed_qps": q, "latency_p99_ms": p * jitter, "valid": True} for q, p in points]


def truth_p99(load: float) -> float:
    """The measured curve as truth: linear between points, saturated (infinite) past the last."""
    qs, ps = zip(*CURVE, strict=True)
    return float(np.interp(load, qs, ps)) if load <= qs[-1] else float("inf")


def _rows(with_curve: bool) -> pd.DataFrame:
    rows = []
    for r, jitter in enumerate((1.0, 1.05, 0.97)):
        base = {"sweep_id": "s", "trial_id": "box-1", "repeat": r, "asset": "enc", "task": "infer", "status": "ok",
                "hardware": "box", "cfg_batch_size": 8, "accuracy": 0.9}
        rows += [{**base, "scenario": "MultiStream", "latency_p99_ms": 10.9 * jitter},
                 {**base, "scenario": "Offline", "throughput_samples_per_s": 1000.0 / jitter}]
        if with_curve:
            rows.append({**base, "scenario": "Server", "latency_p99_ms": 90.0,
                         "server_curve": json.dumps(_curve(CURVE, jitter))})
    return pd.DataFrame(rows)


def test_capacity_is_read_off_the_curve_conservatively_and_never_extrapolated():
    curve = _curve(CURVE)
    q, p99 = capacity_at(curve, 20.0)
    assert q == pytest.approx(500 + (20 - 15) / (40 - 15) * 250) and p99 == 20.0  # interpolated between points
    assert capacity_at(curve, 200.0) == (900, 90.0)  # every point passes: the heaviest, not beyond
    assert capacity_at(curve, 5.0) == (None, 8.0)  # the lightest load already breaks it: best achievable
    assert capacity_at(curve, None) == (900, 90.0)
    noisy = _curve([(250, 8.0), (500, 25.0), (750, 18.0)])
    assert capacity_at(noisy, 20.0)[0] < 500  # a point passing again above a failing one does not count
    assert capacity_at(_curve([(250, 8.0)]) + [{"offered_qps": 900, "latency_p99_ms": 1.0, "valid": False}],
                       20.0) == (250, 8.0)  # a run LoadGen did not count is not a point


def test_todays_rule_over_promises_and_capacity_at_the_slo_does_not():
    req = {"constraints": {"latency_p99_ms": 20, "throughput_qps": 3000}, "top_k": 1}
    old = recommend(req, candidates_from_results(_rows(with_curve=False), CATALOG)).model_dump()
    new = recommend(req, candidates_from_results(_rows(with_curve=True), CATALOG)).model_dump()
    (o_old,), (o_new,) = old["options"], new["options"]
    n_old, n_new = o_old["hardware"]["box"], o_new["hardware"]["box"]
    # Today's rule: Offline throughput with the MultiStream p99: few replicas, a p99 they never show.
    assert o_old["predicted"]["latency_p99_ms"] <= 20 and truth_p99(3000 / n_old) > 20
    assert any("measured apart" in n for n in old["notes"])
    # Capacity at the SLO: more replicas, each at a load where the measured p99 meets the bound.
    assert n_new > n_old and truth_p99(3000 / n_new) <= 20
    assert o_new["predicted"]["latency_p99_ms_bound"] <= 20
    assert not any("measured apart" in n for n in new["notes"])


def test_the_worst_repeat_sizes_and_max_utilization_adds_headroom():
    cands = candidates_from_results(_rows(with_curve=True), CATALOG)
    req = {"constraints": {"latency_p99_ms": 20, "throughput_qps": 3000}, "top_k": 1}
    full = recommend(req, cands).model_dump()["options"][0]
    caps = [capacity_at(_curve(CURVE, j), 20.0)[0] for j in (1.0, 1.05, 0.97)]
    assert full["predicted"]["throughput_qps_bound"] == pytest.approx(min(caps) * full["hardware"]["box"])
    headroom = recommend({**req, "max_utilization": 0.7}, cands).model_dump()["options"][0]
    assert headroom["hardware"]["box"] == int(np.ceil(3000 / (0.7 * min(caps))))


def test_the_prediction_bound_pools_the_spread_per_hardware_and_never_exceeds_the_worst_repeat():
    rates = {0: np.array([100.0, 110.0, 90.0]), 1: np.array([50.0, 55.0, 52.0]), 2: np.array([10.0, 12.0])}
    hw = np.array(["a", "a", "b"])
    lower, how = prediction_bounds(rates, hw, 0.95)
    logs = [np.log(rates[0]), np.log(rates[1])]
    s = np.sqrt(sum(((v - v.mean()) ** 2).sum() for v in logs) / 4)  # a's 2 x 3 repeats: 4 d.o.f.
    from scipy.stats import t
    assert lower[0] == pytest.approx(np.exp(logs[0].mean() - t.ppf(0.95, 4) * s * np.sqrt(1 + 1 / 3)))
    assert all(lower[i] <= rates[i].min() for i in rates)
    assert "4 d.o.f." in how[0] and "1 d.o.f." in how[2]  # b pools its own single configuration
    assert prediction_bounds(rates, hw, 0.99)[0][0] < lower[0]  # more confidence, a lower bound
    single, said = prediction_bounds({0: np.array([100.0]), 1: np.array([50.0])}, np.array(["a", "b"]), 0.99)
    assert single == {0: 100.0, 1: 50.0} and "no spread" in said[0]


def test_a_fresh_run_beats_the_prediction_bound_as_often_as_its_confidence_says():
    """Under the model (log-normal capacities, a spread common to the hardware), the bound from 3
    repeats of 8 configurations is broken by a fresh run in about 1 - confidence of draws, while the
    worst of 3 repeats is broken about once in 4."""
    rng = np.random.default_rng(7)
    broken = {"bound": 0, "worst": 0}
    trials = 400
    for _ in range(trials):
        centres = rng.uniform(3, 8, size=8)
        rates = {i: np.exp(c + 0.2 * rng.standard_normal(3)) for i, c in enumerate(centres)}
        lower, _ = prediction_bounds(rates, np.array(["a"] * 8), 0.9)
        fresh = np.exp(centres + 0.2 * rng.standard_normal(8))
        broken["bound"] += int((fresh < np.array([lower[i] for i in range(8)])).sum())
        broken["worst"] += int((fresh < np.array([rates[i].min() for i in range(8)])).sum())
    share = {k: v / (8 * trials) for k, v in broken.items()}
    assert 0.07 < share["bound"] < 0.13, share
    assert 0.21 < share["worst"] < 0.29, share


def test_slo_confidence_sizes_from_the_prediction_bound_and_says_so():
    cands = candidates_from_results(_rows(with_curve=True), CATALOG)
    req = {"constraints": {"latency_p99_ms": 20, "throughput_qps": 3000}, "top_k": 1}
    worst_answer, sure_answer = recommend(req, cands), recommend({**req, "slo_confidence": 0.99}, cands)
    assert any("worst of 3 measured repeats" in n and "1 time in 4" in n for n in worst_answer.notes)
    assert not any("slo_confidence" in n for n in sure_answer.notes)
    worst, sure = worst_answer.model_dump()["options"][0], sure_answer.model_dump()["options"][0]
    assert sure["hardware"]["box"] > worst["hardware"]["box"]
    band = sure["band"]["throughput_qps"]
    assert "0.99 lower prediction bound" in band["method"] and "3 repeats" in band["method"]
    assert worst["band"]["throughput_qps"]["method"].startswith("measured: worst of 3")
    with pytest.raises(Exception, match="slo_confidence"):
        recommend({**req, "slo_confidence": 0.3}, cands)


def test_flagged_rows_never_count_as_measured():
    rows = _rows(with_curve=True)
    rows["flags"] = ""
    rows.loc[rows["repeat"] == 1, "flags"] = "background_load"
    cands = candidates_from_results(rows, CATALOG)
    assert int(cands["repeats"].iloc[0]) == 2  # the flagged repeat is left out
    rows["flags"] = "loadgen_invalid"
    with pytest.raises(Exception, match="flagged"):
        candidates_from_results(rows, CATALOG)


def test_an_answer_says_when_its_p99_rests_on_runs_too_short_to_measure_a_p99():
    def rows(queries: int) -> pd.DataFrame:
        out = _rows(with_curve=True)
        curves = out["server_curve"].dropna()
        out.loc[curves.index, "server_curve"] = [
            json.dumps([{**p, "queries": queries} for p in json.loads(c)]) for c in curves]
        return out

    req = {"asset": "enc", "constraints": {"latency_p99_ms": 20.0, "throughput_qps": 2000}}
    short = recommend(req, candidates_from_results(rows(60), CATALOG, asset="enc"))
    assert short.feasible and len(short.options) == 1
    (note,) = [n for n in short.notes if "queries" in n]
    assert "as few as 60 queries" in note and "server_curve_min_queries >= 500" in note
    long = recommend(req, candidates_from_results(rows(800), CATALOG, asset="enc"))
    assert long.options[0].hardware == short.options[0].hardware  # the same answer, without the warning
    assert not [n for n in long.notes if "queries" in n]
    plain = recommend({**req, "constraints": {"throughput_qps": 2000}}, candidates_from_results(rows(60), CATALOG,
                                                                                              asset="enc"))
    assert not [n for n in plain.notes if "queries" in n]  # no percentile bounded: nothing rests on one


def test_a_plan_says_which_workloads_p99_rests_on_short_runs():
    from matcher.recommend import recommend_plan

    rows = _rows(with_curve=True)
    curves = rows["server_curve"].dropna()
    rows.loc[curves.index, "server_curve"] = [json.dumps([{**p, "queries": 40} for p in json.loads(c)]) for c in curves]
    table = candidates_from_results(rows, CATALOG, asset="enc")
    plan = {"workloads": [{"asset": "enc", "constraints": {"latency_p99_ms": 20.0, "throughput_qps": 500}}]}
    ans = recommend_plan(plan, [table])
    assert ans.feasible
    assert [n for n in ans.notes if n.startswith("workload 0: its capacity at the latency_p99_ms bound rests on "
                                                   "Server runs of as few as 40 queries")]
