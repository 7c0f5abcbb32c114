"""Load on POST /recommend over loopback: Ray Serve (one replica) beside the same FastAPI app served
by plain uvicorn in the same run, what happens when a replica is killed under load, and the first
requests a new replica answers.

    python tests/perf/serve_load.py                    # ~7 minutes on a 2-core machine
    python tests/perf/serve_load.py --quick            # shorter steps, for a smoke run
    python tests/perf/serve_load.py --only kill,cold   # just the figures of issue #11

Figures, each beside its baseline:
  * sequential latency p50/p99 (one client, keep-alive) of a cached answer and of a fresh solve,
    Serve vs plain uvicorn;
  * the highest offered rate whose p99 stays under the SLO (100 ms), open loop: Poisson arrivals
    at a fixed rate, latency measured from the scheduled send time so that a slow server cannot
    hide queueing (no coordinated omission), Serve vs plain uvicorn;
  * one replica killed under a steady open-loop load: the outage until Serve has replaced it;
  * one of two replicas killed (SIGKILL, as the kernel's OOM killer or a crash would) under 20
    clients: failed requests against those in flight when it died (the goal: no other failure),
    and the time until the p99 of each second's requests is under the SLO again (goal < 10 s);
  * the first requests a replica answers: p99 of 14 concurrent first requests to a replica that
    has just replaced a killed one, against 2x the p99 of 14 concurrent requests to a warm one.
Each Serve figure is taken on every path a client can use: Serve's proxy, a replica's own port
(direct ingress) and the HAProxy balancer in front of the replicas' own ports (serve/balancer.py,
`benchmatch serve --balancer-port`; `--no-balancer` leaves it out), and the kill under 20 clients
back to back is run through the proxy and through the balancer.
The proxy runs serve/proxy_guard.py, as `benchmatch serve`'s does. The data is synthetic
(tests/fixtures/service_data.py): the figures are about the service, not about hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SLO_MS = 100.0
KILL_QPS = 20.0
KILL_CLIENTS = 20  # each waits ~1 s (exponential) between requests: ~20 requests/s in all
RECOVERY_GOAL_S = 10.0
FIRST_REQUESTS = 14
CACHED_BODY = {"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 20, "throughput_qps": 2000}}


def fresh_body(i: int) -> dict[str, Any]:
    """A question never asked before (the demand differs), so the answer cache cannot help.
    top_k 1: one MILP solve per request (the default top_k 3 costs about three)."""
    return {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 1000 + i * 0.001}, "top_k": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


@dataclass
class Run:
    offered_qps: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def failed(self) -> int:
        return sum(self.statuses.values()) - self.ok

    @property
    def p50(self) -> float:
        return _pct(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return _pct(self.latencies_ms, 99)

    @property
    def achieved_qps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0


# ----------------------------------------------------------------------------------------------
# Load generation (aiohttp: one event loop can keep hundreds of requests in flight)
# ----------------------------------------------------------------------------------------------


async def _one(session: Any, url: str, body: bytes, scheduled: float, run: Run, loop: Any,
               log: list[tuple[float, float, str]] | None) -> None:
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            key = str(resp.status)
    except Exception as exc:  # a refused or reset connection is a failed request, counted
        key = type(exc).__name__
    done = loop.time()
    run.statuses[key] = run.statuses.get(key, 0) + 1
    if key == "200":
        run.latencies_ms.append((done - scheduled) * 1000)
    if log is not None:
        log.append((scheduled, done, key))


async def open_loop(url: str, qps: float, duration_s: float, fresh: bool, seed: int = 0,
                    log: list[tuple[float, float, str]] | None = None, offset: int = 0) -> Run:
    """Poisson arrivals at `qps` for `duration_s`; waits for every request to finish."""
    import aiohttp

    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    run = Run(qps)
    cached = json.dumps(CACHED_BODY).encode()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), timeout=timeout) as session:
        t0 = loop.time()
        t, i, tasks = 0.0, 0, []
        while True:
            t += rng.expovariate(qps)
            if t > duration_s:
                break
            delay = t0 + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = json.dumps(fresh_body(offset + i)).encode() if fresh else cached
            tasks.append(asyncio.create_task(_one(session, url, body, t0 + t, run, loop, log)))
            i += 1
        await asyncio.gather(*tasks)
        run.wall_s = loop.time() - t0
    return run


def sequential(url: str, n: int, fresh: bool, offset: int = 0) -> Run:
    """One client, one request at a time, keep-alive: the latency floor of the path."""
    import requests

    run = Run(0)
    http = requests.Session()
    cached = json.dumps(CACHED_BODY).encode()
    t_start = time.perf_counter()
    for i in range(n):
        body = json.dumps(fresh_body(offset + i)).encode() if fresh else cached
        t0 = time.perf_counter()
        r = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        run.statuses[str(r.status_code)] = run.statuses.get(str(r.status_code), 0) + 1
        if r.status_code == 200:
            run.latencies_ms.append((time.perf_counter() - t0) * 1000)
    run.wall_s = time.perf_counter() - t_start
    return run


def step_rates(urls: dict[str, str], rates: list[float], duration_s: float, fresh: bool,
               what: str) -> dict[str, float]:
    """Step the offered rate up, each server in turn at each rate (so that both see the same
    background load on a shared machine). Per server: the highest rate whose p99 < SLO with no
    failed request; a server that failed a rate is not offered the higher ones."""
    best = dict.fromkeys(urls, 0.0)
    live = set(urls)
    offset = 10_000_000
    for k, qps in enumerate(rates):
        for name, url in urls.items():
            if name not in live:
                continue
            run = asyncio.run(open_loop(url + "/recommend", qps, duration_s, fresh, seed=k, offset=offset))
            offset += int(qps * duration_s) + 10  # fresh bodies stay fresh across servers and rates
            print(f"  {name:<8} {what:<12} offered {qps:6.1f}/s achieved {run.achieved_qps:6.1f}/s  "
                  f"p50 {run.p50:8.1f} ms  p99 {run.p99:8.1f} ms  failed {run.failed}", flush=True)
            if run.p99 < SLO_MS and run.failed == 0:
                best[name] = qps
            else:
                live.discard(name)
        if not live:
            break
    return best


def sequential_interleaved(urls: dict[str, str], n: int, fresh: bool, blocks: int = 4) -> dict[str, Run]:
    """`n` sequential requests per server, in `blocks` alternating blocks."""
    out = {name: Run(0) for name in urls}
    offset = 20_000_000
    for _ in range(blocks):
        for name, url in urls.items():
            r = sequential(url + "/recommend", max(n // blocks, 1), fresh, offset=offset)
            offset += n
            out[name].latencies_ms += r.latencies_ms
            for k, v in r.statuses.items():
                out[name].statuses[k] = out[name].statuses.get(k, 0) + v
    return out


# ----------------------------------------------------------------------------------------------
# The two servers
# ----------------------------------------------------------------------------------------------


def uvicorn_main(port: int, results: str) -> None:
    """The baseline server process: the same FastAPI app and ServiceCore, no Ray."""
    import uvicorn

    from serve.app import create_app
    from serve.core import ServiceCore, ServiceSettings

    app = create_app()
    app.state.core = ServiceCore(ServiceSettings(results_uri=results))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait_ready(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {timeout} s")


def kill_under_load(url: str, replicas: int, qps: float, duration_s: float, kill_at_s: float) -> dict[str, Any]:
    """Steady cached load; kill one replica actor at kill_at_s; see what the clients saw."""
    import ray

    from serve.app import APP_NAME, DEPLOYMENT_NAME

    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))
    assert len(names) == replicas, names
    log: list[tuple[float, float, str]] = []
    killed: list[float] = []

    async def main() -> Run:
        loop = asyncio.get_running_loop()

        async def killer() -> None:
            await asyncio.sleep(kill_at_s)
            killed.append(loop.time())
            ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)

        k = asyncio.create_task(killer())
        run = await open_loop(url + "/recommend", qps, duration_s, fresh=False, seed=99, log=log)
        await k
        return run

    run = asyncio.run(main())
    t_kill = killed[0]
    after = sorted((s, d, k) for s, d, k in log if s >= t_kill)
    first_ok = min((d for s, d, k in after if k == "200"), default=float("nan"))
    failed = [k for s, d, k in log if k != "200"]
    slow = [(d - s) * 1000 for s, d, k in log if s >= t_kill - 1 and k == "200"]
    # Back to normal: the first request sent after the kill from which on every answer is a
    # 200 under the SLO.
    normal_at = float("nan")
    for i, (s, _d, _k) in enumerate(after):
        if all(k == "200" and (d - s) * 1000 < SLO_MS for s, d, k in after[i:]):
            normal_at = s
            break
    return {
        "replicas": replicas,
        "requests": sum(run.statuses.values()),
        "failed": len(failed),
        "failures": {k: failed.count(k) for k in sorted(set(failed))},
        "first_answer_after_kill_ms": (first_ok - t_kill) * 1000,
        "back_under_slo_after_ms": (normal_at - t_kill) * 1000,
        "max_latency_ms": max(slow) if slow else float("nan"),
    }


def _replica_names() -> list[str]:
    import ray

    from serve.app import APP_NAME, DEPLOYMENT_NAME

    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def _replica_pid(name: str) -> int:
    import ray

    actor = ray.get_actor(name, namespace="serve")
    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60))


async def _sigkill(pid: int) -> None:
    """Kill a replica's process the way a crash does, and return once it is gone: a request
    sent after that cannot have been accepted by it."""
    import psutil

    os.kill(pid, signal.SIGKILL)
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        await asyncio.sleep(0.001)


def _window_p99s(log: list[tuple[float, float, str]], start: float, end: float, width: float = 5.0,
                 step: float = 0.5) -> list[tuple[float, float]]:
    """(window start, p99 of the requests sent in [start, start + width)) for full windows every
    `step` seconds; a failed request counts as infinitely slow. 5 s hold ~100 requests at 20/s, so
    that the p99 is not simply the slowest request of a second."""
    out = []
    t = start
    while t + width <= end:
        lat = [((d - s) * 1000 if k == "200" else float("inf")) for s, d, k in log if t <= s < t + width]
        if lat:
            out.append((t, _pct(lat, 99)))
        t += step
    return out


def _recovered_after(windows: list[tuple[float, float]], t0: float) -> float:
    """Seconds from t0 to the start of the first window from which on every window's p99 is under
    the SLO (0 when none after t0 missed it; NaN when the last one still misses it)."""
    if not windows or windows[-1][1] >= SLO_MS:
        return float("nan")
    late = [t for t, p99 in windows if p99 >= SLO_MS]
    if not late:
        return 0.0
    return min(t for t, _ in windows if t > max(late)) - t0


def kill_under_clients(url: str, clients: int, duration_s: float, kill_at_s: float, think_s: float
                       ) -> dict[str, Any]:
    """`clients` clients, each sending its next request after an exponential pause of mean
    `think_s` (0: at once), to two replicas; one replica SIGKILLed at kill_at_s."""
    import aiohttp

    names = _replica_names()
    assert len(names) == 2, names
    pid = _replica_pid(names[0])
    log: list[tuple[float, float, str]] = []
    marks: dict[str, float] = {}
    bodies = [json.dumps({"asset": "synthetic-mlp", "constraints": {"throughput_qps": 100 + k * 100}}).encode()
              for k in range(7)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + duration_s
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:

            async def client(i: int) -> None:
                rng = random.Random(i)
                while True:
                    await asyncio.sleep(rng.expovariate(1.0 / think_s) if think_s > 0 else 0)
                    if loop.time() >= end:
                        return
                    sent = loop.time()
                    try:
                        async with session.post(url + "/recommend", data=rng.choice(bodies),
                                                headers={"Content-Type": "application/json"}) as resp:
                            await resp.read()
                            key = str(resp.status)
                    except Exception as exc:  # a reset connection is a failed request, counted
                        key = type(exc).__name__
                    log.append((sent, loop.time(), key))

            async def killer() -> None:
                await asyncio.sleep(kill_at_s)
                marks["kill"] = loop.time()
                await _sigkill(pid)
                marks["dead"] = loop.time()

            marks["start"] = t0
            await asyncio.gather(killer(), *(client(i) for i in range(clients)))
            marks["end"] = loop.time()

    asyncio.run(main())
    t_kill, t_dead = marks["kill"], marks["dead"]
    failed = [(s, d, k) for s, d, k in log if k != "200"]
    in_flight = [(s, d, k) for s, d, k in log if s < t_dead and d > t_kill]
    windows = _window_p99s(log, t_kill, marks["end"])
    before = [(d - s) * 1000 for s, d, k in log if marks["start"] + 2 <= s < t_kill and k == "200"]
    return {
        "clients": clients,
        "think_s": think_s,
        "requests": len(log),
        "failed": len(failed),
        "failures": {k: sum(1 for f in failed if f[2] == k) for k in sorted({f[2] for f in failed})},
        "in_flight_at_death": len(in_flight),
        "failed_sent_after_death": sum(1 for s, d, k in failed if s >= t_dead),
        "kill_to_death_ms": (t_dead - t_kill) * 1000,
        "p99_before_kill_ms": _pct(before, 99),
        "back_under_slo_after_s": _recovered_after(windows, t_kill),
        "window_p99_ms": [(round(t - t_kill, 1), round(p, 1)) for t, p in windows],
        "slow_after_kill": [(round(s - t_kill, 2), round((d - s) * 1000)) for s, d, k in log
                            if s >= t_kill and (k != "200" or (d - s) * 1000 >= SLO_MS)][:40],
    }


async def _concurrent(url: str, bodies: list[bytes]) -> list[float]:
    """Send all `bodies` at once; latencies (ms) of the answers, inf for a failed one."""
    import aiohttp

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(body: bytes) -> float:
            t0 = loop.time()
            try:
                async with session.post(url + "/recommend", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    return (loop.time() - t0) * 1000 if resp.status == 200 else float("inf")
            except Exception:
                return float("inf")

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def first_requests(url: str, n: int, rounds: int, warm_rounds: int) -> dict[str, Any]:
    """One replica: kill it, wait until Serve reports its replacement running, then send `n`
    never-asked questions at once (the replica's first requests); then `warm_rounds` more rounds
    of `n` new questions to the same, now warm, replica. A fresh question in both, so that the
    difference is the replica being new, not the answer cache."""
    offset = 30_000_000
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(rounds):
        before = _replica_names()
        assert len(before) == 1, before
        asyncio.run(_sigkill(_replica_pid(before[0])))
        deadline = time.monotonic() + 120
        while True:
            names = _replica_names()
            if names and names != before:
                try:
                    _wait_until_replicas(1, timeout=5)
                    break
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("Serve did not replace the killed replica in 120 s")
            time.sleep(0.2)
        bodies = [json.dumps(fresh_body(offset + i)).encode() for i in range(n)]
        offset += n
        cold.append(_pct(asyncio.run(_concurrent(url, bodies)), 99))
        for _ in range(warm_rounds):
            bodies = [json.dumps(fresh_body(offset + i)).encode() for i in range(n)]
            offset += n
            warm.append(_pct(asyncio.run(_concurrent(url, bodies)), 99))
    return {"n": n, "cold_p99_ms": cold, "warm_p99_ms": warm,
            "cold_p99_median_ms": _pct(cold, 50), "warm_p99_median_ms": _pct(warm, 50)}


def _fmt(x: float, unit: str = "") -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.1f}{unit}" if abs(x) < 1000 else f"{x:,.0f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short steps (smoke run)")
    ap.add_argument("--only", default="ratios,outage,kill,cold",
                    help="comma-separated parts: ratios (Serve vs uvicorn), outage (1 replica killed), "
                         "kill (1 of 2 replicas killed under 20 clients), cold (first requests of a new replica)")
    ap.add_argument("--skip-kill", action="store_true", help="leave outage and kill out")
    ap.add_argument("--no-guard", action="store_true",
                    help="Serve's proxy as it comes, without serve/proxy_guard.py (the baseline run)")
    ap.add_argument("--no-direct", action="store_true",
                    help="replicas without their own HTTP port (serve/direct_ingress.py off): the proxy only")
    ap.add_argument("--no-balancer", action="store_true",
                    help="leave out the HAProxy balancer in front of the replicas' own ports (serve/balancer.py)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--uvicorn-server", nargs=2, metavar=("PORT", "RESULTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.uvicorn_server:
        uvicorn_main(int(args.uvicorn_server[0]), args.uvicorn_server[1])
        return
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"ratios", "outage", "kill", "cold"}
    if unknown:
        ap.error(f"--only: unknown parts {sorted(unknown)}")
    if args.skip_kill:
        parts -= {"outage", "kill"}
    args.step_s = 2.0 if args.quick else 4.0
    args.seq = 60 if args.quick else 200
    args.rates = [25, 50, 75, 100, 150, 200, 300, 400, 600, 800] if not args.quick else [50, 100, 200, 400]
    args.fresh_rates = [2, 4, 8, 12, 16, 24, 32] if not args.quick else [4, 8, 16]

    from serve.proxy_guard import CALLBACK_ENV, enable
    from tests.fixtures.service_data import write_synthetic_store

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    store = tmp / "results"
    write_synthetic_store(store)

    # Both servers run side by side and are measured in turn: the baseline is plain uvicorn in
    # its own process (as the Serve replica is), serving the same FastAPI app and ServiceCore.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if args.no_guard:
        os.environ[CALLBACK_ENV] = ""  # Serve reads an empty value as no callback
    else:
        enable()  # the proxy as `benchmatch serve` runs it
    if not args.no_direct:
        from serve import direct_ingress

        direct_ingress.enable()  # and each replica's own port, as `benchmatch serve` has them
    import ray
    from ray import serve

    from serve.app import APP_NAME, build_app

    port = _free_port()
    proc = (subprocess.Popen([sys.executable, __file__, "--uvicorn-server", str(port), str(store)], cwd=ROOT)
            if "ratios" in parts else None)
    ray.init(address="local", include_dashboard=False, num_cpus=4, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    kills: list[dict[str, Any]] = []
    rows: list[tuple[str, dict[str, float]]] = []
    fleet: dict[tuple[str, float], dict[str, Any]] = {}
    cold: dict[str, Any] | None = None
    balancer = None
    try:
        sport = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": sport})
        app_args = {"results_uri": str(store), "num_replicas": 1, "num_cpus": 1}
        serve.run(build_app(app_args), name=APP_NAME, route_prefix="/")
        serve_url = f"http://127.0.0.1:{sport}"
        urls = {"Serve": serve_url}
        if not args.no_direct:
            from serve.direct_ingress import replica_urls

            direct = replica_urls(APP_NAME)
            if not direct:
                raise RuntimeError("direct ingress is on but Serve names no replica port")
            urls["Serve direct"] = direct[0]
            if not args.no_balancer:
                from serve.balancer import Balancer, BalancerSettings

                balancer = Balancer(BalancerSettings(port=_free_port()), lambda: replica_urls(APP_NAME))
                urls["Serve HAProxy"] = balancer.start()
                balancer.watch(1.0)  # as `benchmatch serve` does
        if proc:
            urls["uvicorn"] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            _wait_ready(url)
            sequential(url + "/recommend", 20, fresh=False)  # warm-up: first solve, connection
            sequential(url + "/recommend", 5, fresh=True, offset=-1000)
        if proc:
            rows = ratios(urls, args)
            proc.terminate()
        if "outage" in parts:
            # One replica: an outage until Serve has started a new one, then a backlog to drain.
            kills.append(kill_under_load(serve_url, 1, KILL_QPS, 20.0 if args.quick else 40.0, 3.0))
            print(f"kill, 1 replica: {kills[-1]}", flush=True)
            _wait_until_replicas(1)
        if "cold" in parts:
            cold = first_requests(serve_url, FIRST_REQUESTS, rounds=1 if args.quick else 3,
                                  warm_rounds=2 if args.quick else 3)
            print(f"first requests: {cold}", flush=True)
        if "kill" in parts:
            # Two replicas: the proxy sends the dead one's requests to the survivor.
            serve.run(build_app({**app_args, "num_replicas": 2, "num_cpus": 0.5}), name=APP_NAME, route_prefix="/")
            _wait_until_replicas(2)
            _wait_ready(serve_url)
            sequential(serve_url + "/recommend", 40, fresh=False)  # both replicas warm
            runs = [("proxy", serve_url, 0.0), ("proxy", serve_url, 1.0)]
            if balancer is not None:
                runs.append(("HAProxy", balancer.url, 0.0))
            for path, url, think in runs:
                fleet[(path, think)] = kill_under_clients(url, KILL_CLIENTS, 30.0 if args.quick else 45.0, 5.0, think)
                print(f"kill, 1 of 2 replicas, {path}, pause {think:g} s: {fleet[(path, think)]}", flush=True)
                _wait_until_replicas(2)
                sequential(url + "/recommend", 40, fresh=False)  # the new replica warm too
    finally:
        if balancer is not None:
            balancer.stop()
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()

    print(f"\nPOST /recommend on loopback, proxy {'as Serve ships it' if args.no_guard else 'guarded'} "
          f"({os.cpu_count()} CPUs, load average {load_before:.1f} before / "
          f"{os.getloadavg()[0]:.1f} after, synthetic store of {len(list(store.rglob('*.parquet')))} files)")
    if rows:
        paths = [n for n in rows[0][1] if n != "uvicorn"]
        print(f"{'figure, one replica':<48} " + " ".join(f"{n:>13}" for n in [*paths, "uvicorn"])
              + " " + " ".join(f"{n + '/uvicorn':>20}" for n in paths))
        for name, values in rows:
            b = values["uvicorn"]
            print(f"{name:<48} " + " ".join(f"{_fmt(values[n]):>13}" for n in [*paths, "uvicorn"]) + " "
                  + " ".join(f"{_fmt(values[n] / b if b else float('nan'), 'x'):>20}" for n in paths))
    for k in kills:
        print(f"replica killed under {KILL_QPS:.0f} QPS, {k['replicas']} replica(s): first answer after "
              f"{_fmt(k['first_answer_after_kill_ms'], ' ms')}, all answers under SLO again after "
              f"{_fmt(k['back_under_slo_after_ms'], ' ms')}, {k['failed']} of {k['requests']} requests failed "
              f"{k['failures'] or ''}, slowest {_fmt(k['max_latency_ms'], ' ms')}")
    if fleet or cold:
        print(f"\n{'figure (issue #11)':<64} {'measured':>10} {'baseline':>10}")
    for (path, think), k in fleet.items():
        load = "back to back" if think == 0 else f"pausing ~{think:g} s"
        print(f"{f'1 of 2 replicas killed, 20 clients {load}, {path}: failed':<64} {k['failed']:>10} "
              f"{k['in_flight_at_death']:>10}   (baseline: requests in flight when it died)")
        print(f"{'  of them sent after the replica was dead':<64} {k['failed_sent_after_death']:>10} {0:>10}")
        print(f"{'  time until the p99 (5 s windows) < 100 ms for good (s)':<64} "
              f"{_fmt(k['back_under_slo_after_s']):>10} "
              f"{_fmt(RECOVERY_GOAL_S):>10}   (goal; p99 before the kill {_fmt(k['p99_before_kill_ms'])} ms, "
              f"{k['requests']} requests)")
    if cold:
        print(f"{f'{FIRST_REQUESTS} concurrent first requests to a new replica, p99 (ms)':<64} "
              f"{_fmt(cold['cold_p99_median_ms']):>10} {_fmt(2 * cold['warm_p99_median_ms']):>10}   "
              f"(baseline: 2 x warm p99 {_fmt(cold['warm_p99_median_ms'])} ms; "
              f"medians of {len(cold['cold_p99_ms'])} and {len(cold['warm_p99_ms'])} rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": [{"figure": n, **v} for n, v in rows], "kills": kills,
            "replica_killed_under_clients": {f"{p}, pause {t:g} s": k for (p, t), k in fleet.items()},
            "first_requests": cold}, indent=2, default=str))


def ratios(urls: dict[str, str], args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    """Each Serve path (the proxy; a replica's own port) against plain uvicorn: sequential
    latencies and the highest rate under the SLO."""
    seq_cached = sequential_interleaved(urls, args.seq, fresh=False)
    seq_fresh = sequential_interleaved(urls, max(args.seq // 4, 12), fresh=True)
    for name in urls:
        print(f"{name}: sequential cached p50 {seq_cached[name].p50:.2f} ms p99 {seq_cached[name].p99:.2f} ms; "
              f"fresh solve p50 {seq_fresh[name].p50:.1f} ms p99 {seq_fresh[name].p99:.1f} ms", flush=True)
    max_cached = step_rates(urls, args.rates, args.step_s, False, "cached")
    # Longer steps at the low rates of fresh solves, so that a p99 rests on more than a handful.
    max_fresh = step_rates(urls, args.fresh_rates, 2 * args.step_s, True, "fresh solve")
    def each(runs: dict[str, Any], pick: Any) -> dict[str, float]:
        return {name: pick(runs[name]) for name in urls}

    return [
        ("sequential p50, cached answer (ms)", each(seq_cached, lambda r: r.p50)),
        ("sequential p99, cached answer (ms)", each(seq_cached, lambda r: r.p99)),
        ("sequential p50, fresh MILP solve (ms)", each(seq_fresh, lambda r: r.p50)),
        ("sequential p99, fresh MILP solve (ms)", each(seq_fresh, lambda r: r.p99)),
        (f"max offered QPS with p99 < {SLO_MS:.0f} ms, cached", max_cached),
        (f"max offered QPS with p99 < {SLO_MS:.0f} ms, fresh solve", max_fresh),
    ]


def _wait_until_replicas(n: int, timeout: float = 90) -> None:
    from ray import serve

    from serve.app import APP_NAME, DEPLOYMENT_NAME

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = serve.status().applications[APP_NAME]
        dep = st.deployments[DEPLOYMENT_NAME]
        if st.status == "RUNNING" and dep.replica_states.get("RUNNING", 0) == n and len(dep.replica_states) == 1:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Serve did not reach {n} running replicas in {timeout} s")


if __name__ == "__main__":
    main()
