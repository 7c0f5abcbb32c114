"""Drive a streaming system under test at offered arrival rates and summarise what it did.

The same code measures an in-process generator (local.py) and any OpenAI-compatible server
(endpoint.py): both take `run(request, on_chunk)`. Timestamps are taken where the client sees the
tokens (time.perf_counter when `on_chunk` runs), as vLLM's `bench serve` and GuideLLM do:

* TTFT: send to the first chunk with text;
* TPOT: (end-to-end - TTFT) / (output tokens - 1), per request (vLLM's definition);
* ITL: every gap between consecutive chunks;
* the window: first send to last completion; rates are completed counts over it;
* goodput: completed requests whose TTFT and TPOT both met the SLO, per second of the window.

A rate curve first sends every request at once (the Offline point: the most the system completes),
then Poisson arrivals at fractions of that rate; the highest rate within the SLO is the highest
measured rate at which p99 TTFT and p99 TPOT held, with every lower measured rate holding too, no
request failing, and the system keeping up (never extrapolated, never interpolated upwards).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from benchmarks.llm.workload import LLMRequest, LLMWorkload, arrival_times
from cluster.errors import BenchmatchError

KEEPS_UP = 0.9  # a point whose completion rate is below this share of the offered rate is saturated
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
WARMUP_RUN = 1_000_000  # the warm-up's prompts: ids no measured run sends


class ServingError(BenchmatchError, RuntimeError):
    """The system under test answered no request: the message says what the first one got."""


class StreamingSUT(Protocol):
    name: str

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def run(self, request: LLMRequest, on_chunk: Callable[[int], None]) -> int | None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SLO:
    """Per-request bounds goodput and the rate search judge by (None: that side unbounded)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"SLO {name} must be a positive number of milliseconds, got {v!r}")

    @property
    def bounded(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None


@dataclass
class RequestRecord:
    index: int
    input_tokens: int
    sent: float = 0.0
    chunks: list[float] = field(default_factory=list)
    end: float | None = None
    reported_tokens: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.end is not None and bool(self.chunks)

    @property
    def output_tokens(self) -> int:
        return self.reported_tokens if self.reported_tokens is not None else len(self.chunks)

    @property
    def ttft_ms(self) -> float:
        return (self.chunks[0] - self.sent) * 1e3

    @property
    def e2e_ms(self) -> float:
        return ((self.end or self.chunks[-1]) - self.sent) * 1e3

    @property
    def tpot_ms(self) -> float | None:
        n = self.output_tokens
        return (self.e2e_ms - self.ttft_ms) / (n - 1) if n >= 2 else None

    def itls_ms(self) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.chunks, self.chunks[1:], strict=False)]

    def meets(self, slo: SLO) -> bool:
        if not self.ok:
            return False
        if slo.ttft_ms is not None and self.ttft_ms > slo.ttft_ms:
            return False
        tpot = self.tpot_ms
        return slo.tpot_ms is None or tpot is None or tpot <= slo.tpot_ms


