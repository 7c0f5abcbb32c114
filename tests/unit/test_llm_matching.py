"""Matching on LLM serving rows: TTFT / TPOT bounds read off the rate curve, request-rate and
tokens/s demands, $/1M output tokens, and clear refusals where the data is not LLM serving."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.llm.harness import SLO, LLMMeasurement, RateRun, RequestRecord
from benchmarks.llm.rows import measurement_rows
from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from matcher.errors import RequirementsError
from matcher.recommend import recommend
from matcher.requirements import parse_requirements
from results.importer import import_file
from results.store import ResultsStore

TOKENS = 100  # output tokens of every request


def _run(rate: float, ttft_ms: float, n: int = 20) -> RateRun:
    """n requests at `rate`, each with the given TTFT and 100 tokens in the next 495 ms (TPOT 5 ms)."""
    recs = []
    for i in range(n):
        sent = i / rate
        first = sent + ttft_ms / 1e3
        recs.append(RequestRecord(i, 50, sent=sent, chunks=[first, first + 0.495], end=first + 0.495,
                                  reported_tokens=TOKENS))
    # first send to last completion: the sending span plus draining the last request, as measured
    return RateRun(rate, recs, window_s=(n - 1) / rate + ttft_ms / 1e3 + 0.495)


def _rows(hardware: str, price: float, curve: list[tuple[float, float]]) -> list[dict]:
    m = LLMMeasurement(_run(float("inf"), curve[-1][1] * 2), [_run(r, t) for r, t in curve], SLO(ttft_ms=1e6))
    ids = {"sweep_id": "llm", "repeat": 0, "asset": "chat-lm", "hardware": hardware, "price_per_hour_usd": price,
           "device_count": 1}
    return measurement_rows(m, ids, {"engine": "vllm", "output_len": TOKENS})


@pytest.fixture(scope="module")
def cands() -> pd.DataFrame:
    rows = (_rows("small-gpu", 0.1, [(10, 20), (20, 40), (30, 80), (40, 160)])
            + _rows("big-gpu", 0.3, [(40, 20), (80, 30), (120, 50), (160, 90)]))
    return candidates_from_results(pd.DataFrame(rows), {}, "chat-lm")


def _best(cands: pd.DataFrame, constraints: dict, **kw) -> dict:
    ans = recommend({"asset": "chat-lm", "constraints": constraints} | kw, cands)
    assert ans.feasible, ans.diagnosis
    return ans.options[0].model_dump(by_alias=True)


def test_ttft_bound_sizes_from_the_curve_and_tokens_demand_is_met_in_tokens(cands):
    # TTFT <= 50 ms: small-gpu holds 20 req/s (40 ms), breaks at 30 (80 ms): 22.5 by the chord; big-gpu 120.
    best = _best(cands, {"ttft_p99_ms": 50, "output_tokens_per_s": 9000})
    assert best["hardware"] == {"big-gpu": 1}
    assert best["predicted"]["output_tokens_per_s"] == pytest.approx(120 * TOKENS)
    assert best["predicted"]["usd_per_million_output_tokens"] == pytest.approx(0.3 / (12000 * 3600) * 1e6)
    assert best["predicted"]["ttft_p99_ms"] <= 50
    # Tighter: small-gpu 12.5 req/s (8 replicas, $0.8/h), big-gpu 60 req/s (2 replicas, $0.6/h).
    best = _best(cands, {"ttft_p99_ms": 25, "output_tokens_per_s": 12000})
    assert best["hardware"] == {"big-gpu": 2}
    only_small = _best(cands, {"ttft_p99_ms": 25, "output_tokens_per_s": 12000}, inventory={"big-gpu": 0})
    assert only_small["hardware"] == {"small-gpu": 10}  # 12000 / (12.5 x 100) = 9.6
    assert only_small["predicted"]["output_tokens_per_s"] == pytest.approx(10 * 1250)


def test_request_rate_demand_and_tpot_bound(cands):
    best = _best(cands, {"ttft_p99_ms": 50, "requests_per_s": 100}, inventory={"big-gpu": 0})
    assert best["hardware"] == {"small-gpu": 5}  # 22.5 req/s each
    assert best["predicted"]["throughput_qps"] == pytest.approx(5 * 22.5)
    assert _best(cands, {"tpot_p99_ms": 6, "requests_per_s": 100})["predicted"]["tpot_p99_ms"] <= 6
    ans = recommend({"asset": "chat-lm", "constraints": {"tpot_p99_ms": 4, "requests_per_s": 1}}, cands)
    assert not ans.feasible  # every request spends 5 ms a token


def test_infeasible_tokens_demand_is_diagnosed_in_its_own_field(cands):
    ans = recommend({"asset": "chat-lm", "constraints": {"ttft_p99_ms": 50, "output_tokens_per_s": 20000},
                     "inventory": {"big-gpu": 1, "small-gpu": 2}}, cands)
    assert not ans.feasible
    fields = [r.field for r in ans.diagnosis.relaxations]
    assert "constraints.output_tokens_per_s" in fields and "constraints.throughput_qps" not in fields
    relax = next(r for r in ans.diagnosis.relaxations if r.field == "constraints.output_tokens_per_s")
    assert relax.to == pytest.approx(12000 + 2 * 2250, rel=1e-6)


def test_llm_bounds_and_demands_are_refused_on_data_that_is_not_llm_serving():
    classifier = pd.DataFrame({"hardware": ["a"], "price_per_hour_usd": [1.0], "throughput_qps": [100.0],
                               "latency_p99_ms": [5.0], "accuracy": [0.9]})
    with pytest.raises(RequirementsError, match=r"constraints\.ttft_p99_ms"):
        recommend({"constraints": {"ttft_p99_ms": 100}}, classifier)
    with pytest.raises(RequirementsError, match=r"constraints\.output_tokens_per_s"):
        recommend({"constraints": {"output_tokens_per_s": 100}}, classifier)
    with pytest.raises(RequirementsError, match="one demand"):
        parse_requirements({"constraints": {"output_tokens_per_s": 100, "requests_per_s": 2}})


# ---- imported runs at several load levels are one curve (matcher.capacity.fold_load_levels)

ROOT = Path(__file__).resolve().parents[2]
HW = "H100-SXM"
CATALOG = {HW: HardwareSpec(HW, "H100", device_count=1, price_per_hour_usd=6.88, price_source="test")}


def _imported(tmp_path, *files: tuple[str, str]) -> pd.DataFrame:
    store = tmp_path / "store"
    for example, mapping in files:
        report = import_file(ROOT / "configs/examples/llm" / example, ROOT / "configs/mappings" / mapping,
                             results_uri=store, catalog=CATALOG, constants={"hardware": HW})
        assert report.ok
    return ResultsStore(store).read()


def test_a_guidellm_sweep_is_one_candidate_sized_from_its_rate_curve(tmp_path):
    rows = _imported(tmp_path, ("guidellm-sweep.json", "guidellm-report.yaml"))
    assert len(rows) == 4  # synchronous, throughput (Offline), constant 16.4 and 31.6
    cands = candidates_from_results(rows, CATALOG, rows["asset"].iloc[0])
    assert len(cands) == 1 and "cfg_strategy" not in cands and "cfg_request_rate" not in cands
    best = _best(cands, {"ttft_p99_ms": 200, "requests_per_s": 100}, asset=rows["asset"].iloc[0])
    # 16.4 req/s held p99 TTFT 88.9 ms; 31.6 broke 200 ms and had failed requests (not a valid point),
    # so a replica is promised the 16.31 req/s it completed at 16.4, never an extrapolation.
    assert best["hardware"] == {HW: 7}
    assert best["predicted"]["throughput_qps"] == pytest.approx(7 * 16.31)
    assert best["predicted"]["ttft_p99_ms"] == pytest.approx(88.9)


def test_folded_load_levels_are_read_by_the_chord_between_valid_points():
    base = {"sweep_id": "imp", "asset": "m", "hardware": HW, "task": "infer", "status": "ok", "sample_unit": "request",
            "price_per_hour_usd": 6.88, "cfg_engine": "vllm", "output_tokens_mean": 100.0, "failed_requests": 0}
    rows = pd.DataFrame([
        {**base, "trial_id": "a", "repeat": 0, "scenario": "Offline", "throughput_samples_per_s": 50.0,
         "requests_per_s": 50.0, "output_tokens_per_s": 5000.0, "ttft_p99_ms": 4000.0},
        {**base, "trial_id": "b", "repeat": 0, "scenario": "Server", "cfg_request_rate": 10.0, "target_qps": 10.0,
         "throughput_samples_per_s": 10.0, "requests_per_s": 10.0, "ttft_p99_ms": 100.0},
        {**base, "trial_id": "c", "repeat": 0, "scenario": "Server", "cfg_request_rate": 30.0, "target_qps": 30.0,
         "throughput_samples_per_s": 30.0, "requests_per_s": 30.0, "ttft_p99_ms": 300.0},
    ])
    cands = candidates_from_results(rows, CATALOG, "m")
    assert len(cands) == 1
    best = _best(cands, {"ttft_p99_ms": 200, "output_tokens_per_s": 4000}, asset="m")
    assert best["predicted"]["output_tokens_per_s"] / sum(best["hardware"].values()) == pytest.approx(2000)
    assert best["hardware"] == {HW: 2}  # 20 req/s x 100 tokens a replica, halfway up the chord


def test_a_run_that_kept_up_is_read_at_its_offered_rate_not_its_drained_completion_rate(cands):
    run = _run(10, 20)
    assert run.keeps_up() and run.summary(SLO())["requests_per_s"] < 9  # 20 requests over 2.4 s
    best = _best(cands, {"ttft_p99_ms": 25, "requests_per_s": 10}, inventory={"big-gpu": 0})
    assert best["hardware"] == {"small-gpu": 1}  # 12.5 req/s by the chord from 10 (20 ms) to 20 (40 ms)


def test_pareto_and_suggest_refuse_llm_fields_on_classifier_data_and_plans_name_the_demand(cands):
    from matcher.pareto import pareto_answer
    from matcher.recommend import recommend_plan

    classifier = pd.DataFrame({"hardware": ["a"], "price_per_hour_usd": [1.0], "throughput_qps": [100.0],
                               "latency_p99_ms": [5.0], "accuracy": [0.9]})
    with pytest.raises(RequirementsError, match=r"constraints\.output_tokens_per_s"):
        pareto_answer(parse_requirements({"constraints": {"output_tokens_per_s": 1000}}), classifier)
    plan = {"workloads": [{"asset": "chat-lm", "constraints": {"ttft_p99_ms": 50, "output_tokens_per_s": 20000}}],
            "inventory": {"big-gpu": 1, "small-gpu": 2}}
    ans = recommend_plan(plan, [cands])
    assert not ans.feasible
    text = ans.diagnosis.model_dump_json()
    assert "throughput_qps" not in text and "samples/s" not in text
    assert any(r.field == "workloads.0.constraints.output_tokens_per_s" for r in ans.diagnosis.relaxations)
    ok = recommend_plan({"workloads": [{"asset": "chat-lm", "constraints": {"output_tokens_per_s": 100}}]}, [cands])
    assert ok.feasible and "throughput_qps" not in ok.workloads[0].option.binding


def test_a_curve_without_the_default_statistic_is_read_without_bounds():
    from matcher.capacity import read_curve

    curve = [{"offered_qps": 10, "completed_qps": 10, "ttft_p99_ms": 50}, {"offered_qps": 30, "completed_qps": 30,
                                                                            "ttft_p99_ms": 90}]
    assert read_curve(curve, {}).rate == 30  # no bound: the heaviest valid point
    assert read_curve(curve, {"ttft_p99_ms": 70}).rate == pytest.approx(20)
