"""Live metrics end to end: a real sweep on a loopback multi-node Ray cluster, scraped by a real
Prometheus through Ray's service-discovery file; every dashboard panel's query must return data.

One cluster, one Prometheus and one sweep for the whole module (module-scoped fixtures). The sweep
has a configuration that fails for a real reason (float16 on CPU is refused by the measurement
core), so the failure counter, the failure ratio and the BenchmatchTrialFailed alert are exercised
by a real failure, not an injected one. One pair (batch 8, float32 on both profiles) is declared
inconsistent after the sweep, so it is measured again for real: the counters must not count it
twice, and the panels must show the new numbers the store kept. The service part deploys the real Serve application on the
same cluster and sends it traffic, including bad requests (4xx).

Everything polls with timeouts; nothing asserts wall time.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cluster.grafana import SERVICE_DASHBOARD, SWEEPS_DASHBOARD, panel_queries, panel_targets, render_query
from cluster.prometheus_server import INSTALL_HINT, PrometheusServer, find_prometheus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_S = 2  # scrape and rule evaluation interval of the test Prometheus
PROFILES = ("local-1c", "local-2c")

# Panels whose metric only some sweeps produce. They may be empty, but only when the metric itself
# is absent from Prometheus (checked), never because the panel's query is wrong.
OPTIONAL_PANELS = {
    "Energy by trial": ("ray_benchmatch_trial_energy_joules", "needs an NVML/RAPL energy sensor"),
    "Training loss by trial": ("ray_benchmatch_trial_train_loss", "training sweeps only"),
}


def _require_prometheus() -> None:
    if find_prometheus():
        return
    if os.environ.get("CI") or os.environ.get("BENCHMATCH_REQUIRE_PROMETHEUS"):
        pytest.fail(f"prometheus is required in CI; {INSTALL_HINT}")
    pytest.skip(f"no prometheus binary: {INSTALL_HINT}")


def _finite_values(result: list[dict[str, Any]]) -> list[float]:
    vals = []
    for series in result:
        for _, v in series.get("values") or [series.get("value", [0, "NaN"])]:
            f = float(v)
            if math.isfinite(f):
                vals.append(f)
    return vals


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Head (0 CPUs, dashboard on loopback) + one node per local profile, like `benchmatch cluster up`."""
    _require_prometheus()
    import ray
    from ray.cluster_utils import Cluster

    from cluster.hardware import NODE_LABEL, load_catalog
    from cluster.local import loopback_only

    catalog = load_catalog()
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")}
    loopback_only()  # every Ray server on 127.0.0.1 (also when Ray was imported before this fixture)
    # Raylets (and so every worker) inherit this: trial actors import benchmarks/ from the repo.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,  # the dashboard writes the Prometheus service-discovery file
            "dashboard_host": "127.0.0.1",
            "dashboard_port": 0,
            "node_ip_address": "127.0.0.1",
            "object_store_memory": 128 * 1024 * 1024,
            "_system_config": {"metrics_report_interval_ms": 2000},
        },
    )
    try:
        for name in PROFILES:
            spec = catalog[name]
            c.add_node(num_cpus=spec.cpu_cores, resources={spec.resource_name: 1}, labels={NODE_LABEL: name},
                       node_ip_address="127.0.0.1", object_store_memory=128 * 1024 * 1024)
        c.wait_for_nodes()
        ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
        # The session's own file, not /tmp/ray's link to the newest session: another cluster on this
        # machine must not redirect our Prometheus.
        sd_file = Path(c.head_node.get_session_dir_path()) / "prom_metrics_service_discovery.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                targets = json.loads(sd_file.read_text())[0]["targets"]
                if len(targets) >= 1 + len(PROFILES):
                    break
            except (FileNotFoundError, json.JSONDecodeError, IndexError, KeyError):
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"Ray did not write its service-discovery file {sd_file} with every node")
        yield {"cluster": c, "sd_file": sd_file, "catalog": catalog}
    finally:
        if ray.is_initialized():
            try:
                from ray import serve

                serve.shutdown()
            except Exception:  # Serve may never have started; the cluster goes down anyway
                pass
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def prom(cluster, tmp_path_factory: pytest.TempPathFactory):
    with PrometheusServer(cluster["sd_file"], workdir=tmp_path_factory.mktemp("prom"),
                          scrape_interval=f"{SCRAPE_S}s") as server:
        yield server


