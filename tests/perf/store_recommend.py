"""`benchmatch recommend --results STORE` wall time beside `--candidates CSV` on the same numbers,
for stores of about 1k and 50k result rows (issue #16: goal <= 1.5x).

    python tests/perf/store_recommend.py                    # 1k and 50k rows, 3 runs each
    python tests/perf/store_recommend.py --sizes 1000 --runs 5 --per-trial
    python tests/perf/store_recommend.py --sizes 50000 --layouts imported --runs 5
    python tests/perf/store_recommend.py --layouts imported --train   # + `benchmatch train` on each store

Each asset is one import's worth of rows (synthetic_result_rows: 4 CPU catalog hardware x 7 batch
sizes x 4 thread counts x 3 repeats x SingleStream/MultiStream/Offline = 1,008 rows, 112
candidates); a store of N rows holds N/1,008 assets, each imported as its own sweep. The request
is for the first asset, so every store answers the same question from the same 112 candidates;
`--candidates` reads exactly those candidates (candidates_from_results of the first asset, written
as CSV). Layouts: `imported` = one part file per asset (what `benchmatch import` writes);
`compacted` = per-trial files as a sweep writes them, then `python -m results.store compact`;
`per-trial` (with --per-trial) = those files uncompacted (the layout of a sweep, and of imports
before issue #16: one file per (trial, repeat)). Every time is the median wall time of --runs CLI
processes (Python start-up and imports included in both columns).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.candidates import candidates_from_results  # noqa: E402
from results.store import ResultsStore  # noqa: E402
from tests.fixtures.instances import synthetic_result_rows  # noqa: E402
from tests.perf.perf_common import machine_line  # noqa: E402

HARDWARE = ("local-1c", "local-2c", "aws-c7i.large", "aws-c7i.2xlarge")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
THREADS = (1, 2, 4, 8)
ROWS_PER_ASSET = len(HARDWARE) * len(BATCHES) * len(THREADS) * 3 * 3


def asset_rows(i: int):
    rows = synthetic_result_rows(hardware=HARDWARE, batches=BATCHES, threads=THREADS, repeats=3, seed=i,
                                 asset=f"a{i:03d}", scenarios=("SingleStream", "MultiStream", "Offline"))
    rows["sweep_id"] = f"import-a{i:03d}"
    rows["start_time"] = "2026-01-01T00:00:00Z"
    return rows


def build(root: Path, n_assets: int, layout: str) -> tuple[float, int]:
    """Write the store; returns (seconds, files)."""
    store = ResultsStore(root)
    t0 = time.perf_counter()
    for i in range(n_assets):
        rows = asset_rows(i)
        if layout == "imported":
            store.write_part(rows.to_dict("records"))
        else:
            for _, grp in rows.groupby(["trial_id", "repeat"]):
                store.write(grp.to_dict("records"))
    if layout == "compacted":
        store.compact()
    return time.perf_counter() - t0, len(store.files())


def cli(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "benchmatch", "recommend", *args, "--json"], cwd=ROOT,
                              capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 3):
            raise SystemExit(f"recommend {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return statistics.median(times)


def train(root: Path, out: Path) -> tuple[float, int]:
    """One `benchmatch train` on the store: (seconds, models saved)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmatch", "train", "--results", str(root), "--models", str(out),
                           "--json"], cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"train on {root} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took, len(list(out.rglob("*.skops")))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,50000", help="store sizes in rows (rounded to whole assets)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--per-trial", action="store_true", help="also time the uncompacted per-trial layout")
    p.add_argument("--layouts", help="comma-separated subset of imported,compacted,per-trial")
    p.add_argument("--train", action="store_true", help="also time one `benchmatch train` on each store")
    a = p.parse_args()
    print(machine_line())
    catalog = load_catalog()
    layouts = ["imported", "compacted"] + (["per-trial"] if a.per_trial else [])
    if a.layouts:
        layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        req = work / "req.yaml"
        req.write_text(yaml.safe_dump({"asset": "a000", "objective": "cost",
                                       "constraints": {"throughput_qps": 20000, "latency_p99_ms": 50}, "top_k": 3}))
        cand_csv = work / "candidates.csv"
        candidates_from_results(asset_rows(0), catalog, asset="a000").to_csv(cand_csv, index=False)
        none = work / "no-models"
        base = cli([str(req), "--candidates", str(cand_csv)], a.runs)
        print(f"\n`recommend --candidates` ({cand_csv.stat().st_size // 1024} kB CSV, 112 candidates): "
              f"{base:.2f} s (median of {a.runs})\n")
        print("| rows | assets | layout | files | write s | recommend --results s | ratio to --candidates |")
        print("|---:|---:|---|---:|---:|---:|---:|")
        for size in [int(s) for s in a.sizes.split(",")]:
            n_assets = max(1, round(size / ROWS_PER_ASSET))
            for layout in layouts:
                root = work / f"store-{size}-{layout}"
                wrote, files = build(root, n_assets, layout)
                t = cli([str(req), "--results", str(root), "--models", str(none)], a.runs)
                print(f"| {n_assets * ROWS_PER_ASSET:,} | {n_assets} | {layout} | {files:,} | {wrote:.1f} | "
                      f"{t:.2f} | {t / base:.2f}x |", flush=True)
                if a.train:
                    took, models = train(root, work / f"models-{size}-{layout}")
                    print(f"|   | train: {models} models of {n_assets} asset(s) in {took:.1f} s "
                          f"({took / max(models, 1) * 1000:.0f} ms a model) | | | | | |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
