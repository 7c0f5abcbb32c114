"""Figure: run-to-run spread of the quickstart metrics over 5 repeats (CV per metric).

Runs the quickstart sweep's configurations on this machine without Ray (the measurement core, as
`python -m benchmarks run-local` does) as one hardware profile (local-1c by default), `--repeats`
times. The repeats run in passes: pass r measures repeat r of every configuration, so the repeats of
one configuration are spread over the whole run rather than back to back, and before each pass a
pure-Python busy loop is timed. The CV of those busy-loop timings is the baseline: how noisy the
machine itself was during the same run. A metric whose CV is far above the baseline is noisy on its
own account (LoadGen, the model, the scheduler), not just because the machine was.

    /tmp/probe-venv/bin/python tests/perf/run_to_run_spread.py [--results DIR] [--hardware local-1c]

Prints a markdown table of CV per (config, scenario, metric) with IQR/median and the noisy flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks import stats  # noqa: E402
from benchmarks.local_runner import run_sweep_locally  # noqa: E402
from benchmarks.spec import load_sweep  # noqa: E402
from cluster.hardware import load_catalog  # noqa: E402
from results.store import ResultsStore  # noqa: E402

METRICS = ("latency_p50_ms", "latency_p99_ms", "throughput_samples_per_s")
BUSY_ITERATIONS = 3_000_000  # about 0.1-0.2 s of pure-Python work on a current CPU


def busy_loop_s(iterations: int = BUSY_ITERATIONS) -> float:
    """Wall time of a fixed pure-Python loop: no I/O, no allocation, one core."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(iterations):
        acc += i & 7
    elapsed = time.perf_counter() - t0
    if acc < 0:  # keeps the loop from being seen as dead code by a future optimiser
        print(acc)
    return elapsed


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or v != v:
        return "—"
    if pct:
        return f"{100 * v:.1f} %"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--hardware", default="local-1c")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--results", help="keep the result rows here (default: a temporary folder)")
    a = p.parse_args(argv)

    hw = load_catalog()[a.hardware]
    with tempfile.TemporaryDirectory(prefix="bm-spread-") as tmp:
        results = a.results or str(Path(tmp) / "results")
        base = load_sweep(a.config)
        store = ResultsStore(results)
        busy: list[float] = []
        t0 = time.monotonic()
        for r in range(a.repeats):
            busy.append(busy_loop_s())
            # repeats=r+1 with resume: only repeat r of each configuration is still missing.
            spec = base.model_copy(update={"repeats": r + 1, "results_uri": results})
            run_sweep_locally(spec, hw, store, resume=True, progress=None)
            print(f"pass {r + 1}/{a.repeats} done ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        wall = time.monotonic() - t0
        df = store.read(base.name)

    df = df[df["hardware"] == hw.name]
    summary = stats.summarize(df, metrics=[m for m in METRICS if m in df.columns])
    busy_arr = np.asarray(busy)
    busy_cv = float(np.std(busy_arr, ddof=1) / np.mean(busy_arr))
    bg = int(df["env_background_load"].fillna(False).astype(bool).sum()) if "env_background_load" in df else 0
    invalid = int((df.get("loadgen_result", "").astype(str) == "INVALID").sum())

    cfg_cols = [c for c in summary.columns if c.startswith("cfg_")]
    print(f"Run-to-run spread: {base.name} on {hw.name}, {a.repeats} repeats, {df['trial_id'].nunique()} configs, "
          f"{wall:.0f} s wall; rows with background load: {bg}/{len(df)}; LoadGen INVALID: {invalid}/{len(df)}")
    print(f"Baseline: pure-Python busy loop ({BUSY_ITERATIONS:,} iterations) timed once per pass: "
          f"median {1e3 * float(np.median(busy_arr)):.1f} ms, CV {100 * busy_cv:.1f} % "
          f"(each: {', '.join(f'{1e3 * b:.0f}' for b in busy)} ms); 1-min load average at the end "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print()
    print("| config | scenario | metric | n | median | CV | IQR/median | noisy (>10 %) | baseline CV (busy loop) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for _, r in summary.sort_values(["scenario", *cfg_cols, "metric"]).iterrows():
        noisy = "—" if pd.isna(r["noisy"]) else ("yes" if r["noisy"] else "no")
        print(f"| {stats.config_label(r, cfg_cols)} | {r['scenario']} | {r['metric']} | {r['n']} | "
              f"{_fmt(r['median'])} | {_fmt(r['cv'], True)} | {_fmt(r['rel_iqr'], True)} | {noisy} | "
              f"{100 * busy_cv:.1f} % |")
    by_metric = summary.groupby("metric")["cv"].median()
    print()
    print("| metric | median CV over configs | noisy groups | baseline CV |")
    print("|---|---|---|---|")
    for m in METRICS:
        if m in by_metric.index:
            sub = summary[summary["metric"] == m]
            print(f"| {m} | {100 * by_metric[m]:.1f} % | {int(sub['noisy'].fillna(False).sum())}/{len(sub)} | "
                  f"{100 * busy_cv:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
