"""Synthetic data for the service's tests and tests/perf/serve_load.py.

The rows have the shape of benchmarks/schema.py result rows, but every number is made up from a
simple speed model (latency grows with batch size, throughput with the hardware's speed). They
exercise the HTTP service; they are never a measurement and never a recommendation to a user.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

# hardware name (configs/hardware.yaml) -> (accelerator type, relative speed)
HARDWARE: dict[str, tuple[str, float]] = {
    "local-1c": ("cpu", 1.0),
    "local-2c": ("cpu", 1.9),
    "aws-g4dn.xlarge": ("T4", 12.0),
}
ASSETS: dict[str, float] = {"synthetic-mlp": 0.91, "synthetic-cnn": 0.87}  # asset -> accuracy


def synthetic_rows(asset: str, hardware: str, batch_size: int, repeat: int, sweep: str = "synthetic") -> list[dict[str, Any]]:
    """MultiStream and Offline rows of one (trial, repeat): what a sweep would write."""
    accel, speed = HARDWARE[hardware]
    accuracy = ASSETS.get(asset, 0.9)
    jitter = 1.0 + 0.04 * repeat
    p99 = 4.0 * batch_size**0.7 / speed * jitter
    base = {
        "sweep_id": sweep,
        "trial_id": f"{asset}-{hardware}-b{batch_size}",
        "repeat": repeat,
        "asset": asset,
        "task": "infer",
        "status": "ok",
        "error": "",
        "hardware": hardware,
        "accelerator_type": accel,
        "device_count": 0 if accel == "cpu" else 1,
        "cfg_batch_size": batch_size,
        "accuracy": accuracy,
        "energy_source": "none",
        "seed": 1000 + repeat,
        "start_time": f"2025-01-01T00:{repeat:02d}:00+00:00",
        "duration_s": 3.0,
    }
    return [
        {**base, "scenario": "MultiStream", "latency_p50_ms": p99 * 0.7, "latency_p99_ms": p99,
         "samples_per_query": batch_size},
        {**base, "scenario": "Offline", "throughput_samples_per_s": 180.0 * batch_size**0.5 * speed / jitter},
    ]


def write_synthetic_store(uri: str | os.PathLike[str], assets: tuple[str, ...] = tuple(ASSETS),
                          batch_sizes: tuple[int, ...] = (1, 8), repeats: int = 2) -> int:
    """Fill a results store; returns the number of files written."""
    from benchmarks.store import ResultsStore

    store = ResultsStore(uri)
    n = 0
    for asset in assets:
        for hw in HARDWARE:
            for b in batch_sizes:
                for r in range(repeats):
                    store.write(synthetic_rows(asset, hw, b, r))
                    n += 1
    return n


def write_synthetic_candidates(path: str | os.PathLike[str]) -> Path:
    """A candidate CSV (matcher/candidates.py columns; batch_size becomes cfg_batch_size)."""
    path = Path(path)
    cols = ["hardware", "price_per_hour_usd", "latency_p99_ms", "throughput_qps", "accuracy", "inventory",
            "batch_size"]
    prices = {"local-1c": 0.0446, "local-2c": 0.08925, "aws-g4dn.xlarge": 0.526}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for hw, (_accel, speed) in HARDWARE.items():
            for b in (1, 8):
                w.writerow([hw, prices[hw], round(4.0 * b**0.7 / speed, 4), round(180.0 * b**0.5 * speed, 3),
                            0.9, 4, b])
    return path
