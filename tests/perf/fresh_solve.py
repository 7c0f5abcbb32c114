"""A fresh `/recommend` answer (a question not asked before, so no answer cache), in process:
ServiceCore.recommend, what the endpoint runs per request after parsing the body. This tree
beside a baseline revision, in one run (issue #12: "fresh MILP solve behind the endpoint,
<= 10 ms p50 at quickstart size"; the endpoint's own overhead is tests/perf/serve_load.py's).

    .venv/bin/python tests/perf/fresh_solve.py [--baseline REV] [--n 300] [--rounds 2]

The baseline is the revision exported with `git archive` into a temporary folder (default: the
commit before the fresh-solve work). Each tree is measured in its own Python process, and the
processes alternate (baseline, this tree, baseline, ...) so a change in the machine's load hits
both. Stores (synthetic numbers, tests/fixtures; never shown as measurements):

* service store: tests/fixtures/service_data.py, 3 hardware x 2 batch sizes (what serve_load.py serves);
* quickstart shape: 2 local profiles x 4 batch sizes x 2 thread counts, 3 repeats (16 candidates);
* 112 candidates: 4 hardware x 7 batch sizes x 4 thread counts, 3 repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "1909720"  # the last commit before the fresh-solve work (2026-12-01)
STORES = ("service store", "quickstart shape", "112 candidates")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def _write_stores(tmp: Path) -> dict[str, tuple[str, str, float]]:
    """store name -> (results folder, asset, demand): written by the tree being measured."""
    from results.store import ResultsStore
    from tests.fixtures.instances import synthetic_result_rows
    from tests.fixtures.service_data import write_synthetic_store

    def imported(folder: str, **kw: Any) -> None:
        rows = synthetic_result_rows(**kw)
        rows["sweep_id"] = f"import-{kw['asset']}"
        rows["start_time"] = "2026-01-01T00:00:00Z"
        ResultsStore(tmp / folder).write_part(rows.to_dict("records"))

    write_synthetic_store(tmp / "service")
    imported("quickstart", asset="qs-mlp")
    imported("large", hardware=("local-1c", "local-2c", "aws-c7i.large", "aws-c7i.2xlarge"),
             batches=(1, 2, 4, 8, 16, 32, 64), threads=(1, 2, 4, 8), asset="big-mlp")
    return {"service store": (str(tmp / "service"), "synthetic-mlp", 1000.0),
            "quickstart shape": (str(tmp / "quickstart"), "qs-mlp", 200.0),
            "112 candidates": (str(tmp / "large"), "big-mlp", 200.0)}


def measure(n: int) -> dict[str, Any]:
    """Runs in the tree under test (its folder first on sys.path): p50/p99 ms per store."""
    from matcher.requirements import parse_requirements
    from serve.core import ServiceCore, ServiceSettings

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (uri, asset, demand) in _write_stores(Path(tmp)).items():
            core = ServiceCore(ServiceSettings(results_uri=uri))

            def body(i: int, asset: str = asset, demand: float = demand) -> Any:
                # top_k 1: one solve, as serve_load's fresh requests; the demand differs each time
                return parse_requirements({"asset": asset, "constraints": {"throughput_qps": demand + i * 0.001},
                                           "top_k": 1})

            first = json.loads(core.recommend(body(-1)))
            for i in range(2, 12):  # warm-up: imports, the validated table, the models
                core.recommend(body(-i))
            times = []
            for i in range(n):
                req = body(i)
                t0 = time.perf_counter()
                core.recommend(req)
                times.append((time.perf_counter() - t0) * 1000)
            first.pop("solve_time_s", None)  # the one field that differs between equal answers
            out[name] = {"p50": statistics.median(times), "p99": _pct(times, 99), "answer": first,
                         "feasible": first.get("feasible"), "candidates": first.get("candidates_considered")}
    return out


def _export(rev: str, dest: Path) -> None:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    tar = dest.with_suffix(".tar")
    tar.write_bytes(data)
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")


def _run_tree(tree: Path, n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure-tree", str(tree), "--n", str(n)],
                          cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"measuring {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default %(default)s)")
    ap.add_argument("--n", type=int, default=300, help="fresh requests per store and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternations baseline / this tree")
    ap.add_argument("--measure-tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_tree:
        sys.path.insert(0, args.measure_tree)
        print(json.dumps(measure(args.n)))
        return 0

    sys.path.insert(0, str(ROOT))
    from tests.perf.perf_common import machine_line

    print(machine_line())
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        _export(args.baseline, base)
        for _ in range(args.rounds):
            runs["baseline"].append(_run_tree(base, args.n))
            runs["now"].append(_run_tree(ROOT, args.n))
    load_after = os.getloadavg()[0]
    print(f"fresh /recommend answers in process (ServiceCore.recommend, top_k 1), {args.n} x {args.rounds} "
          f"per store and tree; load average {load_after:.1f} at the end")
    print(f"| store | candidates | feasible | same answer | p50 baseline ({args.baseline}) | p50 now | now / baseline "
          f"| p99 baseline | p99 now |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in STORES:
        b = [r[name] for r in runs["baseline"]]
        w = [r[name] for r in runs["now"]]
        b50, w50 = statistics.median(x["p50"] for x in b), statistics.median(x["p50"] for x in w)
        b99, w99 = statistics.median(x["p99"] for x in b), statistics.median(x["p99"] for x in w)
        same = "yes" if b[0]["answer"] == w[0]["answer"] else "NO"
        print(f"| {name} | {w[0]['candidates']} | {w[0]['feasible']} | {same} | {b50:.2f} ms | {w50:.2f} ms | "
              f"{w50 / b50:.2f}x | {b99:.2f} ms | {w99:.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
