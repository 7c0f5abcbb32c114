"""Figure: sweep overhead: wall time of a sweep of many short trials against the sum of the
trials' own time (`duration_s`, measured inside the measurement core), with one configuration per
Ray Tune trial (the baseline) and with configurations batched per Tune trial, in one run.

    .venv/bin/python tests/perf/sweep_overhead.py [TRIALS_PER_HARDWARE] [TRIAL_MS]

TRIAL_MS (default 50) is each trial's LoadGen minimum duration: 1000 gives the issue's 1-s trials.

Trials run one at a time per node (the default), on both local nodes at once, so perfect
orchestration gives wall ≈ sum / 2; the ratio printed is wall / (sum / nodes).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import ray  # noqa: E402
from perf_common import machine_line  # noqa: E402

from benchmarks.spec import LoadGenSettings, SweepSpec  # noqa: E402
from benchmarks.sweep import run_sweep  # noqa: E402
from cluster.hardware import load_catalog, local_profiles  # noqa: E402
from cluster.local import LocalCluster  # noqa: E402
from results.store import ResultsStore  # noqa: E402


def _run(spec: SweepSpec, catalog: dict) -> tuple[float, object, object, float, float]:
    t0, w0 = time.monotonic(), time.time()
    report = run_sweep(spec, catalog, progress=lambda m: None)
    wall, w1 = time.monotonic() - t0, time.time()
    df = ResultsStore(spec.results_uri).read().drop_duplicates(["trial_id", "repeat"])
    starts = pd.to_datetime(df["start_time"], utc=True).map(lambda t: t.timestamp())
    before = float(starts.min()) - w0  # run_sweep's start to the first trial's start
    after = w1 - float((starts + df["duration_s"]).max())  # the last trial's end to run_sweep's return
    print(f"  {spec.name}: {int((df['flags'].fillna('') != '').sum())} of {len(df)} repeats flagged "
          "(not re-measured here)")
    return wall, report, df["duration_s"], before, after


def main() -> int:
    per_hw = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    trial_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    catalog = load_catalog()
    profiles = local_profiles(catalog)
    print(machine_line())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bm-overhead-") as tmp:
        lc = LocalCluster(profiles)
        info = lc.start()
        ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
        try:
            # Baseline first: one Tune trial per configuration (the sweep before issue #12).
            for label, batch in (("one configuration per Tune trial (baseline)", 1),
                                 (f"{per_hw} configurations per Tune trial (default batches of 16)", 16)):
                spec = SweepSpec(
                    name=f"overhead-{batch}", asset="tiny-cnn", task="infer",
                    space={"batch_size": list(range(1, per_hw + 1)), "threads": [1]},
                    hardware=[p.name for p in profiles], configs_per_trial=batch,
                    # Orchestration only: the two nodes share 2 cores, so their trials flag each other
                    # as background load, and re-measuring would be counted as overhead here.
                    remeasure=0,
                    loadgen=LoadGenSettings(scenarios=["SingleStream"], min_duration_ms=trial_ms, min_query_count=8),
                    results_uri=str(Path(tmp) / f"results-{batch}"),
                )
                rows.append((label, *_run(spec, catalog)))
        finally:
            lc.shutdown()
    nodes = len(profiles)
    print(f"{2 * per_hw} short tiny-cnn trials (SingleStream, {trial_ms} ms) on {nodes} local nodes, one trial at a time per node")
    print("| sweep | trials | wall s | sum of trials' own time / nodes | efficiency (ideal / wall) | before the first "
          "trial | after the last | between trials, per trial |")
    print("|---|---|---|---|---|---|---|---|")
    for label, wall, report, own, before, after in rows:
        ideal = own.sum() / nodes
        between = (wall - before - after - ideal) * nodes / max(report.ran, 1)
        print(f"| {label} | {report.ran} ({report.failed} failed) | {wall:.1f} | {ideal:.1f} | {ideal / wall:.2f} | "
              f"{before:.1f} s | {after:.1f} s | {between:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
