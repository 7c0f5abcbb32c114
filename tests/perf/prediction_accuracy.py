"""Figure: how well the performance models predict, per metric, on measured results.

    python tests/perf/prediction_accuracy.py [RESULTS_DIR]        # default results (from make quickstart)
    python tests/perf/prediction_accuracy.py RESULTS_DIR --synthetic
    python tests/perf/prediction_accuracy.py gavel-store --task train --catalog configs/public/gavel/catalog.yaml

Fits matcher.models.train_models on the ok rows of the results store (every asset, `infer`) and
prints ModelSet.summary() as a markdown table: MdAPE (median |predicted - measured| / measured) and
the share within ±10 % and the band's coverage, for held-out configurations (GroupKFold over configurations, gradient
boosting: a configuration never measured on hardware that was) and leave-one-hardware-out (ridge
power law: hardware never measured). `--synthetic` adds the same table for the seeded synthetic
rows of matcher/instances.py (labelled: they are generated, not measured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd  # noqa: E402
from perf_common import machine_line, read_results_or_exit  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.candidates import config_keys  # noqa: E402
from matcher.models import train_models  # noqa: E402
from tests.fixtures.instances import synthetic_result_rows  # noqa: E402


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def table(rows: pd.DataFrame, catalog: dict, label: str, task: str = "infer") -> None:
    ok = rows[(rows["status"].astype(str) == "ok") & (rows["task"].astype(str) == task)]
    pairs = (ok["hardware"].astype(str) + "|" + config_keys(ok)).nunique()
    t0 = time.perf_counter()
    ms = train_models(ok, catalog, task=task)
    fit_s = time.perf_counter() - t0
    # The baseline in the same run: no hardware scaling, gbr on measured hardware.
    base = {(r["asset"], r["metric"]): r for r in train_models(ok, catalog, task=task, scale=False,
                                                                select=False).summary()}
    print(f"\n### {label}\n")
    print(f"{len(ok)} ok rows, {ok['asset'].nunique()} asset(s), {ok['hardware'].nunique()} hardware types "
          f"({', '.join(sorted(ok['hardware'].astype(str).unique()))}), {pairs} (hardware, configuration) pairs, "
          f"{ok['repeat'].nunique()} repeat(s); models fitted in {fit_s:.1f} s\n")
    print("| asset | metric | values | MdAPE held-out config (baseline) | within ±10% | band coverage | "
          "MdAPE leave-one-hardware-out (baseline) | within ±10% | band coverage | estimator | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ms.summary():
        if not r["n"]:
            continue  # a statistic this data does not record (the note says so in `train`)
        b = base.get((r["asset"], r["metric"]), {})
        m = ms.models[(r["asset"], r["metric"])]
        how = m.band_method.split("(", 1)[-1].rstrip(")")
        print(f"| {r['asset']} | {r['metric']} | {r['n']} | {pct(r['mdape_heldout_config'])} "
              f"({pct(b.get('mdape_heldout_config'))}) | "
              f"{pct(r['within10_heldout_config'])} | {pct(r['coverage_heldout_config'])} | {pct(r['mdape_loho'])} "
              f"({pct(b.get('mdape_loho'))}) | "
              f"{pct(r['within10_loho'])} | {pct(r['coverage_loho'])} | {how} | {r['note'] or ''} |")
    print("\nBaseline (in brackets): the same models without hardware scaling and with gradient boosting on "
          "measured hardware (matcher/models.py before 2026-12-01).")
    print("\nBand coverage: the share of held-out truths inside their one-sided "
          f"{ms.summary()[0]['band'] if ms.summary() else 90}% band, each band calibrated without the truth's own "
          "group (configuration, or hardware type); the goal is about the band's level.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results-store")
    ap.add_argument("--synthetic", action="store_true", help="also the seeded synthetic rows (labelled)")
    ap.add_argument("--task", default="infer", choices=("infer", "train"), help="which rows the models learn")
    ap.add_argument("--catalog", help="hardware catalog (default: configs/hardware.yaml); public sets ship their own")
    a = ap.parse_args()
    catalog = load_catalog(a.catalog)
    print(machine_line())
    rows = read_results_or_exit(a.results)
    table(rows, catalog, f"measured: {a.results} ({a.task})", a.task)
    if a.synthetic:
        syn = synthetic_result_rows(hardware=("local-1c", "local-2c", "aws-c7i.2xlarge"), batches=(1, 2, 4, 8, 16, 32),
                                    threads=(1, 2, 4, 8), repeats=2, seed=0)
        table(syn, load_catalog(), "SYNTHETIC (matcher/instances.py, seed 0: 3 CPU types x 6 batch sizes x 4 thread "
                            "counts x 2 repeats, throughput ~ min(threads, cores)·sqrt(batch), 3% noise) — not a measurement")


if __name__ == "__main__":
    main()
