"""`benchmatch cluster up` + `ray job submit` with token auth, and a killed driver finished by --resume.

One `cluster up` daemon (a separate process, as a user runs it) for the whole module.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from benchmarks.store import ResultsStore
from cluster import local

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent.parent
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


@pytest.fixture(scope="module")
def cluster_up():
    info = local.up(dashboard_port=local.free_port())
    yield info
    local.down()


def _small_sweep(tmp_path: Path, name: str, repeats: int = 1) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
asset: digits-mlp
task: infer
space: {{batch_size: [1, 8]}}
hardware: [local-1c, local-2c]
repeats: {repeats}
max_concurrent_trials: 1
loadgen: {{scenarios: [SingleStream, Offline], min_duration_ms: 100, min_query_count: 16, offline_samples: 128}}
results_uri: results
""")
    return path


def test_cluster_up_is_loopback_with_token_auth(cluster_up):
    assert cluster_up.dashboard_url.startswith("http://127.0.0.1:")
    assert requests.get(f"{cluster_up.dashboard_url}/api/jobs/", timeout=10).status_code == 401
    status = subprocess.run([sys.executable, "-m", "benchmatch", "cluster", "status", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert '"local-1c"' in status.stdout and '"local-2c"' in status.stdout


def test_ray_job_submit_runs_the_readme_sweep(cluster_up, tmp_path):
    sweep = _small_sweep(tmp_path, "jobsweep")
    results = tmp_path / "results"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", cluster_up.dashboard_url, "--working-dir", str(ROOT), "--",
         "python", "-m", "benchmarks", "sweep", str(sweep), "--results", str(results)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in out, out[-4000:]
    df = ResultsStore(results).read()
    assert len(ResultsStore(results).done("jobsweep")) == 4
    assert set(df["hardware"]) == {"local-1c", "local-2c"} and (df["status"] == "ok").all()


def test_relative_results_under_a_job_are_refused_with_the_reason(cluster_up, tmp_path):
    sweep = _small_sweep(tmp_path, "jobrel")
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", cluster_up.dashboard_url, "--working-dir", str(ROOT), "--",
         "python", "-m", "benchmarks", "sweep", str(sweep)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "absolute path" in proc.stdout + proc.stderr


def test_killed_driver_is_finished_by_resume_without_duplicates(cluster_up, tmp_path):
    sweep = _small_sweep(tmp_path, "driverkill", repeats=2)
    results = tmp_path / "results"
    store = ResultsStore(results)
    cmd = [sys.executable, "-m", "benchmarks", "sweep", str(sweep), "--address", cluster_up.address,
           "--results", str(results)]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(store.files("driverkill")) < 2 and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = store.done("driverkill")
    assert 0 < len(before) < 8, "the driver finished before it could be killed"

    resumed = subprocess.run(cmd + ["--resume", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'"already_done": {len(before)}' in resumed.stdout
    df = store.read("driverkill")
    assert len(store.done("driverkill")) == 8
    assert not df[["trial_id", "repeat", "scenario"]].duplicated().any()
