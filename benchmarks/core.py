"""The measurement core: one (trial, repeat) of an asset on this machine -> result rows. No Ray here.

`run_trial(spec)` is a plain function of a TrialSpec, so Ray Tune, the local runner and a GPU box
with only torch all call the same code. Its phases: resolve the asset (a bad spec raises), set up
(device, dtype, threads, seeds, data, model), warm up, measure (LoadGen scenarios for `infer`, the
training loop for `train`), and turn each measurement into a row with exactly the columns of
results/schema.py. A failure inside the asset or the model becomes rows with status "failed"
and the error, so that a sweep goes on; a configuration this machine or engine cannot run (cfg
`engine`, `quantization`, `dtype`: benchmarks/engines.py) becomes rows with status "skipped" and the
reason, never measured and never counted as failed.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import engines as eng
from benchmarks import loadgen_harness as lgh
from benchmarks.assets import get_asset, loadable_ref
from benchmarks.assets.base import AssetData, config_dtype, config_int
from benchmarks.checkpoint import TrainCheckpoint, fingerprint
from benchmarks.environment import static_environment, window_environment
from benchmarks.model_metrics import asset_model_metrics
from benchmarks.sensors import (
    BACKGROUND_CORES,
    MeasurementWindow,
    WindowStats,
    utc_now_iso,
    visible_gpu_indices,
)
from benchmarks.spec import SCENARIOS, TrialSpec
from benchmarks.training import TrainResult, _autocast, train_model
from cluster.errors import BenchmatchError
from cluster.probe import cpu_count
from results.schema import BY_NAME, COLUMN_NAMES, CONFIG_PREFIX

Progress = Callable[[dict[str, Any]], None]
TASKS = ("train", "infer")


class TrialError(BenchmatchError, RuntimeError):
    """The trial cannot run as configured on this machine (e.g. a GPU asked for, none present)."""


@dataclass
class TrialContext:
    """What set-up produced and every measurement phase uses."""

    spec: TrialSpec
    asset: Any
    device: torch.device
    dtype: torch.dtype
    num_threads: int
    cpu_set: list[int] | None
    gpu_indices: list[int]
    sync: Callable[[], None] | None
    data: AssetData
    model: nn.Module
    env: dict[str, Any]
    parameters: int
    flops_per_sample: float | None
    bytes_per_sample: float | None = None
    engine: eng.Engine | None = None  # infer: how batches run (eager, compile, onnxruntime; int8 or not)

    @property
    def batch_size(self) -> int:
        return config_int(self.spec.config, "batch_size", 1 if self.spec.task == "infer" else 64)

    def log_dir(self, part: str) -> Path:
        return self.spec.trial_dir / part

    def window(self) -> MeasurementWindow:
        """A fresh measurement window; on a GPU the peak-memory counter restarts with it."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return MeasurementWindow(self.gpu_indices, self.sync)


# ------------------------------------------------------------------------------------------ public


