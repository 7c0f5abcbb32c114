"""Data-parallel scaling of a training asset: torch DDP over `workers` processes on this node.

One trial with config `workers: n` starts n worker processes that join one process group over
loopback (gloo on CPU, NCCL on GPUs, one GPU per worker). They are forked from multiprocessing's
fork server, a clean single-threaded process that imported torch, DDP's dependencies and this
module once: safe with threads and CUDA like `spawn`, without each worker paying seconds of
imports (the server lives as long as this process, so later trials reuse it). The asset's data is
loaded once by the caller and shared with the workers. In the same processes, and so on the same
node and under the same conditions:

1. baseline: rank 0 alone trains the asset through DDP on a one-rank group (the others wait),
   giving throughput(1) with the same code, threads and per-worker batch size;
2. measured phase: all n ranks train, each on its own 1/n of every epoch's shuffled data (weak
   scaling: the per-worker batch is `batch_size`, the global batch n x batch_size), gradients
   averaged by DDP; rank 0 evaluates after each epoch while the others wait.

scaling efficiency = throughput(n) / (n x throughput(1)); 1 means linear scaling. With n = 1 the
baseline is the measured phase itself. Each worker runs `threads` torch threads (default 1), so a
worker is a fixed amount of compute and n workers use n times as much; n x threads above the
node's cores oversubscribes it, which the efficiency then shows.

The caller's measurement window (energy, background load) is entered by this process around the
measured phase only, signalled by the workers through events; CPU time and peak RSS are the
workers' own, summed over ranks, since this process only waits. No Ray here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from benchmarks.assets.base import DTYPES, AssetData, config_int
from benchmarks.training import WARMUP_STEPS, _autocast, make_optimizer, train_step

PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)  # the baseline runs while the other ranks wait
# DDP's constructor imports torch._dynamo (seconds): preloaded in the fork server, not in each worker.
FORKSERVER_PRELOAD = ["torch", "torch.distributed", "torch._dynamo", "benchmarks.assets", "benchmarks.scaling"]


def scaling_efficiency(throughput_n: float | None, throughput_1: float | None, workers: int) -> float | None:
    """throughput(n) / (n x throughput(1)); None when either is unknown."""
    if not throughput_n or not throughput_1 or workers < 1:
        return None
    return throughput_n / (workers * throughput_1)


@dataclass
class PhaseResult:
    """One training phase at one world size. Times from rank 0's clock; CPU and RSS summed over ranks."""

    world_size: int
    epochs: int
    samples: int
    train_time_s: float
    eval_time_s: float = 0.0
    step_times_ns: list[int] = field(default_factory=list)
    accuracy: float | None = None
    time_to_accuracy_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None

    @property
    def throughput_samples_per_s(self) -> float | None:
        return self.samples / self.train_time_s if self.train_time_s > 0 else None


@dataclass
class ScalingResult:
    workers: int
    threads_per_worker: int
    baseline: PhaseResult
    scaled: PhaseResult
    window: Any = None  # what the caller's window() returned (its stats)

    @property
    def efficiency(self) -> float | None:
        return scaling_efficiency(self.scaled.throughput_samples_per_s, self.baseline.throughput_samples_per_s,
                                  self.workers)


@dataclass
class WorkerJob:
    """Everything a worker needs; plain data so that it pickles into a spawned process."""

    asset: str
    config: dict[str, Any]
    epochs: int
    quality_target: float | None
    seed: int
    dtype: str
    threads: int
    use_cuda: bool
    port: int
    out_dir: str


