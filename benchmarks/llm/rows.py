"""An LLM rate curve as result rows (results/schema.py): an Offline row (everything sent at once)
and a Server row (the curve, the highest rate within the SLO, and the figures at that rate).

A "sample" of these rows is a request (`sample_unit` = request): throughput_samples_per_s is
requests/s and latency_* the end-to-end request latency, so they are never compared with the
per-sample figures of a classifier.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Mapping
from typing import Any

from benchmarks.environment import static_environment, window_environment
from benchmarks.llm.harness import LLMMeasurement, RateRun
from benchmarks.sensors import utc_now_iso
from results.ids import trial_id
from results.schema import BY_NAME, COLUMN_NAMES, CONFIG_PREFIX

SAMPLE_UNIT = "request"


def _base(ids: Mapping[str, Any], config: Mapping[str, Any], scenario: str) -> dict[str, Any]:
    row: dict[str, Any] = {n: ("" if BY_NAME[n].dtype == "str" else None) for n in COLUMN_NAMES}
    row.update(static_environment())
    row.update({k: v for k, v in ids.items() if k in BY_NAME})
    row.update({"scenario": scenario, "task": "infer", "status": "ok", "error": "", "sample_unit": SAMPLE_UNIT,
                "hostname": socket.gethostname(), "energy_source": "none"})
    row["trial_id"] = trial_id(row["asset"], "infer", row["hardware"], config)
    for k, v in config.items():
        row[f"{CONFIG_PREFIX}{k}"] = v
    return row


def _fill(row: dict[str, Any], run: RateRun, m: LLMMeasurement) -> dict[str, Any]:
    s = run.summary(m.slo)
    row.update({k: v for k, v in s.items() if k in BY_NAME})
    w = run.window
    row["start_time"] = getattr(w, "start_time", "") or utc_now_iso()
    if w is not None:
        row.update(window_environment(w, []))
        row.update({"cpu_util_pct": w.cpu_util_pct, "peak_memory_mb": w.peak_memory_mb,
                    "energy_j": w.energy_j, "avg_power_w": w.avg_power_w, "energy_source": w.energy_source})
        out_tokens = (s["output_tokens_mean"] or 0) * s["completed_requests"]
        if w.energy_j is not None and out_tokens:
            row["energy_per_output_token_j"] = w.energy_j / out_tokens
        if w.energy_j is not None and s["completed_requests"]:
            row["energy_per_sample_j"] = w.energy_j / s["completed_requests"]
    price = row.get("price_per_hour_usd")
    if price is not None and run.window_s > 0:
        row["cost_usd"] = run.window_s / 3600 * price
    if not math.isinf(run.offered_rps):
        row["target_qps"] = run.offered_rps
    flags = []
    if s["failed_requests"]:
        flags.append("requests_failed")
    if row.get("env_background_load"):
        flags.append("background_load")
    row["flags"] = ",".join(flags)
    return row


def measurement_rows(m: LLMMeasurement, ids: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`ids`: sweep_id, repeat, seed, asset, asset_ref, hardware, accelerator_type, price_per_hour_usd,
    num_threads, cpu_set, ... (any result-row column); `config`: the configuration (cfg_ columns)."""
    rows = [_fill(_base(ids, config, "Offline"), m.offline, m)]
    run = m.server_run()
    if run is not None:
        server = _fill(_base(ids, config, "Server"), run, m)
        server["llm_curve"] = json.dumps(m.curve(), allow_nan=False)
        # missing when no measured rate held the SLO: the row's figures are then the lowest rate's
        server["max_rate_within_slo_rps"] = m.max_rate_within_slo
        rows.append(server)
    return rows