def run_trial(spec: TrialSpec, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Measure one (trial, repeat) and return its rows (one per scenario; one `train` row).

    Raises ValueError for a spec that can never run (unknown asset, task or scenario); every other
    failure is returned as rows with status "failed", and a configuration the engine or machine cannot
    run (benchmarks.engines.Unsupported) as rows with status "skipped" and the reason in `error`.
    """
    t0 = time.perf_counter_ns()
    asset = get_asset(loadable_ref(spec.loader_ref, spec.asset_source))
    _validate(spec, asset)
    scenarios = list(spec.loadgen.scenarios) if spec.task == "infer" else ["train"]
    emit = _safe(progress)
    prev_threads = torch.get_num_threads()
    prev_cpus = _affinity()
    try:
        emit({"phase": "setup", "asset": spec.asset, "task": spec.task, "hardware": spec.hardware.name})
        try:
            ctx = _set_up(spec, asset)
        except eng.Unsupported as exc:
            rows = [_skipped_row(spec, sc, str(exc)) for sc in scenarios]
        except Exception as exc:
            rows = [_failed_row(spec, sc, exc, None) for sc in scenarios]
            _write_error(spec, exc)
        else:
            rows = _measure_infer(ctx, emit) if spec.task == "infer" else [_measure_train(ctx, emit)]
    finally:
        torch.set_num_threads(prev_threads)
        if prev_cpus is not None:  # a reused Ray worker must not keep the last trial's pinning
            os.sched_setaffinity(0, prev_cpus)
    duration = (time.perf_counter_ns() - t0) / 1e9
    for row in rows:
        row["duration_s"] = duration
    emit({"phase": "done", "status": repeat_status(rows), "duration_s": duration, "rows": len(rows)})
    return rows


def repeat_status(rows: list[dict[str, Any]]) -> str:
    """One word for a (trial, repeat): `ok` (every row ok), `skipped` (the configuration cannot run
    here; nothing failed) or `failed` (any row failed, or a status this code does not know)."""
    statuses = {r.get("status") for r in rows}
    if statuses <= {"ok"}:
        return "ok"
    return "skipped" if statuses <= {"ok", "skipped"} else "failed"


SATURATED = 0.95  # a Server point that completes less than this share of the offered load
OFFLINE_BELOW_SINGLESTREAM = 0.5  # Offline batches, so it should not fall far below one-at-a-time


def row_flags(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Why each row of one repeat is not a trustworthy measurement (empty: nothing found).

    `loadgen_invalid`: LoadGen did not call the run VALID (too short, too few queries, or its
    early-stopping check on the latency percentile failed). `background_load`: other processes used
    more than half a core during the window. `offline_below_singlestream`: the batched Offline
    throughput is under half the one-at-a-time SingleStream throughput of the same repeat, which no
    healthy machine does (seen: 559 vs 14,792 samples/s under interference)."""
    single = next((r.get("throughput_samples_per_s") for r in rows
                   if r.get("scenario") == "SingleStream" and r.get("status") == "ok"), None)
    out = []
    for r in rows:
        flags = []
        if r.get("status") == "ok":
            if r.get("loadgen_result") not in (None, "", "VALID") and r.get("scenario") != "train":
                flags.append("loadgen_invalid")
            if r.get("env_background_load") is True:
                flags.append("background_load")
            tput = r.get("throughput_samples_per_s")
            if (r.get("scenario") == "Offline" and single and tput is not None
                    and tput < OFFLINE_BELOW_SINGLESTREAM * single):
                flags.append("offline_below_singlestream")
        out.append(flags)
    return out


def measure(spec: TrialSpec, progress: Progress | None = None) -> list[dict[str, Any]]:
    """run_trial, measured again while its rows are flagged (at most `spec.remeasure` times more).

    Each new attempt runs LoadGen twice as long (a short run is the usual reason for INVALID) after
    the others had their go; the attempt with the fewest flagged rows is kept (the latest of equals),
    and its rows carry `flags` (why a row is still not trustworthy) and `remeasured` (attempts - 1),
    so that a disturbed measurement is never passed off as a clean one."""
    emit = _safe(progress)
    attempts: list[tuple[list[dict[str, Any]], list[list[str]]]] = []
    current = spec
    for attempt in range(spec.remeasure + 1):
        rows = run_trial(current, progress)
        flags = row_flags(rows)
        attempts.append((rows, flags))
        if not any(flags) or any(r.get("status") != "ok" for r in rows) or attempt == spec.remeasure:
            break
        why = sorted({f for fl in flags for f in fl})
        emit({"phase": "remeasure", "attempt": attempt + 1, "flags": why})
        loadgen = current.loadgen.model_copy(update={
            "min_duration_ms": current.loadgen.min_duration_ms * 2,
            "min_query_count": current.loadgen.min_query_count * 2})
        current = replace(current, loadgen=loadgen, attempt=attempt + 1)
        time.sleep(1.0)  # let a passing burst of other work end before measuring again
    best = min(range(len(attempts)), key=lambda i: (sum(bool(f) for f in attempts[i][1]), -i))
    rows, flags = attempts[best]
    for row, fl in zip(rows, flags, strict=True):
        row["flags"] = ",".join(fl)
        row["remeasured"] = len(attempts) - 1
    return rows


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS): nothing to pin or restore
        return None


def resolve_cpu_set(spec: TrialSpec) -> list[int] | None:
    """The CPUs an emulated (local) profile's trial is pinned to, or None for real hardware.

    Emulated nodes share one machine: without pinning, a 1-core profile's single thread migrates
    over every core and a 2-core profile's threads compete with whatever else runs, so profiles
    were measured out of order between runs. A profile of k cores gets the last k CPUs of this
    process's mask (CPU 0 serves most interrupts); one trial at a time per machine keeps them apart."""
    hw = spec.hardware
    available = _affinity()
    if not hw.local or available is None:
        return None
    cpus = sorted(available)
    if hw.cpu_cores > len(cpus):
        raise TrialError(f"profile {hw.name!r} emulates {hw.cpu_cores} cores, but this machine offers "
                         f"{len(cpus)} (CPUs {cpus}); use a profile with at most {len(cpus)} cores")
    return cpus[-hw.cpu_cores:]


def resolve_threads(spec: TrialSpec) -> int:
    """cfg threads if given, else the granted or nominal CPUs, capped at the CPUs this process can use.

    An emulated profile refuses more threads than its cores: the result would describe
    oversubscription of a machine that does not exist, not the profile."""
    if "threads" in spec.config:
        threads = config_int(spec.config, "threads", 1)
        if spec.hardware.local and threads > spec.hardware.cpu_cores:
            n = spec.hardware.cpu_cores
            raise TrialError(f"threads={threads} exceeds the {n} core{'s' if n != 1 else ''} that profile "
                             f"{spec.hardware.name!r} emulates; use threads <= {n}")
        return threads
    return max(1, min(spec.num_cpus or spec.hardware.cpu_cores, cpu_count()))


