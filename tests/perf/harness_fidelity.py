"""How faithful and how cheap is benchmatch's LoadGen harness? Prints figures beside their baselines.

1. Fidelity: a SUT whose "model" busy-waits a known service time (1 ms, 10 ms) goes through the
   harness (QSL -> SystemUnderTest -> LoadGen SingleStream -> log parsing). The latencies LoadGen
   reports should match the service time: p50 within +-2 %, p99 within +-5 %.
2. Overhead: samples/s of a no-op torch model through the harness (torch_predictor, QSL gather,
   per-sample responses) against LoadGen driving a bare no-op SUT directly, in the same process,
   SingleStream and Offline. Target: ratio >= 0.8.

Run: `python tests/perf/harness_fidelity.py [--duration-ms 3000] [--repeats 3]`. Each figure is the
median over repeats; the background load seen during the run is printed, since on a shared machine
other processes' CPU time moves the tails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from benchmarks import loadgen_harness as lgh  # noqa: E402
from benchmarks.sensors import MeasurementWindow  # noqa: E402
from benchmarks.spec import LoadGenSettings  # noqa: E402

N_SAMPLES = 1024


def busy_predict(service_ms: float) -> lgh.Predict:
    def predict(batch: torch.Tensor) -> np.ndarray:
        end = time.perf_counter_ns() + int(service_ms * 1e6)
        while time.perf_counter_ns() < end:
            pass
        return np.zeros(len(batch), dtype=np.int64)

    return predict


def fidelity(service_ms: float, duration_ms: int, out: Path) -> dict[str, float]:
    qsl = lgh.QuerySampleLibrary(torch.zeros(N_SAMPLES, 4))
    settings = LoadGenSettings(min_duration_ms=duration_ms, min_query_count=64)
    calib = lgh.Calibration(service_ms / 1e3, service_ms / 1e3, 1)
    run = lgh.run_scenario("SingleStream", lgh.SystemUnderTest(busy_predict(service_ms), qsl, 1), qsl, settings,
                           calib, out)
    return {"p50": run.latency_ms("p50"), "p99": run.latency_ms("p99"), "queries": run.query_count}


def harness_rate(scenario: str, duration_ms: int, batch: int, out: Path) -> float:
    # The "model" hands back ready predictions: what is left is the harness's own cost.
    ready = torch.zeros(N_SAMPLES, dtype=torch.int64)
    qsl = lgh.QuerySampleLibrary(torch.zeros(N_SAMPLES, 4))
    predict = lgh.torch_predictor(lambda x: ready[: len(x)], torch.device("cpu"))
    settings = LoadGenSettings(min_duration_ms=duration_ms, min_query_count=64, offline_samples=64)
    calib = lgh.warm_up(predict, qsl, batch)
    run = lgh.run_scenario(scenario, lgh.SystemUnderTest(predict, qsl, batch), qsl, settings, calib, out)
    return run.throughput_samples_per_s


def direct_rate(scenario: str, duration_ms: int, expected_qps: float, out: Path) -> float:
    """LoadGen driving the thinnest possible Python SUT: complete every sample at once, no data."""
    import mlperf_loadgen as lg

    def issue(samples):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = duration_ms
    ts.min_query_count = 64
    ts.single_stream_expected_latency_ns = max(int(1e9 / expected_qps), 1)
    ts.offline_expected_qps = expected_qps
    out.mkdir(parents=True, exist_ok=True)
    log_out = lg.LogOutputSettings()
    log_out.outdir = str(out)
    log_settings = lg.LogSettings()
    log_settings.log_output = log_out
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(N_SAMPLES, N_SAMPLES, lambda idx: None, lambda idx: None)
    lg.StartTestWithLogSettings(sut, qsl, ts, log_settings)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    return lgh.parse_logs(out).throughput_samples_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration-ms", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 256], help="Offline batch sizes through the harness")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="harness-fidelity-"))
    rows = []
    with MeasurementWindow() as window:
        for service_ms in (1.0, 10.0):
            runs = [fidelity(service_ms, args.duration_ms, tmp / f"fid-{service_ms}-{i}") for i in range(args.repeats)]
            p50 = statistics.median(r["p50"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            rows.append((f"SingleStream p50, {service_ms:g} ms service", p50, service_ms, p50 / service_ms, "±2%",
                         abs(p50 / service_ms - 1) <= 0.02))
            rows.append((f"SingleStream p99, {service_ms:g} ms service", p99, service_ms, p99 / service_ms, "±5%",
                         abs(p99 / service_ms - 1) <= 0.05))
        for scenario, batch in [("SingleStream", 1)] + [("Offline", b) for b in args.batches]:
            ours, base = [], []
            for i in range(args.repeats):  # interleaved, so drifting background load hits both alike
                ours.append(harness_rate(scenario, args.duration_ms, batch, tmp / f"h-{scenario}-{batch}-{i}"))
                # a short pilot tells the bare SUT's LoadGen what rate to expect, as warm-up does for ours
                pilot = direct_rate(scenario, 100, ours[-1] or 1000.0, tmp / f"p-{scenario}-{batch}-{i}")
                base.append(direct_rate(scenario, args.duration_ms, pilot, tmp / f"d-{scenario}-{batch}-{i}"))
            o, b = statistics.median(ours), statistics.median(base)
            rows.append((f"{scenario} samples/s, no-op, batch {batch}", o, b, o / b, ">=0.8", o / b >= 0.8))
    print(f"\nharness fidelity and overhead ({args.repeats} repeats x {args.duration_ms} ms, median; "
          f"logs in {tmp})")
    print(f"{'figure':<40} {'measured':>14} {'baseline':>14} {'ratio':>8} {'target':>7}  ok")
    for name, measured, baseline, ratio, target, ok in rows:
        print(f"{name:<40} {measured:>14.4f} {baseline:>14.4f} {ratio:>8.4f} {target:>7}  {'yes' if ok else 'NO'}")
    s = window.stats
    print("\nbaseline: service time (fidelity rows, ms) / bare LoadGen no-op SUT (overhead rows, samples/s)")
    print(f"other processes' CPU during the run: {s.other_cpu_cores:.2f} cores "
          f"(background load flag: {s.background_load}); loadavg {s.loadavg_before} -> {s.loadavg_after}")


if __name__ == "__main__":
    main()
