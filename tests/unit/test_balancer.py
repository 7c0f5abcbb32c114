"""serve/balancer.py: the generated HAProxy configuration, and a real HAProxy in front of plain
stdlib HTTP servers standing in for replicas (the real replicas are in tests/integration/
test_serve.py). Needs an HAProxy binary: the `haproxy` extra, which `make test` installs."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from serve.balancer import (
    Balancer,
    BalancerError,
    BalancerSettings,
    find_haproxy,
    render_config,
    server_address,
)
from tests.fixtures.slow_clients import SlowClients

try:
    HAPROXY: str | None = find_haproxy()
    WHY = ""
except BalancerError as exc:
    HAPROXY, WHY = None, str(exc)
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason=f"no HAProxy binary here ({WHY})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    """A stand-in replica: answers every request with its own port, after `delay_s`, with
    `status` (503 plays a replica that is not ready)."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.delay_s, self.status, self.hits = delay_s, status, 0
        self.connections: list[socket.socket] = []
        replica = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                replica.connections.append(self.connection)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                replica.hits += 1
                time.sleep(replica.delay_s)
                body = json.dumps({"port": self.server.server_address[1]}).encode()
                self.send_response(replica.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        """Stop accepting and drop every connection, kept-alive ones included, as a dead process would."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    made = [Replica(), Replica()]
    yield made
    for r in made:
        r.kill()


def _balancer(urls: list[str], **settings: object) -> Balancer:
    current = list(urls)
    b = Balancer(BalancerSettings(port=_free_port(), check_interval_s=0.2, **settings), lambda: current)  # type: ignore[arg-type]
    b.current = current  # type: ignore[attr-defined]  # the tests edit the replica list in place
    return b


# ----------------------------------------------------------------------------------------------
# The configuration
# ----------------------------------------------------------------------------------------------


def test_config_listens_on_the_given_host_only_and_lists_each_replica_once() -> None:
    cfg = render_config(BalancerSettings(port=8080),
                        ["http://127.0.0.1:30001", "http://127.0.0.1:30000", "http://127.0.0.1:30001/"])
    assert re.findall(r"^\s*bind (.+)$", cfg, re.M) == ["127.0.0.1:8080"]
    assert re.findall(r"^\s*server (\S+) (\S+)$", cfg, re.M) == [("r0", "127.0.0.1:30000"), ("r1", "127.0.0.1:30001")]
    assert "stats socket" not in cfg  # only with a socket path, and then a Unix socket, never a port


@pytest.mark.parametrize("url", ["https://127.0.0.1:3000", "127.0.0.1:3000", "http://127.0.0.1", "http://h:1/x",
                                 "http://127.0.0.1:99999", "http://h:1?q", "http://a b:1"])
def test_a_replica_address_that_is_not_http_host_port_is_refused(url: str) -> None:
    with pytest.raises(BalancerError, match="expected http://HOST:PORT"):
        server_address(url)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("port", 0, "expected 1..65535"),
    ("host", "127.0.0.1 # x", "expected an IP address"),
    ("request_timeout_s", 0, "positive number of seconds"),
    ("max_queued", 0, "whole number >= 1"),
    ("retries", -1, "whole number >= 0"),
])
def test_bad_settings_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(BalancerError, match=f"{field}.*{message}" if field != "retries" else message):
        BalancerSettings(**{field: value})  # type: ignore[arg-type]


def test_a_missing_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    not_exec = tmp_path / "haproxy"
    not_exec.write_text("")
    monkeypatch.setenv("BENCHMATCH_HAPROXY", str(not_exec))
    with pytest.raises(BalancerError, match="not an executable file"):
        find_haproxy()


@needs_haproxy
@pytest.mark.parametrize("n", [0, 1, 3])
def test_haproxy_accepts_the_generated_configuration(tmp_path, n: int) -> None:
    import subprocess

    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_config(BalancerSettings(), [f"http://127.0.0.1:{30000 + i}" for i in range(n)],
                                 tmp_path / "admin.sock"))
    check = subprocess.run([str(HAPROXY), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[WARNING]" not in check.stdout + check.stderr, check.stdout + check.stderr


# ----------------------------------------------------------------------------------------------
# A real HAProxy in front of stand-in replicas
# ----------------------------------------------------------------------------------------------


@needs_haproxy
def test_requests_are_spread_over_the_replicas_and_a_dead_one_is_routed_around(replicas: list[Replica]) -> None:
    b = _balancer([r.url for r in replicas])
    try:
        b.start()
        http = requests.Session()
        ports = Counter(http.post(b.url + "/recommend", json={}, timeout=10).json()["port"] for _ in range(20))
        assert set(ports) == {r.port for r in replicas}, ports
        replicas[0].kill()  # still in the configuration: HAProxy finds out by the refused connection
        answers = [http.post(b.url + "/recommend", json={}, timeout=10) for _ in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert {a.json()["port"] for a in answers} == {replicas[1].port}
    finally:
        b.stop()
    assert not b.alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.settings.port), timeout=1).close()


@needs_haproxy
def test_a_new_replica_set_is_swapped_in_without_failing_a_request(replicas: list[Replica]) -> None:
    b = _balancer([replicas[0].url])
    log: list[int] = []
    stop = threading.Event()

    def load() -> None:
        http = requests.Session()
        while not stop.is_set():
            try:
                log.append(http.post(b.url + "/recommend", json={}, timeout=10).status_code)
            except requests.RequestException:
                log.append(-1)

    try:
        b.start()
        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        b.current[:] = [replicas[1].url]  # type: ignore[attr-defined]  # Serve replaced the replica
        assert b.refresh() and b.reloads == 1
        assert b.servers == [replicas[1].url]
        assert b.refresh() is False  # nothing changed: no reload
        deadline = time.monotonic() + 10
        while replicas[1].hits < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        b.current[:] = []  # type: ignore[attr-defined]  # the controller did not answer: keep the last set
        assert b.refresh() is False and b.servers == [replicas[1].url]
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        b.stop()
    assert replicas[1].hits >= 20
    assert Counter(log) == Counter({200: len(log)}), Counter(log)


@needs_haproxy
def test_a_replica_that_answers_503_is_retried_on_another(replicas: list[Replica]) -> None:
    replicas[0].status = 503
    b = _balancer([r.url for r in replicas])
    try:
        b.start()
        answers = [requests.post(b.url + "/recommend", json={}, timeout=10) for _ in range(10)]
    finally:
        b.stop()
    assert [a.status_code for a in answers] == [200] * 10
    assert replicas[0].hits >= 1  # it was asked, and its 503 went to the other replica


@needs_haproxy
def test_no_replica_and_a_full_queue_get_a_quick_503_in_the_services_shape(replicas: list[Replica]) -> None:
    empty = _balancer([])
    try:
        empty.start()
        r = requests.post(empty.url + "/recommend", json={}, timeout=10)
    finally:
        empty.stop()
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json() == {"detail": r.json()["detail"], "kind": "NotReady", "status": 503}

    slow = Replica(delay_s=1.5)
    b = _balancer([slow.url], per_replica=1, max_queued=2)
    try:
        b.start()
        results: list[requests.Response] = []
        threads = [threading.Thread(target=lambda: results.append(requests.post(b.url + "/", json={}, timeout=30)))
                   for _ in range(3)]  # one in flight, two queued
        for t in threads:
            t.start()
        time.sleep(0.5)
        sent = time.monotonic()
        over = requests.post(b.url + "/recommend", json={}, timeout=30)
        waited = time.monotonic() - sent
        for t in threads:
            t.join(30)
    finally:
        b.stop()
        slow.kill()
    assert over.status_code == 503 and over.json()["kind"] == "Overloaded", over.text
    assert waited < 1.0, f"the request past the queue waited {waited:.2f} s instead of being turned away"
    assert sorted(r.status_code for r in results) == [200, 200, 200]


@needs_haproxy
def test_slow_clients_are_cut_off_before_they_reach_a_replica(replicas: list[Replica]) -> None:
    b = _balancer([r.url for r in replicas], request_timeout_s=1.0)
    head = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    try:
        b.start()
        bodies = SlowClients("127.0.0.1", b.settings.port, 20, head, b" " * 100, every=0.2)
        headers = SlowClients("127.0.0.1", b.settings.port, 5, b"POST / HTTP/1.1\r\nX-Pad: ", b"a" * 100, every=0.2)
        try:
            statuses = [requests.post(b.url + "/recommend", json={}, timeout=10).status_code for _ in range(10)]
            answers = bodies.answers() + headers.answers()
        finally:
            bodies.close()
            headers.close()
    finally:
        b.stop()
    assert statuses == [200] * 10
    firsts = Counter(a.split(b"\r\n", 1)[0].decode(errors="replace")[:12] or "closed silently" for a in answers)
    assert firsts == Counter({"HTTP/1.1 408": 25}), firsts
    assert sum(r.hits for r in replicas) == 10  # no slow request reached a replica


def test_the_runner_refuses_a_balancer_it_could_not_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve import runner

    monkeypatch.setattr(runner, "_connect", lambda address: pytest.fail("checked before Ray is touched"))
    with pytest.raises(BalancerError, match="is the service's own --port"):
        runner.run_service(None, port=8000, balancer_port=8000)
    with pytest.raises(BalancerError, match="run the service blocking"):
        runner.run_service(None, blocking=False, balancer_port=8080)


@needs_haproxy
@pytest.mark.parametrize("reuseport", [False, True])
def test_a_port_already_taken_is_an_error_not_a_shared_port(replicas: list[Replica], reuseport: bool) -> None:
    """Serve's proxy listens with SO_REUSEPORT: without `noreuseport` HAProxy would bind beside it
    and the kernel would split the connections between the two."""
    with socket.socket() as taken:
        if reuseport:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        b = Balancer(BalancerSettings(port=taken.getsockname()[1]), lambda: [r.url for r in replicas])
        with pytest.raises(BalancerError, match=r"(?s)exited with code 1 .*cannot bind socket.* choose another port"):
            b.start()
        b.stop()


@needs_haproxy
def test_a_body_declared_too_large_is_refused_before_a_replica_sees_it(replicas: list[Replica]) -> None:
    b = _balancer([r.url for r in replicas], max_body_bytes=1000)
    try:
        b.start()
        big = requests.post(b.url + "/recommend", data=b"{" + b" " * 2000 + b"}", timeout=10)
        small = requests.post(b.url + "/recommend", data=b"{" + b" " * 500 + b"}", timeout=10)
    finally:
        b.stop()
    assert big.status_code == 413 and small.status_code == 200
    assert sum(r.hits for r in replicas) == 1


@needs_haproxy
def test_haproxys_own_503_is_in_the_services_shape() -> None:
    slow = Replica(delay_s=1.5)
    b = _balancer([slow.url], per_replica=1, queue_timeout_s=0.3)
    try:
        b.start()
        first = threading.Thread(target=lambda: requests.post(b.url + "/", json={}, timeout=30))
        first.start()
        time.sleep(0.3)
        late = requests.post(b.url + "/recommend", json={}, timeout=30)  # waits in the queue past its timeout
        first.join(30)
    finally:
        b.stop()
        slow.kill()
    assert late.status_code == 503 and late.headers["Retry-After"] == "1", late.text
    assert late.json()["kind"] == "Unavailable"


@needs_haproxy
def test_a_haproxy_that_died_is_started_again(replicas: list[Replica]) -> None:
    import os
    import signal

    b = _balancer([r.url for r in replicas])
    try:
        b.start()
        os.kill(b._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        b._proc.wait(10)  # type: ignore[union-attr]
        with pytest.raises(requests.ConnectionError):
            requests.get(b.url + "/healthz", timeout=5)
        assert b.refresh() and b.alive()
        assert requests.get(b.url + "/healthz", timeout=5).status_code == 200
    finally:
        b.stop()