def resolve_device(spec: TrialSpec) -> torch.device:
    hw = spec.hardware
    if hw.device_count <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrialError(
            f"hardware {hw.name!r} asks for {hw.device_count} x {hw.accelerator_type} GPU, but torch on "
            f"{socket.gethostname()} sees no CUDA device (torch.cuda.is_available() is False, torch {torch.__version__})"
        )
    return torch.device("cuda", torch.cuda.current_device())


def resolve_dtype(spec: TrialSpec, device: torch.device) -> torch.dtype:
    dtype = config_dtype(spec.config)
    if dtype == torch.float16 and device.type == "cpu":
        raise TrialError(
            "dtype float16 is not benchmarked on CPU: torch runs many float16 CPU kernels by converting to "
            "float32 and back, so the figure would describe that fallback rather than the hardware; use bfloat16 "
            "or float32 on CPU, float16 on a GPU"
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrialError(f"dtype bfloat16 is not supported by {torch.cuda.get_device_name(device)}")
    return dtype


# ------------------------------------------------------------------------------------------ set-up


def _validate(spec: TrialSpec, asset: Any) -> None:
    if spec.task not in TASKS:
        raise ValueError(f"task {spec.task!r} is not one of {list(TASKS)}")
    if spec.task not in asset.tasks:
        raise ValueError(f"asset {spec.asset!r} supports tasks {list(asset.tasks)}, not {spec.task!r}")
    unknown = [s for s in spec.loadgen.scenarios if s not in SCENARIOS]
    if spec.task == "infer" and (unknown or not spec.loadgen.scenarios):
        raise ValueError(f"loadgen.scenarios {list(spec.loadgen.scenarios)} must be non-empty, from {list(SCENARIOS)}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def model_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Samples as the model takes them: floating inputs in the trial's dtype; integer inputs (token
    ids) unchanged, since a bfloat16 token id above 256 would no longer be the same token."""
    return x.to(dtype=dtype) if x.is_floating_point() else x


def _set_up(spec: TrialSpec, asset: Any) -> TrialContext:
    engine_name = eng.config_engine(spec.config)
    quantization = eng.config_quantization(spec.config)
    cpu_set = resolve_cpu_set(spec)
    if cpu_set is not None:
        os.sched_setaffinity(0, cpu_set)
    num_threads = resolve_threads(spec)
    device = resolve_device(spec)
    dtype = resolve_dtype(spec, device)
    reason = eng.unsupported(engine_name, quantization, dtype, device, spec.task)
    if reason is not None:  # before data and model: a skipped configuration costs nothing
        raise eng.Unsupported(reason)
    torch.set_num_threads(num_threads)
    seed_everything(spec.seed)
    gpu_indices = visible_gpu_indices(1) if device.type == "cuda" else []
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    data = asset.load_data(dict(spec.config), spec.seed)
    model = asset.build(dict(spec.config))
    if spec.task == "infer":
        prepare = getattr(asset, "prepare_for_inference", None)
        if prepare is not None:
            model = prepare(model, data, dict(spec.config))
        model = model.to(device=device, dtype=dtype).eval()
    else:
        model = model.to(device)  # float32 master weights; `dtype` is the autocast compute type
    # Training keeps float32 weights (autocast computes in `dtype`), so count with float32 inputs.
    count_dtype = dtype if spec.task == "infer" else torch.float32
    # FLOPs are the float model's arithmetic whatever the engine (an int8 engine does the same
    # multiply-adds in int8), so they are counted before the engine is built.
    flops, output_bytes = _one_sample(asset, model, data.x_test[:1], device, count_dtype)
    engine = None
    weight_bytes = eng.parameter_bytes(model)
    if spec.task == "infer":
        example = model_input(data.x_test[:2], dtype).to(device)
        engine = eng.build_engine(asset, model, example, engine_name, quantization, num_threads, flops)
        weight_bytes = engine.weight_bytes
    batch_size = config_int(spec.config, "batch_size", 1 if spec.task == "infer" else 64)
    one = model_input(data.x_test[:1], count_dtype)
    return TrialContext(
        spec=spec, asset=asset, device=device, dtype=dtype, num_threads=num_threads, cpu_set=cpu_set,
        gpu_indices=gpu_indices,
        sync=sync, data=data, model=model, env=static_environment(gpu_indices),
        parameters=sum(p.numel() for p in model.parameters()),
        flops_per_sample=flops,
        bytes_per_sample=bytes_per_sample(weight_bytes, batch_size, one.numel() * one.element_size(), output_bytes),
        engine=engine,
    )


def bytes_per_sample(weight_bytes: int, batch_size: int, input_bytes: int, output_bytes: int | None) -> float | None:
    """The schema's `bytes_per_sample`: weights read once per batch and shared by its samples, plus
    one sample's input and output tensors; None when the output could not be measured."""
    if output_bytes is None:
        return None
    return weight_bytes / batch_size + input_bytes + output_bytes


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of scaled dot-product attention from the shapes: q @ k^T and scores @ v, 2 per multiply-add
    (torch's own formula, for any leading dims; a mask or causal flag does not change the count)."""
    lead = math.prod(query[:-2])
    q_len, k_len = query[-2], key[-2]
    return 2 * lead * q_len * k_len * (query[-1] + value[-1])


def _attention_flops() -> dict[Any, Any]:
    """FlopCounterMode formulas for the attention ops it lacks: on CPU, torch's SDPA (what
    transformers' BERT and ViT call) runs `_scaled_dot_product_flash_attention_for_cpu`, which torch's
    counter does not know, so attention was silently left out (ViT-B/16: 33.7 instead of 35.1 GFLOPs)."""
    aten = torch.ops.aten
    names = ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu")
    return {getattr(aten, n): _sdpa_flops for n in names if hasattr(aten, n)}


def _one_sample(asset: Any, model: nn.Module, one: torch.Tensor, device: torch.device,
                dtype: torch.dtype) -> tuple[float | None, int | None]:
    """Forward FLOPs of one sample (None when nothing is counted) and the bytes of its output
    (None when the forward pass failed)."""
    from torch.utils._pytree import tree_leaves
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_attention_flops()) as counter:
            out = asset.run_batch(model, model_input(one, dtype).to(device=device))
        total = counter.get_total_flops()
        output_bytes = sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
    except Exception:
        total, output_bytes = 0, None
    finally:
        model.train(was_training)
    return (float(total) if total > 0 else None), output_bytes


def count_flops_per_sample(asset: Any, model: nn.Module, one: torch.Tensor, device: torch.device, dtype: torch.dtype) -> float | None:
    """Forward FLOPs of one sample (FlopCounterMode, attention included); None when it counts nothing (unknown ops)."""
    return _one_sample(asset, model, one, device, dtype)[0]


class _EngineAsset:
    """The asset with its batches run by the trial's engine, for the quality metrics after the
    scenarios (they must describe the model that was measured: int8, ONNX Runtime)."""

    def __init__(self, asset: Any, engine: eng.Engine):
        self._asset, self._engine = asset, engine

    def run_batch(self, model: nn.Module, batch: torch.Tensor) -> Any:
        return self._engine.forward(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._asset, name)


# ------------------------------------------------------------------------------------------ infer


def _scenario_order(settings: Any) -> list[str]:
    """The scenarios as asked, except that a Server curve needs Offline's throughput first."""
    scenarios = list(settings.scenarios)
    if settings.curve and scenarios.index("Offline") > scenarios.index("Server"):
        scenarios.remove("Offline")
        scenarios.insert(scenarios.index("Server"), "Offline")
    return scenarios


def _measure_infer(ctx: TrialContext, emit: Progress) -> list[dict[str, Any]]:
    spec, scenarios = ctx.spec, _scenario_order(ctx.spec.loadgen)
    try:
        samples = model_input(ctx.data.x_test, ctx.dtype)
        if ctx.device.type == "cuda":
            samples = samples.pin_memory()
        labels = ctx.data.y_test.cpu().numpy() if ctx.data.has_labels else None
        qsl = lgh.QuerySampleLibrary(samples, labels)
        asset, model = ctx.asset, ctx.model
        if ctx.engine is None or ctx.engine.name == "eager":
            model = ctx.engine.model if ctx.engine is not None else model  # the int8 copy when quantized
            predict = lgh.torch_predictor(lambda x: asset.postprocess(asset.run_batch(model, x)), ctx.device, ctx.sync)
        else:
            forward = ctx.engine.forward
            predict = lgh.torch_predictor(lambda x: asset.postprocess(forward(x)), ctx.device, ctx.sync)
        calib = lgh.warm_up(predict, qsl, ctx.batch_size)
        emit({"phase": "warmup", "single_latency_ms": calib.single_latency_s * 1e3,
              "batch_latency_ms": calib.batch_latency_s * 1e3, "batch_size": ctx.batch_size})
        accuracy = None
        if labels is not None:
            accuracy = lgh.run_accuracy(
                lgh.SystemUnderTest(predict, qsl, ctx.batch_size), qsl, spec.loadgen, calib,
                ctx.log_dir("accuracy"), seed=spec.seed,
            )
            emit({"phase": "accuracy", "accuracy": accuracy})
    except Exception as exc:
        _write_error(spec, exc)
        return [_failed_row(spec, sc, exc, ctx.num_threads, ctx) for sc in scenarios]

    rows = []
    for scenario in scenarios:
        try:
            search = curve = None
            if scenario == "Server" and spec.loadgen.searches_server:
                run, stats, search = _server_search(ctx, qsl, predict, calib, emit)
            elif scenario == "Server" and spec.loadgen.curve:
                capacity = next((r.get("throughput_samples_per_s") for r in rows
                                 if r["scenario"] == "Offline" and r["status"] == "ok"), None)
                run, stats, curve = _server_curve(ctx, qsl, predict, calib, capacity, emit)
            else:
                sut_cls = lgh.ServerSUT if scenario == "Server" else lgh.SystemUnderTest
                sut = sut_cls(predict, qsl, ctx.batch_size)
                with ctx.window() as window:
                    run = lgh.run_scenario(scenario, sut, qsl, spec.loadgen, calib, ctx.log_dir(scenario), seed=spec.seed)
                stats = window.stats
            row = _infer_row(ctx, run, stats, accuracy)
            if scenario == "Server":
                row["server_latency_bound_ms"] = spec.loadgen.server_latency_bound_ms
            if search is not None:
                row.update({"server_max_qps_within_bound": search.max_qps, "server_probes": len(search.probes)})
            if curve is not None:
                row.update({"server_curve": json.dumps(curve), "server_probes": len(curve)})
            emit({"phase": "infer", "scenario": scenario, "throughput_samples_per_s": row["throughput_samples_per_s"],
                  "latency_p99_ms": row["latency_p99_ms"], "loadgen_result": row["loadgen_result"]})
        except Exception as exc:
            _write_error(spec, exc, scenario)
            row = _failed_row(spec, scenario, exc, ctx.num_threads, ctx)
        rows.append(row)
    try:
        # Precision/recall/F1 and fairness once, after the scenarios: their imports and allocations
        # must not be in any window's peak memory (see benchmarks/model_metrics.py).
        if ctx.engine is None or (ctx.engine.name == "eager" and ctx.engine.quantization == "none"):
            quality = asset_model_metrics(ctx.asset, ctx.model, ctx.data)
        else:
            quality = asset_model_metrics(_EngineAsset(ctx.asset, ctx.engine), ctx.engine.model, ctx.data)
    except Exception as exc:
        _write_error(spec, exc, "model_metrics")
        return [_failed_row(spec, sc, exc, ctx.num_threads, ctx) for sc in scenarios]
    for row in rows:
        if row["status"] == "ok":
            row.update(quality)
    return rows


def _server_search(ctx: TrialContext, qsl: lgh.QuerySampleLibrary, predict: lgh.Predict, calib: lgh.Calibration,
                   emit: Progress) -> tuple[lgh.LoadGenRun, WindowStats, lgh.ServerSearch]:
    """Latency-bounded Server throughput: LoadGen runs at searched QPS, each in its own window.

    The row reports the best passing probe (its run and its window); when none passed, the lowest
    offered load tried, with server_max_qps_within_bound missing.
    """
    window = ctx.window

    def on_probe(p: lgh.ServerProbe) -> None:
        emit({"phase": "server_probe", "target_qps": p.target_qps, "passed": p.passed,
              "latency_p99_ms": p.run.latency_ms("p99"), "throughput_samples_per_s": p.run.throughput_samples_per_s})

    search = lgh.run_server_search(
        lambda: lgh.ServerSUT(predict, qsl, ctx.batch_size), qsl, ctx.spec.loadgen, calib, ctx.log_dir("Server"),
        seed=ctx.spec.seed, window=window, on_probe=on_probe,
    )
    chosen = search.best or min(search.probes, key=lambda p: p.target_qps)
    return chosen.run, chosen.extra.stats, search


def _server_curve(ctx: TrialContext, qsl: lgh.QuerySampleLibrary, predict: lgh.Predict, calib: lgh.Calibration,
                  capacity: float | None, emit: Progress) -> tuple[lgh.LoadGenRun, WindowStats, list[dict[str, Any]]]:
    """Latency under load: one LoadGen Server run (Poisson arrivals, dynamic batching up to the
    batch size) at each fraction of the Offline throughput `capacity`, lightest first.

    Each point keeps what the matcher needs to read capacity at an SLO off the curve: offered and
    completed samples/s, p50/p99, and whether LoadGen ran long enough to count (min duration and
    query count met); its early-stopping verdict is kept too, since short runs rarely satisfy it.
    The row reports the heaviest point that counts (else the lightest). Once a point is saturated
    (it completes under 95% of what was offered) every heavier one would be too, so the curve stops
    there: Offline's batched throughput can be several times what a replica sustains under Poisson
    arrivals of single samples (seen: 300k vs 60k samples/s)."""
    spec = ctx.spec
    base = capacity or calib.single_throughput  # Offline failed: the warm-up's estimate, said in the point
    points, runs = [], []
    for i, fraction in enumerate(spec.loadgen.server_curve or []):
        if points and points[-1]["saturated"]:
            break
        qps = max(1e-3, fraction * base)
        # A huge latency bound: a curve point is a measurement at a load, not a pass/fail probe.
        # Enough queries for the point's p99 to be more than its slowest few (tail_notes in the matcher).
        settings = spec.loadgen.model_copy(update={
            "server_target_qps": qps, "server_latency_bound_ms": 1e6,
            "min_query_count": max(spec.loadgen.min_query_count, spec.loadgen.server_curve_min_queries)})
        with ctx.window() as window:
            run = lgh.run_scenario("Server", lgh.ServerSUT(predict, qsl, ctx.batch_size), qsl, settings, calib,
                                   ctx.log_dir(f"Server/load-{i:02d}"), seed=spec.seed)
        details = run.details
        counts = bool(details.get("result_min_duration_met", True)) and bool(details.get("result_min_queries_met", True))
        point = {"fraction": fraction, "offered_qps": qps, "completed_qps": run.throughput_samples_per_s,
                 # every statistic LoadGen reports, so a bound on any of them reads its capacity here
                 **{f"latency_{k}_ms": run.latency_ms(k) for k in ("p50", "p90", "p95", "p99", "p999", "mean")},
                 "queries": run.query_count, "valid": counts,
                 "saturated": _saturated(qps, run.throughput_samples_per_s, run.query_count),
                 "early_stopping_met": details.get("early_stopping_met"),
                 "capacity_source": "Offline" if capacity else "warm-up estimate"}
        points.append(point)
        runs.append((run, window.stats, counts))
        emit({"phase": "server_load", **point})
    chosen = next((r for r in reversed(runs) if r[2]), runs[0])
    return chosen[0], chosen[1], points


def _saturated(offered: float, completed: float | None, queries: int | None) -> bool:
    """Whether a Server run could not keep up with its load: it completed under 95% of what was
    offered, by more than Poisson arrivals of `queries` vary on their own (3 standard errors)."""
    if completed is None or not queries:
        return False
    return completed < offered * (SATURATED - 3 / math.sqrt(queries))


def _infer_row(ctx: TrialContext, run: lgh.LoadGenRun, stats: WindowStats, accuracy: float | None) -> dict[str, Any]:
    row = _base_row(ctx.spec, run.scenario, ctx.num_threads, ctx)
    row.update(_window_columns(ctx, stats, run.samples))
    row.update({
        "latency_p50_ms": run.latency_ms("p50"),
        "latency_p90_ms": run.latency_ms("p90"),
        "latency_p95_ms": run.latency_ms("p95"),
        "latency_p99_ms": run.latency_ms("p99"),
        "latency_p999_ms": run.latency_ms("p999"),
        "latency_mean_ms": run.latency_ms("mean"),
        "throughput_samples_per_s": run.throughput_samples_per_s,
        "samples": run.samples,
        "samples_per_query": run.samples_per_query,
        "accuracy": accuracy,
        "loadgen_result": run.validity,
        "loadgen_log_dir": run.log_dir,
        "target_qps": run.target_qps,
    })
    return row


# ------------------------------------------------------------------------------------------ train


def _measure_train(ctx: TrialContext, emit: Progress) -> dict[str, Any]:
    spec = ctx.spec
    if "workers" in spec.config:
        return _measure_scaling(ctx, emit)
    holder: dict[str, MeasurementWindow] = {}

    def window() -> MeasurementWindow:
        holder["w"] = ctx.window()
        return holder["w"]

    try:
        result = train_model(
            ctx.asset, ctx.model, ctx.data, dict(spec.config), spec.train, ctx.device, ctx.dtype, spec.seed,
            sync=ctx.sync, progress=emit, window=window, checkpoint=_checkpoint(spec),
        )
        with _autocast(ctx.device, ctx.dtype):  # as the accuracy column was evaluated
            quality = asset_model_metrics(ctx.asset, ctx.model, ctx.data)
    except Exception as exc:
        _write_error(spec, exc)
        return _failed_row(spec, "train", exc, ctx.num_threads, ctx)
    row = _train_row(ctx, result, holder["w"].stats)
    row.update(quality)
    return row


def _train_row(ctx: TrialContext, result: TrainResult, stats: WindowStats) -> dict[str, Any]:
    spec = ctx.spec
    price = spec.hardware.price_per_hour_usd
    row = _base_row(spec, "train", ctx.num_threads, ctx)
    # The window covers this attempt only: after a resume, fewer samples than the row's total.
    row.update(_window_columns(ctx, stats, result.window_samples if result.window_samples is not None else result.samples))
    steps_ms = np.asarray(result.step_times_ns, dtype=np.float64) / 1e6
    if len(steps_ms):
        p50, p90, p95, p99, p999 = np.percentile(steps_ms, [50, 90, 95, 99, 99.9])
        row.update({"latency_p50_ms": p50, "latency_p90_ms": p90, "latency_p95_ms": p95, "latency_p99_ms": p99,
                    "latency_p999_ms": p999, "latency_mean_ms": float(steps_ms.mean())})
    tta = result.time_to_accuracy_s
    row.update({
        "throughput_samples_per_s": result.samples / result.train_time_s if result.train_time_s > 0 else None,
        "samples": result.samples,
        "accuracy": result.accuracy,
        "train_time_s": result.train_time_s,
        "epochs": result.epochs,
        "quality_target": spec.train.quality_target,
        "time_to_accuracy_s": tta,
        "cost_to_accuracy_usd": tta / 3600 * price if tta is not None and price is not None else None,
        "resumed_from_epoch": result.resumed_from_epoch,
        "time_lost_s": result.time_lost_s,
        "checkpoint_time_s": result.checkpoint_time_s,
    })
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}