@pytest.fixture(scope="module")
def sweep(cluster, prom, tmp_path_factory: pytest.TempPathFactory):
    """A tiny real sweep: 2 hardware x batch {1, 8} x {float32 (ok), float16 (refused on CPU: failed)}."""
    from benchmarks import sweep as sweep_mod
    from benchmarks.spec import SweepSpec, expand_trials
    from benchmarks.sweep import run_sweep

    start = time.time()
    results = tmp_path_factory.mktemp("results")
    spec = SweepSpec.model_validate({
        "name": f"it-prom-{uuid.uuid4().hex[:8]}",
        "asset": "digits-mlp",
        "task": "infer",
        # Two working configurations per hardware, so "best" and "last" can differ on the dashboards.
        "space": {"batch_size": [1, 8], "dtype": ["float32", "float16"]},
        "hardware": list(PROFILES),
        "loadgen": {"scenarios": ["SingleStream", "Offline"], "min_duration_ms": 100,
                    "min_query_count": 16, "offline_samples": 128},
        "results_uri": str(results),
        "max_retries": 0,
    })
    real = sweep_mod.more_cores_slower
    calls: list[int] = []

    def first_check_finds_the_batch_8_pair(rows, cores):
        # The real check on rows where local-2c's batch-8 float32 Offline is made 1000x slower: the
        # Inconsistency it returns is exactly what a real one looks like. Later checks see the real rows.
        calls.append(len(rows))
        if len(calls) == 1:
            rows = rows.copy()
            slow = ((rows["hardware"] == "local-2c") & (rows["cfg_batch_size"] == 8)
                    & (rows["cfg_dtype"] == "float32"))
            rows.loc[slow, "throughput_samples_per_s"] /= 1000
        return real(rows, cores)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_mod, "more_cores_slower", first_check_finds_the_batch_8_pair)
        report = run_sweep(spec, cluster["catalog"], address=cluster["cluster"].address, progress=lambda _m: None,
                           tune_dir=str(tmp_path_factory.mktemp("tune")))
    trials = expand_trials(spec, cluster["catalog"])
    failed = {t.trial_id for t in trials if t.config["dtype"] == "float16"}
    again = {t.trial_id for t in trials if t.config == {"batch_size": 8, "dtype": "float32"}}
    assert report.ran == len(trials), report
    assert report.failed == len(failed), report
    assert set(report.remeasured_for_consistency) == again, report
    return {"spec": spec, "trials": trials, "failed": failed, "again": again, "start": start, "results": results}


def test_prometheus_scrapes_every_ray_node_from_the_sd_file(cluster, prom):
    listed = set(json.loads(cluster["sd_file"].read_text())[0]["targets"])
    up = prom.wait_for('up{job="ray"} == 1', timeout=60,
                       predicate=lambda r: {s["metric"]["instance"] for s in r} >= listed)
    assert all(s["metric"]["instance"].startswith("127.0.0.1:") for s in up)  # loopback only


def test_every_trial_publishes_its_metrics(sweep, prom):
    name = sweep["spec"].name
    expected = {(t.trial_id, t.hardware.name, t.hardware.accelerator_type) for t in sweep["trials"]}

    def labels(result: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(s["metric"]["trial"], s["metric"]["hardware"], s["metric"]["accelerator"]) for s in result}

    # Every trial (ok or failed) reports progress, with its sweep/trial/hardware/accelerator labels.
    prom.wait_for(f'ray_benchmatch_trial_progress_ratio{{sweep="{name}"}} == 1', timeout=60,
                  predicate=lambda r: labels(r) >= expected)
    ok = {e for e in expected if e[0] not in sweep["failed"]}
    for metric in ("ray_benchmatch_trial_throughput_samples_per_second", "ray_benchmatch_trial_latency_p99_seconds",
                   "ray_benchmatch_trial_latency_p50_seconds", "ray_benchmatch_trial_peak_memory_bytes"):
        result = prom.wait_for(f'{metric}{{sweep="{name}"}} > 0', timeout=60, predicate=lambda r: labels(r) >= ok)
        # A failed trial has no measurement: its gauges stay absent rather than showing 0.
        assert not {s["metric"]["trial"] for s in result} & sweep["failed"], metric
        assert {s["metric"]["asset"] for s in result} == {"digits-mlp"}
    # Counters: one started and one finished repeat per trial, by status.
    completed = prom.wait_for(
        f'sum by (hardware, status) (ray_benchmatch_trials_completed_total{{sweep="{name}"}})', timeout=60,
        predicate=lambda r: sum(float(s["value"][1]) for s in r) >= len(expected),
    )
    by = {(s["metric"]["hardware"], s["metric"]["status"]): float(s["value"][1]) for s in completed}
    # The re-measured pair is not counted again as started or finished (progress would pass 1 and
    # the failure ratio would change); it has its own counter.
    assert by == {(hw, st): 2.0 for hw in PROFILES for st in ("ok", "failed")}
    started = prom.query(f'sum by (hardware) (ray_benchmatch_trials_started_total{{sweep="{name}"}})')
    assert {s["metric"]["hardware"]: float(s["value"][1]) for s in started} == {hw: 4.0 for hw in PROFILES}
    again = prom.wait_for(f'sum by (hardware) (ray_benchmatch_trials_remeasured_total{{sweep="{name}"}})',
                          timeout=60, predicate=lambda r: len(r) == len(PROFILES))
    assert {s["metric"]["hardware"]: float(s["value"][1]) for s in again} == {hw: 1.0 for hw in PROFILES}
    planned = prom.query(f'max(ray_benchmatch_sweep_trials{{sweep="{name}"}})')
    assert float(planned[0]["value"][1]) == len(expected)