def run_scaling(
    asset: str,
    data: AssetData,
    config: dict[str, Any],
    epochs: int,
    quality_target: float | None,
    seed: int,
    *,
    workers: int,
    threads_per_worker: int,
    dtype: torch.dtype,
    use_cuda: bool,
    out_dir: str | Path,
    window: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> tuple[ScalingResult, dict[str, torch.Tensor]]:
    """Run the baseline and the n-worker phase; returns the result and rank 0's trained weights."""
    if workers < 1:
        raise ValueError(f"config 'workers' must be >= 1, got {workers}")
    if use_cuda and workers > torch.cuda.device_count():
        raise RuntimeError(f"config 'workers' = {workers} needs {workers} GPUs (one per worker); "
                           f"torch sees {torch.cuda.device_count()}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = WorkerJob(asset=asset, config=dict(config), epochs=epochs, quality_target=quality_target, seed=seed,
                    dtype=next(k for k, v in DTYPES.items() if v == dtype), threads=threads_per_worker, use_cuda=use_cuda, port=_free_port(), out_dir=str(out))
    if data.x_train is None or data.y_train is None:
        raise ValueError(f"asset {asset!r} has no training split; it cannot run task 'train'")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)  # takes effect when the server first starts
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    procs = mp.start_processes(_worker, args=(workers, job, data, ready, go, done), nprocs=workers, join=False,
                               start_method="forkserver")
    _wait(ready, procs, "the workers to reach the measured phase")
    with window() if window is not None else contextlib.nullcontext() as stats:
        go.set()
        _wait(done, procs, "the measured phase to end")
    while not procs.join(timeout=1.0):
        pass
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(workers)]
    weights = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    (out / "model.pt").unlink(missing_ok=True)  # a throw-away copy; the trial's model gets these weights
    scaled = _phase(ranks, "scaled")
    baseline = _phase(ranks[:1], "baseline") if workers > 1 else scaled
    result = ScalingResult(workers=workers, threads_per_worker=threads_per_worker, baseline=baseline, scaled=scaled,
                           window=stats)
    summary = {"workers": workers, "threads_per_worker": threads_per_worker, "efficiency": result.efficiency,
               "baseline": _summary(baseline), "scaled": _summary(scaled)}
    (out / "scaling.json").write_text(json.dumps(summary, indent=2))
    return result, weights


def _summary(p: PhaseResult) -> dict[str, Any]:
    d = asdict(p)
    d.pop("step_times_ns")
    d["throughput_samples_per_s"] = p.throughput_samples_per_s
    return d


def _phase(ranks: list[dict[str, Any]], key: str) -> PhaseResult:
    first = ranks[0][key]
    cpu = [r[key]["cpu_s"] for r in ranks]
    rss = [r[key]["peak_rss_mb"] for r in ranks]
    return PhaseResult(
        world_size=first["world_size"], epochs=first["epochs"], samples=sum(r[key]["samples"] for r in ranks),
        train_time_s=first["train_time_s"], eval_time_s=first["eval_time_s"], step_times_ns=first["step_times_ns"],
        accuracy=first["accuracy"], time_to_accuracy_s=first["time_to_accuracy_s"],
        cpu_s=sum(cpu) if None not in cpu else None, peak_rss_mb=sum(rss) if None not in rss else None,
    )