def _checkpoint(spec: TrialSpec) -> TrainCheckpoint | None:
    """The trial's checkpoint; its fingerprint keeps an edited sweep from resuming a stale run."""
    if not spec.train.checkpoint:
        return None
    key = fingerprint(spec.sweep_id, spec.trial_id, spec.repeat, spec.asset, spec.config, spec.seed,
                      spec.train.model_dump(), spec.hardware.name)
    folder = spec.trial_dir
    return TrainCheckpoint(folder / "checkpoint.pt", key)


# ------------------------------------------------------------------------------------------ scaling


def _measure_scaling(ctx: TrialContext, emit: Progress) -> dict[str, Any]:
    """cfg `workers`: torch DDP over that many processes, with a 1-worker baseline (benchmarks/scaling.py)."""
    from benchmarks.scaling import run_scaling  # torch.distributed only for trials that use it

    spec = ctx.spec
    use_cuda = ctx.device.type == "cuda"
    holder: dict[str, MeasurementWindow] = {}

    def window() -> MeasurementWindow:
        holder["w"] = MeasurementWindow(visible_gpu_indices(workers) if use_cuda else [], ctx.sync)
        return holder["w"]

    try:
        workers = config_int(spec.config, "workers", 1)
        threads = config_int(spec.config, "threads", 1)  # per worker: a worker is a fixed amount of compute
        result, weights = run_scaling(
            loadable_ref(spec.loader_ref, spec.asset_source), ctx.data, dict(spec.config), config_int(spec.config, "epochs", spec.train.epochs),
            spec.train.quality_target, spec.seed, workers=workers, threads_per_worker=threads, dtype=ctx.dtype,
            use_cuda=use_cuda, out_dir=ctx.log_dir("scaling"), window=window,
        )
        emit({"phase": "scaling", "workers": workers, "throughput_samples_per_s": result.scaled.throughput_samples_per_s,
              "scaling_efficiency": result.efficiency})
        ctx.model.load_state_dict(weights)
        ctx.model.eval()
        with _autocast(ctx.device, ctx.dtype):
            quality = asset_model_metrics(ctx.asset, ctx.model, ctx.data)
    except Exception as exc:
        _write_error(spec, exc)
        return _failed_row(spec, "train", exc, ctx.num_threads, ctx)
    phase, stats = result.scaled, holder["w"].stats
    train = TrainResult(
        epochs=phase.epochs, train_time_s=phase.train_time_s, eval_time_s=phase.eval_time_s,
        elapsed_s=phase.train_time_s + phase.eval_time_s, step_times_ns=phase.step_times_ns, samples=phase.samples,
        accuracy=phase.accuracy, time_to_accuracy_s=phase.time_to_accuracy_s,
    )
    ctx.num_threads = threads
    row = _train_row(ctx, train, stats)
    row.update({
        "device_count": workers if use_cuda else 0,
        "workers": workers,
        "scaling_efficiency": result.efficiency,
        "scaling_baseline_samples_per_s": result.baseline.throughput_samples_per_s,
        # This process only waits: CPU and memory are the workers' own, summed over ranks.
        "cpu_util_pct": 100.0 * phase.cpu_s / stats.wall_s if phase.cpu_s is not None and stats.wall_s > 0 else None,
        "peak_memory_mb": None if use_cuda else phase.peak_rss_mb,
    })
    if stats.other_cpu_cores is not None and phase.cpu_s is not None and stats.wall_s > 0:
        # The workers are the fork server's children, not this process's, so the window counted
        # them as other processes: take their own CPU back out before judging background load.
        others = max(stats.other_cpu_cores - phase.cpu_s / stats.wall_s, 0.0)
        row["env_background_load"] = others > BACKGROUND_CORES
    row.update(quality)
    return row


