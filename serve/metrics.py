"""Request metrics of the HTTP service through `ray.util.metrics`.

Ray prefixes every name with `ray_`, so `benchmatch_serve_requests_total` is queried as
`ray_benchmatch_serve_requests_total`. Labels are bounded: `route` is one of ROUTES or `other`
(never the raw path, so that a scanner probing random URLs cannot blow up the series count).
Outside a Ray worker (the plain-uvicorn baseline of tests/perf/serve_load.py, unit tests) the
metrics are a no-op rather than an error.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

ROUTES = ("/recommend", "/pareto", "/plan", "/hardware", "/assets", "/healthz", "/docs", "/openapi.json", "/redoc")
OTHER = "other"

# name -> (kind, description, tag keys). docs/service.md lists the same table.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "benchmatch_serve_requests_total": (
        "counter", "HTTP requests answered by the service, by route, method and status code",
        ("route", "method", "status"),
    ),
    "benchmatch_serve_request_duration_seconds": (
        "histogram", "Time from the request reaching the replica to the last byte of the answer",
        ("route",),
    ),
    "benchmatch_serve_slo_violations_total": (
        "counter", "Requests slower than the service's latency objective (slo_ms)", ("route",),
    ),
    "benchmatch_serve_data_reloads_total": (
        "counter", "Times a replica reloaded its data after the results, models or catalog changed", (),
    ),
}
# Sub-millisecond for cached answers up to tens of seconds for a cold MILP with many options.
DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


def route_label(path: str) -> str:
    """The metric label of a request path: a known route, else `other`."""
    return path if path in ROUTES else OTHER


class Recorder(Protocol):
    def request(self, route: str, method: str, status: int, seconds: float, slo_s: float | None) -> None: ...

    def reloaded(self) -> None: ...


class NullMetrics:
    """Used where no Ray worker exists: recording is a no-op."""

    def request(self, route: str, method: str, status: int, seconds: float, slo_s: float | None) -> None:
        return None

    def reloaded(self) -> None:
        return None


class RequestMetrics:
    """The service's Prometheus metrics. Create inside a Ray worker (a Serve replica)."""

    def __init__(self) -> None:
        from ray.util import metrics as rm  # only meaningful inside a Ray worker

        self._m: dict[str, Any] = {}
        for name, (kind, desc, keys) in METRICS.items():
            if kind == "counter":
                self._m[name] = rm.Counter(name, description=desc, tag_keys=keys)
            else:
                self._m[name] = rm.Histogram(name, description=desc, boundaries=DURATION_BUCKETS, tag_keys=keys)

    def request(self, route: str, method: str, status: int, seconds: float, slo_s: float | None) -> None:
        self._m["benchmatch_serve_requests_total"].inc(
            1, tags={"route": route, "method": method, "status": str(status)}
        )
        self._m["benchmatch_serve_request_duration_seconds"].observe(seconds, tags={"route": route})
        if slo_s is not None and seconds > slo_s:
            self._m["benchmatch_serve_slo_violations_total"].inc(1, tags={"route": route})

    def reloaded(self) -> None:
        self._m["benchmatch_serve_data_reloads_total"].inc(1)


_lock = threading.Lock()
_recorder: Recorder | None = None


def recorder() -> Recorder:
    """The process's recorder: Ray metrics inside a Ray worker, else a no-op. Created once."""
    global _recorder
    if _recorder is None:
        with _lock:
            if _recorder is None:
                _recorder = _make()
    return _recorder


def _make() -> Recorder:
    try:
        import ray

        if ray.is_initialized():
            return RequestMetrics()
    except Exception:  # metrics must never take the service down
        pass
    return NullMetrics()
