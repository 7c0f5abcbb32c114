"""Data-parallel scaling: torch DDP on gloo over spawned worker processes, with a 1-worker baseline."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.core import run_trial
from benchmarks.scaling import scaling_efficiency
from benchmarks.spec import TrainSettings, TrialSpec
from cluster.hardware import HardwareSpec
from results.store import ResultsStore

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.36, price_source="test")
TRAIN_SAMPLES = 1438  # digits-mlp's training split; even, so two workers get equal shards


def spec(tmp_path, config, trial="sc"):
    return TrialSpec(sweep_id="unit", trial_id=trial, repeat=0, asset="digits-mlp", task="train", hardware=CPU,
                     config=config, seed=5, train=TrainSettings(epochs=2, quality_target=0.5),
                     log_dir=str(tmp_path / "logs"))


def test_efficiency_definition():
    assert scaling_efficiency(200.0, 100.0, 2) == 1.0
    assert scaling_efficiency(150.0, 100.0, 2) == 0.75
    assert scaling_efficiency(100.0, 100.0, 1) == 1.0
    assert scaling_efficiency(None, 100.0, 2) is None and scaling_efficiency(100.0, 0.0, 2) is None


def test_two_workers_row_with_baseline_and_efficiency(tmp_path):
    events: list[dict] = []
    (row,) = run_trial(spec(tmp_path, {"batch_size": 32, "epochs": 2, "workers": 2, "threads": 1}), progress=events.append)
    assert row["status"] == "ok", row["error"]
    assert row["scenario"] == "train" and row["cfg_workers"] == 2 and row["workers"] == 2
    assert row["num_threads"] == 1 and row["device_count"] == 0
    assert row["samples"] == 2 * TRAIN_SAMPLES and row["epochs"] == 2
    assert row["throughput_samples_per_s"] == pytest.approx(row["samples"] / row["train_time_s"])
    base = row["scaling_baseline_samples_per_s"]
    assert base > 0 and row["scaling_efficiency"] == pytest.approx(row["throughput_samples_per_s"] / (2 * base))
    assert 0 < row["scaling_efficiency"] and math.isfinite(row["scaling_efficiency"])
    # the model trained by DDP is the one the row's accuracy and model metrics describe
    assert 0.5 < row["accuracy"] <= 1.0 and row["f1_macro"] is not None
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert row["cpu_util_pct"] > 0 and row["peak_memory_mb"] > 0
    assert row["resumed_from_epoch"] is None  # DDP trials do not checkpoint
    summary = json.loads((tmp_path / "logs" / "unit" / "sc-r0" / "scaling" / "scaling.json").read_text())
    assert summary["baseline"]["world_size"] == 1 and summary["scaled"]["world_size"] == 2
    assert not (tmp_path / "logs" / "unit" / "sc-r0" / "scaling" / "model.pt").exists()
    assert [e["workers"] for e in events if e["phase"] == "scaling"] == [2]
    ResultsStore(tmp_path / "results").write([row])  # valid for the store: no negative or infinite figures


def test_bad_workers_value_fails_the_row_not_the_sweep(tmp_path):
    (row,) = run_trial(spec(tmp_path, {"batch_size": 32, "workers": 0}, trial="bad"))
    assert row["status"] == "failed" and "'workers' must be a positive integer" in row["error"]
