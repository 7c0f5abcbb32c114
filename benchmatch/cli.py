"""The `benchmatch` command: one subcommand per stage, each with --help."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmatch.sources import DEFAULT_RESULTS, add_source_args, candidate_sources, default_models_dir

REPO = Path(__file__).resolve().parent.parent


def _say(msg: str) -> None:
    print(msg, flush=True)


_models_dir = default_models_dir


# ---------------------------------------------------------------- cluster
def cmd_cluster(a: argparse.Namespace) -> int:
    from cluster import local

    if a.action == "up":
        info = local.up(a.catalog, dashboard_port=a.dashboard_port)
        _say(f"local cluster up: nodes {', '.join(info.profiles)}")
        _say(f"  Ray address:   {info.address}")
        _say(f"  dashboard:     {info.dashboard_url}   (ray job submit --address {info.dashboard_url})")
        _say(f"  Prometheus SD: {info.service_discovery_file}")
        _say("  token auth: set RAY_AUTH_MODE=token for `ray job submit` (token in ~/.ray/auth_token)")
        if a.prometheus:
            from cluster.prometheus_server import PrometheusServer

            prom = PrometheusServer(info.service_discovery_file, port=a.prometheus_port,
                                    workdir=local.STATE_DIR / "prometheus").start()
            _say(f"  Prometheus:    {prom.url} (scrapes the cluster; stopped by `cluster down`)")
        return 0
    if a.action == "down":
        from cluster.prometheus_server import stop_detached

        if stop_detached(local.STATE_DIR / "prometheus"):
            _say("Prometheus stopped")
        _say("local cluster stopped" if local.down() else "no local cluster was running")
        return 0
    info = local.read_state()
    if not info:
        _say("no local cluster running (start one with `benchmatch cluster up`)")
        return 1
    nodes = local.status(info)
    if a.json:
        print(json.dumps({"cluster": info.__dict__, "nodes": nodes}, indent=2))
        return 0
    _say(f"cluster at {info.address}, dashboard {info.dashboard_url}")
    for n in nodes:
        _say(f"  {n['profile']:<10} cpus={n['cpus']:<4} {n['address']}  {n['node_id'][:12]}  {n['resources']}")
    return 0


# ---------------------------------------------------------------- sweep
def cmd_sweep(a: argparse.Namespace) -> int:
    from benchmarks.sweep import prepare, run_sweep
    from cluster.local import connect

    spec, catalog = prepare(a.config, catalog_path=a.catalog, results_uri=a.results)
    owned = connect(a.address, a.catalog, progress=_say)
    try:
        report = run_sweep(spec, catalog, resume=a.resume, progress=_say)
    finally:
        if owned:
            owned.shutdown()
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _say(f"sweep {report.sweep_id}: {report.ran} trial repeats run ({report.failed} failed), "
             f"{report.already_done} already done, {report.wall_s:.1f} s. Results: {report.results_uri}")
    return 1 if report.trial_failures else 0


# ---------------------------------------------------------------- train
def cmd_train(a: argparse.Namespace) -> int:
    from benchmarks.store import ResultsStore
    from cluster.hardware import load_catalog
    from matcher.models import train_models

    df = ResultsStore(a.results).read()
    if df.empty:
        raise ValueError(f"no results in {a.results}: run `benchmatch sweep CONFIG` (or quickstart) first")
    models = train_models(df, load_catalog(a.catalog))
    out = a.models or _models_dir(a.results)
    models.save(out)
    rows = models.summary()
    if a.json:
        print(json.dumps({"models_dir": out, "models": rows}, indent=2, default=str))
        return 0
    _print_model_summary(rows)
    _say(f"models saved to {out} (skops format)")
    return 0


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}" if isinstance(v, float) else str(v)


def _print_model_summary(rows: list[dict[str, Any]]) -> None:
    _say("performance models (cross-validated; MdAPE = median absolute % error):")
    _say(f"  {'asset':<12} {'metric':<26} {'rows':>5}  {'MdAPE held-out cfg':>18} {'±10%':>7}  {'MdAPE leave-1-hw-out':>20} {'±10%':>7}")
    for r in rows:
        _say(f"  {str(r.get('asset')):<12} {str(r.get('metric')):<26} {r.get('n', ''):>5}  "
             f"{_fmt(r.get('mdape_heldout_config'), True):>18} {_fmt(r.get('within10_heldout_config'), True):>7}  "
             f"{_fmt(r.get('mdape_loho'), True):>20} {_fmt(r.get('within10_loho'), True):>7}")


# ---------------------------------------------------------------- recommend
def _recommend(requirements: Any, a: argparse.Namespace) -> dict[str, Any]:
    from matcher.api import recommend_from_sources

    return recommend_from_sources(requirements, **candidate_sources(a))


def print_infeasible(what: str, ans: dict[str, Any], emit: Callable[[str], None] = _say) -> None:
    """The diagnosis of an infeasible answer: what blocks, and the relaxations that would do."""
    diag = ans.get("diagnosis") or {}
    emit(f"no feasible {what}: " + str(diag.get("message", "")))
    for r in diag.get("relaxations") or []:
        emit(f"  - {r.get('message', r)}")


def print_recommendation(ans: dict[str, Any], emit: Callable[[str], None] = _say) -> None:
    if not ans.get("feasible"):
        print_infeasible("option", ans, emit)
        return
    emit(f"recommendation (objective: {ans.get('objective')}, {ans.get('candidates_considered')} candidates, "
         f"{ans.get('solver')} in {ans.get('solve_time_s', 0):.3f} s):")
    for o in ans["options"]:
        mix = " + ".join(f"{n}×{hw}" for hw, n in o["hardware"].items())
        cfg = ", ".join(f"{k}={v}" for k, v in (o.get("config") or {}).items())
        p = o.get("predicted") or {}
        emit(f"  #{o['rank']}: {mix}  [{cfg}]  ${o['cost_per_hour_usd']:.4f}/h  ({o.get('basis')})")
        parts = []
        for key, unit in (("latency_p99_ms", "ms p99"), ("throughput_qps", "samples/s"), ("accuracy", "accuracy")):
            if p.get(key) is not None:
                bound = p.get(f"{key}_bound")
                parts.append(f"{p[key]:.4g} {unit}" + (f" (bound {bound:.4g})" if bound is not None else ""))
        if parts:
            emit("      " + "; ".join(parts))
        if o.get("binding"):
            emit(f"      binding: {', '.join(o['binding'])}")


def _pareto(req: Any, a: argparse.Namespace) -> int:
    from matcher.api import build_candidates
    from matcher.pareto import pareto_answer

    ans = pareto_answer(req, build_candidates(req, **candidate_sources(a)))
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
        return 0 if ans["feasible"] else 3
    if not ans["feasible"]:
        _say("no feasible option: nothing to put on a cost–latency front (see `recommend` for the diagnosis)")
        return 3
    _say("cost–latency Pareto front (least cost at each p99 bound; ε-constraint):")
    for r in ans["points"]:
        mix = " + ".join(f"{n}×{hw}" for hw, n in r["hardware"].items())
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
        _say(f"  p99 ≤ {r['latency_p99_ms']:8.3f} ms   ${r['cost_per_hour_usd']:.4f}/h   {mix}  [{cfg}]")
    return 0


def cmd_recommend(a: argparse.Namespace) -> int:
    from matcher.requirements import load_requirements

    req = load_requirements(a.requirements)
    if a.pareto:
        return _pareto(req, a)
    ans = _recommend(req, a)
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
    else:
        print_recommendation(ans)
    return 0 if ans.get("feasible") else 3


# ---------------------------------------------------------------- serve
def cmd_serve(a: argparse.Namespace) -> int:
    from serve.runner import run_service

    # Always pass the folder: the service picks models up when they appear (`benchmatch train` later).
    run_service(results_uri=a.results, models_dir=a.models or _models_dir(a.results),
                candidates_csv=a.candidates, host=a.host, port=a.port, address=a.address)
    return 0


# ---------------------------------------------------------------- report
def cmd_report(a: argparse.Namespace) -> int:
    from benchmarks.report import default_reference, report_summary, write_report
    from benchmarks.stats import Reference
    from benchmarks.store import ResultsStore
    from cluster.hardware import load_catalog

    df = ResultsStore(a.results).read(a.sweep)
    if df.empty:
        where = f"sweep '{a.sweep}' in {a.results}" if a.sweep else a.results
        raise ValueError(f"no results in {where}: run `benchmatch sweep CONFIG` (or quickstart) first")
    catalog = load_catalog(a.catalog)
    ref = Reference(hardware=a.reference) if a.reference else default_reference(catalog)
    title = a.title or f"benchmatch report: {a.sweep or os.path.basename(os.path.abspath(a.results))}"
    path = write_report(df, a.out, catalog=catalog, title=title, reference=ref)
    if a.json:
        summary = report_summary(df, ref)
        rows = json.loads(summary.to_json(orient="records"))  # NaN/NA -> null, numpy -> JSON numbers
        print(json.dumps({"report": str(path.resolve()), "rows": len(df), "summary": rows}, indent=2))
    else:
        _say(str(path.resolve()))
    return 0


# ---------------------------------------------------------------- quickstart
def cmd_quickstart(a: argparse.Namespace) -> int:
    from benchmarks.spec import load_sweep
    from benchmarks.store import ResultsStore
    from benchmarks.sweep import run_sweep
    from cluster.hardware import load_catalog
    from cluster.local import LocalCluster
    from matcher.api import recommend_from_sources
    from matcher.models import train_models
    from matcher.requirements import load_requirements

    stages: dict[str, float] = {}
    t_all = time.monotonic()
    spec = load_sweep(a.config)
    if a.results:
        spec = spec.model_copy(update={"results_uri": a.results})
    catalog = load_catalog(a.catalog)
    req = load_requirements(a.requirements)
    _say(f"[1/4] starting an embedded local Ray cluster: {', '.join(spec.hardware)} (loopback only)")
    t = time.monotonic()
    cluster = LocalCluster([catalog[h] for h in spec.hardware if catalog[h].local])
    info = cluster.start()
    import ray

    ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
    stages["cluster start"] = time.monotonic() - t
    try:
        _say(f"[2/4] sweep '{spec.name}': {spec.asset} ({spec.task}) over {spec.space} × {spec.hardware}")
        t = time.monotonic()
        report = run_sweep(spec, catalog, resume=True, progress=_say)
        stages["sweep"] = time.monotonic() - t
    finally:
        t = time.monotonic()
        cluster.shutdown()
        stages["cluster stop"] = time.monotonic() - t
    _say(f"[3/4] learning performance models from {spec.results_uri}")
    t = time.monotonic()
    models = train_models(ResultsStore(spec.results_uri).read(), catalog)
    models_dir = _models_dir(spec.results_uri)
    models.save(models_dir)
    _print_model_summary(models.summary())
    stages["train"] = time.monotonic() - t
    _say(f"[4/4] matching: {a.requirements}")
    t = time.monotonic()
    ans = recommend_from_sources(req, results_uri=spec.results_uri, models_dir=models_dir, catalog_path=a.catalog)
    stages["recommend"] = time.monotonic() - t
    print_recommendation(ans)
    total = time.monotonic() - t_all
    _say("")
    _say(f"results: {os.path.abspath(spec.results_uri)} ({report.ran} new trial repeats, "
         f"{report.already_done} reused; delete the folder to measure afresh)")
    _say(f"models:  {os.path.abspath(models_dir)}")
    _say("serve it: benchmatch serve --results " + spec.results_uri)
    _say("  then:   curl -s -X POST http://127.0.0.1:8000/recommend -H 'content-type: application/json' "
         "-d @configs/requirements-quickstart.json")
    _say("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + f"; total {total:.1f} s")
    if a.timings:
        Path(a.timings).write_text(json.dumps({"stages_s": stages, "total_s": total}, indent=2))
    return 0 if report.failed == 0 else 1


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmatch", description=(
        "Benchmark an AI asset across heterogeneous hardware on Ray, learn how it behaves, and recommend "
        "the hardware, count and configuration that meet your requirements."))
    p.add_argument("--catalog", help="hardware catalog YAML (default: configs/hardware.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", help="the main job end to end on an embedded local cluster")
    q.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    q.add_argument("--requirements", default=str(REPO / "configs" / "requirements-quickstart.yaml"))
    q.add_argument("--results", help="results folder (default: the sweep file's results_uri)")
    q.add_argument("--timings", help="write stage timings as JSON to this file")
    q.set_defaults(fn=cmd_quickstart)

    c = sub.add_parser("cluster", help="manage a local heterogeneous Ray cluster on 127.0.0.1")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--dashboard-port", type=int, default=8265)
    c.add_argument("--prometheus", action="store_true",
                   help="also start Debian's Prometheus on 127.0.0.1, scraping the cluster (with `up`)")
    c.add_argument("--prometheus-port", type=int, default=9090)
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_cluster)

    s = sub.add_parser("sweep", help="run a sweep file (hyperparameters × hardware) on Ray Tune")
    s.add_argument("config")
    s.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, `cluster up`, else embedded)")
    s.add_argument("--resume", action="store_true", help="run only the trials missing from the results store")
    s.add_argument("--results", help="results URI (overrides the sweep file)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_sweep)

    t = sub.add_parser("train", help="fit performance models on the results and print their CV error")
    t.add_argument("--results", default=DEFAULT_RESULTS)
    t.add_argument("--models", help="where to save the models (default: RESULTS/models)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("recommend", help="recommend hardware × count × configuration for REQUIREMENTS")
    r.add_argument("requirements", help="requirements YAML or JSON")
    add_source_args(r)
    r.add_argument("--pareto", action="store_true", help="print the cost–latency Pareto front instead")
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_recommend)

    v = sub.add_parser("serve", help="serve the recommender over HTTP with Ray Serve (127.0.0.1)")
    v.add_argument("--results", default=DEFAULT_RESULTS)
    v.add_argument("--models")
    v.add_argument("--candidates")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--address", help="Ray address (default: start a local Ray)")
    v.set_defaults(fn=cmd_serve)

    rp = sub.add_parser("report", help="write one self-contained HTML report of the results (plots, spread, flags)")
    rp.add_argument("--results", default=DEFAULT_RESULTS)
    rp.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    rp.add_argument("--sweep", help="only this sweep (default: every sweep in the results)")
    rp.add_argument("--reference", help="reference hardware for the relative column (default: first local profile)")
    rp.add_argument("--title")
    rp.add_argument("--json", action="store_true", help="print the report path and the summary table as JSON")
    rp.set_defaults(fn=cmd_report)

    from benchmatch.commands_learn import register as register_learn  # import, plan, suggest

    register_learn(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`benchmatch ... | head`): not an error; silence the final flush too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        # Our errors are ValueError/RuntimeError subclasses whose message names the file or field.
        print(f"benchmatch {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