def _wait(event: Any, procs: Any, what: str) -> None:
    """Wait for `event`, re-raising a worker's exception instead of waiting for ever."""
    while not event.wait(0.05):
        try:
            finished = procs.join(timeout=0)
        except mp.ProcessRaisedException as exc:  # the worker's traceback stays in the chain
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise RuntimeError(f"a DDP worker failed: {last}") from exc
        if finished:
            raise RuntimeError(f"the DDP workers exited before {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------ worker side


def _worker(rank: int, world: int, job: WorkerJob, data: AssetData, ready: Any, go: Any, done: Any) -> None:
    from benchmarks.assets import get_asset
    from benchmarks.sensors import peak_rss_mb, process_cpu_s, reset_peak_rss

    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    device = torch.device("cuda", rank) if job.use_cuda else torch.device("cpu")
    if job.use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if job.use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{job.port}",
                            rank=rank, world_size=world, timeout=PROCESS_GROUP_TIMEOUT)
    try:
        # Where the fork server could not preload it, import it on every rank at once: otherwise the
        # first DDP constructor would make the other ranks wait for one rank's import.
        importlib.import_module("torch._dynamo")
        asset = get_asset(job.asset)
        dtype = DTYPES[job.dtype]
        sync = (lambda: torch.cuda.synchronize(device)) if job.use_cuda else None

        def measure(group: Any, size: int, my_rank: int, evaluate: bool) -> tuple[dict[str, Any], nn.Module]:
            torch.manual_seed(job.seed)  # the same initial weights in the baseline and the measured phase
            model = asset.build(dict(job.config)).to(device)
            ddp = nn.parallel.DistributedDataParallel(model, process_group=group,
                                                      device_ids=[rank] if job.use_cuda else None)
            reset_peak_rss()
            cpu0 = process_cpu_s()
            res = _train_ddp(asset, ddp, data, job, device, dtype, group, size, my_rank, evaluate, sync)
            res.update(world_size=size, cpu_s=process_cpu_s() - cpu0, peak_rss_mb=peak_rss_mb())
            return res, model

        report: dict[str, Any] = {}
        if world > 1:
            solo = dist.new_group([0])  # every rank must take part in creating it
            if rank == 0:
                report["baseline"], _ = measure(solo, 1, 0, evaluate=False)
            dist.barrier()
        if rank == 0:
            ready.set()
            if not go.wait(timeout=600):  # the parent opens its measurement window, or has died
                raise RuntimeError("the measuring process did not start the measured phase within 600 s")
        dist.barrier()
        report["scaled"], model = measure(None, world, rank, evaluate=True)
        if rank == 0:
            done.set()
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(job.out_dir) / "model.pt")
        Path(job.out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def _train_ddp(asset: Any, ddp: nn.Module, data: Any, job: WorkerJob, device: torch.device, dtype: torch.dtype,
               group: Any, world: int, rank: int, evaluate: bool, sync: Callable[[], None] | None) -> dict[str, Any]:
    batch_size = config_int(job.config, "batch_size", 64)
    x, y = data.x_train.to(device), data.y_train.to(device)
    usable = len(x) - len(x) % world  # equal shards: DDP needs every rank to run the same number of steps
    optimizer = make_optimizer(asset, ddp.module, job.config)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        train_step(asset, ddp, optimizer, scaler, device, dtype, xb, yb)

    # Warm-up through DDP (its buckets, gloo/NCCL connections), then back to the initial weights so
    # the measured steps start from the same state in every phase.
    initial = {k: v.clone() for k, v in ddp.module.state_dict().items()}
    for i in range(WARMUP_STEPS):
        lo = (i * batch_size * world + rank * batch_size) % max(len(x) - batch_size, 1)
        step(x[lo : lo + batch_size], y[lo : lo + batch_size])
    ddp.module.load_state_dict(initial)
    optimizer = make_optimizer(asset, ddp.module, job.config)
    if sync:
        sync()

    gen = torch.Generator().manual_seed(job.seed)  # the same permutation on every rank; each takes its slice
    step_times: list[int] = []
    train_ns = eval_ns = samples = 0
    accuracy = tta = None
    dist.barrier(group=group)
    t_start = time.perf_counter_ns()
    for _epoch in range(job.epochs):
        t_epoch = time.perf_counter_ns()
        shard = torch.randperm(usable, generator=gen)[rank::world].to(device)
        for lo in range(0, len(shard), batch_size):
            idx = shard[lo : lo + batch_size]
            t0 = time.perf_counter_ns()
            step(x[idx], y[idx])
            if sync:
                sync()
            step_times.append(time.perf_counter_ns() - t0)
            samples += len(idx)
        dist.barrier(group=group)  # the epoch ends when the slowest rank is done
        t_eval = time.perf_counter_ns()
        train_ns += t_eval - t_epoch
        if evaluate:
            if rank == 0:
                ddp.module.eval()
                with _autocast(device, dtype):
                    accuracy = asset.evaluate(ddp.module, data).get("accuracy")
                ddp.module.train()
                if tta is None and job.quality_target is not None and accuracy is not None and accuracy >= job.quality_target:
                    tta = (time.perf_counter_ns() - t_start) / 1e9
            dist.barrier(group=group)
            eval_ns += time.perf_counter_ns() - t_eval
    ddp.module.eval()
    return {"epochs": job.epochs, "samples": samples, "train_time_s": train_ns / 1e9, "eval_time_s": eval_ns / 1e9,
            "step_times_ns": step_times, "accuracy": accuracy, "time_to_accuracy_s": tta}


__all__ = ["PhaseResult", "ScalingResult", "run_scaling", "scaling_efficiency"]
