"""Figure: how many trials `benchmatch suggest` needs before the recommendation is within 5 % of the
one the full grid gives, against the size of the grid.

    python tests/perf/suggest_trials.py [RESULTS_DIR] [--requirements 8] [--starts 2] [--seed 0] [--synthetic]
    python tests/perf/suggest_trials.py gavel-store --task train --catalog configs/public/gavel/catalog.yaml
    python tests/perf/suggest_trials.py RESULTS_DIR --synthetic --start-pairs 2   # from almost nothing

The measured results are the oracle: every (hardware, configuration) pair of the grid has its
measured rows, and "measuring" a suggested trial hands back exactly those rows (no Ray). For each
random requirement set (as in tests/perf/regret.py) and each random start (25 % of the pairs, at
least 2, measured up front; 10 % on the synthetic grid, one start per requirement set), matcher.suggest.refine loops: fit the models on what is measured,
suggest (--per-round trials, default 1), measure them, repeat until nothing is worth measuring.
After every round the recommendation (on measured + predicted numbers) is evaluated with the
measured numbers: it is "within 5 %" when, measured, it keeps the SLO, carries the demand and
costs at most 1.05 x the best option of the full grid.

Reported: pairs measured (the start included) when the recommendation first gets within 5 %, and
when suggest stops; the grid size; the share of runs that got there. Baseline: the same starts,
then the remaining pairs in a random order, recommending on the measured pairs alone (no model),
until within 5 %. `--synthetic` repeats it on a seeded synthetic grid (labelled, not measured).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from perf_common import machine_line, read_results_or_exit  # noqa: E402
from regret import best_cost, draw_requirements, pair_keys, slim  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.candidates import CFG, candidates_from_results, config_columns, config_key  # noqa: E402
from matcher.solve import solve  # noqa: E402
from matcher.suggest import refine  # noqa: E402
from tests.fixtures.instances import synthetic_result_rows  # noqa: E402

WITHIN = 0.05


def evaluate(mix: dict[str, int], config: dict, req, truth: pd.DataFrame, best: float) -> bool:
    """Is this option, evaluated with the measured numbers, deployable and within 5 % of the best?"""
    t = truth.set_index(pair_keys(truth))
    cfg = {f"{CFG}{k}": v for k, v in config.items()}
    keys = [f"{hw}|{config_key(cfg, list(cfg))}" for hw in mix]
    n = np.array([mix[hw] for hw in mix], dtype=float)
    lat = t.loc[keys, "latency_p99_ms"].to_numpy(dtype=float)
    thr = t.loc[keys, "throughput_qps"].to_numpy(dtype=float)
    cost = float(n @ t.loc[keys, "price_per_hour_usd"].to_numpy(dtype=float))
    slo = req.constraints.latency_p99_ms
    ok = (slo is None or (lat <= slo * (1 + 1e-9)).all()) and n @ thr >= req.constraints.throughput_qps * (1 - 1e-9)
    return bool(ok) and cost <= best * (1 + WITHIN) + 1e-12


def random_baseline(req, rows: pd.DataFrame, start: list[str], rest: list[str], catalog, truth, best) -> int | None:
    keys = pair_keys(rows)
    order = list(start) + list(rest)
    for n in range(len(start), len(order) + 1):
        cands = candidates_from_results(rows[keys.isin(order[:n])], catalog, task=req.task)
        sol = solve(req, cands, top_k=1, explain=False)
        if sol.options:
            o = sol.options[0]
            first = cands.iloc[next(iter(o.replicas))]
            cfg = {c[len(CFG):]: first[c] for c in config_columns(cands)}
            if evaluate(dict(o.mix), cfg, req, truth, best):
                return n
    return None


def run(rows: pd.DataFrame, catalog: dict, *, n_req: int, starts: int, seed: int, per_round: int,
        max_rounds: int, start_share: float, start_pairs: int | None = None, task: str = "infer") -> list[dict]:
    rows = slim(rows, task)
    truth = candidates_from_results(rows, catalog, task=task)
    rng = np.random.default_rng(seed)
    reqs = [r for r in draw_requirements(rng, truth, n_req * 3, task) if not np.isnan(best_cost(r, truth))][:n_req]
    grid = [{k: v for k, v in c.items()} for c in truth[config_columns(truth)].drop_duplicates().to_dict("records")]
    hardware = sorted(truth["hardware"].astype(str).unique())
    keys = pair_keys(rows)
    pairs = sorted(keys.unique())
    out = []
    for req in reqs:
        best = best_cost(req, truth)
        for _ in range(starts):
            k0 = start_pairs or max(2, int(round(start_share * len(pairs))))
            start = rng.choice(pairs, size=k0, replace=False).tolist()

            def measure(trials):
                want = {f"{t.hardware}|{config_key({f'{CFG}{a}': b for a, b in t.config.items()}, [f'{CFG}{a}' for a in t.config])}"
                        for t in trials}
                return rows[keys.isin(want)]

            _, rounds = refine(req, rows[keys.isin(start)], measure, catalog, per_round=per_round,
                               max_rounds=max_rounds, configs=grid, hardware=hardware)
            reached = next((r.measured_pairs for r in rounds
                            if r.best and evaluate(r.best["hardware"], r.best["config"], req, truth, best)), None)
            final_ok = bool(rounds[-1].best) and evaluate(rounds[-1].best["hardware"], rounds[-1].best["config"],
                                                          req, truth, best)
            rest = [p for p in rng.permutation(pairs).tolist() if p not in start]
            out.append({"reached": reached, "stopped": rounds[-1].measured_pairs, "stopped_ok": final_ok,
                        "ended": rounds[-1].suggested == 0, "random": random_baseline(req, rows, start, rest, catalog,
                                                                                    truth, best),
                        "start": k0, "grid": len(pairs)})
    return out


def report(res: list[dict], label: str, per_round: int, wall: float) -> None:
    grid, start = res[0]["grid"], res[0]["start"]
    reached = [r["reached"] for r in res if r["reached"] is not None]
    rnd = [r["random"] for r in res if r["random"] is not None]
    stopped = [r["stopped"] for r in res]

    def med(v: list) -> str:
        return "—" if not v else f"{np.median(v):.1f}"

    def mean(v: list) -> str:
        return "—" if not v else f"{np.mean(v):.1f}"

    print(f"\n### {label}\n")
    print(f"grid: {grid} (hardware, configuration) pairs; {len(res)} runs (requirement sets x starts), each starting "
          f"from {start} measured pairs; suggest measures {per_round} per round; {wall:.0f} s\n")
    print("| strategy | runs within 5 % | pairs measured to get within 5 % (median / mean) | share of the grid (median) "
          "| pairs measured when it stops (median / mean) | recommendation within 5 % when it stops |")
    print("|---|---|---|---|---|---|")
    print(f"| suggest (models + optimistic bound) | {len(reached)}/{len(res)} | {med(reached)} / {mean(reached)} | "
          f"{'—' if not reached else f'{100 * np.median(reached) / grid:.0f}%'} | {med(stopped)} / {mean(stopped)} | "
          f"{sum(r['stopped_ok'] for r in res)}/{len(res)} |")
    print(f"| random order, measured pairs only (baseline) | {len(rnd)}/{len(res)} | {med(rnd)} / {mean(rnd)} | "
          f"{'—' if not rnd else f'{100 * np.median(rnd) / grid:.0f}%'} | {grid} (all) | {len(res)}/{len(res)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results-store")
    ap.add_argument("--requirements", type=int, default=8)
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-round", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=30)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--synthetic-per-round", type=int, default=3)
    ap.add_argument("--start-pairs", type=int, default=None,
                    help="pairs measured up front (default: 25%% of the grid, 10%% on the synthetic one)")
    ap.add_argument("--task", default="infer", choices=["infer", "train"])
    ap.add_argument("--catalog", default=None, help="hardware catalog YAML (default: configs/hardware.yaml)")
    ap.add_argument("--asset", default=None, help="one asset of the store (default: each in turn)")
    a = ap.parse_args()
    catalog = load_catalog(a.catalog)
    print(machine_line(a.seed))
    rows = read_results_or_exit(a.results)
    assets = [a.asset] if a.asset else sorted(slim(rows, a.task)["asset"].astype(str).unique())
    for asset in assets:
        t0 = time.perf_counter()
        res = run(rows[rows["asset"].astype(str) == asset], catalog, n_req=a.requirements, starts=a.starts,
                  seed=a.seed, per_round=a.per_round, max_rounds=a.max_rounds, start_share=0.25,
                  start_pairs=a.start_pairs, task=a.task)
        report(res, f"measured: {a.results}, {asset} ({a.task})", a.per_round, time.perf_counter() - t0)
    if a.synthetic:
        syn = synthetic_result_rows(hardware=("local-1c", "local-2c", "aws-c7i.2xlarge"), batches=(1, 2, 4, 8, 16, 32),
                                    threads=(1, 2, 4), repeats=2, seed=a.seed)
        t0 = time.perf_counter()
        res = run(syn, load_catalog(), n_req=a.requirements, starts=1, seed=a.seed,
                  per_round=a.synthetic_per_round, max_rounds=a.max_rounds, start_share=0.1, start_pairs=a.start_pairs)
        report(res, "SYNTHETIC (matcher/instances.py: 3 CPU types x 6 batch sizes x 3 thread counts x 2 repeats, "
                    "throughput ~ min(threads, cores)·sqrt(batch), 3% noise) — not a measurement",
               a.synthetic_per_round, time.perf_counter() - t0)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