# ------------------------------------------------------------------------------------------ rows


def _base_row(spec: TrialSpec, scenario: str, num_threads: int | None,
              ctx: TrialContext | None = None) -> dict[str, Any]:
    """Every schema column (strings empty, numbers None) with the ids, hardware, config and environment."""
    row: dict[str, Any] = {name: ("" if BY_NAME[name].dtype == "str" else None) for name in COLUMN_NAMES}
    hw = spec.hardware
    row.update({
        "sweep_id": spec.sweep_id, "trial_id": spec.trial_id, "repeat": int(spec.repeat), "scenario": scenario,
        "asset": spec.asset, "asset_ref": spec.loader_ref, "task": spec.task, "status": "ok", "error": "",
        "hardware": hw.name, "accelerator_type": hw.accelerator_type,
        "device_count": 1 if ctx is not None and ctx.device.type == "cuda" else 0,
        "num_threads": int(num_threads) if num_threads is not None else None,
        "price_per_hour_usd": hw.price_per_hour_usd,
        "energy_source": "none",
        "seed": int(spec.seed),
    })
    for key, value in spec.config.items():
        row[f"{CONFIG_PREFIX}{key}"] = value
    env = ctx.env if ctx is not None else static_environment()
    row.update(env)
    if ctx is not None:
        row["cpu_set"] = ",".join(map(str, ctx.cpu_set)) if ctx.cpu_set is not None else ""
        row["parameters"] = ctx.parameters
        row["flops_per_sample"] = ctx.flops_per_sample
        row["bytes_per_sample"] = ctx.bytes_per_sample
    return row


