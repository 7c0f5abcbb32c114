"""`make perf`: every figure script in turn, each printing its figure beside its baseline.

The learn-and-match figures read the quickstart results in `results-store/`; they are measured first
when missing. Takes 15–25 minutes on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPTS = [
    ["quickstart_timing.py"],
    ["sweep_overhead.py"],
    ["harness_fidelity.py"],
    ["run_to_run_spread.py"],
    ["milp_scaling.py"],
    ["prediction_accuracy.py", "results", "--synthetic"],
    ["regret.py", "results", "--synthetic"],
    ["suggest_trials.py", "results", "--synthetic"],
    ["serve_load.py"],
]


def main() -> int:
    if not (ROOT / "results").is_dir():
        subprocess.run([sys.executable, "-m", "benchmatch", "quickstart"], cwd=ROOT, check=True)
    failed = []
    for script, *args in SCRIPTS:
        print(f"\n## tests/perf/{script} {' '.join(args)}\n", flush=True)
        if subprocess.run([sys.executable, str(ROOT / "tests" / "perf" / script), *args], cwd=ROOT).returncode:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
