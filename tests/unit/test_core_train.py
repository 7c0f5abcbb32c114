"""run_trial for training: one `train` row with time-to-accuracy and per-step latencies."""

from __future__ import annotations

from benchmarks.core import run_trial
from benchmarks.spec import TrainSettings, TrialSpec
from cluster.hardware import HardwareSpec
from results.schema import COLUMN_NAMES

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.36, price_source="test")


def spec(tmp_path, config, quality_target=0.9, asset="digits-mlp"):
    return TrialSpec(sweep_id="unit", trial_id="tr", repeat=1, asset=asset, task="train", hardware=CPU,
                     config=config, seed=5, train=TrainSettings(epochs=3, quality_target=quality_target),
                     log_dir=str(tmp_path / "logs"))


def test_digits_train_row(tmp_path):
    events = []
    (row,) = run_trial(spec(tmp_path, {"batch_size": 32, "threads": 1, "epochs": 4}), progress=events.append)
    assert row["status"] == "ok", row["error"]
    assert row["scenario"] == "train" and row["repeat"] == 1 and row["cfg_epochs"] == 4
    assert set(COLUMN_NAMES) <= set(row)
    assert row["epochs"] == 4 and row["samples"] == 4 * 1438
    assert row["train_time_s"] > 0
    assert abs(row["throughput_samples_per_s"] - row["samples"] / row["train_time_s"]) < 1e-6 * row["samples"]
    assert 0.8 < row["accuracy"] <= 1.0
    assert row["quality_target"] == 0.9
    assert row["time_to_accuracy_s"] is not None and row["time_to_accuracy_s"] > 0
    assert abs(row["cost_to_accuracy_usd"] - row["time_to_accuracy_s"] / 3600 * 0.36) < 1e-12
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_p999_ms"]
    assert row["loadgen_result"] == "" and row["target_qps"] is None
    epochs = [e for e in events if e["phase"] == "train"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert all(set(e) >= {"loss", "accuracy"} for e in epochs)
    assert epochs[-1]["accuracy"] == row["accuracy"]


def test_unreached_target_is_missing_not_zero(tmp_path):
    (row,) = run_trial(spec(tmp_path, {"batch_size": 256, "threads": 1, "epochs": 1, "lr": 1e-5}, quality_target=0.999))
    assert row["status"] == "ok"
    assert row["time_to_accuracy_s"] is None and row["cost_to_accuracy_usd"] is None


def test_same_seed_same_result(tmp_path):
    cfg = {"batch_size": 64, "threads": 1, "epochs": 2}
    a = run_trial(spec(tmp_path, cfg))[0]
    b = run_trial(spec(tmp_path, cfg))[0]
    assert a["accuracy"] == b["accuracy"]


def test_user_asset_trains(tmp_path):
    from pathlib import Path

    ref = str(Path(__file__).resolve().parent.parent / "fixtures" / "user_asset.py") + ":Blobs"
    (row,) = run_trial(spec(tmp_path, {"batch_size": 50, "threads": 1}, asset=ref))
    assert row["status"] == "ok", row["error"] and row["accuracy"] > 0.9
