"""Figure: sweep overhead: wall time of a sweep of many short trials against the sum of the
trials' own time (`duration_s`, measured inside the measurement core), in one run.

    .venv/bin/python tests/perf/sweep_overhead.py [TRIALS_PER_HARDWARE]

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

import ray  # noqa: E402

from benchmarks.spec import LoadGenSettings, SweepSpec  # noqa: E402
from benchmarks.sweep import run_sweep  # noqa: E402
from cluster.hardware import load_catalog, local_profiles  # noqa: E402
from cluster.local import LocalCluster  # noqa: E402
from results.store import ResultsStore  # noqa: E402


def main() -> int:
    per_hw = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    catalog = load_catalog()
    profiles = local_profiles(catalog)
    with tempfile.TemporaryDirectory(prefix="bm-overhead-") as tmp:
        spec = SweepSpec(
            name="overhead", asset="tiny-cnn", task="infer",
            space={"batch_size": list(range(1, per_hw + 1)), "threads": [1]},
            hardware=[p.name for p in profiles],
            loadgen=LoadGenSettings(scenarios=["SingleStream"], min_duration_ms=50, min_query_count=8),
            results_uri=str(Path(tmp) / "results"),
        )
        lc = LocalCluster(profiles)
        info = lc.start()
        ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
        try:
            t0 = time.monotonic()
            report = run_sweep(spec, catalog, progress=lambda m: None)
            wall = time.monotonic() - t0
        finally:
            lc.shutdown()
        df = ResultsStore(spec.results_uri).read()
        own = df.drop_duplicates(["trial_id", "repeat"])["duration_s"]
    nodes = len(profiles)
    ideal = own.sum() / nodes
    print("| figure | value | baseline |\n|---|---|---|")
    print(f"| trials | {report.ran} ({report.failed} failed) | |")
    print(f"| sweep wall time | {wall:.1f} s | sum of trials' own time / {nodes} nodes = {ideal:.1f} s |")
    print(f"| overhead ratio | {wall / ideal:.2f}x | 1.00x (perfect orchestration) |")
    print(f"| overhead per trial | {(wall - ideal) * nodes / max(report.ran, 1):.2f} s | median trial's own time "
          f"{own.median():.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