def _range_check(prom, dashboard: Path, variables: dict[str, str], start: float,
                 optional: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Run every panel query as Grafana's range query over [start, now]; return the failures."""
    failures: dict[str, str] = {}
    for title, expr, instant in panel_targets(dashboard):
        end = time.time()
        promql = render_query(expr, variables, range_s=end - start, step_s=SCRAPE_S, scrape_interval_s=SCRAPE_S)
        result = prom.query(promql) if instant else prom.query_range(promql, start, end, SCRAPE_S)
        if _finite_values(result):
            continue
        base = title.split(" [")[0]
        if base in optional:
            metric, why = optional[base]
            if not prom.query(f"{metric}{{sweep=~\"{variables.get('sweep', '.*')}\"}}"):
                continue  # the metric itself is absent (why), so an empty panel is right
        failures[title] = f"no finite data for {promql}"
    return failures


def test_every_sweep_panel_returns_data(sweep, prom):
    name = sweep["spec"].name
    variables = {"sweep": name, "hardware": ".*"}
    # Wait for the last of the sweep's series (finished counters) before judging the panels.
    prom.wait_for(f'sum(ray_benchmatch_trials_completed_total{{sweep="{name}"}}) >= {len(sweep["trials"])}',
                  timeout=60)
    queries = panel_queries(SWEEPS_DASHBOARD)
    assert len(queries) >= 15
    deadline = time.monotonic() + 30
    while True:
        failures = _range_check(prom, SWEEPS_DASHBOARD, variables, sweep["start"], OPTIONAL_PANELS)
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(SCRAPE_S)
    assert not failures, json.dumps(failures, indent=1)


def _panel_values(prom, title: str, variables: dict[str, str], start: float) -> dict[tuple[str, str], float]:
    """An instant panel's value per (hardware, scenario), as Grafana shows it over [start, now]."""
    (expr,) = [e for t, e, instant in panel_targets(SWEEPS_DASHBOARD) if t == title and instant]
    promql = render_query(expr, variables, range_s=time.time() - start, step_s=SCRAPE_S, scrape_interval_s=SCRAPE_S)
    return {(s["metric"]["hardware"], s["metric"]["scenario"]): float(s["value"][1]) for s in prom.query(promql)}


def test_best_panels_show_the_best_measured_and_per_trial_series_outlive_the_sweep(sweep, prom):
    """The bar gauges agree with the results store (best over the range, not the last trial), and
    minutes after the sweep every finished trial's gauges are still scraped."""
    from results.store import ResultsStore

    name = sweep["spec"].name
    df = ResultsStore(sweep["results"]).read()
    ok = df[df["status"] == "ok"]
    # Longer than Ray's gauge TTL (2 export intervals) and several scrapes: a series that is no
    # longer exported would be stale by now.
    time.sleep(8 * SCRAPE_S)
    live = prom.query(f'ray_benchmatch_trial_latency_p99_seconds{{sweep="{name}"}}')
    assert {s["metric"]["trial"] for s in live} == set(ok["trial_id"]), "finished trials' gauges went stale"
    # Every stored row's number is its series' value, the re-measured pair's new rows included.
    gauge = {(s["metric"]["trial"], s["metric"]["repeat"], s["metric"]["scenario"]): float(s["value"][1])
             for s in live}
    for r in ok.dropna(subset=["latency_p99_ms"]).itertuples():
        assert gauge[(r.trial_id, str(r.repeat), r.scenario)] == pytest.approx(r.latency_p99_ms / 1000, rel=1e-6)
    variables = {"sweep": name, "hardware": ".*"}
    best_p99 = _panel_values(prom, "Best p99 latency per hardware", variables, sweep["start"])
    want_p99 = ok.groupby(["hardware", "scenario"])["latency_p99_ms"].min().dropna()
    assert set(best_p99) == set(want_p99.index)
    for key, ms in want_p99.items():
        assert best_p99[key] == pytest.approx(ms / 1000, rel=1e-6), key
    best_tput = _panel_values(prom, "Best throughput per hardware", variables, sweep["start"])
    want_tput = ok.groupby(["hardware", "scenario"])["throughput_samples_per_s"].max().dropna()
    for key, v in want_tput.items():
        assert best_tput[key] == pytest.approx(v, rel=1e-6), key


def test_failed_trials_fire_the_alert_and_rules_evaluate(sweep, prom):
    name = sweep["spec"].name
    alerts = prom.wait_for(
        f'ALERTS{{alertname="BenchmatchTrialFailed", alertstate="firing", sweep="{name}"}}', timeout=60,
        predicate=lambda r: {s["metric"]["hardware"] for s in r} >= set(PROFILES),
    )
    assert {s["metric"]["severity"] for s in alerts} == {"warning"}
    api_alerts = [a for a in prom.alerts() if a["labels"].get("sweep") == name]
    assert all("failed" in a["annotations"]["description"] for a in api_alerts)
    # Recording rules: loaded, healthy, and giving the sweep's numbers.
    unhealthy = [(g["name"], r["name"], r.get("lastError")) for g in prom.rules() for r in g["rules"]
                 if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy, unhealthy
    ratio = prom.wait_for(f'sweep_hardware:benchmatch_trial_failure:ratio{{sweep="{name}"}}', timeout=30,
                          predicate=lambda r: len(r) == len(PROFILES))
    assert {s["metric"]["hardware"]: float(s["value"][1]) for s in ratio} == {hw: 0.5 for hw in PROFILES}
    progress = prom.wait_for(f'sweep:benchmatch_sweep_progress:ratio{{sweep="{name}"}}', timeout=30)
    assert float(progress[0]["value"][1]) == 1.0
    best = prom.wait_for(
        f'sweep_hardware_scenario:benchmatch_trial_throughput_samples_per_second:max{{sweep="{name}"}}', timeout=30,
        predicate=lambda r: {s["metric"]["hardware"] for s in r} >= set(PROFILES),
    )
    assert all(float(s["value"][1]) > 0 for s in best)


@pytest.fixture(scope="module")
def service(cluster, sweep):
    """The real Serve application on the same cluster, reading the sweep's results."""
    from cluster.prometheus_server import free_port
    from serve.runner import run_service

    port = free_port()
    url = run_service(str(sweep["results"]), host="127.0.0.1", port=port, blocking=False,
                      address=cluster["cluster"].address, app_args={"num_replicas": 1},
                      out=io.StringIO())
    return url.rstrip("/")


def test_every_service_panel_returns_data_under_traffic(service, prom):
    import requests

    requirements = json.loads((ROOT / "configs" / "requirements-quickstart.json").read_text())
    start = time.time()
    stop = threading.Event()
    statuses: list[int] = []

    def traffic() -> None:
        # Good and bad requests, continuously, so that rate() always has two samples in its window.
        with requests.Session() as s:
            while not stop.is_set():
                for method, path, body in (("get", "/healthz", None), ("get", "/hardware", None),
                                           ("post", "/recommend", {"objective": "fastest"}),
                                           ("post", "/recommend", requirements)):
                    try:
                        statuses.append(s.request(method, service + path, json=body, timeout=30).status_code)
                    except requests.RequestException:
                        pass
                time.sleep(0.05)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        prom.wait_for('sum(rate(ray_benchmatch_serve_requests_total{status=~"4.."}[10s])) > 0', timeout=90)
        deadline = time.monotonic() + 30
        while True:
            failures = _range_check(prom, SERVICE_DASHBOARD, {}, start, {})
            if not failures or time.monotonic() > deadline:
                break
            time.sleep(SCRAPE_S)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert 422 in statuses and 200 in statuses, sorted(set(statuses))
    assert not failures, json.dumps(failures, indent=1)
