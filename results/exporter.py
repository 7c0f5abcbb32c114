"""Result rows in other tools' layouts: an MLPerf Inference summary table and a generic CSV.

The other direction of results/importer.py: it produces the shipped examples from real measured
rows (configs/examples/README.md) and the round-trip tests; never numbers of its own. Read the
files back with the mappings in configs/mappings/.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from results.schema import CONFIG_PREFIX as CFG
from results.summary import ok_rows

# The columns of the summary table MLPerf Inference's submission checker writes (summary.csv).
MLPERF_COLUMNS = (
    "Organization", "Availability", "Division", "SystemType", "SystemName", "Platform", "Model", "MlperfModel",
    "Scenario", "Result", "Accuracy", "number_of_nodes", "host_processor_model_name", "host_processors_per_node",
    "host_processor_core_count", "accelerator_model_name", "accelerators_per_node", "Location", "framework",
    "operating_system", "notes", "compliance", "errors", "version", "inferred", "has_power", "Units",
)
# MLPerf's result per scenario: SingleStream p90 and MultiStream p99 latency, Offline samples/s,
# Server (latency-bounded) queries/s; power rows: Watts (Offline, Server), millijoules per query.
_MLPERF_RESULT = {"SingleStream": ("latency_p90_ms", "Latency (ms)"), "MultiStream": ("latency_p99_ms", "Latency (ms)"),
                  "Offline": ("throughput_samples_per_s", "Samples/s"), "Server": ("throughput_samples_per_s", "Queries/s")}


def _ok_infer(df: pd.DataFrame) -> pd.DataFrame:
    return ok_rows(df, "infer").sort_values(["hardware", "trial_id", "repeat", "scenario"], kind="stable")


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def export_mlperf_summary(df: Any, catalog: Mapping[str, Any] | None = None) -> Any:
    """Measured `infer` result rows as an MLPerf Inference summary table (MLPERF_COLUMNS), plus the
    configuration columns (cfg_ prefix dropped) and `repeat`, which MLPerf's table lacks because
    it fixes one configuration per system description. Read back with
    configs/mappings/mlperf-inference-summary.yaml."""
    rows = _ok_infer(df)
    cfg_cols = sorted(c for c in rows.columns if c.startswith(CFG) and rows[c].notna().any())
    out = []
    for _, r in rows.iterrows():
        scen = str(r["scenario"])
        if scen not in _MLPERF_RESULT:
            continue
        metric, units = _MLPERF_RESULT[scen]
        spec = (catalog or {}).get(str(r["hardware"]))
        acc = _num(r.get("accuracy"))
        base = {
            "Organization": "benchmatch", "Availability": "", "Division": "open", "SystemType": "",
            "SystemName": r["hardware"], "Platform": r["trial_id"], "Model": r["asset"], "MlperfModel": r["asset"],
            "Scenario": scen, "Accuracy": "" if acc is None else f"acc: {100 * acc!r}", "number_of_nodes": 1,
            "host_processor_model_name": r.get("env_cpu_model", ""), "host_processors_per_node": "",
            "host_processor_core_count": spec.cpu_cores if spec is not None else "",
            "accelerator_model_name": r.get("env_gpu_name", "") or "N/A",
            "accelerators_per_node": int(_num(r.get("device_count")) or 0), "Location": "",
            "framework": f"PyTorch {r.get('env_torch_version', '')}".strip(), "operating_system": "",
            "notes": f"exported by benchmatch from sweep {r['sweep_id']}", "compliance": "", "errors": "",
            "version": "", "inferred": 0, "Units": units,
        }
        extra = {c[len(CFG):]: r[c] for c in cfg_cols}
        extra["repeat"] = int(r["repeat"])
        power = _num(r.get("avg_power_w")) if scen in ("Offline", "Server") else \
            (_num(r.get("energy_per_sample_j")) if scen == "SingleStream" else None)
        value = _num(r.get(metric))
        if value is not None:
            out.append({**base, "Result": value, "has_power": power is not None, **extra})
        if power is not None:
            result = power if scen != "SingleStream" else power * 1000.0  # J/sample -> mJ per 1-sample query
            out.append({**base, "Result": result, "has_power": True,
                        "Units": "Watts" if scen != "SingleStream" else "millijoules", **extra})
    cols = list(MLPERF_COLUMNS) + [c[len(CFG):] for c in cfg_cols] + ["repeat"]
    return pd.DataFrame(out, columns=cols)


# The generic example layout: one row per (configuration, repeat, scenario), latencies in
# microseconds and accuracy in percent, to show unit conversion.
GENERIC_METRICS = {"latency_p50_ms": ("p50_us", 1e3), "latency_p90_ms": ("p90_us", 1e3),
                   "latency_p99_ms": ("p99_us", 1e3), "throughput_samples_per_s": ("samples_per_s", 1.0),
                   "accuracy": ("accuracy_pct", 100.0)}


def export_generic(df: Any) -> Any:
    """Measured `infer` rows in the layout of configs/examples/generic-results.csv (model, machine,
    configuration columns, repeat, scenario, p50_us, p90_us, p99_us, samples_per_s, accuracy_pct).
    Read back with configs/mappings/generic-csv.yaml."""
    rows = _ok_infer(df)
    cfg_cols = sorted(c for c in rows.columns if c.startswith(CFG) and rows[c].notna().any())
    out = []
    for _, r in rows.iterrows():
        row = {"model": r["asset"], "machine": r["hardware"], **{c[len(CFG):]: r[c] for c in cfg_cols},
               "repeat": int(r["repeat"]), "scenario": r["scenario"]}
        for metric, (name, factor) in GENERIC_METRICS.items():
            v = _num(r.get(metric))
            # 12 significant digits: exact for the measured values, without float noise (170.39000000000001)
            row[name] = None if v is None else float(f"{v * factor:.12g}")
        out.append(row)
    return pd.DataFrame(out)
