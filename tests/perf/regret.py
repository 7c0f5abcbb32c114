"""Figure: what a recommendation built on predictions costs against the best measured answer, and
what the conservative bound buys over point estimates.

    python tests/perf/regret.py [RESULTS_DIR] [--splits 12] [--requirements 30] [--seed 0] [--synthetic]
    python tests/perf/regret.py gavel-store --task train --catalog configs/public/gavel/catalog.yaml

For each of --splits random splits, the models (matcher.models.train_models) are fitted on a random
50-75 % of the measured (hardware, configuration) pairs; the other pairs enter the candidate table
as predictions (matcher.models.predict_candidates), as they would in `benchmatch recommend` before
they are measured. For each of --requirements random requirement sets (seeded: p99 SLO log-uniform
between the smallest and the largest measured p99, demand uniform in 0.2-3x the largest single-
replica throughput), the MILP recommends on that table with the conservative bounds (what
benchmatch does), with the point estimates instead (baseline 1), and on the measured pairs alone,
without any model (baseline 2), and with the conservative bounds of the models as they were before
hardware scaling and estimator selection (baseline 3). The chosen option is then evaluated
with the MEASURED numbers of every pair it uses:

* regret = (cost of the option - cost of the best option on the measured table) / best cost, over
  options that, measured, keep the SLO and carry the demand (others cannot be deployed as chosen);
* SLO broken = the measured p99 of a pair used exceeds the SLO;
* demand short = the measured throughput of the chosen replicas is below the demand;
* no answer = the recommender found nothing although the measured table has an answer.

Data without latency (Gavel's training throughputs) gets demand-only requirement sets. A store of
several assets is run asset by asset (--asset: one). "regret <= 5%" is the share of requirement
sets (with an answer on the measured table) whose answer is deployable and within 5% of the best
cost: the issue's goal is 95%.

Requirement sets with no answer on the measured table are skipped (counted). `--synthetic` runs
the same on seeded synthetic rows from matcher/instances.py (labelled: generated, not measured).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from perf_common import machine_line, read_results_or_exit  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.candidates import (  # noqa: E402
    candidates_from_results,
    config_columns,
    config_keys,
    merge_candidates,
)
from matcher.metrics import NAMES as METRICS  # noqa: E402
from matcher.models import predict_candidates, train_models  # noqa: E402
from matcher.requirements import Requirements  # noqa: E402
from matcher.solve import solve  # noqa: E402
from tests.fixtures.instances import synthetic_result_rows  # noqa: E402

KEEP = ["sweep_id", "trial_id", "repeat", "scenario", "asset", "task", "status", "hardware", "accelerator_type",
        "device_count", "latency_p99_ms", "throughput_samples_per_s", "accuracy", "parameters", "flops_per_sample"]


MODES = {"bound": "conservative bound (benchmatch)", "point": "point estimate (baseline)",
         "measured": "measured pairs only, no model (baseline)",
         "before": "conservative bound, models before scaling/selection (baseline)"}


def slim(rows: pd.DataFrame, task: str = "infer") -> pd.DataFrame:
    """Only the columns the matcher reads: grouping 60 columns per refit is what takes the time."""
    cols = [c for c in rows.columns if c in KEEP or c.startswith("cfg_")]
    ok = rows[(rows["status"].astype(str) == "ok") & (rows["task"].astype(str) == task)]
    return ok[cols].reset_index(drop=True)


def pair_keys(df: pd.DataFrame) -> pd.Series:
    return df["hardware"].astype(str) + "|" + config_keys(df)


def draw_requirements(rng: np.random.Generator, truth: pd.DataFrame, n: int, task: str = "infer") -> list[Requirements]:
    lat = truth["latency_p99_ms"].to_numpy(dtype=float)
    lat = lat[np.isfinite(lat)]
    thr = truth["throughput_qps"].to_numpy(dtype=float)
    out = []
    for _ in range(n):
        bounds = {}
        if len(lat):
            bounds["latency_p99_ms"] = float(np.exp(rng.uniform(np.log(lat.min()), np.log(lat.max()))))
        bounds["throughput_qps"] = float(rng.uniform(0.2, 3.0) * np.nanmax(thr))
        out.append(Requirements(constraints=bounds, top_k=1, task=task))
    return out


def best_cost(req: Requirements, table: pd.DataFrame) -> float:
    sol = solve(req, table, top_k=1, explain=False)
    return sol.options[0].cost_per_hour_usd if sol.options else math.nan


def measured_outcome(req: Requirements, option_rows: pd.DataFrame, replicas: np.ndarray,
                     truth: pd.DataFrame) -> tuple[bool, bool]:
    """(SLO broken, demand short) of an option evaluated with the measured numbers."""
    t = truth.set_index(pair_keys(truth))
    k = pair_keys(option_rows)
    lat = t.loc[k, "latency_p99_ms"].to_numpy(dtype=float)
    thr = t.loc[k, "throughput_qps"].to_numpy(dtype=float)
    slo = req.constraints.latency_p99_ms
    broken = slo is not None and bool((lat > slo * (1 + 1e-9)).any())
    short = float(replicas @ thr) < (req.constraints.throughput_qps or 0.0) * (1 - 1e-9)
    return broken, short


def point_table(table: pd.DataFrame) -> pd.DataFrame:
    """The baseline: predicted rows carry their point estimate where the bound was."""
    out = table.copy()
    for m in METRICS:
        if f"{m}_point" in out:
            pred = out["basis"] == "predicted"
            out.loc[pred, m] = out.loc[pred, f"{m}_point"]
    return out


def run(rows: pd.DataFrame, catalog: dict, *, splits: int, n_req: int, seed: int,
        task: str = "infer") -> dict[str, dict[str, list]]:
    rows = slim(rows, task)
    truth = candidates_from_results(rows, catalog, task=task)
    rng = np.random.default_rng(seed)
    reqs = draw_requirements(rng, truth, n_req, task)
    oracle = [best_cost(r, truth) for r in reqs]
    cfg_cols = config_columns(truth)
    grid = truth[cfg_cols].drop_duplicates().to_dict("records")
    hardware = sorted(truth["hardware"].astype(str).unique())
    keys = pair_keys(rows)
    pairs = sorted(keys.unique())
    stats: dict[str, dict[str, list]] = {m: {"regret": [], "broken": [], "short": [], "none": [], "rests": [],
                                             "within5": []} for m in MODES}
    stats["skipped"] = {"infeasible on measured": [int(np.isnan(c)) for c in oracle]}
    for _ in range(splits):
        k = int(round(rng.uniform(0.5, 0.75) * len(pairs)))
        train = set(rng.choice(pairs, size=max(k, 2), replace=False).tolist())
        train_rows = rows[keys.isin(train)]
        measured = candidates_from_results(train_rows, catalog, task=task)
        tables = {}
        for mode, options in (("bound", {}), ("before", {"scale": False, "select": False})):
            ms = train_models(train_rows, catalog, metrics=("latency_p99_ms", "throughput_qps"), task=task, **options)
            predicted = predict_candidates(ms, catalog, configs=grid, hardware_names=hardware)
            tables[mode] = merge_candidates(measured, predicted).reset_index(drop=True)
        tables["point"] = point_table(tables["bound"])
        tables["measured"] = measured
        for req, best in zip(reqs, oracle, strict=True):
            if np.isnan(best):
                continue
            for mode, table in tables.items():
                sol = solve(req, table, top_k=1, explain=False)
                s = stats[mode]
                if not sol.options:
                    s["none"].append(1)
                    s["within5"].append(0)
                    continue
                s["none"].append(0)
                opt = sol.options[0]
                pos = list(opt.replicas)
                option_rows = table.iloc[pos]
                broken, short = measured_outcome(req, option_rows, np.array([opt.replicas[p] for p in pos], float), truth)
                s["broken"].append(int(broken))
                s["short"].append(int(short))
                s["rests"].append(int((option_rows["basis"] == "predicted").any()))
                regret = (opt.cost_per_hour_usd - best) / best
                if not broken and not short:
                    s["regret"].append(regret)
                s["within5"].append(int(not broken and not short and regret <= 0.05 + 1e-9))
    return stats


def share(v: list) -> str:
    return "—" if not v else f"{100 * np.mean(v):.1f}%"


def report(stats: dict[str, dict[str, list]], label: str, n_pairs: int, splits: int, n_req: int, wall: float) -> None:
    skipped = sum(stats["skipped"]["infeasible on measured"])
    print(f"\n### {label}\n")
    print(f"{n_pairs} measured (hardware, configuration) pairs; {splits} random splits (models fitted on 50-75 % "
          f"of the pairs) x {n_req} requirement sets ({skipped} without any answer on the measured table, "
          f"skipped); {wall:.0f} s\n")
    print("| recommender | answers | no answer | SLO broken (measured) | demand short (measured) | deployable "
          "| regret <= 5% | regret mean | regret p95 | answers resting on a prediction |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, name in MODES.items():
        s = stats[mode]
        r = np.array(s["regret"])
        mean, p95 = (("—",) * 2 if len(r) == 0 else (f"{100 * r.mean():.1f}%", f"{100 * np.quantile(r, 0.95):.1f}%"))
        print(f"| {name} | {len(s['broken'])} | {share(s['none'])} | {share(s['broken'])} | {share(s['short'])} | "
              f"{len(r)} | {share(s['within5'])} | {mean} | {p95} | {share(s['rests'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results-store")
    ap.add_argument("--splits", type=int, default=12)
    ap.add_argument("--requirements", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--task", default="infer", choices=["infer", "train"])
    ap.add_argument("--catalog", default=None, help="hardware catalog YAML (default: configs/hardware.yaml)")
    ap.add_argument("--asset", default=None, help="one asset of the store (default: each in turn)")
    a = ap.parse_args()
    catalog = load_catalog(a.catalog)
    print(machine_line(a.seed))
    rows = read_results_or_exit(a.results)
    assets = [a.asset] if a.asset else sorted(slim(rows, a.task)["asset"].astype(str).unique())
    for asset in assets:
        mine = rows[rows["asset"].astype(str) == asset]
        t0 = time.perf_counter()
        stats = run(mine, catalog, splits=a.splits, n_req=a.requirements, seed=a.seed, task=a.task)
        report(stats, f"measured: {a.results}, {asset} ({a.task})", pair_keys(slim(mine, a.task)).nunique(),
               a.splits, a.requirements, time.perf_counter() - t0)
    if a.synthetic:
        syn = synthetic_result_rows(hardware=("local-1c", "local-2c", "aws-c7i.2xlarge"), batches=(1, 2, 4, 8, 16, 32),
                                    threads=(1, 2, 4, 8), repeats=2, seed=a.seed)
        t0 = time.perf_counter()
        stats = run(syn, load_catalog(), splits=a.splits, n_req=a.requirements, seed=a.seed)
        report(stats, "SYNTHETIC (matcher/instances.py: 3 CPU types x 6 batch sizes x 4 thread counts x 2 repeats, "
                      "throughput ~ min(threads, cores)·sqrt(batch), 3% noise) — not a measurement",
               pair_keys(syn).nunique(), a.splits, a.requirements, time.perf_counter() - t0)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
