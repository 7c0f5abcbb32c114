"""A heterogeneous Ray cluster on this machine, bound to loopback only.

Each local hardware profile of the catalog becomes a Ray node with its CPU count, the custom
resource `accelerator_type:<name>` (one unit, so trials on a node run one at a time and do not
disturb each other's measurements) and the node label `ray.io/accelerator-type=<name>`.

Ray on Linux advertises and binds the machine's external address even when asked for 127.0.0.1;
with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` it keeps to loopback. That switch is only set for the
clusters started here, never when connecting to an existing (e.g. KubeRay) cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cluster.errors import ClusterError
from cluster.hardware import NODE_LABEL, HardwareSpec, load_catalog, local_profiles

STATE_DIR = Path(os.environ.get("BENCHMATCH_HOME", Path.home() / ".benchmatch"))
STATE_FILE = STATE_DIR / "cluster.json"
TEMP_PREFIX = "bm-ray-"
OWNER_FILE = "owner.json"  # in each cluster's temp root: which process owns it (for orphan clean-up)
# Ray's unix socket paths live under the temp dir and must stay below ~107 characters.
_MAX_TEMP_BASE = 40


def secure_token_file() -> Path:
    """Make sure ~/.ray/auth_token exists readable by its owner only (0600, folder 0700).

    Ray writes a new token with the process umask (0644 seen): any local user could then read it
    and submit jobs. We create it ourselves, atomically with its final mode, and tighten an
    existing one of ours."""
    from ray._private.authentication import authentication_token_setup as auth
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path = auth._get_default_token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o600)
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_new_authentication_token())
    if path.parent.stat().st_uid == os.getuid() and path.parent.stat().st_mode & 0o077:
        os.chmod(path.parent, 0o700)
    return path


def token_auth() -> None:
    """Turn Ray's token authentication on for clusters started here, as `ray.init()` does for its
    own; an explicit RAY_AUTH_MODE is respected. The token lives in ~/.ray/auth_token (0600)."""
    from ray._private.authentication import authentication_token_setup as auth

    enabled = auth.enable_token_auth_by_default()
    if enabled or os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        secure_token_file()
    auth.ensure_token_if_auth_enabled(None, create_token_if_missing=True)


def client_auth() -> None:
    """A client of our local clusters sends the token when one exists (RAY_AUTH_MODE unset)."""
    from ray._private.authentication import authentication_token_setup as auth

    auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def loopback_only() -> None:
    """Keep every Ray server of clusters started by this process on 127.0.0.1."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray._private.ray_constants as rc  # read at call time by Ray's address lookup

    rc.ENABLE_RAY_CLUSTER = False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when it does not exist or
    has exited: a child that exited but that its parent has not reaped yet (a zombie, as the
    daemon is to a process that ran both `up` and `down`) is gone, not running."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _is_same_process(pid: int, started: float) -> bool:
    """A pid is recycled by the OS: it names the same process only if it started at the same time."""
    now = _process_start(pid)
    return now is not None and abs(now - started) < 1.0


def _temp_base() -> str:
    """Where cluster temp roots go: $RAY_TMPDIR when short enough for Ray's socket paths, else /tmp."""
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return base if len(base) <= _MAX_TEMP_BASE and os.path.isdir(base) else "/tmp"


