"""Figure: wall time of `benchmatch quickstart` and of each stage, on this machine.

Prints each stage beside its baselines in one run: the 300 s target for the whole job, and, for the
sweep, the time spent inside the measurement core (sum of the trials' own `duration_s`), so the
orchestration overhead of Ray Tune shows as the difference.

    .venv/bin/python tests/perf/quickstart_timing.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from results.store import ResultsStore  # noqa: E402

TARGET_S = 300.0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bm-qs-") as tmp:
        results, timings = Path(tmp) / "results", Path(tmp) / "timings.json"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "benchmatch", "quickstart", "--results", str(results),
                               "--timings", str(timings)], cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return 1
        stages = json.loads(timings.read_text())["stages_s"]
        df = ResultsStore(results).read()
        in_core = df.drop_duplicates(["trial_id", "repeat"])["duration_s"].sum()
    print("| stage | wall time (s) | baseline |")
    print("|---|---|---|")
    for name, secs in stages.items():
        base = f"{in_core:.1f} s inside run_trial ({secs / in_core:.2f}x)" if name == "sweep" else ""
        print(f"| {name} | {secs:.1f} | {base} |")
    print(f"| whole command (process wall) | {wall:.1f} | target {TARGET_S:.0f} s ({wall / TARGET_S:.2f} of it) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
