"""The in-process generator driven by MLPerf LoadGen in its token-latency mode.

LoadGen issues the queries (Offline: all at once; Server: Poisson arrivals at `server_target_qps`,
its own scheduler, minimum duration and query count) with `use_token_latencies`, and the SUT tells
it each request's first token (`FirstTokenComplete`) and its output token count at the end, as
MLPerf's LLM benchmarks do. LoadGen then reports its own TTFT and TPOT percentiles and its verdict
against `ttft_latency` / `tpot_latency` (early stopping included). The same requests are timed by
this module as the harness times any SUT (RequestRecord), so a row carries benchmatch's columns and
LoadGen's verdict and log folder side by side.

LoadGen calls `issue` on its own thread; the generator runs on an asyncio loop in another thread.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.llm.harness import SLO, LLMMeasurement, RateRun, RequestRecord, curve_rates
from benchmarks.llm.local import LocalGenerator
from benchmarks.llm.workload import LLMRequest, LLMWorkload

_NUMBER = r"([0-9.eE+-]+)"
UNBOUNDED_NS = 10**15  # about 11.6 days: no bound


def _summary(path: Path) -> dict[str, Any]:
    """LoadGen's verdict and token latencies from mlperf_log_summary.txt (ms)."""
    text = path.read_text() if path.is_file() else ""
    out: dict[str, Any] = {}
    m = re.search(r"Result is\s*:\s*(\w+)", text)
    out["loadgen_result"] = m.group(1) if m else ""
    for key, pattern in (("ttft_p50", r"50\.00 percentile first token latency \(ns\)\s*:\s*"),
                         ("ttft_p99", r"99\.00 percentile first token latency \(ns\)\s*:\s*"),
                         ("tpot_p50", r"50\.00 percentile time to output token \(ns\)\s*:\s*"),
                         ("tpot_p99", r"99\.00 percentile time to output token \(ns\)\s*:\s*")):
        m = re.search(pattern + _NUMBER, text)
        out[f"loadgen_{key}_ms"] = float(m.group(1)) / 1e6 if m else None
    return out


class _LoadGenSUT:
    """Bridges LoadGen's issue thread to the generator's event loop, timing every query."""

    def __init__(self, gen: LocalGenerator, loop: asyncio.AbstractEventLoop, requests: Sequence[LLMRequest],
                 timeout_s: float):
        self.gen, self.loop, self.requests, self.timeout_s = gen, loop, requests, timeout_s
        self.records: list[RequestRecord] = []
        self.lock = threading.Lock()
        self.pending = 0
        self.idle = threading.Event()
        self.idle.set()

    def issue(self, query_samples: Sequence[Any]) -> None:
        import mlperf_loadgen as lg

        for qs in query_samples:
            request = self.requests[qs.index]
            rec = RequestRecord(len(self.records), request.input_tokens, sent=time.perf_counter())
            with self.lock:
                self.records.append(rec)
                self.pending += 1
                self.idle.clear()

            def on_chunk(_n: int, rec: RequestRecord = rec, qid: int = qs.id) -> None:
                rec.chunks.append(time.perf_counter())
                if len(rec.chunks) == 1:
                    lg.FirstTokenComplete([lg.QuerySampleResponse(qid, 0, 0)])

            def done(f: Any, rec: RequestRecord = rec, qid: int = qs.id) -> None:
                rec.end = time.perf_counter()
                try:
                    rec.reported_tokens = int(f.result())
                except Exception as exc:  # counted as a failed request; LoadGen still gets its answer
                    rec.error = f"{type(exc).__name__}: {exc}"[:300]
                lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0, max(rec.output_tokens, 1))])
                with self.lock:
                    self.pending -= 1
                    if not self.pending:
                        self.idle.set()

            # a stuck request is answered as failed after the timeout, so LoadGen never waits forever
            coro = asyncio.wait_for(self.gen.run(request, on_chunk), self.timeout_s)
            asyncio.run_coroutine_threadsafe(coro, self.loop).add_done_callback(done)

    def flush(self) -> None:
        pass


