"""Prometheus config, rules and Grafana dashboards, checked with the real `promtool` and by parsing.

promtool is Debian's `prometheus` package (CI installs it). Without it these tests skip with the
reason, except under CI (env CI set), where a missing promtool is a failure.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.grafana import (
    PROVISIONING_DIR,
    SERVICE_DASHBOARD,
    SWEEPS_DASHBOARD,
    dashboard_files,
    load_dashboard,
    panel_queries,
    render_query,
)
from cluster.prometheus import CONFIG_TEMPLATE, RULE_FILES, RULE_TESTS
from cluster.prometheus_server import (
    EXTRA_JOB,
    INSTALL_HINT,
    PrometheusNotFound,
    PrometheusServer,
    find_promtool,
    render_config,
    require_prometheus,
)

ROOT = Path(__file__).resolve().parents[2]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = find_promtool()
    if not tool:
        if os.environ.get("CI") or os.environ.get("BENCHMATCH_REQUIRE_PROMETHEUS"):
            pytest.fail(f"promtool is required in CI; {INSTALL_HINT}")
        pytest.skip(f"promtool not installed: {INSTALL_HINT}")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{proc.args}:\n{proc.stdout}\n{proc.stderr}"


# ---- Prometheus config and rules ----

def test_template_is_a_valid_config_as_it_is():
    _ok(promtool("check", "config", str(CONFIG_TEMPLATE)))


def test_template_scrapes_rays_discovery_file():
    doc = yaml.safe_load(CONFIG_TEMPLATE.read_text())
    ray = next(j for j in doc["scrape_configs"] if j["job_name"] == "ray")
    assert ray["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert doc["rule_files"] == [p.name for p in RULE_FILES]


def test_rendered_config_is_valid_and_templated(tmp_path):
    sd = tmp_path / "session" / "prom_metrics_service_discovery.json"
    text = render_config(sd, extra_targets=["127.0.0.1:8081"], scrape_interval="2s", evaluation_interval="3s")
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    _ok(promtool("check", "config", str(config)))
    doc = yaml.safe_load(text)
    assert doc["global"]["scrape_interval"] == "2s" and doc["global"]["evaluation_interval"] == "3s"
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs["ray"]["file_sd_configs"][0]["files"] == [str(sd.resolve())]
    assert jobs[EXTRA_JOB]["static_configs"] == [{"targets": ["127.0.0.1:8081"]}]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in doc["rule_files"])
    # No extra job without extra targets.
    assert EXTRA_JOB not in {j["job_name"] for j in yaml.safe_load(render_config(sd))["scrape_configs"]}


def test_rules_are_valid():
    proc = promtool("check", "rules", *map(str, RULE_FILES))
    _ok(proc)
    assert "SUCCESS" in proc.stdout


def test_rule_unit_tests_pass():
    for test_file in RULE_TESTS:
        _ok(promtool("test", "rules", str(test_file)))


def test_every_alert_has_a_promtool_test():
    alerts = {r["alert"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]
              for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts and alerts <= tested, f"alerts without a firing test: {sorted(alerts - tested)}"


# ---- metric names: the rules and dashboards query only what the code exports ----

def _exported() -> set[str]:
    from benchmarks.live_metrics import METRICS as TRIAL_METRICS

    # serve/metrics.py is read, not imported: its table is a literal and the test needs nothing else.
    tree = ast.parse((ROOT / "serve" / "metrics.py").read_text())
    serve_metrics = next(
        ast.literal_eval(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and any(getattr(t, "id", None) == "METRICS" for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
    )
    names = set()
    for table in (TRIAL_METRICS, serve_metrics):
        for name, (kind, _desc, _tags) in table.items():
            names.add(f"ray_{name}")
            if kind == "histogram":
                names |= {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
    return names


def _queried() -> dict[str, set[str]]:
    """metric name -> where it is queried (rule or panel)."""
    found: dict[str, set[str]] = {}
    sources = [(f"{p.name}:{r.get('record') or r.get('alert')}", r["expr"])
               for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]
    sources += [(f"{d.name}:{title}", expr) for d in dashboard_files() for title, expr in panel_queries(d)]
    for where, expr in sources:
        for name in re.findall(r"\bray_benchmatch_\w+", expr):
            found.setdefault(name, set()).add(where)
    return found


def test_rules_and_panels_query_only_exported_metrics():
    unknown = {name: sorted(where) for name, where in _queried().items() if name not in _exported()}
    assert not unknown, f"queried but never exported (typo, or renamed in live_metrics/serve.metrics): {unknown}"


def test_every_exported_metric_has_a_panel():
    from benchmarks.live_metrics import METRICS as TRIAL_METRICS

    in_panels = {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(
        r"\bray_benchmatch_\w+", " ".join(e for d in dashboard_files() for _, e in panel_queries(d)))}
    missing = sorted(f"ray_{n}" for n in TRIAL_METRICS if f"ray_{n}" not in in_panels)
    for name in ("benchmatch_serve_requests_total", "benchmatch_serve_request_duration_seconds"):
        if f"ray_{name}" not in in_panels:
            missing.append(f"ray_{name}")
    assert not missing, f"exported but on no dashboard: {missing}"


# ---- Grafana ----

def test_every_panel_query_is_valid_promql(tmp_path):
    """Each panel query, with Grafana's variables filled in, becomes a recording rule for promtool."""
    rules = []
    for dashboard in dashboard_files():
        for i, (title, expr) in enumerate(panel_queries(dashboard)):
            promql = render_query(expr, {"sweep": "quickstart", "hardware": "local-1c", "route": "/recommend"})
            assert "$" not in promql, f"{dashboard.name} '{title}': unreplaced variable in {promql}"
            rules.append({"record": f"panel:{dashboard.stem.replace('-', '_')}:{i}", "expr": promql})
    path = tmp_path / "panels.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    _ok(promtool("check", "rules", str(path)))


