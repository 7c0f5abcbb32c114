"""LLM serving measured for real: `benchmatch llm-bench` against an OpenAI-compatible streaming server
on loopback (tests/fixtures/openai_server.py: uvicorn serving the gpt2 asset, random weights, in
its own process), and against the same asset in-process; the rows answer `benchmatch recommend`
with TTFT / TPOT bounds and a tokens/s demand. vLLM's CPU build is not installable within CI's
time here (docs/decisions.md), so the server is this small real one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from cluster import local
from cluster.grafana import LLM_DASHBOARD, panel_targets, render_query
from cluster.prometheus_server import INSTALL_HINT, PrometheusServer, find_prometheus
from results.store import ResultsStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--config", "layers=2", "--config", "hidden=64", "--config", "heads=2", "--config", "vocab=1000"]
SHORT = ["--input-len", "16", "--output-len", "8", "--num-requests", "12"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = local.free_port()
    log = open(tmp_path_factory.mktemp("llm") / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtures.openai_server", "--port", str(port),
                             "--layers", "2", "--hidden", "64", "--heads", "2"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/v1/models", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the test LLM server did not start: {Path(log.name).read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmatch", "llm-bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_an_openai_endpoint_is_measured_and_its_rows_answer_a_recommendation(server, tmp_path):
    store = tmp_path / "store"
    requests.delete(f"{server}/timings", timeout=5)
    out = _bench("--endpoint", f"{server}/v1", "--model", "tiny-gpt2", "--hardware", "local-1c", *SHORT,
                 "--slo-ttft-ms", "2000", "--slo-tpot-ms", "500", "--results", str(store), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert len(summary["curves"][0]) == 4
    df = ResultsStore(str(store)).read()
    assert sorted(df["scenario"]) == ["Offline", "Server"]
    assert set(df["sample_unit"]) == {"request"} and set(df["cfg_engine"]) == {"openai-http"}
    offline = df[df["scenario"] == "Offline"].iloc[0]
    assert offline["completed_requests"] == 12 and offline["failed_requests"] == 0
    assert offline["output_tokens_mean"] == 8  # the server's own usage count
    assert offline["ttft_p50_ms"] > 0 and offline["tpot_p50_ms"] > 0 and offline["output_tokens_per_s"] > 0
    # The client sees each first token after the server wrote it: the harness's TTFT is never the
    # smaller one, over the same requests (warm-up and all-at-once run and 4 rates: 2 + 12 x 5).
    server_ttft = [t["ttft_ms"] for t in requests.get(f"{server}/timings", timeout=5).json()]
    assert len(server_ttft) == 62
    assert offline["ttft_p50_ms"] >= float(np.percentile(server_ttft[2:14], 50))

    reqs = tmp_path / "llm.yaml"
    reqs.write_text("asset: tiny-gpt2\nconstraints: {ttft_p99_ms: 5000, tpot_p99_ms: 1000, output_tokens_per_s: 50}\n")
    rec = subprocess.run([sys.executable, "-m", "benchmatch", "recommend", str(reqs), "--results", str(store), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    answer = json.loads(rec.stdout)
    best = answer["options"][0]
    assert best["hardware"].keys() == {"local-1c"}
    assert best["predicted"]["output_tokens_per_s"] >= 50
    assert best["predicted"]["usd_per_million_output_tokens"] > 0


def test_the_chat_api_and_given_rates(server, tmp_path):
    out = _bench("--endpoint", f"{server}/v1", "--model", "tiny-gpt2", "--api", "chat", "--hardware", "local-1c",
                 *SHORT, "--rates", "5,10", "--slo-ttft-ms", "2000", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    curve = json.loads(out.stdout)["curves"][0]
    assert [p["offered_rps"] for p in curve] == [5, 10]
    assert all(p["completed"] == 12 and p["failed"] == 0 for p in curve)


def test_a_server_that_refuses_or_is_not_there_is_named(server, tmp_path):
    refused = _bench("--endpoint", f"{server}/v1", "--model", "tiny-gpt2", "--hardware", "local-1c",
                     "--input-len", "8", "--output-len", "5000", "--num-requests", "2", "--dry-run")
    assert refused.returncode == 2
    assert "HTTP 400" in refused.stderr and "max_tokens" in refused.stderr and "Traceback" not in refused.stderr
    gone = _bench("--endpoint", f"http://127.0.0.1:{local.free_port()}/v1", "--model", "m", "--hardware", "local-1c",
                  "--num-requests", "2", "--dry-run")
    assert gone.returncode == 2 and "ConnectError" in gone.stderr and "Traceback" not in gone.stderr
    unknown = _bench("--endpoint", f"{server}/v1", "--model", "m", "--hardware", "no-such-gpu", "--dry-run")
    assert unknown.returncode == 2 and "no-such-gpu" in unknown.stderr and "catalog" in unknown.stderr


def test_a_generative_asset_in_process_on_a_pinned_profile(tmp_path):
    store = tmp_path / "store"
    out = _bench("--asset", "gpt2", *TINY, "--hardware", "local-1c", *SHORT, "--fractions", "0.5,1",
                 "--repeats", "2", "--slo-ttft-ms", "5000", "--results", str(store), "--json")
    assert out.returncode == 0, out.stderr
    df = ResultsStore(str(store)).read()
    assert len(df) == 4 and sorted(set(df["repeat"])) == [0, 1]
    last_cpu = str(sorted(os.sched_getaffinity(0))[-1])  # a 1-core profile is pinned to the last CPU
    assert set(df["cfg_engine"]) == {"local-eager"} and set(df["cpu_set"].astype(str)) == {last_cpu}
    assert set(df["num_threads"]) == {1}
    assert df["parameters"].iloc[0] > 0


def test_every_llm_dashboard_panel_shows_a_live_run_in_prometheus(server, tmp_path):
    """llm-bench --metrics-port, scraped by a real Prometheus (as the `benchmatch-extra` job): each
    panel of cluster/grafana/dashboards/benchmatch-llm.json, sent as Grafana sends it, has data."""
    if not find_prometheus():
        if os.environ.get("CI") or os.environ.get("BENCHMATCH_REQUIRE_PROMETHEUS"):
            pytest.fail(f"prometheus is required in CI; {INSTALL_HINT}")
        pytest.skip(f"no prometheus binary: {INSTALL_HINT}")
    sd = tmp_path / "sd.json"
    sd.write_text("[]")  # no Ray cluster here: only the static target
    port = local.free_port()
    with PrometheusServer(sd, extra_targets=[f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
        start = time.time()
        out = _bench("--endpoint", f"{server}/v1", "--model", "tiny-gpt2", "--hardware", "local-1c",
                     "--input-len", "16", "--output-len", "24", "--num-requests", "24", "--slo-ttft-ms", "5000",
                     "--slo-tpot-ms", "1000", "--metrics-port", str(port), "--metrics-linger", "5",
                     "--sweep", "live-run", "--dry-run")
        assert out.returncode == 0, out.stderr
        end = time.time()  # the exporter has closed: its series are stale now, but were scraped while it ran
        empty = {}
        for title, expr, _instant in panel_targets(LLM_DASHBOARD):
            promql = render_query(expr, {"run": "live-run"}, range_s=end - start, step_s=1, scrape_interval_s=1)
            values = [float(v) for series in prom.query_range(promql, start, end, 1) for _, v in series["values"]]
            if not any(math.isfinite(v) for v in values):
                empty[title] = promql
        assert not empty, f"panels without data: {empty}"


def test_loadgen_token_latency_mode_drives_the_in_process_asset(tmp_path):
    """--loadgen: MLPerf LoadGen issues the requests (Offline, then Server at each rate) with
    use_token_latencies; its verdict and logs land in the rows beside benchmatch's own timings."""
    store = tmp_path / "store"
    out = _bench("--asset", "gpt2", *TINY, "--hardware", "local-1c", *SHORT, "--fractions", "0.5",
                 "--slo-ttft-ms", "5000", "--slo-tpot-ms", "1000", "--loadgen", "--loadgen-min-duration-ms", "500",
                 "--results", str(store))
    assert out.returncode == 0, out.stderr
    assert "LoadGen Server at" in out.stdout
    df = ResultsStore(str(store)).read().set_index("scenario")
    assert set(df["loadgen_result"]) <= {"VALID", "INVALID"} and all(df["loadgen_result"])
    for scenario in ("Offline", "Server"):
        summary = Path(df.loc[scenario, "loadgen_log_dir"]) / "mlperf_log_summary.txt"
        # LoadGen counted the tokens itself; in Server it also timed each first token
        assert "okens per second" in summary.read_text()
        assert scenario == "Offline" or "first token latency" in summary.read_text()
        assert df.loc[scenario, "ttft_p99_ms"] > 0 and df.loc[scenario, "completed_requests"] >= 12
        assert ("loadgen_invalid" in df.loc[scenario, "flags"]) == (df.loc[scenario, "loadgen_result"] == "INVALID")