def clean_orphaned_temp_roots(base: str | None = None) -> list[str]:
    """Remove the temp roots of clusters whose owning process is gone (killed, crashed, rebooted).

    Only folders that carry our owner file and belong to this user are touched."""
    removed = []
    for root in Path(base or _temp_base()).glob(f"{TEMP_PREFIX}*"):
        try:
            if root.stat().st_uid != os.getuid():
                continue
            owner = json.loads((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _is_same_process(int(owner.get("pid", -1)), float(owner.get("started", 0))):
            shutil.rmtree(root, ignore_errors=True)
            removed.append(str(root))
    return removed


@contextlib.contextmanager
def _ray_tmpdir(root: Path) -> Iterator[None]:
    """Make `root` Ray's default temp root while a cluster starts or stops.

    `ray.cluster_utils.Cluster` writes (and on shutdown deletes) `<RAY_TMPDIR>/ray/ray_current_cluster`.
    Scoped to our own root, that file lands in the cluster's temp dir, which is where a `ray job submit`
    driver looks for the cluster it was submitted to; a machine where Ray never ran (no /tmp/ray) works,
    and another Ray instance's address file is left alone. The nodes started meanwhile inherit the same
    root, so their own lookups agree."""
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before


@dataclass
class ClusterInfo:
    address: str  # GCS address for ray.init(address=...)
    dashboard_url: str  # for `ray job submit --address`
    temp_dir: str
    service_discovery_file: str  # Prometheus file-SD written by Ray's dashboard
    profiles: list[str]
    pid: int = 0
    pid_started: float = 0.0  # the owning process's start time: a recycled pid is not our daemon
    uid: int = -1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class LocalCluster:
    """Start (and stop) a loopback multi-node Ray cluster with one node per local profile."""

    def __init__(self, profiles: list[HardwareSpec] | None = None, *, dashboard: bool = True,
                 dashboard_port: int | None = None, object_store_mb: int = 128):
        self.profiles = profiles if profiles is not None else local_profiles(load_catalog())
        if not self.profiles:
            raise ClusterError("no local profiles: mark catalog entries with `local: true` (configs/hardware.yaml)")
        self.dashboard = dashboard
        self.dashboard_port = dashboard_port
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self._cluster: Any = None
        self._nodes: dict[str, Any] = {}  # profile name -> its Ray node (cluster_utils.Node)
        self._root: Path | None = None

    def start(self) -> ClusterInfo:
        loopback_only()
        token_auth()
        from ray.cluster_utils import Cluster

        clean_orphaned_temp_roots()
        self._root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=_temp_base()))
        (self._root / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": _process_start(os.getpid())}))
        temp_dir = self._root / "ray"
        temp_dir.mkdir()

        head: dict[str, Any] = {
            "num_cpus": 0,  # the head schedules no trials: every trial lands on a profiled node
            "include_dashboard": self.dashboard,
            "dashboard_host": "127.0.0.1",
            "node_ip_address": "127.0.0.1",
            "object_store_memory": self.object_store_bytes,
            # Ray's default agent port (52365) is one per machine; every node here needs its own.
            "dashboard_agent_listen_port": free_port(),
            # Its own temp dir: Ray writes the Prometheus SD file there, and clusters must not share one.
            "temp_dir": str(temp_dir),
            # Export ray.util.metrics every 2 s (default 10 s) so Prometheus sees short trials live.
            "_system_config": {"metrics_report_interval_ms": 2000},
        }
        if self.dashboard:
            # A free port unless one is asked for: several clusters (tests, a `cluster up`) coexist.
            head["dashboard_port"] = self.dashboard_port or free_port()
        with _ray_tmpdir(self._root):
            self._cluster = Cluster(initialize_head=True, head_node_args=head)
            for spec in self.profiles:
                self._add(spec)
        self._cluster.wait_for_nodes()
        head_node = self._cluster.head_node
        dash = getattr(head_node, "webui_url", None) or ""
        return ClusterInfo(
            address=self._cluster.address,
            dashboard_url=f"http://{dash}" if dash and not dash.startswith("http") else dash,
            temp_dir=str(temp_dir),
            service_discovery_file=str(temp_dir / "prom_metrics_service_discovery.json"),
            profiles=[p.name for p in self.profiles],
            pid=os.getpid(),
            pid_started=_process_start(os.getpid()) or 0.0,
            uid=os.getuid(),
        )

    def _add(self, spec: HardwareSpec) -> None:
        self._nodes[spec.name] = self._cluster.add_node(
            num_cpus=spec.cpu_cores,
            num_gpus=0,
            resources={spec.resource_name: 1},
            labels={NODE_LABEL: spec.name},
            node_ip_address="127.0.0.1",
            object_store_memory=self.object_store_bytes,
            dashboard_agent_listen_port=free_port(),
        )

    def kill_node(self, profile: str) -> None:
        """Kill the worker node of a profile (failure tests) and start a fresh one in its place."""
        if profile not in self._nodes:
            raise ClusterError(f"no node for profile {profile}; nodes: {sorted(self._nodes)}")
        self._cluster.remove_node(self._nodes.pop(profile), allow_graceful=False)
        with _ray_tmpdir(self._root or Path(_temp_base())):
            self._add(next(p for p in self.profiles if p.name == profile))

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self._cluster is not None:
            # Not graceful: Ray's graceful stop waits on workers still busy with trials of a
            # killed driver (seen: a minute per node); results are already on disk, atomically.
            for node in list(self._cluster.worker_nodes):
                self._cluster.remove_node(node, allow_graceful=False)
            with _ray_tmpdir(self._root or Path(_temp_base())):
                self._cluster.shutdown()  # the head, and the address file in our own temp dir
            self._cluster = None
            self._nodes.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> ClusterInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# ---- `benchmatch cluster up|status|down`: the same cluster kept alive by a daemon process ----

def read_state() -> ClusterInfo | None:
    """The cluster of this user's `benchmatch cluster up`, or None.

    The state file is trusted only while the process it names is the very daemon that wrote it
    (same pid, same start time, same user): a recycled pid or a copied file never makes `sweep`
    attach to someone else's cluster, nor `cluster down` signal a process it did not start."""
    try:
        data = json.loads(STATE_FILE.read_text())
        info = ClusterInfo(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    if info.uid != os.getuid() or not _is_same_process(info.pid, info.pid_started):
        return None  # daemon gone (the state is stale) or not ours
    return info


def _write_state(info: ClusterInfo) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(info.to_json())
    os.replace(tmp, STATE_FILE)


def _daemon(catalog_path: str | None, dashboard_port: int | None) -> None:
    """Entry of the background process that owns the cluster until SIGTERM."""
    cluster = LocalCluster(local_profiles(load_catalog(catalog_path)), dashboard_port=dashboard_port)
    info = cluster.start()
    stop = {"now": False}

    def _on_term(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    _write_state(info)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        cluster.shutdown()
        STATE_FILE.unlink(missing_ok=True)


def up(catalog_path: str | None = None, dashboard_port: int | None = 8265, timeout_s: float = 120) -> ClusterInfo:
    """Start the daemon (if not running) and wait for its cluster to be ready."""
    existing = read_state()
    if existing:
        return existing
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.unlink(missing_ok=True)
    log = open(STATE_DIR / "cluster.log", "ab")  # noqa: SIM115 - handed to the daemon
    args = [sys.executable, "-m", "cluster.local", "--daemon"]
    if catalog_path:
        args += ["--catalog", str(catalog_path)]
    if dashboard_port:
        args += ["--dashboard-port", str(dashboard_port)]
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           # `python` in a `ray job submit` entrypoint is then the interpreter benchmatch runs in.
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = read_state()
        if info:
            return info
        if proc.poll() is not None:
            raise ClusterError(f"the cluster daemon exited with {proc.returncode}; see {STATE_DIR / 'cluster.log'}")
        time.sleep(0.5)
    proc.terminate()
    raise ClusterError(f"the cluster did not come up in {timeout_s:.0f} s; see {STATE_DIR / 'cluster.log'}")


def _reap(pid: int) -> None:
    """Collect the exit status of the daemon when this process started it (else a no-op)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def down(timeout_s: float = 60) -> bool:
    """Stop the daemon's cluster. Returns False when none was running."""
    info = read_state()
    if not info:
        STATE_FILE.unlink(missing_ok=True)
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_same_process(info.pid, info.pid_started):
            _reap(info.pid)
            return True
        time.sleep(0.3)
    if _is_same_process(info.pid, info.pid_started):
        os.kill(info.pid, signal.SIGKILL)
    return True


def status(info: ClusterInfo) -> list[dict[str, Any]]:
    """The live nodes of a running cluster, with their profile, CPUs and labels."""
    import ray

    loopback_only()
    client_auth()
    ctx = ray.init(address=info.address, logging_level="ERROR", log_to_driver=False)
    try:
        out = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            labels = node.get("Labels") or {}
            out.append({
                "node_id": node["NodeID"],
                "address": node["NodeManagerAddress"],
                "profile": labels.get(NODE_LABEL, "(head)"),
                "cpus": node["Resources"].get("CPU", 0),
                "resources": {k: v for k, v in node["Resources"].items() if k.startswith("accelerator_type:")},
            })
        return sorted(out, key=lambda n: n["profile"])
    finally:
        ctx.disconnect() if hasattr(ctx, "disconnect") else ray.shutdown()


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="internal: the daemon behind `benchmatch cluster up`")
    p.add_argument("--daemon", action="store_true", required=True)
    p.add_argument("--catalog")
    p.add_argument("--dashboard-port", type=int)
    a = p.parse_args()
    _daemon(a.catalog, a.dashboard_port)


def connect(address: str | None = None, catalog_path: str | None = None,
            progress: Any = print) -> LocalCluster | None:
    """Connect this process to Ray: the given address, $RAY_ADDRESS (e.g. inside `ray job submit`),
    the cluster of `benchmatch cluster up`, or else a new embedded local cluster (returned, so the
    caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return None
    quiet = {"logging_level": "ERROR", "log_to_driver": False}
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        if is_loopback(target):
            loopback_only()  # else Ray looks for this node's raylet on the external address
            client_auth()
        ray.init(address=target, **quiet)
        return None
    state = read_state()
    if state:
        progress(f"using the local cluster of `benchmatch cluster up` at {state.address}")
        loopback_only()
        client_auth()
        ray.init(address=state.address, **quiet)
        return None
    progress("starting an embedded local Ray cluster (loopback only) ...")
    cluster = LocalCluster(local_profiles(load_catalog(catalog_path)))
    info = cluster.start()
    ray.init(address=info.address, **quiet)
    progress(f"  nodes: {', '.join(info.profiles)}; dashboard {info.dashboard_url or 'off'}")
    return cluster
