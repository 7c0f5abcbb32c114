"""MLPerf LoadGen around a torch model: Query Sample Library, System Under Test, scenarios, log parsing.

The split follows LoadGen's own: the `QuerySampleLibrary` holds the samples and is told by LoadGen
which to load; the `SystemUnderTest` runs the model on the samples LoadGen issues and reports each
one complete with its prediction; LoadGen alone decides when to send what and times every query.
Results are read back from LoadGen's logs (`mlperf_log_detail.txt`, falling back to
`mlperf_log_summary.txt`), never re-timed here.

Scenario mapping (see docs/measurement.md):
- SingleStream: one sample per query, the next issued when the last completes; metric p90 latency.
- MultiStream: one query = `batch_size` samples = one forward pass; metric p99 latency.
- Offline: one query of all samples; the SUT runs them in batches of `batch_size`; metric samples/s.
- Server: Poisson arrivals at a target QPS; a worker thread batches whatever has queued (up to
  `batch_size`); metric completed samples/s, VALID only if p99 latency stays within the bound.
  With a bound, `run_server_search` finds the highest QPS that keeps p99 within it (MLPerf's
  latency-bounded throughput) by a bounded search over short Server runs.
"""

from __future__ import annotations

import itertools
import json
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.spec import LoadGenSettings

PERCENTILES = {"p50": "50.00", "p90": "90.00", "p95": "95.00", "p99": "99.00", "p999": "99.90"}
OFFLINE_QPS_HEADROOM = 2.0  # Offline's expected QPS over the warm-up's (see build_settings)
OFFLINE_COMPLETION_GROUP = 2048  # samples per QuerySamplesComplete call in Offline (see run_loadgen)
SCENARIO_METRIC = {"SingleStream": "latency_p90_ms", "MultiStream": "latency_p99_ms",
                   "Server": "throughput_samples_per_s", "Offline": "throughput_samples_per_s"}

# A model's answer for a batch: one prediction per sample along the first dimension.
Predictions = torch.Tensor | np.ndarray
Predict = Callable[[torch.Tensor], Predictions]


def _lg() -> Any:
    import mlperf_loadgen

    return mlperf_loadgen


# ---------------------------------------------------------------------------------------------- QSL