def test_render_query_fills_grafana_variables():
    expr = 'sum(rate(x{sweep=~"$sweep", hardware=~"${hardware}"}[$__rate_interval])) / y[$__range] [[route]]'
    got = render_query(expr, {"sweep": "s1"}, range_s=600, step_s=2, scrape_interval_s=5)
    assert got == 'sum(rate(x{sweep=~"s1", hardware=~".*"}[20s])) / y[600s] .*'
    # $__rate_interval is max(step + scrape, 4 x scrape)
    assert render_query("[$__rate_interval]", step_s=60, scrape_interval_s=5) == "[65s]"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_is_well_formed(path):
    dash = load_dashboard(path)
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    names = {v["name"] for v in dash["templating"]["list"]}
    assert "datasource" in names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        # Variables used in queries exist on the dashboard.
        for _, expr in [(panel["title"], t["expr"]) for t in panel["targets"]]:
            for var in re.findall(r"\$\{?(\w+)", expr):
                assert var.startswith("__") or var in names, f"{panel['title']}: unknown variable ${var}"
    titles = [p["title"] for p in dash["panels"]]
    assert len(titles) == len(set(titles)), "panel titles must be unique (tests and docs name panels by title)"


def test_dashboards_cover_sweeps_and_service():
    sweep_titles = {t for t, _ in panel_queries(SWEEPS_DASHBOARD)}
    for needed in ("Sweep progress", "Failed trial repeats", "Throughput by trial", "Latency p99 by trial",
                   "Trial duration p50 and p90 by hardware", "Failure ratio by hardware"):
        assert needed in sweep_titles
    service_titles = {t for t, _ in panel_queries(SERVICE_DASHBOARD)}
    for needed in ("Requests per second by route", "Latency p50 by route", "Latency p99 by route",
                   "Error responses by route and status"):
        assert needed in service_titles


def test_grafana_provisioning_files():
    ds = yaml.safe_load((PROVISIONING_DIR / "datasources" / "benchmatch.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["uid"]
    prov = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "benchmatch.yaml").read_text())
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    # The alert annotations point at a panel by title: it must exist.
    alerts = yaml.safe_load((ROOT / "cluster" / "prometheus" / "rules.alerts.yaml").read_text())
    service_titles = {t for t, _ in panel_queries(SERVICE_DASHBOARD)}
    for rule in alerts["groups"][0]["rules"]:
        for quoted in re.findall(r'Panel "([^"]+)"', rule["annotations"].get("description", "")):
            assert quoted in service_titles


def test_dashboards_are_valid_json_files():
    for path in dashboard_files():
        json.loads(path.read_text(encoding="utf-8"))


# ---- the server helper without a binary ----

def test_missing_prometheus_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHMATCH_PROMETHEUS", str(tmp_path / "no-such-prometheus"))
    with pytest.raises(PrometheusNotFound, match=r"apt-get install -y prometheus"):
        require_prometheus()
    with pytest.raises(PrometheusNotFound, match=r"apt-get install -y prometheus"):
        PrometheusServer(tmp_path / "sd.json").start()


def test_server_runs_on_loopback_with_the_rules_and_stops_cleanly(tmp_path):
    """A real server on an empty discovery file: ready, rules loaded and healthy, stopped and gone."""
    from cluster.prometheus_server import find_prometheus, stop_detached

    if not find_prometheus():
        promtool("--version")  # the same skip-or-fail decision as for promtool
        pytest.skip(f"no prometheus binary: {INSTALL_HINT}")
    sd = tmp_path / "sd.json"
    sd.write_text('[{"labels": {"job": "ray"}, "targets": []}]')
    with PrometheusServer(sd, scrape_interval="1s") as prom:
        workdir = prom.workdir
        assert prom.url.startswith("http://127.0.0.1:")
        groups = {g["name"]: g for g in prom.rules()}
        assert {"benchmatch.trials", "benchmatch.serve", "benchmatch.alerts"} <= set(groups)
        prom.wait_for("vector(1)", timeout=10)
        prom.reload()
        assert prom.query("vector(2)")[0]["value"][1] == "2"
        pid = prom.proc.pid
    assert workdir is not None and not workdir.exists()  # temporary work folder removed
    assert not Path(f"/proc/{pid}").exists() or "prometheus" not in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")
    # A server left running by another process is stopped through its pid file.
    kept = tmp_path / "kept"
    server = PrometheusServer(sd, workdir=kept).start()
    assert (kept / "prometheus.pid").read_text() == str(server.proc.pid)
    assert stop_detached(kept) is True
    assert server.proc.wait(timeout=15) is not None
    assert stop_detached(kept) is False


def test_every_llm_serving_metric_is_on_the_llm_dashboard():
    from benchmarks.llm.live import METRICS as LLM_METRICS
    from cluster.grafana import LLM_DASHBOARD

    exprs = " ".join(e for _, e in panel_queries(LLM_DASHBOARD))
    missing = [n for n in LLM_METRICS if not re.search(rf"\b{n}(_bucket|_sum|_count)?\b", exprs)]
    assert not missing, f"exported by llm-bench but on no panel: {missing}"