@dataclass
class RateRun:
    """One run at one offered rate (inf: everything at once)."""

    offered_rps: float
    records: list[RequestRecord]
    window_s: float
    window: Any = None  # benchmarks.sensors.WindowStats when measured in a MeasurementWindow

    def summary(self, slo: SLO) -> dict[str, Any]:
        """The run's result-row columns (results/schema.py, group "llm serving", plus latency_* as
        the end-to-end request latency)."""
        ok = [r for r in self.records if r.ok]
        w = self.window_s if self.window_s > 0 else float("nan")
        out_tokens = sum(r.output_tokens for r in ok)
        in_tokens = sum(r.input_tokens for r in ok)
        cols: dict[str, Any] = {
            "completed_requests": len(ok), "failed_requests": len(self.records) - len(ok),
            "requests_per_s": _rate(len(ok), w), "output_tokens_per_s": _rate(out_tokens, w),
            "total_tokens_per_s": _rate(out_tokens + in_tokens, w),
            "input_tokens_mean": _mean([r.input_tokens for r in self.records]),
            "output_tokens_mean": _mean([r.output_tokens for r in ok]),
            "goodput_requests_per_s": _rate(sum(r.meets(slo) for r in ok), w) if slo.bounded else None,
            "slo_ttft_ms": slo.ttft_ms, "slo_tpot_ms": slo.tpot_ms,
        }
        ttft = [r.ttft_ms for r in ok]
        tpot = [t for r in ok if (t := r.tpot_ms) is not None]
        itl = [g for r in ok for g in r.itls_ms()]
        e2e = [r.e2e_ms for r in ok]
        cols.update(_stats("ttft", ttft, (50, 90, 99)))
        cols.update(_stats("tpot", tpot, (50, 90, 99)))
        cols.update(_stats("itl", itl, (50, 99)))
        cols.update(_stats("latency", e2e, (50, 90, 95, 99, 999)))
        cols["throughput_samples_per_s"] = cols["requests_per_s"]
        cols["samples"] = len(ok)
        return cols

    def keeps_up(self) -> bool:
        """False when a backlog built up: the run (first send to last completion) took longer than
        its sending span plus one typical (median) request, divided by KEEPS_UP: the system fell
        behind its arrivals. A run that kept up sustained the offered rate."""
        if math.isinf(self.offered_rps):
            return True
        ok = [r for r in self.records if r.ok]
        if not ok:
            return False
        span = max(r.sent for r in self.records) - min(r.sent for r in self.records)
        typical = float(np.median([r.e2e_ms for r in ok])) / 1e3
        return self.window_s * KEEPS_UP <= span + typical

    def within(self, slo: SLO) -> bool:
        s = self.summary(slo)
        if s["failed_requests"] or not s["completed_requests"] or not self.keeps_up():
            return False
        if slo.ttft_ms is not None and not s["ttft_p99_ms"] <= slo.ttft_ms:
            return False
        return slo.tpot_ms is None or s["tpot_p99_ms"] is None or s["tpot_p99_ms"] <= slo.tpot_ms

    def point(self, slo: SLO) -> dict[str, Any]:
        s = self.summary(slo)
        keys = ("requests_per_s", "output_tokens_per_s", "goodput_requests_per_s", "ttft_p50_ms", "ttft_p99_ms",
                "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms", "latency_p99_ms")
        return {"offered_rps": None if math.isinf(self.offered_rps) else self.offered_rps,
                **{k: s[k] for k in keys}, "completed": s["completed_requests"], "failed": s["failed_requests"],
                "keeps_up": self.keeps_up(), "within_slo": self.within(slo)}


@dataclass
class LLMMeasurement:
    """A rate curve: the all-at-once run and the runs at offered rates, lowest first."""

    offline: RateRun
    points: list[RateRun]
    slo: SLO

    @property
    def max_rate_within_slo(self) -> float | None:
        best = None
        for run in self.points:  # lowest rate first: stop at the first rate that breaks the SLO
            if not run.within(self.slo):
                break
            best = run.offered_rps
        return best

    def server_run(self) -> RateRun | None:
        """The run whose figures a Server row carries: at the highest rate within the SLO, else the
        lowest rate measured."""
        best = self.max_rate_within_slo
        for run in self.points:
            if run.offered_rps == best:
                return run
        return self.points[0] if self.points else None

    def curve(self) -> list[dict[str, Any]]:
        return [run.point(self.slo) for run in self.points]


Observe = Callable[[RequestRecord], None]


async def _send(sut: StreamingSUT, rec: RequestRecord, request: LLMRequest, delay: float, timeout_s: float,
                observe: Observe | None = None) -> None:
    if delay > 0:
        await asyncio.sleep(delay)
    rec.sent = time.perf_counter()

    def on_chunk(_n: int) -> None:
        rec.chunks.append(time.perf_counter())

    try:
        rec.reported_tokens = await asyncio.wait_for(sut.run(request, on_chunk), timeout_s)
        rec.end = time.perf_counter()
        if not rec.chunks:
            rec.error = "the stream ended without any output"
    except asyncio.TimeoutError:
        rec.error = f"no complete answer within {timeout_s:g} s"
    except Exception as exc:  # one failed request is counted, not fatal
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    if observe is not None:
        try:
            observe(rec)
        except Exception as exc:  # a broken exporter must not fail the measurement
            print(f"benchmatch: live metrics failed ({exc}); measuring on", flush=True)


