"""Latency-bounded Server throughput: the search on its own, then through real LoadGen Server runs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from benchmarks import loadgen_harness as lgh
from benchmarks.core import run_trial
from benchmarks.spec import LoadGenSettings, TrialSpec
from cluster.hardware import HardwareSpec

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.1, price_source="test")


def fake_run(p99_ms: float, verdict: bool | None = None) -> lgh.LoadGenRun:
    details = {} if verdict is None else {"result_perf_constraints_met": verdict}
    return lgh.LoadGenRun(scenario="Server", mode="PerformanceOnly", validity="INVALID",
                          latency_ns={"p99": p99_ms * 1e6}, throughput_samples_per_s=1.0, samples=1,
                          samples_per_query=1, query_count=1, target_qps=None, log_dir="", details=details)


def capacity_probe(peak: float, tried: list[float]):
    """A SUT that keeps p99 within 10 ms exactly up to `peak` QPS."""
    def probe(qps: float):
        tried.append(qps)
        return fake_run(5.0 if qps <= peak else 50.0), None
    return probe


@pytest.mark.parametrize("start", [50.0, 390.0, 3000.0])
def test_search_brackets_then_bisects_to_the_peak(start):
    tried: list[float] = []
    search = lgh.search_server_peak(capacity_probe(400.0, tried), start, 10.0, max_probes=12, tolerance=0.05)
    assert search.max_qps is not None and 400 / 1.05 <= search.max_qps <= 400
    assert search.best.passed and search.best.target_qps == search.max_qps
    assert len(search.probes) == len(tried) <= 12
    # every probe after bracketing lies strictly inside the bracket known at that time
    assert all(p.passed == (p.target_qps <= 400) for p in search.probes)


def test_search_respects_max_probes_and_reports_no_peak_when_nothing_passes():
    tried: list[float] = []
    search = lgh.search_server_peak(capacity_probe(0.0, tried), 100.0, 10.0, max_probes=5)
    assert len(tried) == 5 and tried == [100.0, 50.0, 25.0, 12.5, 6.25]
    assert search.best is None and search.max_qps is None


def test_noise_never_inverts_the_bracket():
    outcomes = iter([True, False, False, True, False, True])  # a lucky pass after failures

    def probe(qps):
        return fake_run(1.0 if next(outcomes) else 99.0), None

    search = lgh.search_server_peak(probe, 100.0, 10.0, max_probes=6, tolerance=0.01)
    passed = [p.target_qps for p in search.probes if p.passed]
    failed = [p.target_qps for p in search.probes if not p.passed]
    assert search.max_qps == max(passed) < min(failed)


def test_loadgen_verdict_decides_over_p99():
    assert lgh.server_probe_passed(fake_run(30.0, verdict=True), 20.0)
    assert not lgh.server_probe_passed(fake_run(5.0, verdict=False), 20.0)
    assert lgh.server_probe_passed(fake_run(5.0), 20.0) and not lgh.server_probe_passed(fake_run(25.0), 20.0)


def test_search_setting_defaults():
    assert not LoadGenSettings().searches_server
    assert LoadGenSettings(server_latency_bound_ms=20).searches_server
    assert not LoadGenSettings(server_latency_bound_ms=20, server_target_qps=100).searches_server  # a fixed load
    assert LoadGenSettings(server_latency_bound_ms=20, server_target_qps=100, server_search=True).searches_server
    assert not LoadGenSettings(server_latency_bound_ms=20, server_search=False).searches_server
    with pytest.raises(ValueError, match="server_search needs server_latency_bound_ms"):
        LoadGenSettings(server_search=True)


SERVICE_S = 0.002  # one sample at a time: capacity 500 QPS


def sleeping_predict(batch: torch.Tensor) -> np.ndarray:
    # sleep, not a busy loop: it releases the GIL, so LoadGen's issuing thread is never starved and
    # the service time holds on a shared 2-core machine
    time.sleep(SERVICE_S * len(batch))
    return np.zeros(len(batch), dtype=np.int64)


def test_real_loadgen_search_finds_a_plausible_peak(tmp_path):
    qsl = lgh.QuerySampleLibrary(torch.zeros(64, 2))
    settings = LoadGenSettings(scenarios=["Server"], min_duration_ms=300, min_query_count=32,
                               server_latency_bound_ms=20.0, server_search_max_probes=6)
    calib = lgh.Calibration(SERVICE_S, SERVICE_S, 1)  # start at half the nominal capacity
    seen: list[lgh.ServerProbe] = []
    search = lgh.run_server_search(lambda: lgh.ServerSUT(sleeping_predict, qsl, 1), qsl, settings, calib,
                                   tmp_path / "Server", seed=7, on_probe=seen.append)
    capacity = 1 / SERVICE_S
    assert 2 <= len(search.probes) <= 6 and len(seen) == len(search.probes)
    assert search.max_qps is not None, [(p.target_qps, p.run.latency_ms("p99")) for p in search.probes]
    assert 0.3 * capacity <= search.max_qps <= 1.1 * capacity
    best = search.best.run
    assert best.details["result_perf_constraints_met"] is True and best.latency_ms("p99") <= 20.0
    assert best.throughput_samples_per_s > 0.2 * capacity
    # an offered load far above capacity is never called within the bound
    assert not any(p.passed and p.target_qps > 1.5 * capacity for p in search.probes)
    summary = json.loads((tmp_path / "Server" / "server_search.json").read_text())
    assert summary["max_qps_within_bound"] == search.max_qps and len(summary["probes"]) == len(search.probes)
    assert all((tmp_path / "Server" / f"probe-{i:02d}" / "mlperf_log_detail.txt").exists()
               for i in range(1, len(search.probes) + 1))


def test_run_trial_server_row_reports_the_found_peak(tmp_path):
    lg = LoadGenSettings(scenarios=["Server"], min_duration_ms=100, min_query_count=16, server_latency_bound_ms=10.0,
                         server_search_max_probes=4)
    spec = TrialSpec(sweep_id="unit", trial_id="srv", repeat=0, asset="digits-mlp", task="infer", hardware=CPU,
                     config={"batch_size": 8, "threads": 1}, seed=3, loadgen=lg, log_dir=str(tmp_path / "logs"))
    events: list[dict] = []
    (row,) = run_trial(spec, progress=events.append)
    assert row["status"] == "ok", row["error"]
    probes = [e for e in events if e["phase"] == "server_probe"]
    assert row["server_probes"] == len(probes) and 2 <= len(probes) <= 4
    assert row["server_latency_bound_ms"] == 10.0
    if row["server_max_qps_within_bound"] is not None:
        assert row["target_qps"] == row["server_max_qps_within_bound"] == max(e["target_qps"] for e in probes if e["passed"])
        assert row["latency_p99_ms"] <= 10.0
    else:  # the shared machine was too slow for every probe: the row says so instead of inventing a peak
        assert not any(e["passed"] for e in probes)
    assert row["throughput_samples_per_s"] > 0 and "probe-" in row["loadgen_log_dir"]
