"""Direct ingress: every replica also answers HTTP on its own loopback port, with no proxy hop.

Serve's HTTP proxy hands each request to a replica over Ray's actor transport. On a 2-core
machine that hop costs several milliseconds, 4-6x the whole answer of a cached request on plain
uvicorn (docs/performance.md). Ray 2.60's direct ingress starts an HTTP server inside each ingress
replica (`RAY_SERVE_ENABLE_DIRECT_INGRESS`), on a port the controller allocates per node from a
range, and keeps the proxy on the head node. We turn it on for the Ray that `benchmatch serve`
starts, so both paths exist:

* the proxy (the service URL): one address for every replica, the proxy guard in front
  (serve/proxy_guard.py), a request whose replica died retried on another;
* each replica's own port: the latency of plain uvicorn, for a client that talks to one replica
  (a sidecar, a load balancer with its own health checks such as a Kubernetes Service). The guard's
  middlewares run there too (Serve applies the same HTTP callback to the replica's server), so body
  limits and slow-client deadlines hold on both paths; what the direct path lacks is the retry on
  another replica, which only a component in front of several replicas can give.

We do not use the HAProxy ingress (`RAY_SERVE_ENABLE_HA_PROXY`), which Ray pairs with direct
ingress: it forces the replicas' ports onto every interface and its stats and metrics listeners
bind `*`, against this project's rule that nothing listens beyond loopback by default
(docs/decisions.md).

The variables are read when Ray's processes import Serve, so `enable()` must run before the Ray it
is meant for starts (as `serve.proxy_guard.enable()`); k8s/rayservice.yaml sets them on the pods.
"""

from __future__ import annotations

import os
from typing import Any

FIRST_PORT = 30000  # Serve's own default range start; the range must not overlap Ray's worker ports
PORTS = 1000
DRAIN_S = 2.0  # Serve's default 30 s keeps a removed replica alive for external load balancers

ENABLE_ENV = "BENCHMATCH_DIRECT_INGRESS"  # "0" turns it off for a Ray started from this process


def settings(first_port: int = FIRST_PORT, ports: int = PORTS, drain_s: float = DRAIN_S) -> dict[str, str]:
    """The environment that turns direct ingress on, with the replica's user code on its own event
    loop's thread (Serve otherwise runs it on a second loop and hops to it per request)."""
    if not (1024 <= first_port and first_port + ports - 1 <= 65535 and ports >= 1):
        raise ValueError(f"direct ingress ports {first_port}..{first_port + ports - 1}: expected a range "
                         "inside 1024..65535")
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first_port + ports - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s),
    }


def enable(environ: dict[str, str] | None = None, **kwargs: Any) -> bool:
    """Set the variables for a Ray started from this process after this call; values already in
    the environment win. False (nothing set) when BENCHMATCH_DIRECT_INGRESS=0."""
    env = os.environ if environ is None else environ
    if env.get(ENABLE_ENV, "1").strip() == "0":
        return False
    for name, value in settings(**kwargs).items():
        env.setdefault(name, value)
    return True


def replica_urls(app_name: str, timeout_s: float = 10.0) -> list[str]:
    """The HTTP addresses of the application's running replicas' own servers, from Serve's
    controller (an alpha API, hence the broad fallback); [] when direct ingress is off or no
    replica is running yet. Needs a connected Ray."""
    import ray
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client(raise_if_no_controller_running=False)
        if client is None:
            return []
        groups = ray.get(client._controller.get_target_groups.remote(app_name), timeout=timeout_s)
    except Exception:  # an internal API: without it there are simply no direct URLs to show
        return []
    proxies, bound = _proxy_ports(client), _bound_host(client)
    urls = []
    for group in groups:
        if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
            continue
        for target in group.targets:
            if target.port in proxies:  # without direct ingress the groups name the proxies
                continue
            ip = bound or target.ip
            host = f"[{ip}]" if ":" in ip else ip
            urls.append(f"http://{host}:{target.port}")
    return sorted(set(urls))


def _bound_host(client: Any) -> str | None:
    """The address the replicas' servers bind (Serve's HTTP host), when it is one address: a
    loopback-bound replica is not reachable at its node's IP, which is what the target names."""
    try:
        host = str(client.http_config.host or "")
    except Exception:
        return None
    return None if host in ("", "0.0.0.0", "::") else host


def _proxy_ports(client: Any) -> set[int]:
    try:
        return {int(client.http_config.port)}
    except Exception:
        return set()
