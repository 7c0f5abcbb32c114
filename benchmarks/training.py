"""The training benchmark: epochs over an asset's training split, timed per step, evaluated per epoch.

Figures (MLPerf Training / DAWNBench definitions):
- train_time_s: wall time of the training loop (shuffling, batching, forward, backward, optimiser
  step), GPU synchronised, after a warm-up on a throw-away copy of the model; the per-epoch
  evaluations are timed separately and left out of it;
- time_to_accuracy_s: wall time from the start of the loop to the end of the first evaluation that
  reached the quality target, evaluations included (as MLPerf counts them);
- per-step times (forward + backward + step, synchronised) give a `train` row's latency percentiles.
Data is moved to the device once before the clock starts (the digits set fits; a data loader is
not part of what is measured here).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.assets.base import AssetData, config_int
from benchmarks.spec import TrainSettings

WARMUP_STEPS = 3


@dataclass
class EpochLog:
    epoch: int
    loss: float
    accuracy: float | None
    train_time_s: float  # cumulative step time at the end of this epoch
    elapsed_s: float  # cumulative wall time, evaluations included


@dataclass
class TrainResult:
    epochs: int
    train_time_s: float
    eval_time_s: float
    elapsed_s: float
    step_times_ns: list[int]
    samples: int
    accuracy: float | None
    time_to_accuracy_s: float | None
    history: list[EpochLog] = field(default_factory=list)


def make_optimizer(asset: Any, model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    if hasattr(asset, "make_optimizer"):
        return asset.make_optimizer(model, config)
    lr = float(config.get("lr", getattr(asset, "default_lr", 1e-3)))
    name = str(config.get("optimizer", "adam")).lower()
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(config.get("momentum", 0.9)))
    raise ValueError(f"config 'optimizer' must be 'adam' or 'sgd', got {name!r}")


def _loss(asset: Any, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if hasattr(asset, "loss"):
        return asset.loss(outputs, targets)
    return nn.functional.cross_entropy(outputs.float(), targets)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    # Mixed precision keeps float32 master weights; the compute runs in `dtype`.
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_model(
    asset: Any,
    model: nn.Module,
    data: AssetData,
    config: dict[str, Any],
    settings: TrainSettings,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    sync: Callable[[], None] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    window: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> TrainResult:
    """Train `model` in place; returns the timings and the accuracy after each epoch.

    `window()` (e.g. a sensors.MeasurementWindow) is entered around the measured loop only, after
    the warm-up, so energy and utilisation cover exactly what train_time_s covers plus evaluations.
    """
    if data.x_train is None or data.y_train is None:
        raise ValueError(f"asset {asset.name!r} has no training split; it cannot run task 'train'")
    batch_size = config_int(config, "batch_size", 64)
    epochs = config_int(config, "epochs", settings.epochs)
    target = settings.quality_target
    x = data.x_train.to(device)
    y = data.y_train.to(device)
    model.to(device).train()
    optimizer = make_optimizer(asset, model, config)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step(m: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = _loss(asset, asset.run_batch(m, xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach()

    # Warm-up on a copy: kernels, allocator and lazy initialisation, without touching the measured run.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        shadow = copy.deepcopy(model)
        shadow_opt = make_optimizer(asset, shadow, config)
        for i in range(WARMUP_STEPS):
            lo = (i * batch_size) % max(len(x) - batch_size, 1)
            step(shadow, shadow_opt, x[lo : lo + batch_size], y[lo : lo + batch_size])
        del shadow, shadow_opt
    if sync:
        sync()

    gen = torch.Generator().manual_seed(seed)
    step_times: list[int] = []
    history: list[EpochLog] = []
    eval_ns = pause_ns = 0  # pause: time in the progress callback, not the benchmark's
    tta: float | None = None
    samples = 0
    accuracy: float | None = None
    with window() if window is not None else contextlib.nullcontext():
        loop_t0 = time.perf_counter_ns()
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(len(x), generator=gen).to(device)
            losses = []
            for lo in range(0, len(perm), batch_size):
                idx = perm[lo : lo + batch_size]
                xb, yb = x[idx], y[idx]
                t0 = time.perf_counter_ns()
                losses.append(step(model, optimizer, xb, yb))
                if sync:
                    sync()
                step_times.append(time.perf_counter_ns() - t0)
                samples += len(idx)
            t0 = time.perf_counter_ns()
            model.eval()
            with _autocast(device, dtype):
                accuracy = asset.evaluate(model, data).get("accuracy")
            model.train()
            if sync:
                sync()
            t1 = time.perf_counter_ns()
            eval_ns += t1 - t0
            elapsed = (t1 - loop_t0 - pause_ns) / 1e9
            if tta is None and target is not None and accuracy is not None and accuracy >= target:
                tta = elapsed
            mean_loss = float(torch.stack(losses).float().mean()) if losses else float("nan")
            history.append(EpochLog(epoch, mean_loss, accuracy, elapsed - eval_ns / 1e9, elapsed))
            if progress:
                t2 = time.perf_counter_ns()
                progress({"phase": "train", "epoch": epoch, "epochs": epochs, "loss": mean_loss, "accuracy": accuracy})
                pause_ns += time.perf_counter_ns() - t2
        total_ns = time.perf_counter_ns() - loop_t0 - pause_ns
    model.eval()
    return TrainResult(
        epochs=epochs, train_time_s=(total_ns - eval_ns) / 1e9, eval_time_s=eval_ns / 1e9, elapsed_s=total_ns / 1e9,
        step_times_ns=step_times, samples=samples, accuracy=accuracy, time_to_accuracy_s=tta, history=history,
    )