def _window_columns(ctx: TrialContext, stats: WindowStats, samples: int | None) -> dict[str, Any]:
    price = ctx.spec.hardware.price_per_hour_usd
    peak = stats.peak_memory_mb
    if ctx.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    energy = stats.energy_j
    return {
        "start_time": stats.start_time,
        "cpu_util_pct": stats.cpu_util_pct,
        "gpu_util_pct": stats.gpu_util_pct,
        "peak_memory_mb": peak,
        "energy_j": energy,
        "energy_per_sample_j": energy / samples if energy is not None and samples else None,
        "avg_power_w": stats.avg_power_w,
        "energy_source": stats.energy_source,
        "cost_usd": stats.wall_s / 3600 * price if price is not None else None,
        **window_environment(stats, ctx.gpu_indices),
    }


def failed_rows(spec: TrialSpec, exc: BaseException) -> list[dict[str, Any]]:
    """The rows of a (trial, repeat) that could not run at all, one per planned scenario, with the
    error; the traceback goes beside the logs. A sweep records them and goes on."""
    _write_error(spec, exc)
    scenarios = list(spec.loadgen.scenarios) if spec.task == "infer" else ["train"]
    return [_failed_row(spec, sc, exc, None) for sc in scenarios]


def _skipped_row(spec: TrialSpec, scenario: str, reason: str) -> dict[str, Any]:
    """A row of a configuration that cannot run here (status skipped, the reason in `error`): it is
    kept so that a sweep shows what was not measured and why, and it is never measured again."""
    row = _base_row(spec, scenario, None)
    row.update({"status": "skipped", "error": reason, "start_time": utc_now_iso()})
    return row


