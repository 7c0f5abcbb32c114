"""`benchmatch llm-bench`: measure a rate curve of an LLM server (or a generative asset in-process)
and store it as result rows, as many repeats as asked.

The rows land in the results store beside every other measurement, so `train`, `recommend` and
`report` read them; the hardware must be in the catalog (its price turns rates into $/1M tokens).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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

    def __post_init__(self) -> None:
        if (self.endpoint is None) == (self.asset is None):
            raise LLMBenchError("give either --endpoint URL (with --model) or --asset NAME, not both or neither")
        if self.endpoint is not None and not self.model:
            raise LLMBenchError("--endpoint needs --model: the model id the server serves (see GET /v1/models)")
        if self.repeats < 1:
            raise LLMBenchError(f"--repeats must be >= 1, got {self.repeats}")
        if self.rates is not None and (not self.rates or any(not r > 0 for r in self.rates)):
            raise LLMBenchError(f"--rates must be positive requests/s, got {self.rates}")
        if any(not 0 < f <= 1.5 for f in self.fractions):
            raise LLMBenchError(f"--fractions must be in (0, 1.5], got {list(self.fractions)}")


def asset_label(model: str) -> str:
    """A served model id as an asset name (results and answers): `org/model` -> `org--model`."""
    label = re.sub(r"[^A-Za-z0-9._-]", "-", model.replace("/", "--")).strip("-.")[:64]
    return label or "model"


def _pin(hw: HardwareSpec, config: Mapping[str, Any]) -> tuple[list[int] | None, int]:
    """An emulated profile's CPUs (the last k of this process's mask, as trials are) and threads."""
    threads = int(config.get("threads", hw.cpu_cores or 1))
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
                                      prompt_format=bench.prompt_format, timeout_s=bench.timeout_s)
            config = {"engine": "openai-http", "api": bench.api, **bench.config}
        else:
            from benchmarks.assets import get_asset, resolve_asset

            resolved = resolve_asset(bench.asset or "")
            asset = get_asset(resolved.ref)
            cpus, threads = _pin(hw, bench.config)
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            torch.set_num_threads(threads)
            model = asset.build(dict(bench.config)).eval()
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

            live = LiveLLMMetrics(bench.metrics_port, bench.sweep_id, ids["asset"], hw.name, bench.slo)
            say(f"live metrics on http://127.0.0.1:{live.port}/metrics")
        measurements, all_rows = [], []
        for rep in range(bench.repeats):
            workload = LLMWorkload(bench.workload.input_len, bench.workload.output_len, bench.workload.num_requests,
                                   bench.workload.seed + rep, bench.workload.token_low, bench.workload.token_high)
            say(f"repeat {rep + 1}/{bench.repeats} on {hw.name}:")
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
