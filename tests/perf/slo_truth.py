"""Figure: do answers keep their SLO when checked against a measurement they were not built from?

    python tests/perf/slo_truth.py [RESULTS_DIR] [--slos 8] [--demands 6]

Needs result rows with Server latency-vs-load curves (loadgen.server_curve, as the quickstart
measures them) and at least 2 repeats. For each held-out repeat h, candidates are built from the
other repeats only, and each requirement set (p99 SLO x demand, a grid over the measured range) is
answered twice in the same run:

* capacity at the SLO (benchmatch): each replica sized from the rate at which its measured curve
  keeps p99 under the SLO (worst repeat), matcher/capacity.py;
* today's rule (baseline): MultiStream p99 paired with Offline throughput, the same rows without
  their curves.

Each answer is then checked against the held-out repeat as truth: the demand is spread over the
chosen replicas in proportion to their planned throughput, and each replica's p99 at its load is
read off the held-out curve (linear between points; beyond the heaviest point that kept up with
its load, the replica is saturated: the SLO is broken). Regret is the answer's cost over the
cheapest option that the truth says keeps the SLO (the same MILP on the held-out repeat alone),
minus 1, over answers that keep it. Requirement sets with no truthful answer are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from perf_common import machine_line, read_results_or_exit  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.candidates import candidates_from_results, config_columns, config_key  # noqa: E402
from matcher.capacity import _points, curves_of  # noqa: E402
from matcher.errors import MatcherError  # noqa: E402
from matcher.recommend import recommend  # noqa: E402

P99 = "latency_p99_ms"
RULES = {"curve": "capacity at the SLO (benchmatch)", "today": "MultiStream p99 + Offline throughput (baseline)"}


def _truth_p99(curve: list[dict], load: float) -> float:
    pts = _points(curve, [P99])
    if not pts or load > pts[-1][0] * (1 + 1e-9):
        return math.inf
    qs, ps = zip(*((q, stats[P99]) for q, stats, _ in pts), strict=True)
    return float(np.interp(load, qs, ps))


def judge(option: dict, cands: pd.DataFrame, truth: dict[str, list[dict]], demand: float) -> float:
    """The worst true p99 over the option's replicas at the load the demand puts on each."""
    cfg_cols = config_columns(cands)
    plan = []
    for hw, n in option["hardware"].items():
        cfg = {f"cfg_{k}": v for k, v in option["config"].items()}
        key = f"{hw}|{config_key(cfg, cfg_cols)}"
        row = cands[(cands["hardware"] == hw)]
        row = row[[config_key(r, cfg_cols) == key.split("|", 1)[1] for r in row.to_dict("records")]]
        plan.append((key, n, float(row["throughput_qps"].iloc[0])))
    total = sum(n * t for _, n, t in plan)
    worst = 0.0
    for key, _, t in plan:
        load = demand * t / total if total > 0 else math.inf
        worst = max(worst, _truth_p99(truth.get(key, []), load))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results-store")
    ap.add_argument("--slos", type=int, default=8)
    ap.add_argument("--demands", type=int, default=6)
    ap.add_argument("--max-utilization", type=float, nargs="*", default=[1.0, 0.8],
                    help="benchmatch's max_utilization values to show (each its own row)")
    ap.add_argument("--slo-confidence", type=float, nargs="*", default=[0.9, 0.99],
                    help="benchmatch's slo_confidence values to show (each its own row, max_utilization 1)")
    a = ap.parse_args()
    rows = read_results_or_exit(a.results)
    rows = rows[(rows["status"] == "ok") & (rows["task"] == "infer")]
    if "server_curve" not in rows or rows["server_curve"].fillna("").eq("").all():
        print(f"{a.results}: no Server curves (loadgen.server_curve); run the quickstart first")
        return 1
    catalog = load_catalog()
    print(machine_line())
    repeats = sorted(rows["repeat"].unique())
    cfg_cols = config_columns(rows)
    server = rows[rows["scenario"] == "Server"]
    all_p99 = [stats[P99] for c in server["server_curve"] for _, stats, _ in _points(json.loads(c), [P99])]
    all_cap = [q for c in server["server_curve"] for q, _, _ in _points(json.loads(c), [P99])]
    slos = np.geomspace(np.quantile(all_p99, 0.05), np.quantile(all_p99, 0.8), a.slos)
    demands = np.geomspace(np.median(all_cap), 6 * max(all_cap), a.demands)
    rules = {**{f"curve@{u:g}": f"{RULES['curve']}, max_utilization {u:g}" for u in a.max_utilization},
             **{f"curve#{c:g}": f"{RULES['curve']}, slo_confidence {c:g}" for c in a.slo_confidence},
             "today": RULES["today"]}
    stats = {r: {"answered": 0, "broken": 0, "regret": []} for r in rules}
    judged = skipped = 0
    for h in repeats:
        train, test = rows[rows["repeat"] != h], rows[rows["repeat"] == h]
        truth = {f"{r['hardware']}|{config_key(r, cfg_cols)}": (curves_of(json.dumps([json.loads(r['server_curve'])]))
                                                                or [[]])[0]
                 for r in test[test["scenario"] == "Server"].to_dict("records")}
        tables = {"curve": candidates_from_results(train, catalog),
                  "today": candidates_from_results(train.drop(columns=["server_curve"]), catalog)}
        oracle_table = candidates_from_results(test, catalog)
        for slo in slos:
            for demand in demands:
                req = {"constraints": {"latency_p99_ms": float(slo), "throughput_qps": float(demand)}, "top_k": 1}
                try:
                    best = recommend(req, oracle_table).model_dump()
                except MatcherError:
                    best = {"feasible": False}
                if not best["feasible"] or judge(best["options"][0], oracle_table, truth, demand) > slo * (1 + 1e-6):
                    skipped += 1
                    continue
                judged += 1
                best_cost = best["options"][0]["cost_per_hour_usd"]
                for rule in rules:
                    cands = tables[rule.split("@")[0].split("#")[0]]
                    extra = ({"max_utilization": float(rule.split("@")[1])} if "@" in rule
                             else {"slo_confidence": float(rule.split("#")[1])} if "#" in rule else {})
                    ans = recommend({**req, **extra}, cands).model_dump()
                    if not ans["feasible"]:
                        continue
                    s = stats[rule]
                    s["answered"] += 1
                    opt = ans["options"][0]
                    if judge(opt, cands, truth, demand) > slo * (1 + 1e-6):
                        s["broken"] += 1
                    else:
                        s["regret"].append(opt["cost_per_hour_usd"] / best_cost - 1)
    print(f"{judged} requirement sets judged over {len(repeats)} held-out repeats ({skipped} without a truthful "
          f"answer skipped); SLOs {slos.min():.3g}..{slos.max():.3g} ms, demand {demands.min():.3g}..{demands.max():.3g} "
          "samples/s")
    print("| rule | answered | SLO broken (share of answers) | regret <= 5% (share of kept) | mean regret | p95 regret |")
    print("|---|---|---|---|---|---|")
    for rule, s in stats.items():
        reg = np.array(s["regret"])
        kept = len(reg)
        print(f"| {rules[rule]} | {s['answered']} | {s['broken'] / max(s['answered'], 1):.1%} ({s['broken']}) | "
              f"{(reg <= 0.05 + 1e-9).mean() if kept else float('nan'):.1%} | "
              f"{reg.mean() if kept else float('nan'):.1%} | {np.quantile(reg, 0.95) if kept else float('nan'):.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
