"""Synthetic matching instances for tests and tests/perf/milp_scaling.py.

The numbers are random draws from a seeded generator, shaped like a real candidate table
(throughput grows with batch size and with the hardware's speed, so does latency per batch).
They exercise the solver; they are never shown to a user as a measurement or a recommendation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from matcher.requirements import Requirements


def random_candidates(
    rng: np.random.Generator,
    n_hardware: int,
    n_configs: int,
    *,
    with_energy: bool = False,
    inventory: int | None = None,
    missing_accuracy: float = 0.0,
) -> pd.DataFrame:
    """A full grid of n_hardware x n_configs candidates."""
    hw_speed = rng.uniform(0.5, 8.0, n_hardware)
    hw_price = hw_speed * rng.uniform(0.05, 0.2, n_hardware)  # faster costs more, not linearly
    hw_power = hw_speed * rng.uniform(20, 60, n_hardware)
    batch = rng.choice([1, 2, 4, 8, 16, 32, 64], n_configs)
    dtype = rng.choice(["fp32", "bf16"], n_configs)
    rows = []
    for h in range(n_hardware):
        for c in range(n_configs):
            speed = hw_speed[h] * (1.6 if dtype[c] == "bf16" else 1.0)
            thr = speed * 50 * batch[c] ** 0.6 * rng.uniform(0.8, 1.2)
            row = {
                "hardware": f"hw{h:03d}",
                "price_per_hour_usd": round(float(hw_price[h]), 5),
                "latency_p99_ms": float(1000 * batch[c] / thr * rng.uniform(1.1, 1.6)),
                "throughput_qps": float(thr),
                "accuracy": float(0.9 - (0.01 if dtype[c] == "bf16" else 0) + rng.normal(0, 0.005)),
                "devices": 1,
                "cfg_batch_size": int(batch[c]),
                "cfg_dtype": str(dtype[c]),
                "cfg_variant": c,  # keeps every configuration distinct
            }
            if with_energy:
                row["power_w"] = float(hw_power[h] * rng.uniform(0.9, 1.1))
                row["energy_per_sample_j"] = row["power_w"] / thr
            if inventory is not None:
                row["inventory"] = inventory
            if missing_accuracy and rng.random() < missing_accuracy:
                row["accuracy"] = np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def random_requirements(rng: np.random.Generator, cands: pd.DataFrame, *, objective: str = "cost",
                        top_k: int = 1, tight: float = 1.0) -> Requirements:
    """Requirements around the table's own numbers so that some instances are feasible and some
    are not. `tight` > 1 makes every constraint harder."""
    thr = cands["throughput_qps"].to_numpy()
    lat = cands["latency_p99_ms"].to_numpy()
    cons: dict = {"throughput_qps": float(np.quantile(thr, rng.uniform(0.5, 0.95)) * rng.uniform(1, 3) * tight)}
    if rng.random() < 0.7:
        cons["latency_p99_ms"] = float(np.quantile(lat, rng.uniform(0.2, 0.9)) / tight)
    if rng.random() < 0.4:
        cons["accuracy"] = float(np.clip(rng.uniform(0.88, 0.9) * tight, 0, 1))
    if rng.random() < 0.4:
        cons["budget_per_hour_usd"] = float(cands["price_per_hour_usd"].median() * rng.uniform(1, 6) / tight)
    if "power_w" in cands and rng.random() < 0.4:
        cons["max_power_w"] = float(cands["power_w"].median() * rng.uniform(1, 6) / tight)
    inventory = None
    if rng.random() < 0.4:
        hws = sorted(cands["hardware"].unique())
        pick = rng.choice(hws, size=max(1, len(hws) // 2), replace=False)
        inventory = {str(h): int(rng.integers(0, 4)) for h in pick}
    return Requirements(objective=objective, constraints=cons, top_k=top_k, inventory=inventory)


def synthetic_result_rows(
    hardware: tuple[str, ...] = ("local-1c", "local-2c"),
    batches: tuple[int, ...] = (1, 2, 4, 8),
    threads: tuple[int, ...] = (1, 2),
    *,
    repeats: int = 3,
    seed: int = 0,
    asset: str = "mlp",
    cores: dict[str, int] | None = None,
    scenarios: tuple[str, ...] = ("SingleStream", "MultiStream", "Offline"),
    with_accuracy: bool = True,
    with_energy: bool = False,
    noise: float = 0.03,
) -> pd.DataFrame:
    """Rows shaped like benchmarks/schema.py result rows (one per trial, repeat, scenario), with
    throughput ~ min(threads, cores) x sqrt(batch) and MultiStream latency = batch / throughput."""
    rng = np.random.default_rng(seed)
    cores = cores or {"local-1c": 1, "local-2c": 2, "aws-c7i.large": 2, "aws-c7i.2xlarge": 8}
    rows = []
    for hw in hardware:
        for b in batches:
            for th in threads:
                thr = 200.0 * min(th, cores.get(hw, 1)) * b**0.5
                for r in range(repeats):
                    for scen in scenarios:
                        f = float(rng.normal(1.0, noise))
                        row = {
                            "sweep_id": "synthetic", "trial_id": f"{asset}-{hw}-b{b}-t{th}", "repeat": r,
                            "scenario": scen, "asset": asset, "task": "infer", "status": "ok", "error": "",
                            "hardware": hw, "accelerator_type": "cpu", "device_count": 0,
                            "cfg_batch_size": b, "cfg_threads": th, "parameters": 100_000,
                            "price_per_hour_usd": 0.1,
                        }
                        if scen == "SingleStream":
                            row["latency_p99_ms"] = 1000.0 / thr * 1.2 * f
                        elif scen == "MultiStream":
                            row["latency_p99_ms"] = 1000.0 * b / thr * 1.3 * f
                        elif scen == "Offline":
                            row["throughput_samples_per_s"] = thr * f
                            if with_energy:
                                row["avg_power_w"] = 15.0 * min(th, cores.get(hw, 1)) * f
                                row["energy_per_sample_j"] = row["avg_power_w"] / row["throughput_samples_per_s"]
                        if with_accuracy:
                            row["accuracy"] = 0.9
                        rows.append(row)
    return pd.DataFrame(rows)
