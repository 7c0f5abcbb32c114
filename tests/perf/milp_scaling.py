"""MILP solve time vs candidates, beside brute-force enumeration and the greedy baseline.

    python tests/perf/milp_scaling.py                       # 100 .. 100,000 candidates, plan 1..50
    python tests/perf/milp_scaling.py --sizes 1000,10000 --brute-cap 60 --no-plan

Instances (matcher/instances.py, seeded): 8 hardware types x N/8 configurations, 3 devices of
each hardware in inventory, p99 SLO = the median candidate latency (screens out about half),
demand = a fraction of the largest single-configuration capacity at 3 devices per type (0.3: a
single hardware type can still do it; 0.5: only a mix of hardware can; "no inventory cap": the
same demand with unlimited devices, so replica counts, and brute force's box, grow). Brute force enumerates, per configuration,
every replica vector 0..min(need, inventory) over the hardware that pass the SLO (4^8 = 65,536
at most per configuration), vectorised with numpy, and stops at --brute-cap seconds.
The solve column is wall time of matcher.solve.solve as the service calls it (exact enumeration
where it applies: matcher/enumerate.py; else screen + build + solver), beside the MILP forced
(method="milp", the baseline); both must give the same answer.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pulp  # noqa: E402

from matcher.baselines.bruteforce import brute_force  # noqa: E402
from matcher.baselines.greedy import greedy  # noqa: E402
from matcher.requirements import Requirements  # noqa: E402
from matcher.solve import plan, solve  # noqa: E402
from tests.fixtures.instances import random_candidates  # noqa: E402

HARDWARE = 8
INVENTORY = 3


def instance(n: int, level: float, seed: int, capped: bool = True):
    rng = np.random.default_rng(seed)
    cands = random_candidates(rng, HARDWARE, max(n // HARDWARE, 1), inventory=INVENTORY if capped else None)
    slo = float(cands.latency_p99_ms.median())
    ok = cands[cands.latency_p99_ms <= slo]
    capacity = ok.groupby("cfg_variant").throughput_qps.sum() * INVENTORY
    req = Requirements(constraints={"throughput_qps": float(capacity.max() * level), "latency_p99_ms": slo}, top_k=1)
    return cands, req


def fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_cost(x: float | None) -> str:
    return "infeasible" if x is None or np.isnan(x) else f"{x:.4f}"


def same_answer(a, b) -> bool:
    """The same options by every stage the solver ranks by (cost, then capacity and replicas); the
    hardware mix itself may differ where those tie exactly."""
    if len(a.options) != len(b.options):
        return False
    return all(abs(x.cost_per_hour_usd - y.cost_per_hour_usd) <= 1e-6 * max(1, y.cost_per_hour_usd)
               for x, y in zip(a.options, b.options, strict=True))


def scaling(sizes: list[int], levels: list[str], brute_cap: float, highs_max: int, topk_max: int, seed: int,
            time_limit: float, uncapped_max: int) -> None:
    print("| candidates | demand level | solve s (method: screen / enumerate or build / solver) | MILP forced, CBC s "
          "(baseline) | MILP HiGHS s | top-3 s (auto / MILP forced) "
          "| brute force s (vectors) | solve cost USD/h | brute-force cost | greedy cost | agree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    highs = pulp.HiGHS().available()
    for n in sizes:
        for label in levels:
            capped = not label.endswith("u")
            if not capped and n > uncapped_max:
                continue
            level = float(label.rstrip("u"))
            cands, req = instance(n, level, seed, capped)
            t = time.perf_counter()
            s = solve(req, cands, top_k=1, explain=False, time_limit_s=time_limit)
            t_cbc = time.perf_counter() - t
            tm = s.timings
            if "enumerate_s" in tm:
                cbc = f"{fmt_s(t_cbc)} (enumeration: {fmt_s(tm.get('screen_s'))} / {fmt_s(tm.get('enumerate_s'))} / —)"
            else:
                cbc = (f"{fmt_s(t_cbc)} (MILP: {fmt_s(tm.get('screen_s'))} / {fmt_s(tm.get('build_s'))} / "
                       f"{fmt_s(tm.get('solver_s'))})")
            if s.status != "optimal":
                cbc += f" [{s.status}]"
            t = time.perf_counter()
            forced = solve(req, cands, top_k=1, explain=False, time_limit_s=time_limit, method="milp")
            t_forced = time.perf_counter() - t
            assert same_answer(s, forced), (s.options, forced.options)
            t_highs = None
            if highs and n <= highs_max:
                t = time.perf_counter()
                sh = solve(req, cands, top_k=1, explain=False, solver="highs", time_limit_s=time_limit)
                t_highs = time.perf_counter() - t
                assert not sh.options or not s.options or \
                    abs(sh.options[0].cost_per_hour_usd - s.options[0].cost_per_hour_usd) < 1e-6
            top = "—"
            if n <= topk_max:
                t = time.perf_counter()
                a3 = solve(req, cands, top_k=3, explain=False, time_limit_s=time_limit)
                t_auto = time.perf_counter() - t
                t = time.perf_counter()
                m3 = solve(req, cands, top_k=3, explain=False, time_limit_s=time_limit, method="milp")
                top = f"{fmt_s(t_auto)} / {fmt_s(time.perf_counter() - t)}"
                assert same_answer(a3, m3), (a3.options, m3.options)
            b = brute_force(req, cands, time_cap_s=brute_cap)
            if b.timed_out:
                brute = f"timed out at {brute_cap:.0f} s ({b.vectors_checked:,} of {b.search_space:,})"
                bcost = None
            else:
                brute = f"{fmt_s(b.seconds)} ({b.vectors_checked:,})"
                bcost = b.best.cost_per_hour_usd if b.best else np.nan
            g = greedy(req, cands)
            mcost = s.options[0].cost_per_hour_usd if s.options else np.nan
            if bcost is None:
                agree = "n/a"
            else:
                agree = "yes" if (np.isnan(mcost) and np.isnan(bcost)) or abs(mcost - bcost) < 1e-6 else "NO"
            print(f"| {len(cands):,} | {level}{'' if capped else ', no inventory cap'} | {cbc} | {fmt_s(t_forced)} | "
                  f"{fmt_s(t_highs) if t_highs is not None else '—'} | {top} | {brute} | {fmt_cost(mcost)} | {'—' if bcost is None else fmt_cost(bcost)} | "
                  f"{fmt_cost(g.cost_per_hour_usd)} | {agree} |", flush=True)


def plan_scaling(workloads: list[int], per_workload: int, inv_per_workload: float, seed: int, time_limit: float) -> None:
    print()
    print(f"plan(): W workloads, each its own {per_workload}-candidate table (8 hardware types), sharing an "
          f"inventory of ceil({inv_per_workload} W) devices per hardware type; demand = 0.15 x the workload's largest "
          f"single-configuration capacity at 3 devices.")
    print()
    print("| workloads | candidates | plan s (presolve, columns, MILP) | status | gap | MILP alone s (baseline) | status | "
          "plan cost USD/h | MILP alone cost | sum of independent optima USD/h | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for w in workloads:
        rng = np.random.default_rng(seed + w)
        items = []
        for _ in range(w):
            c = random_candidates(rng, HARDWARE, max(per_workload // HARDWARE, 1))
            slo = float(c.latency_p99_ms.median())
            capacity = c[c.latency_p99_ms <= slo].groupby("cfg_variant").throughput_qps.sum() * INVENTORY
            items.append((Requirements(constraints={"throughput_qps": float(capacity.max() * 0.15),
                                                    "latency_p99_ms": slo}, top_k=1), c))
        inventory = {f"hw{h:03d}": int(np.ceil(inv_per_workload * w)) for h in range(HARDWARE)}
        t = time.perf_counter()
        p = plan(items, inventory=inventory, time_limit_s=time_limit)
        dt = time.perf_counter() - t
        t = time.perf_counter()
        base = plan(items, inventory=inventory, time_limit_s=time_limit, method="milp")
        dt_base = time.perf_counter() - t
        alone = [solve(r, c, top_k=1, explain=False) for r, c in items]
        lower = sum(a.options[0].cost_per_hour_usd for a in alone) if all(a.options for a in alone) else np.nan
        ratio = p.cost_per_hour_usd / lower if p.workloads and p.workloads[0] is not None else np.nan
        gap = "—" if p.gap is None else f"{p.gap:.2%}"
        print(f"| {w} | {sum(len(c) for _, c in items):,} | {fmt_s(dt)} ({p.solver}) | {p.status} | {gap} | "
              f"{fmt_s(dt_base)} | {base.status} | {fmt_cost(p.cost_per_hour_usd)} | "
              f"{fmt_cost(base.cost_per_hour_usd)} | {fmt_cost(lower)} | {ratio:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000,100000")
    ap.add_argument("--levels", default="0.3,0.5,0.5u",
                    help="demand as a fraction of the largest configuration's capacity; 'u': no inventory cap")
    ap.add_argument("--uncapped-max", type=int, default=1000, help="largest size run without an inventory cap")
    ap.add_argument("--brute-cap", type=float, default=60.0, help="seconds before brute force gives up")
    ap.add_argument("--highs-max", type=int, default=10_000, help="largest size also solved with HiGHS")
    ap.add_argument("--topk-max", type=int, default=10_000, help="largest size also solved for top-3")
    ap.add_argument("--time-limit", type=float, default=300.0, help="MILP time limit per solve (s)")
    ap.add_argument("--plan-workloads", default="1,5,10,25,50")
    ap.add_argument("--plan-candidates", type=int, default=200, help="candidates per workload in plan()")
    ap.add_argument("--plan-inventory", type=float, default=0.5, help="shared devices per hardware type per workload")
    ap.add_argument("--no-plan", action="store_true")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"# MILP scaling — {cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
          f"PuLP {pulp.__version__} (bundled CBC), HiGHS {'yes' if pulp.HiGHS().available() else 'no'}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print()
    t0 = time.perf_counter()
    scaling([int(x) for x in a.sizes.split(",")], a.levels.split(","), a.brute_cap,
            a.highs_max, a.topk_max, a.seed, a.time_limit, a.uncapped_max)
    if not a.no_plan:
        plan_scaling([int(x) for x in a.plan_workloads.split(",")], a.plan_candidates, a.plan_inventory, a.seed,
                     a.time_limit)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
