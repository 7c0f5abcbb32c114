"""Capacity at the SLO (matcher/capacity.py): a replica is sized from the rate at which its measured
p99 meets the bound, not from its saturated throughput paired with a latency measured at low load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from matcher.capacity import capacity_at, latency_spreads, read_bound, read_curve
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


LOADS = np.arange(100.0, 1100.0, 100.0)


def _run(scale: float, shift: float) -> list[dict]:
    """One repeat's curve: p99 = scale * (1 + 4 (load/1000)^3) ms, times the run's own factor."""
    return _curve([(q, scale * (1 + 4 * (q / 1000) ** 3) * shift) for q in LOADS])


def test_the_spread_is_pooled_per_hardware_and_the_bound_never_beats_the_worst_repeat():
    runs = {0: [_run(1.0, f) for f in (1.0, 1.2, 0.9)], 1: [_run(2.0, f) for f in (1.1, 0.95, 1.0)],
            2: [_run(1.0, f) for f in (1.0, 1.5)]}
    spreads = latency_spreads(runs, np.array(["a", "a", "b"]), {"latency_p99_ms": 4.0})
    logs = [np.log([1.0, 1.2, 0.9]), np.log([1.1, 0.95, 1.0])]
    expected = np.sqrt(sum(v.var(ddof=1) * 2 for v in logs) / 4)  # a: 2 configurations x 3 repeats, 4 d.o.f.
    assert spreads["a"].df["latency_p99_ms"] == 4 and spreads["a"].s["latency_p99_ms"] == pytest.approx(expected)
    assert spreads["b"].df["latency_p99_ms"] == 1 and spreads["every configuration measured"].df["latency_p99_ms"] == 5
    bound = read_bound(runs[0], {"latency_p99_ms": 4.0}, 0.9, spreads["a"])
    worst = min(read_curve(c, {"latency_p99_ms": 4.0}).rate for c in runs[0])
    assert bound.rate < worst and bound.latency["latency_p99_ms"] == pytest.approx(4.0)
    sure = read_bound(runs[0], {"latency_p99_ms": 4.0}, 0.99, spreads["a"])
    assert sure.rate < bound.rate  # more confidence, less capacity
    assert read_bound(runs[0], {"latency_p99_ms": 1.1}, 0.9, spreads["a"]).rate is None  # breaks at the lightest load
    assert latency_spreads({0: [_run(1.0, 1.0)]}, np.array(["a"]), {"latency_p99_ms": 4.0}) == {}


def test_a_fresh_run_breaks_the_slo_as_often_as_the_confidence_allows():
    """Under the model (each run's latency a log-normal factor off the configuration's curve, a
    spread common to the hardware), a fresh run breaks the SLO at the capacity bounded with
    confidence 0.9 in about 10% of draws; at the worst of 3 repeats, about 1 in 4."""
    rng = np.random.default_rng(11)
    bounds, sigma, trials = {"latency_p99_ms": 4.0}, 0.2, 150
    broken = {"bound": 0, "worst": 0}
    for _ in range(trials):
        scales = rng.uniform(1.0, 2.0, size=8)
        runs = {i: [_run(a, np.exp(sigma * rng.standard_normal())) for _ in range(3)] for i, a in enumerate(scales)}
        spread = latency_spreads(runs, np.array(["a"] * 8), bounds)["a"]
        for i, a in enumerate(scales):
            fresh = a * np.exp(sigma * rng.standard_normal())
            for rule, rate in (("bound", read_bound(runs[i], bounds, 0.9, spread).rate),
                               ("worst", min(read_curve(c, bounds).rate or 0.0 for c in runs[i]))):
                if not rate:
                    continue
                broken[rule] += fresh * (1 + 4 * (rate / 1000) ** 3) > 4.0 * (1 + 1e-9)
    share = {k: v / (8 * trials) for k, v in broken.items()}
    assert 0.05 < share["bound"] <= 0.12, share
    assert 0.18 < share["worst"] < 0.32, share


def test_slo_confidence_sizes_from_the_prediction_bound_and_says_so():
    cands = candidates_from_results(_rows(with_curve=True), CATALOG)
    req = {"constraints": {"latency_p99_ms": 20, "throughput_qps": 3000}, "top_k": 1}
    worst_answer, sure_answer = recommend(req, cands), recommend({**req, "slo_confidence": 0.99}, cands)
    assert any("worst of 3 measured repeats" in n and "1 time in 4" in n for n in worst_answer.notes)
    assert not any("slo_confidence" in n for n in sure_answer.notes)
    worst, sure = worst_answer.model_dump()["options"][0], sure_answer.model_dump()["options"][0]
    assert sure["hardware"]["box"] > worst["hardware"]["box"]
    band = sure["band"]["throughput_qps"]
    assert "fresh run with probability 0.99" in band["method"] and "3 repeats" in band["method"]
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


def _table(curves_per_repeat, scenarios=("MultiStream", "Offline", "Server")):
    rows = []
    for r, curve in enumerate(curves_per_repeat):
        base = {"sweep_id": "s", "trial_id": "box-1", "repeat": r, "asset": "enc", "task": "infer", "status": "ok",
                "hardware": "box", "cfg_batch_size": 8, "accuracy": 0.9}
        rows += [{**base, "scenario": "MultiStream", "latency_p99_ms": 1.0, "latency_p50_ms": 0.8},
                 {**base, "scenario": "Offline", "throughput_samples_per_s": 5000.0},
                 {**base, "scenario": "Server", "latency_p99_ms": 90.0, "server_curve": json.dumps(curve)}]
    return candidates_from_results(pd.DataFrame(rows), CATALOG)


@pytest.mark.parametrize("confidence", [None, 0.9])
def test_malformed_and_saturated_points_neither_crash_nor_add_capacity(confidence):
    good = [{"offered_qps": q, "completed_qps": q, "latency_p99_ms": p} for q, p in ((100, 2.0), (300, 4.0))]
    odd = [1, "x", None, {"offered_qps": "fast", "latency_p99_ms": 1.0}, {"offered_qps": [1], "latency_p99_ms": 1.0},
           {"offered_qps": float("inf"), "latency_p99_ms": 1.0}, {"offered_qps": 400, "latency_p99_ms": True}]
    saturated = {"offered_qps": 200, "completed_qps": 200, "latency_p99_ms": float("inf")}
    req = {"constraints": {"latency_p99_ms": 10, "throughput_qps": 1000}, "top_k": 1}
    if confidence:
        req["slo_confidence"] = confidence
    ans = recommend(req, _table([good + odd + [saturated]] * 2 + [good + [saturated]])).model_dump()
    # The point that never finished in time breaks the bound: no replica is sized past 200/s.
    (opt,) = ans["options"]
    assert opt["hardware"]["box"] * 200 >= 1000
    json.dumps(ans, allow_nan=False)


def test_a_point_lacking_a_statistic_still_breaks_the_bound_it_records():
    curve = [{"offered_qps": 100, "latency_p99_ms": 2.0, "latency_p50_ms": 1.0},
             {"offered_qps": 200, "latency_p99_ms": 50.0},  # saturated: no median recorded
             {"offered_qps": 300, "latency_p99_ms": 5.0, "latency_p50_ms": 2.0}]  # a lucky point past it
    assert read_curve(curve, {"latency_p99_ms": 10.0, "latency_p50_ms": 5.0}).rate < 200


def test_a_bound_the_curve_lacks_never_trades_the_curve_for_offline_capacity():
    curve = [{"offered_qps": q, "completed_qps": q, "latency_p99_ms": p} for q, p in ((100, 2.0), (500, 30.0))]
    cands = _table([curve] * 3)
    req = {"constraints": {"latency_p99_ms": 10, "throughput_qps": 2000}, "top_k": 1}
    alone = recommend(req, cands)
    both = recommend({**req, "constraints": {**req["constraints"], "latency_p50_ms": 50}}, cands)
    assert both.options[0].hardware == alone.options[0].hardware  # not 1 replica at the Offline 5,000/s
    assert any("read off its Server curve at the bounds the curve records" in n for n in both.notes)


def test_two_repeats_at_high_confidence_give_a_diagnosis_not_a_solver_failure():
    runs = [[{"offered_qps": q, "completed_qps": q, "latency_p99_ms": f * (2 + q / 100)} for q in (100, 300, 500)]
            for f in (1.0, 1.3)]
    ans = recommend({"constraints": {"latency_p99_ms": 20, "throughput_qps": 3000}, "top_k": 1,
                     "slo_confidence": 0.9999}, _table(runs)).model_dump()
    assert not ans["feasible"] and ans["diagnosis"]["relaxations"], ans["diagnosis"]
    assert "could not be solved" not in ans["diagnosis"]["message"]
    json.dumps(ans, allow_nan=False)


def test_slo_confidence_says_which_options_it_could_not_size():
    one = recommend({"constraints": {"latency_p99_ms": 20, "throughput_qps": 100}, "top_k": 1, "slo_confidence": 0.9},
                    _table([[{"offered_qps": 100, "latency_p99_ms": 2.0}]]))
    assert any("could not be applied" in n for n in one.notes)
    plain = recommend({"constraints": {"latency_p99_ms": 20, "throughput_qps": 100}, "top_k": 1,
                       "slo_confidence": 0.9}, candidates_from_results(_rows(with_curve=False), CATALOG))
    assert any("not a bound for a fresh run" in n for n in plain.notes)