def _run(gen: LocalGenerator, loop: asyncio.AbstractEventLoop, requests: Sequence[LLMRequest], rate: float,
         slo: SLO, log_dir: Path, min_duration_ms: int, min_queries: int,
         timeout_s: float) -> tuple[RateRun, dict[str, Any]]:
    import mlperf_loadgen as lg

    bridge = _LoadGenSUT(gen, loop, requests, timeout_s)
    sut = lg.ConstructSUT(bridge.issue, bridge.flush)
    qsl = lg.ConstructQSL(len(requests), len(requests), lambda _s: None, lambda _s: None)
    settings = lg.TestSettings()
    settings.mode = lg.TestMode.PerformanceOnly
    settings.use_token_latencies = True
    settings.min_duration_ms = min_duration_ms
    settings.min_query_count = min_queries
    if math.isinf(rate):
        settings.scenario = lg.TestScenario.Offline
        settings.offline_expected_qps = max(1.0, len(requests) / 2)
    else:
        settings.scenario = lg.TestScenario.Server
        settings.server_target_qps = rate
        # LoadGen's own defaults (100 ms each) would judge a side the request left unbounded
        settings.ttft_latency = int(slo.ttft_ms * 1e6) if slo.ttft_ms is not None else UNBOUNDED_NS
        settings.tpot_latency = int(slo.tpot_ms * 1e6) if slo.tpot_ms is not None else UNBOUNDED_NS
    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    bridge.idle.wait(timeout=timeout_s + 60)
    recs = bridge.records
    ends = [r.end for r in recs if r.end is not None]
    window = (max(ends) - min(r.sent for r in recs)) if ends else 0.0
    verdict = _summary(log_dir / "mlperf_log_summary.txt")
    verdict["loadgen_log_dir"] = str(log_dir)
    return RateRun(rate, recs, window), verdict


def measure_curve_loadgen(gen: LocalGenerator, workload: LLMWorkload, slo: SLO, fractions: Sequence[float],
                          rates: Sequence[float] | None, log_dir: Path, min_duration_ms: int = 2000,
                          say: Any = None, timeout_s: float = 600.0) -> tuple[LLMMeasurement, list[dict[str, Any]]]:
    """LoadGen Offline, then LoadGen Server at each rate; the measurement and LoadGen's verdict
    per run (the Offline one first)."""
    say = say or (lambda _m: None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="benchmatch-llm-loadgen", daemon=True)
    thread.start()
    verdicts = []
    try:
        asyncio.run_coroutine_threadsafe(gen.__aenter__(), loop).result()
        n = workload.num_requests
        offline, v = _run(gen, loop, workload.requests(run=0), math.inf, slo, log_dir / "offline", 0, n, timeout_s)
        verdicts.append(v)
        say(f"LoadGen Offline: {offline.summary(slo)['requests_per_s'] or 0:.3g} requests/s completed "
            f"({v['loadgen_result'] or 'no verdict'})")
        points = []
        for i, rate in enumerate(curve_rates(offline, slo, rates, fractions, f"{gen.name}: in LoadGen's Offline run")):
            run, v = _run(gen, loop, workload.requests(run=i + 1), rate, slo, log_dir / f"server-{rate:.4g}",
                          min_duration_ms, n, timeout_s)
            verdicts.append(v)
            points.append(run)
            say(f"LoadGen Server at {rate:.3g} requests/s: {v['loadgen_result']}, LoadGen p99 TTFT "
                f"{v['loadgen_ttft_p99_ms'] or float('nan'):.3g} ms, p99 TPOT {v['loadgen_tpot_p99_ms'] or float('nan'):.3g} ms")
        return LLMMeasurement(offline, points, slo), verdicts
    finally:
        asyncio.run_coroutine_threadsafe(gen.__aexit__(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def apply_verdicts(rows: list[dict[str, Any]], m: LLMMeasurement, verdicts: list[dict[str, Any]]) -> None:
    """LoadGen's verdict and log folder into the rows of `measurement_rows` (Offline, then Server at
    the run it reports); an INVALID run is flagged, as the core flags one."""
    runs = [m.offline, *m.points]
    server = m.server_run()
    for row in rows:
        run = m.offline if row["scenario"] == "Offline" else server
        v = verdicts[runs.index(run)] if run in runs else {}
        row["loadgen_result"] = v.get("loadgen_result", "")
        row["loadgen_log_dir"] = v.get("loadgen_log_dir", "")
        if row["loadgen_result"] == "INVALID":
            row["flags"] = ",".join([f for f in row["flags"].split(",") if f] + ["loadgen_invalid"])
