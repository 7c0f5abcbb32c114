"""Matching on LLM serving rows: TTFT / TPOT bounds read off the rate curve, request-rate and
tokens/s demands, $/1M output tokens, and clear refusals where the data is not LLM serving."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.llm.harness import SLO, LLMMeasurement, RateRun, RequestRecord
from benchmarks.llm.rows import measurement_rows
from matcher.candidates import candidates_from_results
from matcher.errors import RequirementsError
from matcher.recommend import recommend
from matcher.requirements import parse_requirements

TOKENS = 100  # output tokens of every request


def _run(rate: float, ttft_ms: float, n: int = 20) -> RateRun:
    """n requests at `rate`, each with the given TTFT and 100 tokens in the next 495 ms (TPOT 5 ms)."""
    recs = []
    for i in range(n):
        sent = i / rate
        first = sent + ttft_ms / 1e3
        recs.append(RequestRecord(i, 50, sent=sent, chunks=[first, first + 0.495], end=first + 0.495,
                                  reported_tokens=TOKENS))
    return RateRun(rate, recs, window_s=n / rate)


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
    ans = recommend({"asset": "chat-lm", "constraints": constraints, **kw}, cands)
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
