"""`benchmatch llm-bench`: measure a rate curve of an LLM server (or a generative asset in-process)
and store it as result rows, as many repeats as asked.

The rows land in the results store beside every other measurement, so `train`, `recommend` and
`report` read them; the hardware must be in the catalog (its price turns rates into $/1M tokens).
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.llm.endpoint import OpenAIEndpoint
from benchmarks.llm.harness import DEFAULT_FRACTIONS, SLO, LLMMeasurement, measure_curve
from benchmarks.llm.local import LocalGenerator
from benchmarks.llm.rows import measurement_rows
from benchmarks.llm.workload import LLMWorkload
from benchmarks.sensors import MeasurementWindow
from cluster.errors import BenchmatchError
from cluster.hardware import HardwareSpec


class LLMBenchError(BenchmatchError, ValueError):
    """An llm-bench request that cannot run as given; the message names the option."""


@dataclass
class LLMBench:
    """One `llm-bench` invocation: what to measure, where, under which SLO."""

    hardware: HardwareSpec
    workload: LLMWorkload
    slo: SLO
    endpoint: str | None = None  # an OpenAI-compatible base URL; None: the asset in-process
    model: str | None = None  # the served model's id (endpoint) ...
    asset: str | None = None  # ... or a generative asset reference (in-process)
    config: dict[str, Any] = field(default_factory=dict)  # asset config, or what you tell of your server
    api: str = "completions"
    prompt_format: str = "tokens"
    max_num_seqs: int = 4
    rates: list[float] | None = None
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    burstiness: float = 1.0
    repeats: int = 1
    sweep_id: str = "llm-bench"
    timeout_s: float = 600.0
    metrics_port: int | None = None  # serve live metrics on 127.0.0.1:PORT while measuring (0: any free port)
    metrics_linger_s: float = 0.0  # keep serving them this long after the last run (a last scrape)
    loadgen: bool = False  # in-process only: LoadGen (token-latency mode) issues the requests
    loadgen_min_duration_ms: int = 2000
    log_dir: str | None = None  # LoadGen's logs (default: a folder under the results store)
    api_key_env: str | None = None  # the environment variable holding the endpoint's API key (opt-in)

    def __post_init__(self) -> None:
        if (self.endpoint is None) == (self.asset is None):
            raise LLMBenchError("give either --endpoint URL (with --model) or --asset NAME, not both or neither")
        if self.endpoint is not None and not self.model:
            raise LLMBenchError("--endpoint needs --model: the model id the server serves (see GET /v1/models)")
        if self.loadgen and self.endpoint is not None:
            raise LLMBenchError("--loadgen drives an in-process asset (LoadGen calls the model itself); an endpoint "
                                "is driven by the asyncio client")
        if self.loadgen and self.metrics_port is not None:
            raise LLMBenchError("--metrics-port is not served during --loadgen runs; drop one of them")
        if self.loadgen and self.burstiness != 1.0:
            raise LLMBenchError("--burstiness does not apply to --loadgen: LoadGen's Server scenario sends Poisson arrivals")
        if isinstance(self.loadgen_min_duration_ms, bool) or not isinstance(self.loadgen_min_duration_ms, int) \
                or self.loadgen_min_duration_ms < 0:
            raise LLMBenchError(f"--loadgen-min-duration-ms must be an integer >= 0, got {self.loadgen_min_duration_ms!r}")
        if not (math.isfinite(self.metrics_linger_s) and self.metrics_linger_s >= 0):
            raise LLMBenchError(f"--metrics-linger must be a number of seconds >= 0, got {self.metrics_linger_s!r}")
        if self.endpoint is not None:
            try:  # the URL, API, prompt format and key, checked before anything runs
                OpenAIEndpoint(self.endpoint, self.model or "", api=self.api, prompt_format=self.prompt_format,
                               api_key_env=self.api_key_env)
            except ValueError as exc:
                raise LLMBenchError(f"--endpoint: {exc}") from exc
        if self.repeats < 1:
            raise LLMBenchError(f"--repeats must be >= 1, got {self.repeats}")
        if self.rates is not None and (not self.rates or any(not r > 0 for r in self.rates)):
            raise LLMBenchError(f"--rates must be positive requests/s, got {self.rates}")
        if not self.fractions or any(not 0 < f <= 1.5 for f in self.fractions):
            raise LLMBenchError(f"--fractions must be in (0, 1.5], got {list(self.fractions)}")
        if isinstance(self.max_num_seqs, bool) or not isinstance(self.max_num_seqs, int) or self.max_num_seqs < 1:
            raise LLMBenchError(f"--max-num-seqs must be a positive integer, got {self.max_num_seqs!r}")
        if not (isinstance(self.burstiness, int | float) and math.isfinite(self.burstiness) and self.burstiness > 0):
            raise LLMBenchError(f"--burstiness must be a positive number (1: Poisson), got {self.burstiness!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise LLMBenchError(f"--timeout must be a positive number of seconds, got {self.timeout_s!r}")
        if self.rates is not None and any(not math.isfinite(r) for r in self.rates):
            raise LLMBenchError(f"--rates must be finite requests/s (the all-at-once run is always made), got {self.rates}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise LLMBenchError(f"--metrics-port must be 0..65535, got {self.metrics_port}")


def asset_label(model: str) -> str:
    """A served model's id as its asset name, unchanged (`meta-llama/Llama-3.1-8B-Instruct`): the
    vLLM, GuideLLM and AIPerf imports name it the same way, so their rows and llm-bench's join."""
    label = "".join(ch for ch in model.strip() if ch.isprintable())[:200]
    if not label:
        raise LLMBenchError(f"--model {model!r}: give the model id the server serves (see GET /v1/models)")
    return label


