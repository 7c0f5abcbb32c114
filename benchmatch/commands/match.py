"""Match: `recommend` (and its Pareto front), `plan`, `suggest`, and `serve` over HTTP."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmatch import render
from benchmatch.sources import DEFAULT_RESULTS, add_source_args, default_models_dir, open_workspace

FEASIBLE, INFEASIBLE = 0, 3  # exit codes of recommend / plan


def cmd_recommend(a: argparse.Namespace) -> int:
    from matcher.requirements import load_requirements

    req = load_requirements(a.requirements)
    ws = open_workspace(a)
    ans = ws.pareto(req) if a.pareto else ws.recommend(req)
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
    else:
        (render.print_pareto if a.pareto else render.print_recommendation)(ans)
    return FEASIBLE if ans.get("feasible") else INFEASIBLE


def cmd_plan(a: argparse.Namespace) -> int:
    from matcher.requirements import load_plan

    plan = load_plan(a.plan)  # the reader of requirements files: bounded, repeated keys refused
    ans = open_workspace(a).plan(plan)
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
    else:
        render.print_plan(ans)
    return FEASIBLE if ans.get("feasible") else INFEASIBLE


def _sweep_paths(out: str, n: int) -> list[Path]:
    p = Path(out)
    return [p] + [p.with_name(f"{p.stem}-{i}{p.suffix or '.yaml'}") for i in range(2, n + 1)]


def _write_sweeps(out: str, sweeps: list[dict[str, Any]]) -> list[str]:
    import yaml

    files = []
    for path, doc in zip(_sweep_paths(out, len(sweeps)), sweeps, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("# Written by `benchmatch suggest`: exactly the suggested trials.\n"
                       + yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, path)
        files.append(str(path))
    return files


def cmd_suggest(a: argparse.Namespace) -> int:
    from benchmarks.spec import check_asset, load_sweep, sweeps_for_pairs
    from matcher.errors import ModelError, RequirementsError
    from matcher.requirements import load_requirements
    from matcher.workspace import MODELSET_INDEX, Sources, Workspace

    req = load_requirements(a.requirements)
    if a.models is not None and not (Path(a.models) / MODELSET_INDEX).exists():
        raise ModelError(f"{a.models}: no model set here ({MODELSET_INDEX}); run `benchmatch train`, or leave "
                         "--models out to fit them on the results now")
    ws = Workspace.open(Sources(results_uri=a.results, models_dir=a.models, catalog_path=a.catalog))
    template = configs = None
    if a.space_from is not None:
        template = load_sweep(a.space_from)
        # The rows say which asset a reference loaded; only an asset never measured must load here.
        name = ws.asset_for_ref(template.asset) or check_asset(template).name
        if req.asset is not None and req.asset != name:
            raise RequirementsError(f"{a.space_from}: the sweep is for asset '{name}', the requirements "
                                    f"for '{req.asset}'", [("asset", f"must be '{name}' for this sweep")])
        req = req.model_copy(update={"asset": name, "task": template.task})
        configs = template.configs()
    s = ws.suggest(req, configs=configs, refit=a.models is None, local_only=a.local_only, max_trials=a.max_trials)
    sweeps = sweeps_for_pairs([(t.hardware, t.config) for t in s.trials], asset=s.asset_ref or s.asset,
                              task=s.task, results_uri=str(a.results), template=template)
    ans = {"suggestion": s.to_dict(), "sweeps": sweeps,
           "files": _write_sweeps(a.out, sweeps) if a.out and sweeps else []}
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
    else:
        render.print_suggestion(ans)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from serve.runner import run_service

    # Always pass the folder: the service picks models up when they appear (`benchmatch train` later).
    run_service(results_uri=a.results, models_dir=a.models or default_models_dir(a.results),
                candidates_csv=a.candidates, host=a.host, port=a.port, address=a.address,
                catalog_path=a.catalog, balancer_port=a.balancer_port)
    return 0


def register(sub: Any, parents: list[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """Add `recommend`, `plan`, `suggest` and `serve` to the `benchmatch` subparsers."""
    r = sub.add_parser("recommend", help="recommend hardware × count × configuration for REQUIREMENTS",
                       description="Answer a requirements file with the cheapest (or least-energy, or fastest) "
                                   "hardware mix and configuration; exit 3 with a diagnosis when none is feasible.",
                       parents=parents, formatter_class=fmt)
    r.add_argument("requirements", help="requirements YAML or JSON")
    add_source_args(r)
    r.add_argument("--pareto", action="store_true", help="print the cost–latency Pareto front instead")
    r.add_argument("--json", action="store_true", help="print the answer as JSON")
    r.set_defaults(fn=cmd_recommend)

    p = sub.add_parser("plan", help="place several workloads sharing inventory and budget (PLAN: YAML/JSON)",
                       description="Place several workloads at once on a shared inventory and budget; exit 3 "
                                   "with a diagnosis when no plan is feasible.",
                       parents=parents, formatter_class=fmt)
    p.add_argument("plan", help="plan file: workloads (requirements each), inventory, budget_per_hour_usd, objective")
    add_source_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(fn=cmd_plan)

    s = sub.add_parser("suggest", help="the unmeasured (hardware, configuration) trials worth measuring next",
                       description="Rank the unmeasured (hardware, configuration) pairs by how much measuring "
                                   "them could change the answer, and optionally write them as sweep files.",
                       parents=parents, formatter_class=fmt)
    s.add_argument("requirements", help="requirements YAML or JSON")
    s.add_argument("--results", default=DEFAULT_RESULTS, help="results store to read")
    s.add_argument("--models", help="a saved model set to predict with (default: fit one on the results now)")
    s.add_argument("--out", help="write the suggested trials as sweep file(s): OUT, OUT-2.yaml, ...")
    s.add_argument("--max-trials", type=int, default=10, help="at most this many trials")
    s.add_argument("--space-from", help="a sweep file whose space (and settings) to consider "
                                        "(default: the configurations seen in the results)")
    s.add_argument("--local-only", action="store_true", help="only the local profiles of the catalog")
    s.add_argument("--json", action="store_true", help="print the suggestion as JSON")
    s.set_defaults(fn=cmd_suggest)

    v = sub.add_parser("serve", help="serve the recommender over HTTP with Ray Serve (127.0.0.1)",
                       description="Serve POST /recommend, /plan, /pareto and GET /hardware, /assets, /healthz "
                                   "with Ray Serve on loopback until Ctrl-C or SIGTERM.",
                       parents=parents, formatter_class=fmt)
    v.add_argument("--results", default=DEFAULT_RESULTS, help="results store to answer from")
    v.add_argument("--models", help="performance models folder (default: RESULTS/models)")
    v.add_argument("--candidates", help="CSV of your own candidates; skips results and models")
    v.add_argument("--host", default="127.0.0.1", help="HTTP host to bind; anything but loopback exposes the service")
    v.add_argument("--port", type=int, default=8000, help="HTTP port")
    v.add_argument("--balancer-port", type=int, metavar="PORT",
                   help="also serve through HAProxy on this port (same host), in front of the replicas' own "
                        "ports: no proxy hop, a request retried on another replica (needs the haproxy extra)")
    v.add_argument("--address", help="Ray cluster to deploy on, e.g. 127.0.0.1:6379 or the address `cluster up` "
                                     "printed (default: a private local Ray instance on loopback)")
    v.set_defaults(fn=cmd_serve)
