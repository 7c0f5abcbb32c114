"""A real Prometheus server on 127.0.0.1 that scrapes a Ray cluster: for tests and `cluster up --prometheus`.

    with PrometheusServer(sd_file) as prom:
        prom.wait_for('ray_benchmatch_trials_completed_total{sweep="quickstart"}', timeout=60)
        rows = prom.query("sum by (hardware) (ray_benchmatch_trials_completed_total)")

The configuration is rendered from cluster/prometheus/prometheus.yaml (see `render_config`) into a
work folder together with the TSDB; the server binds to loopback only, on a free port.
Debian/Ubuntu: `apt-get install -y prometheus` provides /usr/bin/prometheus and /usr/bin/promtool.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from cluster.errors import BenchmatchError
from cluster.prometheus import CONFIG_TEMPLATE, RULE_FILES

INSTALL_HINT = "install Debian's prometheus: apt-get install -y prometheus (or set BENCHMATCH_PROMETHEUS to the binary)"
RAY_JOB = "ray"
EXTRA_JOB = "benchmatch-extra"
PID_FILE = "prometheus.pid"


class PrometheusNotFound(BenchmatchError, FileNotFoundError):
    """No Prometheus binary on this machine."""


class PrometheusError(BenchmatchError, RuntimeError):
    """The server did not start, or answered a query with an error (the message carries its reason)."""


def find_prometheus() -> str | None:
    """Path of the `prometheus` binary: $BENCHMATCH_PROMETHEUS, then PATH, then /usr/bin; None if absent."""
    env = os.environ.get("BENCHMATCH_PROMETHEUS")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


def find_promtool() -> str | None:
    """Path of `promtool` (next to the prometheus binary, or on PATH); None if absent."""
    prom = find_prometheus()
    if prom:
        beside = Path(prom).with_name("promtool")
        if os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("promtool")


def require_prometheus() -> str:
    """Like `find_prometheus`, but a missing binary is an error that says how to install it."""
    path = find_prometheus()
    if not path:
        raise PrometheusNotFound(f"no prometheus binary found; {INSTALL_HINT}")
    return path


def render_config(
    sd_file: str | os.PathLike[str],
    *,
    extra_targets: Iterable[str] = (),
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    rule_files: Iterable[str | os.PathLike[str]] | None = None,
    template: str | os.PathLike[str] = CONFIG_TEMPLATE,
) -> str:
    """The Prometheus config of cluster/prometheus/prometheus.yaml for one Ray cluster, as YAML text.

    `sd_file` is the cluster's file-SD JSON (`<session dir>/prom_metrics_service_discovery.json`).
    `extra_targets` ("host:port") become a static job `benchmatch-extra`, for metrics agents the file
    does not list (e.g. a Serve deployment on another Ray cluster). Rule files become absolute paths
    so the rendered config works from any folder.
    """
    doc = yaml.safe_load(Path(template).read_text())
    if scrape_interval:
        doc["global"]["scrape_interval"] = scrape_interval
        # A timeout above the interval is a config error.
        doc["global"]["scrape_timeout"] = scrape_interval
    if evaluation_interval:
        doc["global"]["evaluation_interval"] = evaluation_interval
    doc["rule_files"] = [str(Path(p).resolve()) for p in (rule_files if rule_files is not None else RULE_FILES)]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    jobs[RAY_JOB]["file_sd_configs"][0]["files"] = [str(Path(sd_file).resolve())]
    extra = [t for t in extra_targets if t]
    doc["scrape_configs"] = [j for j in doc["scrape_configs"] if j["job_name"] != EXTRA_JOB]
    if extra:
        doc["scrape_configs"].append({"job_name": EXTRA_JOB, "static_configs": [{"targets": extra}]})
    return yaml.safe_dump(doc, sort_keys=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """A Prometheus process scraping one Ray cluster; a context manager (start on enter, stop on exit).

    `workdir` keeps the config, TSDB, log and pid file (and is kept on stop); without it a temporary
    folder is used and removed on stop. `port=None` picks a free port. `start()` without `stop()`
    leaves the server running after this process exits (its own session); `stop_detached(workdir)`
    stops it later from any process.
    """

    def __init__(
        self,
        sd_file: str | os.PathLike[str],
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        extra_targets: Iterable[str] = (),
        *,
        scrape_interval: str = "5s",
        evaluation_interval: str | None = None,
        rule_files: Iterable[str | os.PathLike[str]] | None = None,
        retention: str = "2d",
    ) -> None:
        self.sd_file = Path(sd_file)
        self.port = port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.extra_targets = tuple(extra_targets)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_files = tuple(rule_files) if rule_files is not None else None
        self.retention = retention
        self.proc: subprocess.Popen[bytes] | None = None

    # ---- lifecycle ----

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "prometheus.log"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        """Render the config, start the binary on 127.0.0.1 and wait until /-/ready answers 200."""
        binary = require_prometheus()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="benchmatch-prom-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            render_config(self.sd_file, extra_targets=self.extra_targets, scrape_interval=self.scrape_interval,
                          evaluation_interval=self.evaluation_interval, rule_files=self.rule_files)
        )
        # Another process may take a free port between our probe and Prometheus' bind: retry then.
        fixed = self.port
        for attempt in range(1 if fixed is not None else 3):
            self.port = fixed if fixed is not None else free_port()
            self._spawn(binary)
            try:
                self._wait_ready(timeout)
            except PrometheusError as exc:
                self._kill()
                if fixed is not None or attempt == 2 or "address already in use" not in str(exc):
                    raise
                continue
            assert self.proc is not None
            (self.workdir / PID_FILE).write_text(str(self.proc.pid))
            return self
        raise AssertionError("unreachable")

    def _spawn(self, binary: str) -> None:
        assert self.workdir is not None
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child process
        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--storage.tsdb.retention.time={self.retention}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",  # POST /-/reload after the SD path or rules change
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal must not kill it before we stop it
            )
        finally:
            log.close()

    def _log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _wait_ready(self, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with code {self.proc.returncode} during start-up; "
                    f"log {self.log_file}:\n{self._log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus was not ready after {timeout:.0f} s; log {self.log_file}:\n{self._log_tail()}")

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        """Stop the process; remove the work folder if this object created it."""
        self._kill()
        if self.workdir is not None:
            (self.workdir / PID_FILE).unlink(missing_ok=True)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def reload(self) -> None:
        """Re-read the config and rules (after render_config or a rule edit)."""
        self.config_file.write_text(
            render_config(self.sd_file, extra_targets=self.extra_targets, scrape_interval=self.scrape_interval,
                          evaluation_interval=self.evaluation_interval, rule_files=self.rule_files)
        )
        self._request("post", "/-/reload", raw=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP API ----

    def _request(self, method: str, path: str, params: dict[str, Any] | None = None, raw: bool = False) -> Any:
        import requests

        resp = requests.request(method, f"{self.url}{path}", params=params, timeout=30)
        if raw:
            resp.raise_for_status()
            return resp
        try:
            body = resp.json()
        except ValueError as exc:
            raise PrometheusError(f"{path}: HTTP {resp.status_code}, not JSON: {resp.text[:200]}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params or ''}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: the result vector (each item has `metric` labels and `value` [ts, "v"])."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        data = self._request("get", "/api/v1/query", params)
        return data["result"] if isinstance(data["result"], list) else [data["result"]]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query, as Grafana's time-series panels send it: each item has `metric` and `values`."""
        data = self._request("get", "/api/v1/query_range",
                             {"query": promql, "start": start, "end": end, "step": step})
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self._request("get", "/api/v1/targets")["activeTargets"]

    def alerts(self) -> list[dict[str, Any]]:
        return self._request("get", "/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as loaded, each rule with its health and last evaluation error."""
        return self._request("get", "/api/v1/rules")["groups"]

    def wait_for(
        self,
        promql: str,
        timeout: float = 60.0,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        interval: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until `predicate(result)` holds (default: non-empty); return the result.

        On timeout the error names the query, its last result and the scrape targets' health, which is
        what one needs to tell "not exported yet" from "not scraped".
        """
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while True:
            last = self.query(promql)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                health = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in self.targets()]
                raise TimeoutError(
                    f"after {timeout:.0f} s the query {promql!r} still gives {last[:5]!r}; targets: {health}"
                )
            time.sleep(interval)


def _is_prometheus(pid: int) -> bool:
    """A live prometheus process (an exited one that its parent has not reaped has no cmdline)."""
    try:
        return b"prometheus" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_detached(workdir: str | os.PathLike[str], timeout: float = 15.0) -> bool:
    """Stop a server started by another process with this `workdir` (its pid file). False if none ran."""
    pid_file = Path(workdir) / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    if not _is_prometheus(pid):  # gone, or the pid now belongs to something else
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while _is_prometheus(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    return True
