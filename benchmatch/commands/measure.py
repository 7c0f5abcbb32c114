"""Measure: `cluster up|status|down`, `sweep`, `report` and `quickstart` (the main job end to end)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmatch import render
from benchmatch.sources import DEFAULT_RESULTS, default_models_dir

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- cluster
def cmd_cluster_up(a: argparse.Namespace) -> int:
    from cluster import local

    info = local.up(a.catalog, dashboard_port=a.dashboard_port)
    prom_url = None
    if a.prometheus:
        from cluster.prometheus_server import PrometheusServer

        prom = PrometheusServer(info.service_discovery_file, port=a.prometheus_port,
                                workdir=local.STATE_DIR / "prometheus").start()
        prom_url = prom.url
    render.print_cluster_up(info, prom_url)
    return 0


def cmd_cluster_down(a: argparse.Namespace) -> int:
    from cluster import local
    from cluster.prometheus_server import stop_detached

    if stop_detached(local.STATE_DIR / "prometheus"):
        render.say("Prometheus stopped")
    render.say("local cluster stopped" if local.down() else "no local cluster of yours was running")
    return 0


def cmd_cluster_status(a: argparse.Namespace) -> int:
    from cluster import local

    info = local.read_state()
    if not info:
        render.say("no local cluster of yours is running (start one with `benchmatch cluster up`)")
        return 1
    nodes = local.status(info)
    if a.json:
        print(json.dumps({"cluster": info.__dict__, "nodes": nodes}, indent=2))
    else:
        render.print_cluster_status(info, nodes)
    return 0


# ---------------------------------------------------------------- sweep
def cmd_sweep(a: argparse.Namespace) -> int:
    from benchmarks.sweep import sweep_command

    return sweep_command(a, render.say)


# ---------------------------------------------------------------- report
def cmd_report(a: argparse.Namespace) -> int:
    from benchmarks.report import default_reference, report_summary, write_report
    from benchmarks.stats import Reference
    from cluster.hardware import load_catalog
    from matcher.errors import NoDataError
    from results.store import ResultsStore

    df = ResultsStore(a.results).read(a.sweep)
    if df.empty:
        where = f"sweep '{a.sweep}' in {a.results}" if a.sweep else a.results
        raise NoDataError(f"no results in {where}: run `benchmatch sweep CONFIG` (or quickstart) first")
    if a.asset:
        present = sorted(set(df["asset"].dropna().astype(str))) if "asset" in df.columns else []
        if a.asset not in present:
            raise NoDataError(f"no results for asset '{a.asset}' in {a.results}; assets present: "
                              f"{', '.join(present) or 'none'}")
        df = df[df["asset"].astype(str) == a.asset]
    catalog = load_catalog(a.catalog)
    ref = Reference(hardware=a.reference) if a.reference else default_reference(catalog)
    title = a.title or f"benchmatch report: {a.sweep or os.path.basename(os.path.abspath(a.results))}" + \
        (f", {a.asset}" if a.asset else "")
    extra = []
    if a.requirements:
        from benchmatch.decision import decision_sections
        from benchmatch.sources import open_workspace
        from matcher.requirements import load_requirements

        req = load_requirements(a.requirements)
        if a.asset and req.asset is None:
            req = req.model_copy(update={"asset": a.asset})
        a.candidates = None
        extra = decision_sections(open_workspace(a), req, df, catalog)
    path = write_report(df, a.out, catalog=catalog, title=title, reference=ref, extra=extra)
    if a.json:
        summary = report_summary(df, ref)
        rows = json.loads(summary.to_json(orient="records"))  # NaN/NA -> null, numpy -> JSON numbers
        print(json.dumps({"report": str(path.resolve()), "rows": len(df), "summary": rows}, indent=2))
    else:
        render.say(str(path.resolve()))
    return 0


# ---------------------------------------------------------------- quickstart
def cmd_quickstart(a: argparse.Namespace) -> int:
    import ray

    from benchmarks.sweep import prepare, run_sweep
    from cluster.local import LocalCluster
    from matcher.models import train_models
    from matcher.requirements import load_requirements
    from matcher.workspace import Sources, Workspace
    from results.store import ResultsStore

    stages: dict[str, float] = {}
    t_all = time.monotonic()
    # Everything a person can get wrong is checked before the cluster starts.
    spec, catalog = prepare(a.config, catalog_path=a.catalog, results_uri=a.results)
    req = load_requirements(a.requirements)
    render.say(f"[1/4] starting an embedded local Ray cluster: {', '.join(spec.hardware)} (loopback only)")
    t = time.monotonic()
    cluster = LocalCluster([catalog[h] for h in spec.hardware if catalog[h].local])
    info = cluster.start()
    ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
    stages["cluster start"] = time.monotonic() - t
    try:
        render.say(f"[2/4] sweep '{spec.name}': {spec.asset} ({spec.task}) over {spec.space} × {spec.hardware}")
        t = time.monotonic()
        report = run_sweep(spec, catalog, resume=True, progress=render.say)
        stages["sweep"] = time.monotonic() - t
    finally:
        t = time.monotonic()
        cluster.shutdown()
        stages["cluster stop"] = time.monotonic() - t
    render.say(f"[3/4] learning performance models from {spec.results_uri}")
    t = time.monotonic()
    models = train_models(ResultsStore(spec.results_uri).read(), catalog)
    models_dir = default_models_dir(spec.results_uri)
    models.save(models_dir)
    render.print_model_summary(models.summary())
    stages["train"] = time.monotonic() - t
    render.say(f"[4/4] matching: {a.requirements}")
    t = time.monotonic()
    ans = Workspace.open(Sources(results_uri=spec.results_uri, models_dir=models_dir,
                                 catalog_path=a.catalog)).recommend(req)
    stages["recommend"] = time.monotonic() - t
    render.print_recommendation(ans)
    total = time.monotonic() - t_all
    shown = os.path.relpath(spec.results_uri) if "://" not in spec.results_uri else spec.results_uri
    render.say("")
    render.say(f"results: {spec.results_uri} ({report.ran} new trial repeats, "
               f"{report.already_done} reused; delete the folder to measure afresh)")
    render.say(f"models:  {os.path.abspath(models_dir)}")
    render.say("serve it: benchmatch serve --results " + shown)
    render.say("  then:   curl -s -X POST http://127.0.0.1:8000/recommend -H 'content-type: application/json' "
               "-d @configs/requirements-quickstart.json")
    render.say("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + f"; total {total:.1f} s")
    if a.timings:
        Path(a.timings).write_text(json.dumps({"stages_s": stages, "total_s": total}, indent=2))
    return 0 if report.failed == 0 else 1


# ---------------------------------------------------------------- wiring
def register(sub: Any, parents: list[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """Add `quickstart`, `cluster`, `sweep` and `report` to the `benchmatch` subparsers."""
    from benchmarks.sweep import add_sweep_args

    def add(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=kw.pop("description", help[0].upper() + help[1:] + "."),
                              parents=parents, formatter_class=fmt, **kw)

    q = add("quickstart", "the main job end to end on an embedded local cluster",
            description="Start a two-node local Ray cluster on 127.0.0.1, sweep the digits classifier with "
                        "LoadGen, learn performance models, and print the recommendation for the requirements.")
    q.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"), help="sweep file to run")
    q.add_argument("--requirements", default=str(REPO / "configs" / "requirements-quickstart.yaml"),
                   help="requirements to answer at the end")
    q.add_argument("--results", help="results folder (default: the sweep file's results_uri, relative to here)")
    q.add_argument("--timings", help="write the stage timings as JSON to this file")
    q.set_defaults(fn=cmd_quickstart)

    c = add("cluster", "manage your local heterogeneous Ray cluster on 127.0.0.1",
            description="A local Ray cluster whose nodes emulate the catalog's local hardware profiles, kept "
                        "by a background process of yours (state in ~/.benchmatch/cluster.json).")
    actions = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the cluster (and optionally Prometheus) in the background",
                            description="Start a loopback-only, token-auth Ray cluster with one node per local "
                                        "profile, kept by a background process; print its addresses.",
                            parents=parents, formatter_class=fmt)
    up.add_argument("--dashboard-port", type=int, default=8265, help="Ray dashboard / job API port on 127.0.0.1")
    up.add_argument("--prometheus", action="store_true",
                    help="also start Debian's Prometheus on 127.0.0.1, scraping the cluster")
    up.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port on 127.0.0.1")
    up.set_defaults(fn=cmd_cluster_up)
    st = actions.add_parser("status", help="list the cluster's live nodes",
                            description="List the live nodes of your `cluster up` cluster with their profile, "
                                        "CPUs and accelerator resources. Exit 1 when none runs.",
                            parents=parents, formatter_class=fmt)
    st.add_argument("--json", action="store_true", help="print the cluster and its nodes as JSON")
    st.set_defaults(fn=cmd_cluster_status)
    dn = actions.add_parser("down", help="stop the cluster (and its Prometheus)",
                            description="Stop the cluster that your `cluster up` started, and its Prometheus. "
                                        "Never signals a process it did not start.",
                            parents=parents, formatter_class=fmt)
    dn.set_defaults(fn=cmd_cluster_down)

    s = add("sweep", "run a sweep file (hyperparameters × hardware) on Ray Tune",
            description="Run a sweep file on Ray Tune: every (hardware, configuration) as a trial on a node of "
                        "that hardware; rows go to the results store as each repeat finishes.")
    add_sweep_args(s)
    s.set_defaults(fn=cmd_sweep)

    rp = add("report", "write one self-contained HTML report of the results (plots, spread, flags)")
    rp.add_argument("--results", default=DEFAULT_RESULTS, help="results store to read")
    rp.add_argument("--out", default="report.html", help="HTML file to write")
    rp.add_argument("--sweep", help="only this sweep (default: every sweep in the results)")
    rp.add_argument("--reference", help="reference hardware for the relative column (default: first local profile)")
    rp.add_argument("--title", help="report title (default: from the sweep or results folder)")
    rp.add_argument("--asset", help="only this asset (default: every asset in the results)")
    rp.add_argument("--requirements", help="also show the recommendation for this requirements file (YAML/JSON), "
                    "the latency-vs-load curves it rests on and the models' predicted-vs-measured")
    rp.add_argument("--models", help="performance models folder for the recommendation (default: RESULTS/models "
                    "if present)")
    rp.add_argument("--json", action="store_true", help="print the report path and the summary table as JSON")
    rp.set_defaults(fn=cmd_report)
