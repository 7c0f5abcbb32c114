"""The LLM serving harness: request timings, rate curves, the rate within an SLO, result rows."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from benchmarks.llm.endpoint import OpenAIEndpoint, _chunk_text
from benchmarks.llm.harness import SLO, LLMMeasurement, RateRun, RequestRecord, measure_curve
from benchmarks.llm.rows import measurement_rows
from benchmarks.llm.workload import LengthDist, LLMWorkload, arrival_times
from results.schema import COLUMN_NAMES


def record(i: int, sent: float, chunks: list[float], tokens: int | None = None, error: str = "") -> RequestRecord:
    r = RequestRecord(i, 10, sent=sent, chunks=chunks, end=chunks[-1] if chunks else None, reported_tokens=tokens)
    r.error = error
    return r


def test_request_timings_follow_vllm_definitions():
    r = record(0, 1.0, [1.1, 1.15, 1.25, 1.30])  # 4 tokens: TTFT 100 ms, then 200 ms for 3 more
    assert r.ttft_ms == pytest.approx(100)
    assert r.e2e_ms == pytest.approx(300)
    assert r.tpot_ms == pytest.approx(200 / 3)
    assert r.itls_ms() == pytest.approx([50, 100, 50])
    # the server's own token count wins over the chunk count (a chunk may carry several tokens)
    assert record(0, 1.0, [1.1, 1.3], tokens=5).tpot_ms == pytest.approx(200 / 4)
    assert record(0, 1.0, [1.1]).tpot_ms is None  # one token has no time per output token


def test_summary_counts_goodput_failures_and_rates():
    recs = [record(0, 0.0, [0.05, 0.06, 0.07]),  # meets both bounds
            record(1, 0.1, [0.4, 0.41, 0.42]),  # TTFT 300 ms: over the 200 ms bound
            record(2, 0.2, [0.25, 0.45, 0.65]),  # TPOT 200 ms: over the 100 ms bound
            record(3, 0.3, [], error="HTTP 500")]
    run = RateRun(4.0, recs, window_s=0.65)
    s = run.summary(SLO(ttft_ms=200, tpot_ms=100))
    assert s["completed_requests"] == 3 and s["failed_requests"] == 1
    assert s["requests_per_s"] == pytest.approx(3 / 0.65)
    assert s["output_tokens_per_s"] == pytest.approx(9 / 0.65)
    assert s["goodput_requests_per_s"] == pytest.approx(1 / 0.65)
    assert s["ttft_p50_ms"] == pytest.approx(50)
    assert s["throughput_samples_per_s"] == s["requests_per_s"]
    assert not run.within(SLO(ttft_ms=1000, tpot_ms=1000))  # a failed request: not within any SLO
    assert RateRun(4.0, recs, 0.65).summary(SLO())["goodput_requests_per_s"] is None  # no SLO, no goodput


def _run(rate: float, ttft_s: float, n: int = 4) -> RateRun:
    recs = [record(i, i / rate, [i / rate + ttft_s, i / rate + ttft_s + 0.01]) for i in range(n)]
    return RateRun(rate, recs, window_s=(n - 1) / rate + ttft_s + 0.01)


def test_rate_within_slo_stops_at_the_first_rate_that_breaks_it():
    slo = SLO(ttft_ms=100)
    points = [_run(1, 0.05), _run(2, 0.08), _run(3, 0.2), _run(4, 0.05)]  # a noisy pass above a failure
    m = LLMMeasurement(_run(math.inf, 0.3), points, slo)
    assert m.max_rate_within_slo == 2
    assert m.server_run() is points[1]
    assert [p["within_slo"] for p in m.curve()] == [True, True, False, True]
    assert LLMMeasurement(points[0], [_run(1, 0.5)], slo).max_rate_within_slo is None


def test_a_backlog_is_not_keeping_up():
    ok = _run(2, 0.05)
    assert ok.keeps_up()
    late = [record(i, i / 2, [i / 2 + 0.05 + 2.0 * i]) for i in range(4)]  # each waits for all before it
    assert not RateRun(2, late, window_s=max(r.chunks[-1] for r in late)).keeps_up()


def test_workload_and_arrivals_are_seeded_and_have_the_asked_rate():
    w = LLMWorkload(LengthDist(64, 0.5), LengthDist(16), num_requests=200, seed=3)
    a, b = w.requests(), w.requests()
    assert a == b
    assert all(32 <= r.input_tokens <= 96 and r.max_tokens == 16 for r in a)
    t = arrival_times(50.0, 2000, seed=1)
    assert t[0] == 0 and np.all(np.diff(t) >= 0)
    assert (len(t) - 1) / t[-1] == pytest.approx(50.0, rel=0.1)
    assert not arrival_times(math.inf, 5, seed=1).any()
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="arrival rate"):
            arrival_times(bad, 3, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        LengthDist(0)


class FakeSUT:
    """Streams max_tokens chunks after a fixed first-token delay; every `fail`-th request errors."""

    name = "fake"

    def __init__(self, ttft_s: float = 0.004, gap_s: float = 0.001, fail: int = 0):
        self.ttft_s, self.gap_s, self.fail = ttft_s, gap_s, fail

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    def describe(self):
        return {"engine": "fake"}

    async def run(self, request, on_chunk):
        if self.fail and request.index % self.fail == self.fail - 1:
            raise RuntimeError("boom")
        await asyncio.sleep(self.ttft_s)
        on_chunk(1)
        for _ in range(request.max_tokens - 1):
            await asyncio.sleep(self.gap_s)
            on_chunk(1)
        return request.max_tokens


def test_measure_curve_drives_every_request_and_records_what_happened():
    w = LLMWorkload(LengthDist(8), LengthDist(4), num_requests=8, seed=0)
    m = asyncio.run(measure_curve(FakeSUT(), w, SLO(ttft_ms=10_000, tpot_ms=10_000), fractions=(0.5, 1.0), warmup=1))
    assert len(m.points) == 2 and m.points[0].offered_rps < m.points[1].offered_rps
    for run in (m.offline, *m.points):
        assert all(len(r.chunks) == 4 and r.ok for r in run.records)
        assert all(r.ttft_ms >= 4.0 for r in run.records)  # never earlier than the SUT's first token
    assert m.max_rate_within_slo == m.points[-1].offered_rps  # generous bounds: every rate holds
    failing = asyncio.run(measure_curve(FakeSUT(fail=4), w, SLO(ttft_ms=10_000), rates=[50.0], warmup=0))
    assert failing.points[0].summary(failing.slo)["failed_requests"] == 2
    assert "boom" in next(r.error for r in failing.points[0].records if r.error)
    assert failing.max_rate_within_slo is None


def test_rows_are_schema_rows_with_a_request_as_the_sample():
    w = LLMWorkload(LengthDist(8), LengthDist(4), num_requests=6, seed=0)
    m = asyncio.run(measure_curve(FakeSUT(), w, SLO(ttft_ms=10_000, tpot_ms=10_000), fractions=(0.5, 1.0), warmup=0))
    ids = {"sweep_id": "s", "repeat": 0, "asset": "fake-lm", "hardware": "local-1c", "price_per_hour_usd": 0.05}
    offline, server = measurement_rows(m, ids, {"engine": "fake", "output_len": 4})
    assert set(offline) == set(server) == set(COLUMN_NAMES) | {"cfg_engine", "cfg_output_len"}
    assert (offline["scenario"], server["scenario"]) == ("Offline", "Server")
    assert offline["sample_unit"] == server["sample_unit"] == "request"
    assert offline["trial_id"] == server["trial_id"] and offline["trial_id"].startswith("local-1c-")
    assert server["target_qps"] == pytest.approx(m.max_rate_within_slo)
    assert server["max_rate_within_slo_rps"] == pytest.approx(m.max_rate_within_slo)
    curve = json.loads(server["llm_curve"])
    assert [p["offered_rps"] for p in curve] == pytest.approx([r.offered_rps for r in m.points])
    assert offline["output_tokens_mean"] == 4 and offline["completed_requests"] == 6
    assert offline["cost_usd"] == pytest.approx(m.offline.window_s / 3600 * 0.05)


def test_endpoint_refuses_what_it_cannot_send_and_reads_both_apis():
    with pytest.raises(ValueError, match="http"):
        OpenAIEndpoint("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="api"):
        OpenAIEndpoint("http://127.0.0.1:8000/v1", "m", api="embeddings")
    assert OpenAIEndpoint("http://127.0.0.1:8000/v1", "m", api="chat").prompt_format == "text"
    assert _chunk_text({"choices": [{"text": "hi"}]}, "completions") == "hi"
    assert _chunk_text({"choices": [{"delta": {"content": "hi"}}]}, "chat") == "hi"
    assert _chunk_text({"choices": [], "usage": {"completion_tokens": 3}}, "completions") == ""


@pytest.mark.parametrize("args, names", [
    (["--asset", "gpt2", "--num-requests", "0"], "num_requests"),
    (["--asset", "gpt2", "--input-len", "-3"], "positive integer"),
    (["--asset", "gpt2", "--max-num-seqs", "0"], "--max-num-seqs"),
    (["--asset", "gpt2", "--burstiness", "0"], "--burstiness"),
    (["--asset", "gpt2", "--rates", "1,x"], "comma-separated"),
    (["--asset", "gpt2", "--rates", "inf"], "--rates"),
    (["--asset", "gpt2", "--slo-ttft-ms", "-5"], "ttft_ms"),
    (["--asset", "tiny-cnn"], "not generative"),
    (["--asset", "gpt2", "--config", "hidden=100", "--config", "heads=3"], "multiple of 'heads'"),
    (["--asset", "gpt2", "--config", "threads=0"], "threads"),
    (["--asset", "gpt2", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m"], "either --endpoint"),
    (["--endpoint", "http://127.0.0.1:9/v1"], "--model"),
    (["--endpoint", "127.0.0.1:9", "--model", "m"], "http"),
])
def test_llm_bench_refuses_bad_input_naming_it(args, names, capsys, tmp_path):
    from benchmatch.cli import main

    rc = main(["llm-bench", "--hardware", "local-1c", "--results", str(tmp_path / "store"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and names in err and "Traceback" not in err, err
    assert not (tmp_path / "store").exists()  # nothing written


def test_llm_bench_refuses_hardware_outside_the_catalog(capsys):
    from benchmatch.cli import main

    assert main(["llm-bench", "--asset", "gpt2", "--hardware", "tpu-v9", "--dry-run"]) == 2
    assert "tpu-v9" in capsys.readouterr().err


def _stream(lines: list[str], status: int = 200):
    import httpx

    body = "".join(f"{line}\n\n" for line in lines).encode()
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body,
                                                              headers={"content-type": "text/event-stream"}))


def _one(transport, max_tokens: int = 3) -> tuple[list[int], int | None]:
    from benchmarks.llm.workload import LLMRequest

    chunks: list[int] = []

    async def go():
        async with OpenAIEndpoint("http://127.0.0.1:9/v1", "m", transport=transport) as ep:
            return await ep.run(LLMRequest(0, (1, 2), max_tokens), chunks.append)

    return chunks, asyncio.run(go())


TEXT = 'data: {"choices": [{"text": "a"}]}'


def test_endpoint_counts_chunks_and_believes_only_a_possible_usage():
    assert _one(_stream([TEXT, TEXT, 'data: {"choices": [], "usage": {"completion_tokens": 3}}', "data: [DONE]"])) \
        == ([1, 1], 3)
    for bogus in (-7, 0, 10**300, 4):  # none of these can be the output of a 3-token request
        usage = f'data: {{"choices": [], "usage": {{"completion_tokens": {bogus}}}}}'
        assert _one(_stream([TEXT, usage, "data: [DONE]"])) == ([1], None)
    assert _one(_stream([TEXT, 'data: {"choices": [{"text": "b"}], "error": null}', "data: [DONE]"]))[0] == [1, 1]


@pytest.mark.parametrize("lines, says", [
    (["data: not json", "data: [DONE]"], "not JSON"),
    (["data: 5", "data: [DONE]"], "int where a JSON object"),
    ([TEXT, 'data: {"error": {"message": "overloaded"}}', "data: [DONE]"], "overloaded"),
    ([TEXT, TEXT], r"before \[DONE\]"),
    (['data: {"choices": {"0": {"text": "x"}}}', "data: [DONE]"], None),  # odd shape: no text, no crash
])
def test_a_hostile_stream_is_a_named_failure_not_a_crash(lines, says):
    from benchmarks.llm.endpoint import EndpointError

    if says is None:
        assert _one(_stream(lines)) == ([], None)
        return
    with pytest.raises(EndpointError, match=says):
        _one(_stream(lines))


def test_an_error_status_reads_only_the_start_of_the_body():
    from benchmarks.llm.endpoint import EndpointError

    with pytest.raises(EndpointError, match="HTTP 503") as err:
        _one(_stream(["x" * 100_000], status=503))
    assert len(str(err.value)) < 500


def test_credentials_and_keys_do_not_travel_where_they_should_not(monkeypatch):
    with pytest.raises(ValueError, match="credentials"):
        OpenAIEndpoint("http://user:s3cret@127.0.0.1:8000/v1", "m")
    monkeypatch.setenv("MY_KEY", "sk-test")
    with pytest.raises(ValueError, match="clear text"):
        OpenAIEndpoint("http://example.com/v1", "m", api_key_env="MY_KEY")
    OpenAIEndpoint("https://example.com/v1", "m", api_key_env="MY_KEY")
    OpenAIEndpoint("http://127.0.0.1:8000/v1", "m", api_key_env="MY_KEY")
    with pytest.raises(ValueError, match="not set"):
        OpenAIEndpoint("https://example.com/v1", "m", api_key_env="NO_SUCH_VARIABLE_SET")
    assert OpenAIEndpoint("http://127.0.0.1:8000/v1", "m").api_key_env is None  # no key unless asked


def test_each_run_sends_fresh_prompts_of_the_same_lengths():
    w = LLMWorkload(LengthDist(32, 0.5), LengthDist(8), num_requests=10, seed=4)
    a, b = w.requests(run=0), w.requests(run=1)
    assert [r.input_tokens for r in a] == [r.input_tokens for r in b]
    assert all(x.prompt_tokens != y.prompt_tokens for x, y in zip(a, b, strict=True))
    text = OpenAIEndpoint("http://127.0.0.1:9/v1", "m", prompt_format="text")._body(a[0])["prompt"]
    assert len(text.split()) == a[0].input_tokens and len(set(text.split())) > 1


def test_a_request_given_up_on_frees_its_slot_in_the_local_generator():
    import torch

    from benchmarks.assets.gpt2 import GPT2
    from benchmarks.llm.local import LocalGenerator
    from benchmarks.llm.workload import LLMRequest

    asset = GPT2()
    model = asset.build({"layers": 1, "hidden": 32, "heads": 2, "vocab": 100})
    torch.set_num_threads(1)

    async def go():
        async with LocalGenerator(asset, model, max_num_seqs=1) as gen:
            long_chunks: list[int] = []
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(gen.run(LLMRequest(0, (1, 2, 3), 100_000), long_chunks.append), 0.2)
            seen = len(long_chunks)
            short: list[int] = []
            await asyncio.wait_for(gen.run(LLMRequest(1, (4, 5), 3), short.append), 30)
            return seen, len(long_chunks), short

    seen, later, short = asyncio.run(go())
    assert short == [1, 1, 1]  # served, not stuck behind the abandoned request
    assert later - seen <= 2  # the abandoned one stopped decoding (a step in flight may land)


def test_llm_bench_adds_repeats_instead_of_replacing_earlier_ones(tmp_path):
    from benchmarks.llm.bench import store_rows
    from results.store import ResultsStore

    w = LLMWorkload(LengthDist(8), LengthDist(4), num_requests=4, seed=0)
    m = asyncio.run(measure_curve(FakeSUT(), w, SLO(ttft_ms=10_000), fractions=(1.0,), warmup=0))
    ids = {"sweep_id": "s", "repeat": 0, "asset": "fake-lm", "hardware": "local-1c"}
    store = ResultsStore(str(tmp_path / "store"))
    store_rows(store, [measurement_rows(m, ids, {"engine": "fake"})])
    store_rows(store, [measurement_rows(m, ids, {"engine": "fake"})])
    assert sorted(r for _, r in store.done("s")) == [0, 1]
