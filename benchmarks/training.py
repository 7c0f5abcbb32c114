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

With a `TrainCheckpoint`, model, optimiser, RNG and the figures so far are saved after every epoch
but the last, and a trial that finds its own checkpoint resumes from it: the figures then cover
every epoch that counted (restored + this attempt), and the time the interrupted attempts lost is
reported apart (see benchmarks/checkpoint.py). Saving is timed and left out of train_time_s.
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
from benchmarks.checkpoint import TrainCheckpoint
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
    window_samples: int | None = None  # samples inside this attempt's window (energy per sample)
    resumed_from_epoch: int | None = None  # None: no checkpointing
    time_lost_s: float | None = None
    checkpoint_time_s: float | None = None


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


def train_step(asset: Any, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
               device: torch.device, dtype: torch.dtype, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """One optimiser step (autocast, loss scaling for float16); the same step for one process and DDP."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, dtype):
        loss = _loss(asset, asset.run_batch(model, xb), yb)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


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
    checkpoint: TrainCheckpoint | None = None,
) -> TrainResult:
    """Train `model` in place; returns the timings and the accuracy after each epoch.

    `window()` (e.g. a sensors.MeasurementWindow) is entered around the measured loop only, after
    the warm-up, so energy and utilisation cover exactly what train_time_s covers plus evaluations
    (and checkpoint saves). With `checkpoint`, an earlier attempt's state is restored first.
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
    gen = torch.Generator().manual_seed(seed)
    run = _RunState()
    resume = checkpoint.begin() if checkpoint is not None else None
    if resume is not None:
        if resume.note and progress:
            progress({"phase": "checkpoint", "note": resume.note})
        if resume.state is not None:
            run = _restore(resume.state, model, optimizer, scaler, gen, device)
            if progress:
                progress({"phase": "resume", "epoch": resume.epoch, "epochs": epochs, "time_lost_s": resume.time_lost_s})

    def step(m: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return train_step(asset, m, opt, scaler, device, dtype, xb, yb)

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

    first_epoch = run.epoch + 1
    eval_ns = pause_ns = ckpt_ns = 0  # pause: time in the progress callback, not the benchmark's
    samples_before = run.samples
    accuracy = run.history[-1].accuracy if run.history else None
    with window() if window is not None else contextlib.nullcontext():
        if checkpoint is not None:
            checkpoint.start_heartbeat()
        try:
            loop_t0 = time.perf_counter_ns()
            for epoch in range(first_epoch, epochs + 1):
                perm = torch.randperm(len(x), generator=gen).to(device)
                losses = []
                for lo in range(0, len(perm), batch_size):
                    idx = perm[lo : lo + batch_size]
                    xb, yb = x[idx], y[idx]
                    t0 = time.perf_counter_ns()
                    losses.append(step(model, optimizer, xb, yb))
                    if sync:
                        sync()
                    run.step_times_ns.append(time.perf_counter_ns() - t0)
                    run.samples += len(idx)
                t0 = time.perf_counter_ns()
                model.eval()
                with _autocast(device, dtype):
                    accuracy = asset.evaluate(model, data).get("accuracy")
                model.train()
                if sync:
                    sync()
                t1 = time.perf_counter_ns()
                eval_ns += t1 - t0
                elapsed = run.elapsed_s + (t1 - loop_t0 - pause_ns) / 1e9
                if run.tta is None and target is not None and accuracy is not None and accuracy >= target:
                    run.tta = elapsed
                mean_loss = float(torch.stack(losses).float().mean()) if losses else float("nan")
                run.history.append(EpochLog(epoch, mean_loss, accuracy,
                                            run.train_s + (t1 - loop_t0 - pause_ns - eval_ns - ckpt_ns) / 1e9, elapsed))
                if checkpoint is not None and epoch < epochs:
                    # Counted like an evaluation: in elapsed (time-to-accuracy), not in train time.
                    t2 = time.perf_counter_ns()
                    now_ns = t2 - loop_t0 - pause_ns
                    checkpoint.save(_snapshot(run, epoch, model, optimizer, scaler, gen, device,
                                              elapsed_s=run.elapsed_s + now_ns / 1e9,
                                              train_s=run.train_s + (now_ns - eval_ns - ckpt_ns) / 1e9,
                                              eval_s=run.eval_s + eval_ns / 1e9), epoch)
                    ckpt_ns += time.perf_counter_ns() - t2
                if progress:
                    t2 = time.perf_counter_ns()
                    progress({"phase": "train", "epoch": epoch, "epochs": epochs, "loss": mean_loss, "accuracy": accuracy})
                    pause_ns += time.perf_counter_ns() - t2
            total_ns = time.perf_counter_ns() - loop_t0 - pause_ns
        finally:
            if checkpoint is not None:
                checkpoint.stop_heartbeat()
    if checkpoint is not None:
        checkpoint.finish()
    model.eval()
    return TrainResult(
        epochs=epochs, train_time_s=run.train_s + (total_ns - eval_ns - ckpt_ns) / 1e9,
        eval_time_s=run.eval_s + eval_ns / 1e9, elapsed_s=run.elapsed_s + total_ns / 1e9,
        step_times_ns=run.step_times_ns, samples=run.samples, accuracy=accuracy, time_to_accuracy_s=run.tta,
        history=run.history, window_samples=run.samples - samples_before,
        resumed_from_epoch=resume.epoch if resume is not None else None,
        time_lost_s=resume.time_lost_s if resume is not None else None,
        checkpoint_time_s=ckpt_ns / 1e9 if checkpoint is not None else None,
    )


@dataclass
class _RunState:
    """The figures of the epochs done so far: what a checkpoint carries besides the tensors."""

    epoch: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    elapsed_s: float = 0.0
    samples: int = 0
    tta: float | None = None
    step_times_ns: list[int] = field(default_factory=list)
    history: list[EpochLog] = field(default_factory=list)


def _snapshot(run: _RunState, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler | None, gen: torch.Generator, device: torch.device,
              *, elapsed_s: float, train_s: float, eval_s: float) -> dict[str, Any]:
    # Only tensors, numbers, strings, lists and dicts: loadable with torch.load(weights_only=True).
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "shuffle_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
        "train_s": train_s, "eval_s": eval_s, "elapsed_s": elapsed_s,
        "samples": run.samples,
        "time_to_accuracy_s": run.tta,
        "step_times_ns": torch.tensor(run.step_times_ns, dtype=torch.int64),
        "history": [vars(h).copy() for h in run.history],
    }


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None, gen: torch.Generator, device: torch.device) -> _RunState:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    # The shuffle and global RNG continue where the checkpoint left them: the resumed run sees the
    # same batches as an uninterrupted one would.
    gen.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state["cuda_rng"].numel():
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return _RunState(
        epoch=int(state["epoch"]), train_s=float(state["train_s"]), eval_s=float(state["eval_s"]),
        elapsed_s=float(state["elapsed_s"]), samples=int(state["samples"]),
        tta=None if state["time_to_accuracy_s"] is None else float(state["time_to_accuracy_s"]),
        step_times_ns=[int(v) for v in state["step_times_ns"].tolist()],
        history=[EpochLog(**h) for h in state["history"]],
    )
