"""Live LLM serving metrics while `llm-bench` runs: a Prometheus endpoint on 127.0.0.1 that
Prometheus scrapes (`benchmatch-extra` job, or your own static target) and the Grafana dashboard
cluster/grafana/dashboards/benchmatch-llm.json draws (TTFT, TPOT, tokens/s, goodput, offered rate).

Per request, as it finishes: its TTFT and TPOT into histograms, its output tokens and its outcome
into counters; per run, the offered rate. Names carry their unit; docs/metrics.md lists them.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("run", "asset", "hardware")
# 1 ms .. 60 s: a TTFT spans a CPU toy to a long prompt on a busy server; TPOT 0.5 ms .. 2 s.
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2)

METRICS: dict[str, str] = {
    "benchmatch_llm_ttft_seconds": "Time to first token of each finished request",
    "benchmatch_llm_tpot_seconds": "Time per output token after the first, of each finished request",
    "benchmatch_llm_output_tokens_total": "Output tokens of finished requests",
    "benchmatch_llm_requests_total": "Finished requests by outcome (ok, failed, slo_met)",
    "benchmatch_llm_offered_rate_requests_per_second": "Arrival rate offered by the current run (0: all at once)",
}


class LiveLLMMetrics:
    """One llm-bench run's exporter; `observe` is the harness's per-request hook."""

    def __init__(self, port: int, run: str, asset: str, hardware: str, slo: Any = None):
        self.registry = CollectorRegistry()
        self.labels = {"run": run, "asset": asset, "hardware": hardware}
        self.slo = slo
        self.ttft = Histogram("benchmatch_llm_ttft_seconds", METRICS["benchmatch_llm_ttft_seconds"], LABELS,
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.tpot = Histogram("benchmatch_llm_tpot_seconds", METRICS["benchmatch_llm_tpot_seconds"], LABELS,
                              buckets=TPOT_BUCKETS, registry=self.registry)
        self.tokens = Counter("benchmatch_llm_output_tokens", METRICS["benchmatch_llm_output_tokens_total"], LABELS,
                              registry=self.registry)
        self.requests = Counter("benchmatch_llm_requests", METRICS["benchmatch_llm_requests_total"],
                                (*LABELS, "outcome"), registry=self.registry)
        self.offered = Gauge("benchmatch_llm_offered_rate_requests_per_second",
                             METRICS["benchmatch_llm_offered_rate_requests_per_second"], LABELS, registry=self.registry)
        # loopback only: a benchmark client has no business exposing itself
        self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def rate(self, offered_rps: float) -> None:
        self.offered.labels(**self.labels).set(0.0 if math.isinf(offered_rps) else offered_rps)

    def observe(self, record: Any) -> None:
        if not record.ok:
            self.requests.labels(**self.labels, outcome="failed").inc()
            return
        self.requests.labels(**self.labels, outcome="ok").inc()
        if self.slo is not None and self.slo.bounded and record.meets(self.slo):
            self.requests.labels(**self.labels, outcome="slo_met").inc()
        self.ttft.labels(**self.labels).observe(record.ttft_ms / 1e3)
        if record.tpot_ms is not None:
            self.tpot.labels(**self.labels).observe(record.tpot_ms / 1e3)
        self.tokens.labels(**self.labels).inc(record.output_tokens)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