def _failed_row(spec: TrialSpec, scenario: str, exc: BaseException, num_threads: int | None,
                ctx: TrialContext | None = None) -> dict[str, Any]:
    row = _base_row(spec, scenario, num_threads, ctx)
    row.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}", "start_time": utc_now_iso()})
    return row


def _write_error(spec: TrialSpec, exc: BaseException, scenario: str = "") -> None:
    """The traceback beside the LoadGen logs, so that a failed row can be explained later."""
    try:
        folder = spec.trial_dir
        folder.mkdir(parents=True, exist_ok=True)
        name = f"error-{scenario}.txt" if scenario else "error.txt"
        (folder / name).write_text("".join(traceback.format_exception(exc)))
    except OSError:
        pass


def _safe(progress: Progress | None) -> Progress:
    """A progress callback that can never break the measurement."""
    def emit(event: dict[str, Any]) -> None:
        if progress is None:
            return
        try:
            progress(event)
        except Exception as exc:  # a broken dashboard must not fail the trial
            print(f"benchmatch: progress callback failed ({exc}); continuing", flush=True)

    return emit


__all__ = ["measure", "row_flags", "TrialContext", "TrialError", "bytes_per_sample", "count_flops_per_sample",
           "model_input", "repeat_status", "resolve_device", "resolve_dtype", "resolve_threads", "run_trial",
           "seed_everything"]
