"""How much does benchmatch's LLM client add to what it measures? TTFT and ITL as the harness sees
them (client side, benchmarks/llm) beside the server's own timings of the same requests, in one run.

The server is tests/fixtures/openai_server.py (uvicorn + the gpt2 asset, random weights) in its
own process, pinned to the last CPU; the client runs on the others. The server times each request
from the moment its handler starts to each chunk it writes; the client from the moment it sends
to each chunk it reads. Goal (issue #13): within 5% at p50 and p99, for TTFT and ITL.

Run: `python tests/perf/llm_harness_overhead.py [--layers 6] [--requests 24] [--rate 1.5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.llm.endpoint import OpenAIEndpoint  # noqa: E402
from benchmarks.llm.harness import SLO, measure_curve  # noqa: E402
from benchmarks.llm.workload import LengthDist, LLMWorkload  # noqa: E402
from cluster.local import free_port  # noqa: E402
from tests.perf.perf_common import machine_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=6, help="GPT-2 layers of the served model (hidden 768)")
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--rate", type=float, default=1.5, help="offered requests/s")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=32)
    a = ap.parse_args()
    print(machine_line())
    cpus = sorted(os.sched_getaffinity(0))
    port = free_port()
    server_cmd = [sys.executable, "-m", "tests.fixtures.openai_server", "--port", str(port), "--layers", str(a.layers),
                  "--hidden", "768", "--heads", "12", "--vocab", "50257", "--max-num-seqs", "4"]
    if len(cpus) > 1:
        server_cmd = ["taskset", "-c", str(cpus[-1]), *server_cmd]
        os.sched_setaffinity(0, cpus[:-1])
    proc = subprocess.Popen(server_cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{url}/v1/models", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        w = LLMWorkload(LengthDist(a.input_len), LengthDist(a.output_len), num_requests=a.requests, seed=0)
        ep = OpenAIEndpoint(f"{url}/v1", "tiny-gpt2")
        m = asyncio.run(measure_curve(ep, w, SLO(), rates=[a.rate], warmup=2))
        server = requests.get(f"{url}/timings", timeout=10).json()[2 + a.requests:]  # the run at `rate`
        client = m.points[0].records
        ok = [r for r in client if r.ok]
        c_ttft, s_ttft = [r.ttft_ms for r in ok], [t["ttft_ms"] for t in server]
        c_itl, s_itl = [g for r in ok for g in r.itls_ms()], [g for t in server for g in t["itls_ms"]]
        print(f"GPT-2 ({a.layers} layers, hidden 768), {len(ok)}/{len(client)} requests at {a.rate:g}/s, "
              f"prompt {a.input_len}, output {a.output_len} tokens; server pinned to CPU {cpus[-1]}")
        print(f"{'figure':<10} {'client (benchmatch)':>20} {'server (baseline)':>18} {'difference':>11}  goal")
        for name, c, s in (("TTFT", c_ttft, s_ttft), ("ITL", c_itl, s_itl)):
            for q in (50, 99):
                cv, sv = float(np.percentile(c, q)), float(np.percentile(s, q))
                diff = (cv - sv) / sv
                print(f"{name} p{q:<5} {cv:>17.2f} ms {sv:>15.2f} ms {diff:>+10.1%}  within 5%: "
                      f"{'yes' if abs(diff) <= 0.05 else 'no'}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
