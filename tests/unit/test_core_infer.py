"""run_trial for inference through real LoadGen: rows, units, logs (tiny durations)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.core import run_trial
from benchmarks.spec import LoadGenSettings, TrialSpec
from cluster.hardware import HardwareSpec
from results.schema import COLUMN_NAMES
from results.store import ResultsStore

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.1, price_source="test")
FAST = LoadGenSettings(scenarios=["SingleStream", "MultiStream", "Offline"], min_duration_ms=60, min_query_count=16,
                       offline_samples=64)


def make_spec(tmp_path: Path, asset: str = "digits-mlp", config: dict | None = None, **kw) -> TrialSpec:
    return TrialSpec(sweep_id="unit", trial_id=kw.pop("trial_id", "t1"), repeat=0, asset=asset, task=kw.pop("task", "infer"),
                     hardware=kw.pop("hardware", CPU), config=config or {"batch_size": 8, "threads": 1}, seed=3,
                     loadgen=kw.pop("loadgen", FAST), log_dir=str(tmp_path / "logs"), **kw)


@pytest.fixture(scope="module")
def digits_rows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    events = []
    rows = run_trial(make_spec(tmp), progress=events.append)
    return rows, events, tmp


def test_one_row_per_scenario_with_schema_names(digits_rows):
    rows, _, _ = digits_rows
    assert [r["scenario"] for r in rows] == ["SingleStream", "MultiStream", "Offline"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        unknown = set(r) - set(COLUMN_NAMES)
        assert unknown == {"cfg_batch_size", "cfg_threads"}
        assert set(COLUMN_NAMES) <= set(r)
        assert (r["sweep_id"], r["trial_id"], r["repeat"], r["asset"], r["task"]) == ("unit", "t1", 0, "digits-mlp", "infer")
        assert (r["hardware"], r["accelerator_type"], r["device_count"], r["num_threads"]) == ("test-cpu-2c", "cpu", 0, 1)
        assert r["cfg_batch_size"] == 8 and r["seed"] == 3
        assert r["node_id"] == "" and r["node_ip"] == ""
        assert r["env_torch_version"] and r["env_python_version"] and r["env_cpu_model"]
        assert r["start_time"].endswith("+00:00") and r["duration_s"] > 0


def test_units_are_plausible(digits_rows):
    rows, _, _ = digits_rows
    for r in rows:
        assert r["throughput_samples_per_s"] > 0
        assert 0.8 < r["accuracy"] <= 1.0
        assert r["parameters"] > 1000 and r["flops_per_sample"] > 1000
        assert r["peak_memory_mb"] > 10 and r["cpu_util_pct"] > 0
        assert r["loadgen_result"] in ("VALID", "INVALID")
        assert r["cost_usd"] > 0 and r["price_per_hour_usd"] == 0.1
        assert r["samples"] > 0
    ss, ms, off = rows
    for r in (ss, ms):
        assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"] <= r["latency_p99_ms"] <= r["latency_p999_ms"]
        assert r["latency_mean_ms"] > 0
    assert ss["samples_per_query"] == 1 and ms["samples_per_query"] == 8
    # Offline has no per-sample latency in LoadGen (one query holds every sample): missing, not invented.
    assert off["latency_p50_ms"] is None and off["samples"] >= 64 and off["target_qps"] > 0


def test_singlestream_throughput_matches_its_latency(digits_rows):
    ss = digits_rows[0][0]
    # back-to-back queries: samples/s cannot exceed 1 / mean latency
    assert ss["throughput_samples_per_s"] <= 1000.0 / ss["latency_mean_ms"] * 1.01


def test_energy_missing_without_sensor_and_no_gpu_metrics(digits_rows):
    for r in digits_rows[0]:
        assert r["energy_source"] in ("none", "rapl")
        if r["energy_source"] == "none":
            assert r["energy_j"] is None and r["energy_per_sample_j"] is None and r["avg_power_w"] is None
        assert r["gpu_util_pct"] is None and r["env_gpu_name"] == "" and r["env_gpu_sm_clock_mhz"] is None


def test_loadgen_logs_kept_per_scenario(digits_rows):
    rows, _, tmp = digits_rows
    for r in rows:
        folder = Path(r["loadgen_log_dir"])
        assert folder == (tmp / "logs" / "unit" / "t1-r0" / r["scenario"]).resolve()
        assert (folder / "mlperf_log_summary.txt").exists() and (folder / "mlperf_log_detail.txt").exists()
        assert f"Scenario : {r['scenario']}" in (folder / "mlperf_log_summary.txt").read_text()
    acc = tmp / "logs" / "unit" / "t1-r0" / "accuracy" / "mlperf_log_accuracy.json"
    assert len(json.loads(acc.read_text())) == 359  # every held-out digit, once


def test_progress_events(digits_rows):
    _, events, _ = digits_rows
    phases = [e["phase"] for e in events]
    assert phases[0] == "setup" and phases[-1] == "done" and phases.count("infer") == 3
    infer = [e for e in events if e["phase"] == "infer"]
    assert all(e["throughput_samples_per_s"] > 0 for e in infer)


def test_rows_go_into_the_store(digits_rows, tmp_path):
    rows, _, _ = digits_rows
    store = ResultsStore(tmp_path / "results")
    store.write(rows)
    df = store.read("unit")
    assert len(df) == 3 and not math.isnan(df["throughput_samples_per_s"].min())


def test_tiny_cnn_infer_has_no_accuracy(tmp_path):
    lg = LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=40, min_query_count=8, offline_samples=32)
    rows = run_trial(make_spec(tmp_path, asset="tiny-cnn", config={"batch_size": 4, "threads": 1}, loadgen=lg))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:
        assert r["accuracy"] is None and r["throughput_samples_per_s"] > 0 and r["flops_per_sample"] > 1e5
    assert not (tmp_path / "logs" / "unit" / "t1-r0" / "accuracy").exists()


def test_server_scenario_and_bfloat16(tmp_path):
    lg = LoadGenSettings(scenarios=["Server"], min_duration_ms=60, min_query_count=16, server_target_qps=300,
                         server_latency_bound_ms=50)
    rows = run_trial(make_spec(tmp_path, config={"batch_size": 4, "threads": 1, "dtype": "bfloat16"}, loadgen=lg))
    (r,) = rows
    assert r["status"] == "ok", r["error"]
    assert r["scenario"] == "Server" and r["target_qps"] == 300 and r["cfg_dtype"] == "bfloat16"
    assert 0.8 < r["accuracy"] <= 1.0 and r["latency_p99_ms"] > 0 and r["throughput_samples_per_s"] > 0
