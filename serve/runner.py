"""Start the service for `benchmatch serve`: Ray (started or attached), Serve on loopback, the app.

    run_service("results", models_dir=".benchmatch/models")        # blocks until Ctrl-C

The HTTP proxy binds 127.0.0.1 unless a host is given: exposing the service is a decision, not a
default. Attaching to a running cluster (`address="auto"` or `ray://...`) reuses its Serve
instance; a Serve instance already started there with other HTTP options keeps them (Serve says
so in a warning), which is why the URL printed is read back from Serve, not assumed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from serve.app import APP_NAME


def _curl_example(url: str, asset: str | None = None) -> str:
    """A request that works against this service: it names an asset the service has data for."""
    import json

    body: dict[str, Any] = {"objective": "cost", "constraints": {"latency_p99_ms": 50, "throughput_qps": 100}}
    if asset:
        body = {"asset": asset, **body}
    return f"curl -s -X POST {url}/recommend -H 'Content-Type: application/json' -d '{json.dumps(body)}'"


def _first_asset(url: str) -> str | None:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/assets", timeout=10) as resp:
            assets = json.load(resp).get("assets", [])
    except (OSError, ValueError):
        return None
    return str(assets[0]["asset"]) if assets else None


def run_service(
    results_uri: str | None,
    models_dir: str | None = None,
    candidates_csv: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    blocking: bool = True,
    address: str | None = None,
    *,
    catalog_path: str | None = None,
    app_args: dict[str, Any] | None = None,
    out: TextIO | None = None,
    balancer_port: int | None = None,
) -> str:
    """Deploy the benchmatch app and return its URL; with `blocking`, serve until Ctrl-C and then
    shut down what this call started. `address=None` starts a fresh local Ray instance (a bare
    ray.init() could attach to a stale cluster); otherwise attach to that address. `balancer_port`
    also starts a loopback HAProxy there, in front of the replicas' own ports (serve/balancer.py)."""
    import ray
    from ray import serve

    from serve.app import build_app

    out = out or sys.stdout
    if balancer_port is not None:
        from serve.balancer import BalancerError

        if not blocking:
            raise BalancerError("balancer_port: the balancer lives as long as the call that starts it; "
                                "run the service blocking (as `benchmatch serve` does)")
        if balancer_port == port:
            raise BalancerError(f"--balancer-port {balancer_port} is the service's own --port; choose another")
    url = _serve_url(host, port)
    if blocking:  # SIGTERM stops the service at any point, also while it still connects
        _sigterm_as_interrupt()
    started_ray = deployed = False
    balancer = None
    try:
        started_ray = _connect(address)
        if blocking:  # again: ray.init installs a native handler that prints stack traces on SIGTERM
            _sigterm_as_interrupt()
        serve.start(http_options={"host": host, "port": port})
        args = {"results_uri": results_uri, "models_dir": models_dir, "candidates_csv": candidates_csv,
                "catalog_path": catalog_path, **(app_args or {})}
        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
        deployed = True
        url = _serve_url(host, port)
        print(f"benchmatch service: {url}  (OpenAPI: {url}/docs)", file=out)
        direct = _print_direct_urls(out)
        if balancer_port:
            balancer = _start_balancer(host, balancer_port, direct)
            print(f"  HAProxy in front of the replicas' own ports (no proxy hop, retry on another replica): "
                  f"{balancer.url}", file=out)
        print(f"  try: {_curl_example(url, _first_asset(url))}", file=out)
        if not blocking:
            return url
        print("  Ctrl-C to stop", file=out, flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        if not blocking:
            raise
        print("stopping benchmatch service", file=out, flush=True)
    finally:
        if balancer is not None:
            balancer.stop()
        if blocking:
            _ignore_sigterm()  # a second SIGTERM (a service manager, `timeout`) must not cut the stop short
            if started_ray:
                ray.shutdown()  # our own instance: stopping it stops Serve, its proxy and replicas at once
            elif deployed:
                serve.delete(APP_NAME)  # someone else's cluster: remove only what we deployed
    return url


def _start_balancer(host: str, port: int, direct: list[str]) -> Any:
    from serve.balancer import Balancer, BalancerError, BalancerSettings
    from serve.direct_ingress import replica_urls

    if not direct:
        raise BalancerError("--balancer-port needs the replicas' own ports (direct ingress), and Serve lists none: "
                            "unset BENCHMATCH_DIRECT_INGRESS=0, or on a cluster set RAY_SERVE_ENABLE_DIRECT_INGRESS=1 "
                            "on its nodes")
    # A short timeout: the watcher holds the balancer's lock while it asks the controller.
    balancer = Balancer(BalancerSettings(host=host, port=port), lambda: replica_urls(APP_NAME, timeout_s=3.0))
    balancer.start()
    balancer.watch()
    return balancer


def _print_direct_urls(out: TextIO) -> list[str]:
    from serve.direct_ingress import replica_urls

    # The controller learns the replicas' ports on its next control-loop tick after they start.
    on = os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"
    deadline = time.monotonic() + (10.0 if on else 0.0)
    while not (urls := replica_urls(APP_NAME)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if urls:
        print(f"  replicas' own ports (direct ingress: no proxy hop, no retry on another replica): "
              f"{', '.join(urls)}", file=out)
    return urls


def _connect(address: str | None) -> bool:
    """Connect this process to Ray; True when it started a private local instance (ours to stop).

    `address=None` starts a fresh instance rather than `ray.init()`, which could attach to a stale
    cluster; its listeners stay on loopback like our clusters', and its HTTP proxy runs
    serve/proxy_guard.py. A loopback address gets the token and keeps Ray from rewriting 127.0.0.1
    to this machine's external address. A cluster attached to has its proxies already, guarded
    or not: that is its nodes' environment (k8s/rayservice.yaml sets it)."""
    import ray

    from cluster.local import client_auth, is_loopback, loopback_only, token_auth

    if ray.is_initialized():
        return False
    if address is None:
        from serve import direct_ingress
        from serve.proxy_guard import enable

        loopback_only()
        token_auth()  # as ray.init() would, but with the token file readable by its owner only
        enable()  # the proxy this Ray starts guards against slow clients and dead replicas
        direct_ingress.enable()  # and each replica answers on its own loopback port as well
        ray.init(address="local", include_dashboard=False, namespace="serve", runtime_env=_local_runtime_env(),
                 _node_ip_address="127.0.0.1", logging_level="ERROR")
        return True
    if is_loopback(address):
        loopback_only()
        client_auth()
    # A remote cluster needs the code there already (installed, or a RayService image).
    ray.init(address=address, namespace="serve", logging_level="ERROR")
    return False


def _local_runtime_env() -> dict[str, Any]:
    """Replicas import `serve.app`: from a source checkout that is not pip-installed, and started
    from another directory, they would not find it. Point them at this checkout."""
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def _sigterm_as_interrupt() -> None:
    """Stop on SIGTERM (a service manager, `kill`) the way Ctrl-C stops: app deleted, Ray shut
    down. Also covers a shell's background job, which starts with SIGINT ignored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _ignore_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _serve_url(host: str, port: int) -> str:
    """The proxy's actual address: Serve keeps the HTTP options of an instance already running."""
    try:
        import ray

        # Only ask a Serve we are connected to: _get_global_client on a process without Ray
        # would try to connect (and can wait on a dead cluster for minutes).
        if ray.is_initialized():
            from ray.serve.context import _get_global_client

            client = _get_global_client(raise_if_no_controller_running=False)
            if client is not None:
                opts = client.http_config
                host, port = opts.host or host, opts.port or port
    except Exception:  # an internal API: fall back to what was asked for
        pass
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"
