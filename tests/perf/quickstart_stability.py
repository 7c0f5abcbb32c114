"""Figure: is the quickstart's picture of the two local profiles stable from run to run?

Runs `benchmatch quickstart` --runs times (each a whole CLI process into its own results folder)
and, per configuration, reads each profile's capacity at the quickstart's p99 SLO off its Server
curves (matcher.capacity.read_curve; the lowest repeat, which is what sizes replicas) and, as the
baseline, its median Offline throughput (what sized replicas before capacity at the SLO). Printed
side by side for each: which profile is faster in each run, in how many runs the order is the
same, the CV of the value across runs, and the median CV within a run (the spread of its repeats).

    .venv/bin/python tests/perf/quickstart_stability.py [--runs 5]

The issue (Answers you can trust, item 3) asks for the same order, within the spread, in 5 of 5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matcher.capacity import read_curve  # noqa: E402
from matcher.requirements import load_requirements  # noqa: E402
from results.store import ResultsStore  # noqa: E402
from tests.perf.perf_common import machine_line  # noqa: E402


def _cv(values: list[float]) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.std(v) / np.mean(v)) if len(v) >= 2 and np.mean(v) > 0 else float("nan")


def per_run(df: pd.DataFrame, slo: float) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(config, hardware) -> {"capacity": (value, within-run CV), "offline": (value, within-run CV)}."""
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    df = df[df["status"].astype(str) == "ok"]
    for (bs, dt, hw), grp in df.groupby(["cfg_batch_size", "cfg_dtype", "hardware"]):
        cfg = f"batch_size={bs}, dtype={dt}"
        off = pd.to_numeric(grp.loc[grp["scenario"] == "Offline", "throughput_samples_per_s"], errors="coerce")
        caps = []
        for cell in grp.loc[grp["scenario"] == "Server", "server_curve"].dropna():
            rate = read_curve(json.loads(cell), {"latency_p99_ms": slo}).rate
            caps.append(rate if rate is not None else 0.0)
        out[(cfg, str(hw))] = {"capacity": (min(caps) if caps else float("nan"), _cv(caps)),
                               "offline": (float(off.median()) if len(off) else float("nan"), _cv(list(off)))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    slo = load_requirements(ROOT / "configs/requirements-quickstart.yaml").constraints.latency_p99_ms
    print(machine_line())
    runs = []
    with tempfile.TemporaryDirectory(prefix="bm-stab-") as tmp:
        for i in range(a.runs):
            results = Path(tmp) / f"run{i}"
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "benchmatch", "quickstart", "--results", str(results)],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
                return 1
            runs.append(per_run(ResultsStore(results).read(), slo))
            print(f"run {i + 1}: {time.monotonic() - t0:.0f} s", flush=True)
    configs = sorted({cfg for r in runs for cfg, _ in r})
    hws = sorted({hw for r in runs for _, hw in r})
    print(f"\nCapacity at p99 <= {slo:g} ms (lowest repeat; samples/s) against the baseline, median Offline "
          f"throughput, over {a.runs} quickstart runs.\n")
    print("| configuration | measure | faster profile per run | same order | " +
          " | ".join(f"{hw}: CV across runs / within a run" for hw in hws) + " |")
    print("|---|---|---|---|" + "---|" * len(hws))
    for cfg in configs:
        for measure in ("capacity", "offline"):
            order = []
            for r in runs:
                vals = {hw: r.get((cfg, hw), {}).get(measure, (float("nan"), 0))[0] for hw in hws}
                order.append(max(vals, key=lambda h: vals[h] if np.isfinite(vals[h]) else -1))
            top = statistics.mode(order)
            cells = []
            for hw in hws:
                across = _cv([r.get((cfg, hw), {}).get(measure, (float("nan"), 0))[0] for r in runs])
                within = statistics.median([r.get((cfg, hw), {}).get(measure, (0, float("nan")))[1] for r in runs])
                cells.append(f"{across:.1%} / {within:.1%}")
            print(f"| {cfg} | {'capacity at SLO' if measure == 'capacity' else 'Offline (baseline)'} | "
                  f"{', '.join(order)} | {order.count(top)}/{len(order)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