async def _drive(sut: StreamingSUT, requests: Sequence[LLMRequest], offsets: np.ndarray,
                 timeout_s: float, observe: Observe | None = None) -> tuple[list[RequestRecord], float]:
    records = [RequestRecord(r.index, r.input_tokens) for r in requests]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(_send(sut, rec, req, t0 + float(off) - time.perf_counter(), timeout_s, observe))
             for rec, req, off in zip(records, requests, offsets, strict=True)]
    await asyncio.gather(*tasks)
    ends = [r.end for r in records if r.end is not None]
    first = min((r.sent for r in records), default=t0)
    return records, (max(ends) - first) if ends else 0.0


async def run_rate(sut: StreamingSUT, requests: Sequence[LLMRequest], rate: float, seed: int,
                   burstiness: float = 1.0, timeout_s: float = 600.0,
                   window: Callable[[], AbstractContextManager[Any]] | None = None,
                   observe: Observe | None = None) -> RateRun:
    """Send `requests` at `rate` requests/s (inf: all at once) through an open `sut`."""
    offsets = arrival_times(rate, len(requests), seed, burstiness)
    ctx = window() if window is not None else nullcontext()
    with ctx as w:
        records, span = await _drive(sut, requests, offsets, timeout_s, observe)
    return RateRun(rate, records, span, getattr(w, "stats", None))


async def measure_curve(sut: StreamingSUT, workload: LLMWorkload, slo: SLO, rates: Sequence[float] | None = None,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, burstiness: float = 1.0,
                        timeout_s: float = 600.0, warmup: int = 2,
                        window: Callable[[], AbstractContextManager[Any]] | None = None,
                        progress: Callable[[str], None] | None = None, observe: Observe | None = None,
                        on_rate: Callable[[float], None] | None = None) -> LLMMeasurement:
    """The all-at-once run, then one run at each rate (given, or `fractions` of the all-at-once
    completion rate), lowest first. `warmup` requests go first, unmeasured. `observe` sees each
    measured request as it finishes and `on_rate` each run's offered rate (live metrics)."""
    say = progress or (lambda _m: None)
    rate_seen = on_rate or (lambda _r: None)
    async with sut:
        if warmup:
            await run_rate(sut, workload.requests(run=WARMUP_RUN)[:warmup], math.inf, workload.seed, timeout_s=timeout_s)
        rate_seen(math.inf)
        requests = workload.requests(run=0)
        offline = await run_rate(sut, requests, math.inf, workload.seed, timeout_s=timeout_s, window=window,
                                 observe=observe)
        say(f"all at once: {len(requests)} requests, {offline.summary(slo)['requests_per_s'] or 0:.3g} requests/s completed")
        points = []
        for i, rate in enumerate(curve_rates(offline, slo, rates, fractions, f"{sut.name}: when sent at once")):
            rate_seen(rate)
            run = await run_rate(sut, workload.requests(run=i + 1), rate, workload.seed, burstiness, timeout_s,
                                 window, observe)
            p = run.point(slo)
            say(f"{rate:.3g} requests/s offered: p99 TTFT {_fmt(p['ttft_p99_ms'])} ms, p99 TPOT "
                f"{_fmt(p['tpot_p99_ms'])} ms, {'within' if p['within_slo'] else 'outside'} the SLO")
            points.append(run)
    return LLMMeasurement(offline, points, slo)


def curve_rates(offline: RateRun, slo: SLO, rates: Sequence[float] | None, fractions: Sequence[float],
                what: str) -> list[float]:
    """The offered rates of a curve, lowest first: `rates`, else `fractions` of what the
    all-at-once run completed. A run in which nothing completed has no curve: a ServingError
    saying what the first request got."""
    capacity = offline.summary(slo)["requests_per_s"]
    if not capacity:
        first = offline.records[0].error if offline.records else "nothing was sent"
        raise ServingError(f"{what}: no request completed ({first or 'no output'}); nothing to measure a curve from")
    return sorted(rates) if rates is not None else [f * capacity for f in fractions]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _rate(n: float, window_s: float) -> float | None:
    return n / window_s if n and math.isfinite(window_s) and window_s > 0 else (0.0 if not n else None)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _stats(prefix: str, values: Sequence[float], pcts: Sequence[int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    arr = np.asarray(values, dtype=float)
    for p in pcts:
        q = 99.9 if p == 999 else p
        out[f"{prefix}_p{p}_ms"] = float(np.percentile(arr, q)) if arr.size else None
    out[f"{prefix}_mean_ms"] = float(arr.mean()) if arr.size else None
    return out
