"""`benchmatch serve` as a user runs it: a real process tree whose every listening socket is on
loopback, stopped by SIGTERM, and, deployed on `cluster up --prometheus`, its request metrics in
that Prometheus. Sockets are read from the kernel (psutil, as `ss -ltnp` shows them).

Module-scoped: one `cluster up --prometheus` for the attached case.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from cluster import local
from cluster.prometheus_server import find_prometheus

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}  # the last: IPv4 loopback on a dual-stack socket
CANDIDATES_CSV = """hardware,price_per_hour_usd,latency_p99_ms,throughput_qps,accuracy,batch_size
local-1c,0.04,1.5,900,0.96,8
local-2c,0.09,1.0,1800,0.96,8
"""


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by the process tree of `pid`."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    out = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    candidates = tmp_path / "candidates.csv"
    candidates.write_text(CANDIDATES_CSV)
    port = local.free_port()
    log = open(tmp_path / f"serve-{port}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "benchmatch", "serve", "--candidates", str(candidates),
                             "--port", str(port), *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail(f"serve did not come up: {(tmp_path / f'serve-{port}.log').read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 90) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("serve ignored SIGTERM")


def _printed(tmp_path: Path, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
        if m := re.search(pattern, text):
            return m
        time.sleep(0.5)
    pytest.fail(f"serve never printed {pattern!r}: {text[-2000:]}")


def test_serve_on_its_own_ray_listens_on_loopback_only_and_stops_on_sigterm(tmp_path):
    """Also: the replica's own port (direct ingress) and the HAProxy balancer (`--balancer-port`)
    that it prints answer as the proxy does, HAProxy's sockets are on loopback too (it is a child
    of the serve process), and it stops with the service."""
    balancer_port = local.free_port()
    proc, url = _serve(tmp_path, "--balancer-port", str(balancer_port))
    try:
        hardware = requests.get(f"{url}/hardware", timeout=30)
        assert hardware.status_code == 200
        direct = _printed(tmp_path, r"replicas' own ports \(direct ingress[^)]*\): (http://127\.0\.0\.1:\d+)").group(1)
        assert requests.get(f"{direct}/hardware", timeout=30).json() == hardware.json()
        balancer = _printed(tmp_path, r"HAProxy in front of the replicas' own ports[^:]*: (http://127\.0\.0\.1:\d+)").group(1)
        assert balancer == f"http://127.0.0.1:{balancer_port}"
        assert requests.get(f"{balancer}/hardware", timeout=30).json() == hardware.json()
        sockets = _listening(proc.pid)
        assert ("127.0.0.1", balancer_port) in sockets, sockets
        assert sockets, "no listening socket found for the serve process tree"
        exposed = sorted(s for s in sockets if s[0] not in LOOPBACK)
        assert not exposed, f"listening beyond loopback: {exposed}"
    finally:
        code = _stop(proc)
    assert code == 0, "".join(p.read_text()[-2000:] for p in tmp_path.glob("serve-*.log"))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{balancer_port}/healthz", timeout=5)


@pytest.fixture(scope="module")
def cluster_up_with_prometheus():
    if not find_prometheus():
        pytest.fail("prometheus is required for this test (scripts/install-prometheus.sh)")
    prom_port = local.free_port()
    up = subprocess.run([sys.executable, "-m", "benchmatch", "cluster", "up", "--prometheus",
                         "--prometheus-port", str(prom_port), "--dashboard-port", str(local.free_port())],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    address = re.search(r"Ray address:\s+(\S+)", up.stdout).group(1)
    yield address, f"http://127.0.0.1:{prom_port}"
    subprocess.run([sys.executable, "-m", "benchmatch", "cluster", "down"], cwd=ROOT, timeout=180)


def test_serve_attached_by_loopback_address_reaches_the_clusters_prometheus(cluster_up_with_prometheus, tmp_path):
    address, prom = cluster_up_with_prometheus
    assert address.startswith("127.0.0.1:")
    proc, url = _serve(tmp_path, "--address", address)
    try:
        for _ in range(20):
            assert requests.get(f"{url}/hardware", timeout=30).status_code == 200
        assert requests.post(f"{url}/recommend", json={"objective": "fastest"}, timeout=30).status_code == 422
        exposed = sorted(s for s in _listening(proc.pid) if s[0] not in LOOPBACK)
        assert not exposed, f"listening beyond loopback: {exposed}"
        deadline = time.monotonic() + 120
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            r = requests.get(f"{prom}/api/v1/query", timeout=10,
                             params={"query": "sum by (status) (ray_benchmatch_serve_requests_total)"}).json()
            seen = {s["metric"].get("status", ""): float(s["value"][1]) for s in r["data"]["result"]}
            if seen.get("200", 0) >= 20 and seen.get("422", 0) >= 1:
                break
            time.sleep(2)
        assert seen.get("200", 0) >= 20 and seen.get("422", 0) >= 1, seen
    finally:
        assert _stop(proc) == 0
