"""The local LLM's latency-vs-rate curve and its goodput-bounded rate on the two local profiles,
with the spread over repeats, beside the rate the old rule would promise (the all-at-once
completion rate: what the system finishes when it is saturated, with no SLO).

Each profile runs the gpt2 asset in-process (`benchmatch llm-bench --asset gpt2`), pinned to its
own CPUs with its threads, as a sweep's trial would be. Per repeat: all requests at once, then
Poisson arrivals at 25/50/75/100% of that rate.

Run: `python tests/perf/llm_curve.py [--repeats 3] [--layers 4] [--hidden 256]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.llm.bench import LLMBench, run  # noqa: E402
from benchmarks.llm.harness import SLO  # noqa: E402
from benchmarks.llm.workload import LengthDist, LLMWorkload  # noqa: E402
from cluster.hardware import load_catalog  # noqa: E402
from tests.perf.perf_common import machine_line  # noqa: E402


def _spread(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "none"
    return f"{np.median(v):.3g} [{min(v):.3g}-{max(v):.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--slo-ttft-ms", type=float, default=250.0)
    ap.add_argument("--slo-tpot-ms", type=float, default=25.0)
    a = ap.parse_args()
    print(machine_line())
    catalog = load_catalog(None)
    profiles = [h for h in catalog.values() if h.local]
    slo = SLO(a.slo_ttft_ms, a.slo_tpot_ms)
    config = {"layers": a.layers, "hidden": a.hidden, "heads": max(1, a.hidden // 64), "vocab": 8192}
    print(f"gpt2 asset {config}, {a.requests} requests a run, prompt 64, output 32 tokens; "
          f"SLO p99 TTFT <= {a.slo_ttft_ms:g} ms, p99 TPOT <= {a.slo_tpot_ms:g} ms; {a.repeats} repeats")
    for hw in profiles:
        bench = LLMBench(hardware=hw, workload=LLMWorkload(LengthDist(64), LengthDist(32), a.requests),
                         slo=slo, asset="gpt2", config=dict(config, threads=hw.cpu_cores), repeats=a.repeats)
        ms, _rows = run(bench, say=lambda _m: None)
        print(f"\n{hw.name} ({hw.cpu_cores} core{'s' if hw.cpu_cores > 1 else ''}):")
        print(f"  {'share of all-at-once':<22} {'offered req/s':>22} {'p99 TTFT ms':>24} {'p99 TPOT ms':>22} "
              f"{'goodput req/s':>22}")
        for i, frac in enumerate(bench.fractions):
            pts = [m.curve()[i] for m in ms]
            print(f"  {frac:<22.0%} {_spread([p['offered_rps'] for p in pts]):>22} "
                  f"{_spread([p['ttft_p99_ms'] for p in pts]):>24} {_spread([p['tpot_p99_ms'] for p in pts]):>22} "
                  f"{_spread([p['goodput_requests_per_s'] for p in pts]):>22}")
        within = [m.max_rate_within_slo for m in ms]
        saturated = [m.offline.summary(slo)["requests_per_s"] for m in ms]
        print(f"  rate within the SLO (req/s): {_spread(within)}   beside the old rule, all-at-once rate: "
              f"{_spread(saturated)}")


if __name__ == "__main__":
    main()
