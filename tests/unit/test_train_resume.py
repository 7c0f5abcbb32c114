"""Fault tolerance: a training trial saves a checkpoint every epoch and resumes from it after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset
from benchmarks.checkpoint import TrainCheckpoint
from benchmarks.core import run_trial
from benchmarks.spec import TrainSettings, TrialSpec
from benchmarks.training import train_model
from cluster.hardware import HardwareSpec

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.36, price_source="test")
ROOT = Path(__file__).resolve().parents[2]
STEP_S = 0.01  # each training step sleeps this long: an epoch lasts long enough to be killed in


class SlowBlobs(TorchAsset):
    """Logistic regression on seeded blobs whose training steps take a known time."""

    name = "slow-blobs"
    tasks = ("train",)
    sample_shape = (8,)
    default_lr = 0.1

    def build(self, config: dict[str, Any]) -> nn.Module:
        return nn.Linear(8, 2)

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        gen = torch.Generator().manual_seed(1234)
        y = torch.randint(0, 2, (300,), generator=gen)
        x = torch.randn(300, 8, generator=gen) + (y.float() * 2 - 1).unsqueeze(1)
        return AssetData(x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])

    def run_batch(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        if model.training:
            time.sleep(STEP_S)
        return model(batch)


ASSET_REF = f"{Path(__file__).resolve()}:SlowBlobs"


def make_spec(tmp_path: Path, epochs: int, checkpoint: bool = True) -> TrialSpec:
    return TrialSpec(sweep_id="unit", trial_id="ft", repeat=0, asset=ASSET_REF, task="train", hardware=CPU,
                     config={"batch_size": 20, "threads": 1, "epochs": epochs}, seed=11,
                     train=TrainSettings(epochs=epochs, quality_target=0.8, checkpoint=checkpoint),
                     log_dir=str(tmp_path / "logs"))


class Interrupt(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """An attempt that dies after epoch 2 and its resumption end exactly where one run would."""
    asset = SlowBlobs()
    data = asset.load_data({}, 0)
    config = {"batch_size": 50, "epochs": 4}
    settings = TrainSettings(epochs=4, quality_target=0.8)

    def train(ckpt, progress=None, seed_model=3):
        torch.manual_seed(seed_model)
        model = asset.build(config)
        result = train_model(asset, model, data, config, settings, torch.device("cpu"), torch.float32, seed=7,
                             progress=progress, checkpoint=ckpt)
        return result, model

    ref, ref_model = train(TrainCheckpoint(tmp_path / "ref" / "checkpoint.pt", "fp"))
    assert ref.resumed_from_epoch == 0 and ref.time_lost_s == 0.0 and ref.checkpoint_time_s > 0

    path = tmp_path / "run" / "checkpoint.pt"

    def die_after_epoch_2(event):
        if event["phase"] == "train" and event["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(TrainCheckpoint(path, "fp"), die_after_epoch_2)
    assert path.exists() and path.with_name("heartbeat.json").exists()
    state = torch.load(path, weights_only=True)  # the safe loader reads it: plain tensors and numbers
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "shuffle_rng", "saved_wall_time"}

    events: list[dict] = []
    res, model = train(TrainCheckpoint(path, "fp"), events.append, seed_model=99)  # different init: must be overwritten
    assert res.resumed_from_epoch == 2 and res.time_lost_s >= 0
    assert [e["epoch"] for e in events if e["phase"] == "train"] == [3, 4]
    assert [e for e in events if e["phase"] == "resume"][0]["epoch"] == 2
    assert res.samples == ref.samples == 4 * 200 and res.window_samples == 2 * 200
    assert len(res.step_times_ns) == len(ref.step_times_ns) and len(res.history) == 4
    assert [h.loss for h in res.history] == [h.loss for h in ref.history]
    assert res.accuracy == ref.accuracy
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not path.exists() and not path.with_name("heartbeat.json").exists()  # done: nothing to resume


def test_foreign_or_corrupt_checkpoint_is_ignored(tmp_path):
    path = tmp_path / "checkpoint.pt"
    TrainCheckpoint(path, "config-a").save({"model": {}}, epoch=3)
    resume = TrainCheckpoint(path, "config-b").begin()
    assert resume.state is None and resume.epoch == 0 and "another configuration" in resume.note
    path.write_bytes(b"not a checkpoint")
    resume = TrainCheckpoint(path, "config-a").begin()
    assert resume.state is None and "unreadable" in resume.note


def test_lost_time_adds_up_over_repeated_kills(tmp_path):
    path = tmp_path / "checkpoint.pt"
    now = time.time()
    # attempt 1 died 3 s after its checkpoint; attempt 2 died 2 s after its loop started
    TrainCheckpoint(path, "fp").save({"x": torch.zeros(1)}, epoch=1)
    saved = torch.load(path, weights_only=True)["saved_wall_time"]
    path.with_name("heartbeat.json").write_text(json.dumps(
        {"fingerprint": "fp", "wall_time": saved + 3.0, "since": saved - 1.0, "lost_before": 0.0}))
    assert TrainCheckpoint(path, "fp").begin().time_lost_s == pytest.approx(3.0)
    path.with_name("heartbeat.json").write_text(json.dumps(
        {"fingerprint": "fp", "wall_time": now + 12.0, "since": now + 10.0, "lost_before": 3.0}))
    assert TrainCheckpoint(path, "fp").begin().time_lost_s == pytest.approx(5.0)


def test_killed_trial_resumes_from_its_checkpoint(tmp_path):
    epochs = 12  # about 0.1 s of steps per epoch: the kill lands well before the end
    spec = make_spec(tmp_path, epochs)
    folder = tmp_path / "logs" / "unit" / "ft-r0"
    script = ("import json, sys\n"
              "from benchmarks.core import run_trial\n"
              "from benchmarks.spec import TrialSpec\n"
              "run_trial(TrialSpec.from_dict(json.loads(sys.argv[1])))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(spec.to_dict())], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "checkpoint.pt").exists():
            assert proc.poll() is None, f"the trial ended before its first checkpoint: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(folder / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs

    events: list[dict] = []
    (row,) = run_trial(spec, progress=events.append)
    assert row["status"] == "ok", row["error"]
    assert row["resumed_from_epoch"] >= killed_at >= 1
    assert row["epochs"] == epochs and row["samples"] == epochs * 200
    trained = [e["epoch"] for e in events if e["phase"] == "train"]
    assert trained == list(range(row["resumed_from_epoch"] + 1, epochs + 1))
    assert row["time_lost_s"] is not None and row["time_lost_s"] >= 0
    assert row["checkpoint_time_s"] >= 0 and row["train_time_s"] > 0 and row["accuracy"] > 0.6
    # the energy/cost window is this attempt's: its samples, not the restored ones
    assert row["throughput_samples_per_s"] == pytest.approx(row["samples"] / row["train_time_s"])
    assert not (folder / "checkpoint.pt").exists() and not (folder / "heartbeat.json").exists()


def test_checkpointing_off_leaves_the_columns_missing(tmp_path):
    (row,) = run_trial(make_spec(tmp_path, 1, checkpoint=False))
    assert row["status"] == "ok", row["error"]
    assert row["resumed_from_epoch"] is None and row["time_lost_s"] is None and row["checkpoint_time_s"] is None
    assert not (tmp_path / "logs" / "unit" / "ft-r0" / "checkpoint.pt").exists()