class QuerySampleLibrary:
    """The samples LoadGen may issue, held in host memory (pinned for a GPU: copies are async).

    Copying a batch to the device is the SUT's job and is inside the measured latency, as it is for
    a server that receives requests in host memory.
    """

    def __init__(self, samples: torch.Tensor, labels: np.ndarray | None = None, performance_count: int | None = None):
        self.samples = samples.contiguous()
        # One view per sample: a single-sample query then costs a list lookup, not a tensor slice.
        self.views = list(self.samples.split(1))
        # Batches are gathered by numpy (a few µs, a third of torch's fancy indexing); dtypes numpy
        # lacks (bfloat16) are gathered as same-width integers and viewed back.
        self._np, self._view_as = _numpy_storage(self.samples)
        self.labels = labels
        self.total_count = len(samples)
        self.performance_count = min(performance_count or self.total_count, self.total_count)
        self.loaded: set[int] = set()

    def load(self, indices: Sequence[int]) -> None:
        self.loaded.update(indices)  # already resident: LoadGen's load is bookkeeping here

    def unload(self, indices: Sequence[int]) -> None:
        self.loaded.difference_update(indices)

    def gather(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        if len(indices) == 1:
            return self.views[indices[0]]
        if self._np is None:
            return self.samples.index_select(0, torch.tensor(indices))
        batch = torch.from_numpy(self._np.take(indices, axis=0))
        return batch if self._view_as is None else batch.view(self._view_as)

    def batcher(self, batch_size: int) -> Callable[[np.ndarray], torch.Tensor]:
        """A gather for one SUT: full batches are written into one reused host buffer.

        Building a tensor per batch (`torch.from_numpy`) costs about as much as the gather itself;
        a buffer filled in place costs neither. It is safe because the SUT runs one batch at a time
        and is done with it before the next (a GPU predictor synchronises before returning). The
        buffer is pinned when the samples are, so the copy to the device stays asynchronous.
        Smaller batches (an Offline tail, a partly filled Server batch) are gathered fresh.
        """
        if self._np is None or batch_size < 2:
            return self.gather
        buf = torch.empty((batch_size, *self.samples.shape[1:]), dtype=self.samples.dtype,
                          pin_memory=self.samples.is_pinned())
        buf_np, _ = _numpy_storage(buf)
        source, gather = self._np, self.gather

        def gather_batch(indices: np.ndarray) -> torch.Tensor:
            if len(indices) != batch_size:
                return gather(indices)
            # mode="clip": LoadGen's indices are always in range, and "raise" would buffer the output
            source.take(indices, axis=0, out=buf_np, mode="clip")
            return buf

        return gather_batch

    def construct(self) -> Any:
        return _lg().ConstructQSL(self.total_count, self.performance_count, self.load, self.unload)


def _numpy_storage(samples: torch.Tensor) -> tuple[np.ndarray | None, torch.dtype | None]:
    if samples.device.type != "cpu" or samples.dim() == 0:
        return None, None
    try:
        return samples.numpy(), None
    except TypeError:
        ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(samples.element_size())
        if ints is None:
            return None, None
        return samples.view(ints).numpy(), samples.dtype


# ---------------------------------------------------------------------------------------------- SUT


def torch_predictor(
    run: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    sync: Callable[[], None] | None = None,
) -> Predict:
    """Wrap `run(batch) -> predictions` into host batch -> host predictions, GPU work finished.

    On a GPU the batch is copied in and the predictions copied back inside the call, as a server
    must. On the CPU the model's output tensor is handed over as it is (converting it is only
    needed when LoadGen logs predictions, and the SUT does it then), so without a `sync` the
    predictor is `run` itself: no wrapper call per query. Call it inside `torch.inference_mode()`;
    warm_up, run_loadgen and the Server worker each enter it once for the whole run.
    """
    if device.type == "cpu":
        if sync is None:
            return run

        def predict_cpu(batch: torch.Tensor) -> Predictions:
            out = run(batch)
            sync()
            return out

        return predict_cpu

    def predict_device(batch: torch.Tensor) -> Predictions:
        out = run(batch.to(device, non_blocking=True))
        if sync is not None:
            sync()
        return out.to("cpu")

    return predict_device


def predictions_as_int64(preds: Predictions) -> np.ndarray:
    """Predictions as a flat, contiguous int64 array: what LoadGen's accuracy log records per sample."""
    if isinstance(preds, torch.Tensor):
        preds = preds.detach().to("cpu", torch.int64).numpy()
    return np.ascontiguousarray(preds, dtype=np.int64).reshape(-1)


def check_prediction_count(preds: Predictions, expected: int) -> None:
    got = int(preds.shape[0]) if hasattr(preds, "shape") else len(preds)
    if got != expected:
        raise RuntimeError(
            f"the model returned {got} predictions for {expected} samples; an asset's run_batch/postprocess "
            f"must return one prediction per sample along the first dimension")


class SystemUnderTest:
    """Runs each issued query inline, in batches of at most `batch_size`, and completes its samples.

    It is built on LoadGen's fast SUT interface, which hands over plain lists of sample ids and
    indices rather than one Python object per sample: per-sample Python work is what limits a
    harness around a fast model (see docs/performance.md).

    An exception in the model must not escape into LoadGen's thread (it would abort the process) nor
    leave samples incomplete (LoadGen would wait forever): it is kept in `error`, the samples are
    completed empty, and `raise_if_failed()` re-raises it after the test.
    """

    name = "benchmatch-sut"

    def __init__(self, predict: Predict, qsl: QuerySampleLibrary, batch_size: int):
        self.predict = predict
        self.qsl = qsl
        self.batch_size = max(int(batch_size), 1)
        self.error: BaseException | None = None
        self.completed = 0
        self._respond = _lg().QuerySampleResponse
        self._complete = _lg().QuerySamplesComplete
        self._gather = qsl.batcher(self.batch_size)
        # Response objects are reused: QuerySamplesComplete copies them, and building and freeing
        # one Python object per sample costs four times as much as setting its id.
        self.group_completions(self.batch_size)
        # Predictions are handed to LoadGen only when it logs them (AccuracyOnly): in performance
        # mode LoadGen ignores response data, and pointer bookkeeping would only add overhead.
        self._return_data = False
        self._single_fast = True  # no data to return and no error yet: see run_samples

    @property
    def return_data(self) -> bool:
        return self._return_data

    @return_data.setter
    def return_data(self, value: bool) -> None:
        self._return_data = bool(value)
        self._single_fast = self.error is None and not self._return_data

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._single_fast = False

    def run_samples(self, ids: list[int], indices: list[int]) -> None:
        if self._single_fast and len(ids) == 1:
            # SingleStream and most Server queries: this path is the harness's per-query cost, so it
            # is kept to a list lookup, the model call and one response. The prediction count was
            # checked at warm-up.
            try:
                self.predict(self.qsl.views[indices[0]])
                self.completed += 1
            except BaseException as exc:  # noqa: BLE001 - kept and re-raised after the test
                self._fail(exc)
            one = self._one
            one[0].id = ids[0]
            self._complete(one)
            return
        predict, respond, complete, gather = self.predict, self._respond, self._complete, self._gather
        pool, bs, n = self._responses, self.batch_size, len(ids)
        idx = np.fromiter(indices, dtype=np.intp, count=n)  # once per query, not once per batch
        first = 0  # ids[first:start] have run and wait for one completion call
        for start in range(0, n, bs):
            stop = start + bs if start + bs < n else n
            if self.error is None:
                try:
                    preds = predict(gather(idx[start:stop]))
                    if preds.shape[0] != stop - start:
                        check_prediction_count(preds, stop - start)
                    self.completed += stop - start
                    if self._return_data:
                        values = predictions_as_int64(preds)
                        base = values.ctypes.data
                        complete([respond(i, base + 8 * k, 8) for k, i in enumerate(ids[start:stop])])
                        first = stop
                        continue
                except BaseException as exc:  # noqa: BLE001 - kept and re-raised after the test
                    self._fail(exc)
            # No data to hand over (performance mode, or after a failure): the reused response
            # objects get their ids once per completion call, when the next batch would not fit.
            if stop - first + bs > len(pool) or stop == n:
                responses = pool if stop - first == len(pool) else pool[: stop - first]
                for r, i in zip(responses, ids[first:stop], strict=True):
                    r.id = i
                complete(responses)
                first = stop

    def group_completions(self, samples: int) -> None:
        """Hand LoadGen completions in groups of up to `samples` (Offline: see run_loadgen)."""
        size = max(self.batch_size, int(samples))
        self._responses = [self._respond(0, 0, 0) for _ in range(size)]
        self._one = self._responses[:1]

    issue_queries = run_samples  # LoadGen calls this on its issue thread

    def flush_queries(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def construct(self) -> Any:
        return _lg().ConstructFastSUT(self.issue_queries, self.flush_queries)

    def destroy(self, handle: Any) -> None:
        _lg().DestroyFastSUT(handle)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the model failed during the LoadGen run: {self.error}") from self.error


_ZEROS = itertools.repeat(0)  # endless: zips against any id list as (data pointer, size) = (0, 0)


class ServerSUT(SystemUnderTest):
    """Server scenario: LoadGen's issue thread only enqueues; a worker batches what has arrived.

    Dynamic batching (take everything queued, up to batch_size) is what inference servers do, and
    keeps LoadGen's Poisson schedule from being blocked by the model.
    """

    WARMUP_CALLS = 3

    def __init__(self, predict: Predict, qsl: QuerySampleLibrary, batch_size: int):
        super().__init__(predict, qsl, batch_size)
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._warm = threading.Event()

    def issue_queries(self, ids: list[int], indices: list[int]) -> None:
        for pair in zip(ids, indices, strict=True):
            self._queue.put(pair)

    def start(self) -> None:
        """Start the worker and wait until it has run the model: a new thread's first calls pay
        one-time costs (OpenMP builds a thread team per calling thread, torch sets up per-thread
        state), which would otherwise land in the first queries' latency, and at a light load
        decide the p99 (seen: 12 ms at 5% load against 1 ms once warm)."""
        self._worker = threading.Thread(target=self._serve, name="benchmatch-server-sut", daemon=True)
        self._worker.start()
        self._warm.wait(timeout=120)

    def _warm_up(self) -> None:
        try:
            n = min(self.batch_size, len(self.qsl.views))
            for _ in range(self.WARMUP_CALLS):
                self.predict(self.qsl.views[0])
                self.predict(self._gather(np.arange(n, dtype=np.intp)))
        except BaseException:  # noqa: BLE001 - a failing model fails its first real query, with its error
            pass
        finally:
            self._warm.set()

    def stop(self) -> None:
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join()

    def _serve(self) -> None:
        with torch.inference_mode():
            self._warm_up()
            self._serve_loop()

    def _serve_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            ids, indices, stop = [first[0]], [first[1]], False
            while len(ids) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                ids.append(item[0])
                indices.append(item[1])
            self.run_samples(ids, indices)
            if stop:
                return


# ------------------------------------------------------------------------------------ warm-up / calibration


@dataclass
class Calibration:
    """Warm-up timings: they tell LoadGen what to expect (query counts, Offline sample count)."""

    single_latency_s: float
    batch_latency_s: float
    batch_size: int

    @property
    def batch_throughput(self) -> float:
        return self.batch_size / self.batch_latency_s

    @property
    def single_throughput(self) -> float:
        return 1.0 / self.single_latency_s


def warm_up(
    predict: Predict,
    qsl: QuerySampleLibrary,
    batch_size: int,
    min_iters: int = 10,
    min_time_s: float = 0.1,
    max_iters: int = 2000,
) -> Calibration:
    """Run batch-1 and batch-`batch_size` queries until warm; median of the later half.

    Each timed step is what the SUT does per batch (gather from the QSL, predict, fill LoadGen's
    responses) so that the Offline sample count and expected latencies LoadGen derives from it
    are right even where per-sample bookkeeping outweighs a tiny model. The first call at each size
    also checks that the model answers one prediction per sample, which the SUT's single-sample
    path then need not re-check per query.
    """
    respond = _lg().QuerySampleResponse

    def median_time(n: int) -> float:
        idx = [i % qsl.total_count for i in range(n)]
        check_prediction_count(predict(qsl.gather(idx)), n)
        responses = [respond(0, 0, 0) for _ in range(n)]
        times: list[int] = []
        t_end = time.perf_counter() + min_time_s
        while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() < t_end):
            t0 = time.perf_counter_ns()
            predict(qsl.gather(idx))
            for r, i in zip(responses, idx, strict=True):  # as the SUT refills its reused responses
                r.id = i
            times.append(time.perf_counter_ns() - t0)
        later = sorted(times[len(times) // 2 :])
        return max(later[len(later) // 2], 1) / 1e9

    with torch.inference_mode():
        single, batch = median_time(1), median_time(batch_size)
    return Calibration(single_latency_s=single, batch_latency_s=batch, batch_size=batch_size)


# ------------------------------------------------------------------------------------------- run


@dataclass
class LoadGenRun:
    """One LoadGen test, as LoadGen reported it. Latencies in ns; None where LoadGen gives none."""

    scenario: str
    mode: str
    validity: str
    latency_ns: dict[str, float | None]
    throughput_samples_per_s: float | None
    samples: int | None
    samples_per_query: int | None
    query_count: int | None
    target_qps: float | None
    log_dir: str
    accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def latency_ms(self, key: str) -> float | None:
        v = self.latency_ns.get(key)
        return v / 1e6 if v is not None else None


def build_settings(
    scenario: str,
    settings: LoadGenSettings,
    calib: Calibration,
    *,
    accuracy: bool = False,
    seed: int = 0,
) -> tuple[Any, float | None]:
    """LoadGen TestSettings for a scenario, and the target QPS given to it (Server / Offline)."""
    lg = _lg()
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(settings.min_duration_ms)
    ts.min_query_count = int(settings.min_query_count)
    # The repeat's seed drives which samples are issued and the Poisson schedule, so repeats differ.
    ts.qsl_rng_seed = ts.sample_index_rng_seed = ts.schedule_rng_seed = int(seed) & 0xFFFFFFFF
    target_qps: float | None = None
    if scenario == "SingleStream":
        ts.single_stream_expected_latency_ns = max(int(calib.single_latency_s * 1e9), 1)
    elif scenario == "MultiStream":
        ts.multi_stream_samples_per_query = calib.batch_size
        ts.multi_stream_expected_latency_ns = max(int(calib.batch_latency_s * 1e9), 1)
    elif scenario == "Offline":
        # In Offline LoadGen issues max(min_query_count, 1.1 x min_duration x expected_qps) samples.
        # A short warm-up underrates a fast model (caches and clocks still settling), and a run
        # shorter than min_duration is INVALID; overrating only lengthens the run.
        target_qps = calib.batch_throughput * OFFLINE_QPS_HEADROOM
        ts.offline_expected_qps = target_qps
        ts.min_query_count = int(settings.offline_samples)
    elif scenario == "Server":
        # Without a configured target, offer half of what one sample at a time can sustain.
        target_qps = settings.server_target_qps or 0.5 * calib.single_throughput
        ts.server_target_qps = float(target_qps)
        if settings.server_latency_bound_ms:
            ts.server_target_latency_ns = int(settings.server_latency_bound_ms * 1e6)
    else:
        raise ValueError(f"unknown LoadGen scenario {scenario!r}; known: {list(SCENARIO_METRIC)}")
    return ts, target_qps


def run_loadgen(
    sut: SystemUnderTest,
    qsl: QuerySampleLibrary,
    test_settings: Any,
    log_dir: str | Path,
) -> None:
    """StartTestWithLogSettings with logs in `log_dir`; the SUT's error, if any, re-raised after."""
    lg = _lg()
    out = Path(log_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(out)
    log_out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    log_settings.enable_trace = False
    sut_handle, qsl_handle = sut.construct(), qsl.construct()
    sut.return_data = test_settings.mode == lg.TestMode.AccuracyOnly
    # Each QuerySamplesComplete call costs LoadGen about 13 µs whatever its size. Offline reports
    # only the time of the last completion, so there completions are grouped; every other scenario
    # times each sample and gets its completion the moment its batch is done.
    offline = test_settings.scenario == lg.TestScenario.Offline
    sut.group_completions(OFFLINE_COMPLETION_GROUP if offline else sut.batch_size)
    sut.start()
    try:
        # Non-Server scenarios call the SUT on this thread: one inference-mode context for the run.
        with torch.inference_mode():
            lg.StartTestWithLogSettings(sut_handle, qsl_handle, test_settings, log_settings)
    finally:
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        sut.destroy(sut_handle)
    trace = out / "mlperf_log_trace.json"
    if trace.exists() and trace.stat().st_size == 0:
        trace.unlink()
    sut.raise_if_failed()


def run_scenario(
    scenario: str,
    sut: SystemUnderTest,
    qsl: QuerySampleLibrary,
    settings: LoadGenSettings,
    calib: Calibration,
    log_dir: str | Path,
    *,
    seed: int = 0,
) -> LoadGenRun:
    """A PerformanceOnly run of one scenario, parsed from LoadGen's logs."""
    ts, target_qps = build_settings(scenario, settings, calib, seed=seed)
    run_loadgen(sut, qsl, ts, log_dir)
    run = parse_logs(log_dir)
    run.target_qps = target_qps
    return run


def run_accuracy(
    sut: SystemUnderTest,
    qsl: QuerySampleLibrary,
    settings: LoadGenSettings,
    calib: Calibration,
    log_dir: str | Path,
    *,
    seed: int = 0,
) -> float | None:
    """AccuracyOnly (Offline): every sample once through the same SUT; top-1 from LoadGen's accuracy log."""
    if qsl.labels is None:
        return None
    ts, _ = build_settings("Offline", settings, calib, accuracy=True, seed=seed)
    run_loadgen(sut, qsl, ts, log_dir)
    return accuracy_from_log(Path(log_dir) / "mlperf_log_accuracy.json", qsl.labels)


# ---------------------------------------------------------------------------------- Server search


@dataclass
class ServerProbe:
    """One LoadGen Server run of the search, at one offered load."""

    target_qps: float
    passed: bool
    run: LoadGenRun
    extra: Any = None  # what the caller's probe returned beside the run (e.g. its window's stats)


@dataclass
class ServerSearch:
    """The probes in the order run; `best` is the passing probe with the highest target QPS."""

    probes: list[ServerProbe]
    best: ServerProbe | None

    @property
    def max_qps(self) -> float | None:
        return self.best.target_qps if self.best is not None else None


def server_probe_passed(run: LoadGenRun, bound_ms: float) -> bool:
    """Whether a Server run kept p99 latency within the bound.

    LoadGen's own verdict on the latency constraint (`result_perf_constraints_met`) decides, not
    its overall VALID: with short probes LoadGen's early-stopping rule needs more queries than a
    sweep can afford (a few hundred at p99), which makes every short run INVALID whatever its
    latency. Where the verdict is absent, p99 <= bound, which is what LoadGen checks.
    """
    verdict = run.details.get("result_perf_constraints_met")
    if isinstance(verdict, bool):
        return verdict
    p99 = run.latency_ms("p99")
    return p99 is not None and p99 <= bound_ms


def search_server_peak(
    probe: Callable[[float], tuple[LoadGenRun, Any]],
    start_qps: float,
    bound_ms: float,
    *,
    max_probes: int = 8,
    tolerance: float = 0.05,
) -> ServerSearch:
    """The highest offered QPS whose Server run keeps p99 within `bound_ms`, in at most `max_probes` runs.

    Exponential phase: double after a pass, halve after a failure, until one of each brackets the
    peak; then bisect the bracket until its ends are within `tolerance` of each other. Probes are
    only ever placed inside the bracket, so a noisy result can narrow it from either side but never
    invert it. `probe(qps)` runs LoadGen and returns (run, anything to keep with it).
    """
    if start_qps <= 0:
        raise ValueError(f"start_qps must be > 0, got {start_qps}")
    probes: list[ServerProbe] = []
    best: ServerProbe | None = None
    worst_fail: float | None = None  # the lowest failing QPS
    qps = float(start_qps)
    for _ in range(max_probes):
        run, extra = probe(qps)
        p = ServerProbe(qps, server_probe_passed(run, bound_ms), run, extra)
        probes.append(p)
        if p.passed and (best is None or qps > best.target_qps):
            best = p
        elif not p.passed and (worst_fail is None or qps < worst_fail):
            worst_fail = qps
        if worst_fail is None:
            qps *= 2
        elif best is None:
            qps /= 2
        elif worst_fail / best.target_qps <= 1 + tolerance:
            break
        else:
            qps = (best.target_qps + worst_fail) / 2
    return ServerSearch(probes, best)


def run_server_search(
    make_sut: Callable[[], SystemUnderTest],
    qsl: QuerySampleLibrary,
    settings: LoadGenSettings,
    calib: Calibration,
    log_dir: str | Path,
    *,
    seed: int = 0,
    window: Callable[[], Any] | None = None,
    on_probe: Callable[[ServerProbe], None] | None = None,
) -> ServerSearch:
    """search_server_peak with real LoadGen Server runs, each in `<log_dir>/probe-NN/`.

    Every probe uses the same seed (so the same Poisson schedule, scaled) and a fresh SUT; `window()`,
    if given, is a context manager entered around each run whose value is kept as the probe's extra.
    """
    if settings.server_latency_bound_ms is None:
        raise ValueError("the Server search needs loadgen.server_latency_bound_ms")
    bound = float(settings.server_latency_bound_ms)
    start = settings.server_target_qps or 0.5 * calib.single_throughput
    count = 0

    def probe(qps: float) -> tuple[LoadGenRun, Any]:
        nonlocal count
        count += 1
        probe_settings = settings.model_copy(update={"server_target_qps": qps})
        folder = Path(log_dir) / f"probe-{count:02d}"
        if window is None:
            run, extra = run_scenario("Server", make_sut(), qsl, probe_settings, calib, folder, seed=seed), None
        else:
            with window() as w:
                run = run_scenario("Server", make_sut(), qsl, probe_settings, calib, folder, seed=seed)
            extra = w
        if on_probe is not None:
            on_probe(ServerProbe(qps, server_probe_passed(run, bound), run, extra))
        return run, extra

    search = search_server_peak(probe, start, bound, max_probes=settings.server_search_max_probes,
                                tolerance=settings.server_search_tolerance)
    summary = {
        "latency_bound_ms": bound, "max_qps_within_bound": search.max_qps,
        "probes": [{"target_qps": p.target_qps, "passed": p.passed, "validity": p.run.validity,
                    "latency_p99_ms": p.run.latency_ms("p99"), "completed_samples_per_s": p.run.throughput_samples_per_s,
                    "log_dir": p.run.log_dir} for p in search.probes],
    }
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    (Path(log_dir) / "server_search.json").write_text(json.dumps(summary, indent=2))
    return search


# ----------------------------------------------------------------------------------------- parsing


def read_detail_log(path: str | Path) -> dict[str, tuple[Any, float]]:
    """`:::MLLOG {json}` lines of mlperf_log_detail.txt as key -> (value, time_ms); last one wins,
    except repeated keys (generic_message) which keep every value under key#n."""
    out: dict[str, tuple[Any, float]] = {}
    counts: dict[str, int] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            rec = json.loads(line[len(":::MLLOG") :])
        except json.JSONDecodeError:
            continue
        key = rec.get("key")
        if not key:
            continue
        n = counts.get(key, 0)
        counts[key] = n + 1
        out[f"{key}#{n}"] = (rec.get("value"), float(rec.get("time_ms") or 0.0))
        out[key] = out[f"{key}#{n}"]
    return out


_SUMMARY_NUM = re.compile(r"^\s*(?P<key>[^:]+?)\s*:\s*(?P<val>-?[0-9.]+(?:e[+-]?\d+)?)\s*$", re.IGNORECASE)


def parse_summary(text: str) -> dict[str, Any]:
    """mlperf_log_summary.txt as a dict of its 'name : value' lines (numbers as floats)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        m = _SUMMARY_NUM.match(line)
        if m:
            out[m.group("key").strip()] = float(m.group("val"))
        elif ":" in line:
            key, _, val = line.partition(":")
            out.setdefault(key.strip(), val.strip())
    return out


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def parse_logs(log_dir: str | Path) -> LoadGenRun:
    """A LoadGenRun from the detail log, with the summary as fallback for each figure."""
    log_dir = Path(log_dir)
    detail_path, summary_path = log_dir / "mlperf_log_detail.txt", log_dir / "mlperf_log_summary.txt"
    d = read_detail_log(detail_path) if detail_path.exists() else {}
    s = parse_summary(summary_path.read_text()) if summary_path.exists() else {}
    if not d and not s:
        raise RuntimeError(f"LoadGen wrote no logs in {log_dir}")

    def dv(key: str) -> Any:
        return d[key][0] if key in d else None

    scenario = str(dv("effective_scenario") or s.get("Scenario") or "")
    mode = str(dv("effective_test_mode") or s.get("Mode") or "")
    validity = str(dv("result_validity") or s.get("Result is") or "UNKNOWN").strip()
    latency: dict[str, float | None] = {}
    for key, pct in PERCENTILES.items():
        latency[key] = _num(dv(f"result_{pct}_percentile_latency_ns")) or _num(s.get(f"{pct} percentile latency (ns)"))
    latency["mean"] = _num(dv("result_mean_latency_ns")) or _num(s.get("Mean latency (ns)"))
    spq = _num(dv("effective_samples_per_query")) or _num(s.get("samples_per_query"))
    queries = _num(dv("result_query_count"))

    throughput: float | None = None
    if scenario == "Offline":
        throughput = _num(dv("result_samples_per_second")) or _num(s.get("Samples per second"))
    elif scenario == "Server":
        throughput = _num(dv("result_completed_samples_per_sec")) or _num(s.get("Completed samples per second"))
    elif scenario == "SingleStream":
        throughput = _num(dv("result_qps_with_loadgen_overhead")) or _num(s.get("QPS w/ loadgen overhead"))
    elif scenario == "MultiStream" and queries and spq:
        # LoadGen reports no rate for MultiStream: samples over the issuing window, the same
        # definition as SingleStream's "QPS w/ loadgen overhead" (checked against it in the tests).
        window_ms = _issue_window_ms(d)
        if window_ms:
            throughput = queries * spq / (window_ms / 1e3)
        elif latency["mean"]:
            throughput = spq / (latency["mean"] / 1e9)
    if scenario == "Offline":
        # One query holds every sample: its "latency" is the whole run, not a per-sample latency.
        latency = {k: None for k in latency}
    samples = int(queries * spq) if queries is not None and spq is not None else None
    details = {
        k: dv(k) for k in (
            "result_min_duration_met", "result_min_queries_met", "early_stopping_met",
            "result_perf_constraints_met", "result_invalid_reason", "result_scheduled_samples_per_sec",
            "effective_target_latency_ns", "result_overlatency_query_count", "num_errors",
        ) if k in d
    }
    return LoadGenRun(
        scenario=scenario, mode=mode, validity=validity, latency_ns=latency, throughput_samples_per_s=throughput,
        samples=samples, samples_per_query=int(spq) if spq is not None else None,
        query_count=int(queries) if queries is not None else None, target_qps=None,
        log_dir=str(log_dir.resolve()), details=details,
    )


def _issue_window_ms(d: dict[str, tuple[Any, float]]) -> float | None:
    """From the end of schedule generation (issuing starts) to LoadGen's 'Ending ...' message."""
    start = d.get("generated_query_count")
    end = None
    for key, (value, t) in d.items():
        if key.startswith("generic_message#") and isinstance(value, str) and value.startswith("Ending"):
            end = t
    if start is None or end is None or end <= start[1]:
        return None
    return end - start[1]


def accuracy_from_log(path: str | Path, labels: np.ndarray) -> float:
    """Top-1 accuracy from mlperf_log_accuracy.json (int64 predictions as hex, one per sample)."""
    entries = json.loads(Path(path).read_text() or "[]")
    if not entries:
        raise RuntimeError(f"LoadGen's accuracy log {path} is empty")
    correct = 0
    seen = set()
    for e in entries:
        idx = int(e["qsl_idx"])
        if idx in seen:
            continue
        seen.add(idx)
        pred = int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.int64)[0])
        correct += int(pred == int(labels[idx]))
    return correct / len(seen)
