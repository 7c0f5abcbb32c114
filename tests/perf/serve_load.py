"""Load on POST /recommend over loopback: Ray Serve (one replica) beside the same FastAPI app served
by plain uvicorn in the same run, plus what happens when the replica is killed under load.

    python tests/perf/serve_load.py                 # ~4 minutes on a 2-core machine
    python tests/perf/serve_load.py --quick         # shorter steps, for a smoke run

Figures (each for Serve and for the uvicorn baseline, and their ratio):
  * sequential latency p50/p99 (one client, keep-alive) of a cached answer and of a fresh solve;
  * the highest offered rate whose p99 stays under the SLO (100 ms), open loop: Poisson arrivals
    at a fixed rate, latency measured from the scheduled send time so that a slow server cannot
    hide queueing (no coordinated omission);
  * replica killed under a steady load: time until the endpoint answers again, failed requests,
    for one replica (outage until Serve replaces it) and for two (fail-over).
The data is synthetic (tests/fixtures/service_data.py): the figures are about the service, not about hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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


def _fmt(x: float, unit: str = "") -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.1f}{unit}" if abs(x) < 1000 else f"{x:,.0f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short steps (smoke run)")
    ap.add_argument("--skip-kill", action="store_true")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--uvicorn-server", nargs=2, metavar=("PORT", "RESULTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.uvicorn_server:
        uvicorn_main(int(args.uvicorn_server[0]), args.uvicorn_server[1])
        return
    args.step_s = 2.0 if args.quick else 4.0
    args.seq = 60 if args.quick else 200
    args.rates = [25, 50, 75, 100, 150, 200, 300, 400, 600, 800] if not args.quick else [50, 100, 200, 400]
    args.fresh_rates = [2, 4, 8, 12, 16, 24, 32] if not args.quick else [4, 8, 16]

    from tests.fixtures.service_data import write_synthetic_store

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    store = tmp / "results"
    write_synthetic_store(store)

    # Both servers run side by side and are measured in turn: the baseline is plain uvicorn in
    # its own process (as the Serve replica is), serving the same FastAPI app and ServiceCore.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    from serve.app import APP_NAME, build_app

    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--uvicorn-server", str(port), str(store)], cwd=ROOT)
    ray.init(address="local", include_dashboard=False, num_cpus=4, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    kills: list[dict[str, Any]] = []
    try:
        sport = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": sport})
        app_args = {"results_uri": str(store), "num_replicas": 1, "num_cpus": 1}
        serve.run(build_app(app_args), name=APP_NAME, route_prefix="/")
        urls = {"Serve": f"http://127.0.0.1:{sport}", "uvicorn": f"http://127.0.0.1:{port}"}
        for url in urls.values():
            _wait_ready(url)
            sequential(url + "/recommend", 20, fresh=False)  # warm-up: first solve, connection
            sequential(url + "/recommend", 5, fresh=True, offset=-1000)
        seq_cached = sequential_interleaved(urls, args.seq, fresh=False)
        seq_fresh = sequential_interleaved(urls, max(args.seq // 4, 12), fresh=True)
        for name in urls:
            print(f"{name}: sequential cached p50 {seq_cached[name].p50:.2f} ms p99 {seq_cached[name].p99:.2f} ms; "
                  f"fresh solve p50 {seq_fresh[name].p50:.1f} ms p99 {seq_fresh[name].p99:.1f} ms", flush=True)
        max_cached = step_rates(urls, args.rates, args.step_s, False, "cached")
        # Longer steps at the low rates of fresh solves, so that a p99 rests on more than a handful.
        max_fresh = step_rates(urls, args.fresh_rates, 2 * args.step_s, True, "fresh solve")
        proc.terminate()
        if not args.skip_kill:
            serve_url = urls["Serve"]
            # One replica: an outage until Serve has started a new one, then a backlog to drain.
            kills.append(kill_under_load(serve_url, 1, KILL_QPS, 20.0 if args.quick else 40.0, 3.0))
            print(f"kill, 1 replica: {kills[-1]}", flush=True)
            # Two replicas: the proxy fails over to the survivor.
            serve.run(build_app({**app_args, "num_replicas": 2, "num_cpus": 0.5}), name=APP_NAME, route_prefix="/")
            _wait_until_replicas(2)
            _wait_ready(serve_url)
            sequential(serve_url + "/recommend", 40, fresh=False)  # both replicas warm
            kills.append(kill_under_load(serve_url, 2, KILL_QPS, 15.0 if args.quick else 20.0, 3.0))
            print(f"kill, 2 replicas: {kills[-1]}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()

    srv = {"seq_cached": seq_cached["Serve"], "seq_fresh": seq_fresh["Serve"], "max_cached": max_cached["Serve"],
           "max_fresh": max_fresh["Serve"]}
    base = {"seq_cached": seq_cached["uvicorn"], "seq_fresh": seq_fresh["uvicorn"],
            "max_cached": max_cached["uvicorn"], "max_fresh": max_fresh["uvicorn"]}
    rows = [
        ("sequential p50, cached answer (ms)", srv["seq_cached"].p50, base["seq_cached"].p50),
        ("sequential p99, cached answer (ms)", srv["seq_cached"].p99, base["seq_cached"].p99),
        ("sequential p50, fresh MILP solve (ms)", srv["seq_fresh"].p50, base["seq_fresh"].p50),
        ("sequential p99, fresh MILP solve (ms)", srv["seq_fresh"].p99, base["seq_fresh"].p99),
        (f"max offered QPS with p99 < {SLO_MS:.0f} ms, cached", srv["max_cached"], base["max_cached"]),
        (f"max offered QPS with p99 < {SLO_MS:.0f} ms, fresh solve", srv["max_fresh"], base["max_fresh"]),
    ]
    print("\nPOST /recommend on loopback, one replica vs the same app on plain uvicorn "
          f"({os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after, "
          f"synthetic store of {len(list(store.rglob('*.parquet')))} files)")
    print(f"{'figure':<48} {'Serve':>10} {'uvicorn':>10} {'Serve/uvicorn':>14}")
    for name, s, b in rows:
        ratio = s / b if b else float("nan")
        print(f"{name:<48} {_fmt(s):>10} {_fmt(b):>10} {_fmt(ratio, 'x'):>14}")
    for k in kills:
        print(f"replica killed under {KILL_QPS:.0f} QPS, {k['replicas']} replica(s): first answer after "
              f"{_fmt(k['first_answer_after_kill_ms'], ' ms')}, all answers under SLO again after "
              f"{_fmt(k['back_under_slo_after_ms'], ' ms')}, {k['failed']} of {k['requests']} requests failed "
              f"{k['failures'] or ''}, slowest {_fmt(k['max_latency_ms'], ' ms')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": [{"figure": n, "serve": s, "uvicorn": b} for n, s, b in rows], "kills": kills}, indent=2))


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