def _pin(hw: HardwareSpec, config: Mapping[str, Any]) -> tuple[list[int] | None, int]:
    """An emulated profile's CPUs (the last k of this process's mask, as trials are) and threads."""
    threads = int(config.get("threads", hw.cpu_cores or 1))
    if threads < 1:
        raise LLMBenchError(f"threads must be >= 1, got {threads}")
    if hw.local and threads > hw.cpu_cores:
        raise LLMBenchError(f"threads={threads} exceeds the {hw.cpu_cores} cores that profile {hw.name!r} emulates")
    if not hw.local or not hasattr(os, "sched_getaffinity"):
        return None, threads
    cpus = sorted(os.sched_getaffinity(0))
    if hw.cpu_cores > len(cpus):
        raise LLMBenchError(f"profile {hw.name!r} emulates {hw.cpu_cores} cores; this machine offers {len(cpus)}")
    return cpus[-hw.cpu_cores:], threads


def run(bench: LLMBench, say: Callable[[str], None] = print) -> tuple[list[LLMMeasurement], list[list[dict[str, Any]]]]:
    """Measure `repeats` curves; returns them and the rows of each repeat (not yet stored)."""
    hw = bench.hardware
    ids: dict[str, Any] = {"sweep_id": bench.sweep_id, "hardware": hw.name, "accelerator_type": hw.accelerator_type,
                           "price_per_hour_usd": hw.price_per_hour_usd}
    window = None
    live = None
    prev_threads, prev_cpus = torch.get_num_threads(), (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None)
    try:
        if bench.endpoint is not None:
            ids.update(asset=asset_label(bench.model or ""), asset_ref=f"openai:{bench.endpoint}#{bench.model}",
                       device_count=hw.device_count)

            def make_sut() -> Any:
                return OpenAIEndpoint(bench.endpoint or "", bench.model or "", api=bench.api,
                                      prompt_format=bench.prompt_format, timeout_s=bench.timeout_s,
                                      api_key_env=bench.api_key_env)
            config = {"engine": "openai-http", "api": bench.api, **bench.config}
        else:
            from benchmarks.assets import get_asset, resolve_asset

            try:
                resolved = resolve_asset(bench.asset or "")
                asset = get_asset(resolved.ref)
                cpus, threads = _pin(hw, bench.config)
                if not callable(getattr(asset, "prefill", None)) or not callable(getattr(asset, "decode", None)):
                    raise ValueError("it is not generative: it needs prefill(model, prompt_ids) and "
                                     "decode(model, token, state) (see benchmarks/assets/gpt2.py)")
                if cpus is not None:
                    os.sched_setaffinity(0, cpus)
                torch.set_num_threads(threads)
                model = asset.build(dict(bench.config)).eval()
            except (ValueError, TypeError) as exc:
                raise LLMBenchError(f"--asset {bench.asset!r}: {exc}") from exc
            ids.update(asset=resolved.name, asset_ref=resolved.ref, num_threads=threads, device_count=0,
                       cpu_set=",".join(map(str, cpus)) if cpus is not None else "",
                       parameters=sum(p.numel() for p in model.parameters()))

            def make_sut() -> Any:
                return LocalGenerator(asset, model, max_num_seqs=bench.max_num_seqs)
            config = {"engine": "local-eager", "max_num_seqs": bench.max_num_seqs, **bench.config}
            window = MeasurementWindow  # the server is this process: its CPU, energy and neighbours count
        config.update(bench.workload.describe())
        if bench.burstiness != 1.0:
            config["burstiness"] = bench.burstiness
        if bench.metrics_port is not None:
            from benchmarks.llm.live import LiveLLMMetrics

            try:
                live = LiveLLMMetrics(bench.metrics_port, bench.sweep_id, ids["asset"], hw.name, bench.slo)
            except OSError as exc:
                raise LLMBenchError(f"--metrics-port {bench.metrics_port}: cannot listen on 127.0.0.1 ({exc}); "
                                    "pick a free port, or 0 for any") from exc
            say(f"live metrics on http://127.0.0.1:{live.port}/metrics")
        measurements, all_rows = [], []
        for rep in range(bench.repeats):
            workload = LLMWorkload(bench.workload.input_len, bench.workload.output_len, bench.workload.num_requests,
                                   bench.workload.seed + rep, bench.workload.token_low, bench.workload.token_high)
            say(f"repeat {rep + 1}/{bench.repeats} on {hw.name}:")
            if bench.loadgen:
                from benchmarks.llm.loadgen_tokens import apply_verdicts, measure_curve_loadgen

                logs = Path(bench.log_dir or tempfile.mkdtemp(prefix="benchmatch-llm-loadgen-")) / f"repeat-{rep}"
                m, verdicts = measure_curve_loadgen(make_sut(), workload, bench.slo, bench.fractions,
                                                    bench.rates, logs, bench.loadgen_min_duration_ms,
                                                    say=lambda msg: say("  " + msg), timeout_s=bench.timeout_s)
                rows = measurement_rows(m, {**ids, "repeat": rep, "seed": workload.seed}, config)
                apply_verdicts(rows, m, verdicts)
                measurements.append(m)
                all_rows.append(rows)
                continue
            m = asyncio.run(measure_curve(make_sut(), workload, bench.slo, bench.rates, bench.fractions,
                                          bench.burstiness, bench.timeout_s, window=window,
                                          progress=lambda msg: say("  " + msg),
                                          observe=live.observe if live else None,
                                          on_rate=live.rate if live else None))
            measurements.append(m)
            all_rows.append(measurement_rows(m, {**ids, "repeat": rep, "seed": workload.seed}, config))
        if live is not None:
            time.sleep(bench.metrics_linger_s)
        return measurements, all_rows
    finally:
        if live is not None:
            live.close()
        torch.set_num_threads(prev_threads)
        if prev_cpus is not None:
            os.sched_setaffinity(0, prev_cpus)


def store_rows(store: Any, rows_per_repeat: list[list[dict[str, Any]]]) -> list[str]:
    """Write each repeat's rows as the next repeats of its trial: a second `llm-bench` of the same
    (asset, hardware, configuration) in the same sweep adds repeats, never replaces the first."""
    paths = []
    for rows in rows_per_repeat:
        tid, sweep = rows[0]["trial_id"], rows[0]["sweep_id"]
        taken = {r for t, r in store.done(sweep) if t == tid}
        repeat = int(rows[0]["repeat"])
        while repeat in taken:
            repeat += 1
        for row in rows:
            row["repeat"] = repeat
        paths.append(store.write(rows))
    return paths
