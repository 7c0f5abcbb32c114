"""The result row: every column benchmatch writes, with its type, unit and how it is obtained.

One row is one measured (trial, repeat, scenario). Hyperparameters are columns prefixed `cfg_`
(`cfg_batch_size`), so any reader tells configuration from metrics without a list. A metric that
could not be measured is missing (NaN/None), never 0. docs/results-schema.md is generated from
COLUMNS (`python -m results.schema > docs/results-schema.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_PREFIX = "cfg_"
KEY_COLUMNS = ("sweep_id", "trial_id", "repeat", "scenario")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "str" | "int" | "float" | "bool"
    unit: str
    how: str
    group: str


def _c(group: str, name: str, dtype: str, unit: str, how: str) -> Column:
    return Column(name, dtype, unit, how, group)


COLUMNS: tuple[Column, ...] = (
    _c("ids", "sweep_id", "str", "", "Name of the sweep (SweepSpec.name), stable across resumes."),
    _c("ids", "trial_id", "str", "", "Deterministic id of (asset, task, hardware, configuration): a hash, so a resumed sweep finds the trials already done."),
    _c("ids", "repeat", "int", "", "Repeat index 0..repeats-1; each repeat is measured afresh with seed = base seed + repeat."),
    _c("ids", "scenario", "str", "", "LoadGen scenario (SingleStream, MultiStream, Server, Offline) for `infer`; `train` for training."),
    _c("ids", "asset", "str", "", "The asset's own name (its `name` attribute, else the object's name): what models and answers call it."),
    _c("ids", "asset_ref", "str", "", "How the asset was loaded: a built-in name, `module:Object`, or the absolute `file.py:Object` (a sweep file for it can be written from this)."),
    _c("ids", "task", "str", "", "`train` or `infer`."),
    _c("ids", "status", "str", "", "`ok`, `failed` (the error column says why) or `skipped` (the configuration cannot run here, e.g. an engine without that precision; the error column says why). A failed or skipped trial still writes a row."),
    _c("ids", "error", "str", "", "The exception text of a failed trial; empty when ok."),
    _c("ids", "flags", "str", "", "Why an ok row is still not a trustworthy measurement, comma-separated: `loadgen_invalid`, `background_load`, `offline_below_singlestream` (benchmarks.core.row_flags). Empty: nothing found. The matcher does not count a flagged row as measured."),
    _c("ids", "import_source", "str", "", "Imported rows: where in the source file the row came from (`summary.csv: line 7`); empty for measured rows."),
    _c("ids", "sample_unit", "str", "", "What a sample is for rates and per-sample figures: empty (a sample), `token` or `request` (imports of LLM serving benchmarks). Throughputs of different units are never compared."),
    _c("ids", "remeasured", "int", "times", "How many times the repeat was measured again because its rows were flagged (SweepSpec.remeasure); the least flagged attempt is the one stored."),
    _c("hardware", "hardware", "str", "", "HardwareSpec.name of the target the trial was scheduled on."),
    _c("hardware", "accelerator_type", "str", "", "Ray accelerator type of the target (`cpu`, `H100`, ...)."),
    _c("hardware", "device_count", "int", "devices", "Accelerators the trial used (0 on CPU)."),
    _c("hardware", "num_threads", "int", "threads", "torch intra-op threads during the trial (cfg_threads if set, else the node's CPU count)."),
    _c("hardware", "cpu_set", "str", "", "CPUs an emulated (local) profile's trial was pinned to (sched_setaffinity), e.g. `1` or `0,1`; empty for real hardware."),
    _c("hardware", "node_id", "str", "", "Ray node id the trial ran on (ray.get_runtime_context()); empty when run without Ray."),
    _c("hardware", "node_ip", "str", "", "IP of that Ray node."),
    _c("hardware", "hostname", "str", "", "socket.gethostname() of the process that measured."),
    _c("latency", "latency_p50_ms", "float", "ms", "Median per-query latency reported by LoadGen for the scenario (train: per-step time)."),
    _c("latency", "latency_p90_ms", "float", "ms", "90th percentile of the same (SingleStream's MLPerf metric)."),
    _c("latency", "latency_p95_ms", "float", "ms", "95th percentile of the same."),
    _c("latency", "latency_p99_ms", "float", "ms", "99th percentile of the same (MultiStream's MLPerf metric)."),
    _c("latency", "latency_p999_ms", "float", "ms", "99.9th percentile of the same."),
    _c("latency", "latency_mean_ms", "float", "ms", "Mean of the same."),
    _c("throughput", "throughput_samples_per_s", "float", "samples/s", "Samples completed per second: LoadGen's result for the scenario; train: training samples processed / train time."),
    _c("throughput", "samples", "int", "samples", "Samples processed in the measured window."),
    _c("throughput", "samples_per_query", "int", "samples", "Samples in one LoadGen query (MultiStream: the batch size; SingleStream: 1)."),
    _c("model", "accuracy", "float", "fraction", "Top-1 accuracy on the held-out split through the same model and dtype; missing for assets without labels."),
    _c("model", "parameters", "int", "count", "Trainable + frozen parameters of the model."),
    _c("model", "flops_per_sample", "float", "FLOP", "Forward FLOPs for one sample, counted by torch.utils.flop_counter.FlopCounterMode."),
    _c("model", "bytes_per_sample", "float", "B", "Bytes one sample moves at the trial's batch size and dtype: the weights read once per batch, shared by its samples (parameter bytes / batch size), plus the sample's input and output tensors (a roofline's memory traffic; activations that stay in cache are not counted)."),
    _c("model", "precision_macro", "float", "fraction", "Unweighted mean over classes of precision on the held-out split (scikit-learn, zero_division=0: a class never predicted counts 0); missing without labels."),
    _c("model", "recall_macro", "float", "fraction", "Unweighted mean over classes of recall on the held-out split (scikit-learn); missing without labels."),
    _c("model", "f1_macro", "float", "fraction", "Unweighted mean over classes of F1 on the held-out split (scikit-learn, zero_division=0); missing without labels."),
    _c("model", "fairness_dp_diff", "float", "fraction", "Demographic parity difference (fairlearn): max - min over groups of sensitive_attribute of the rate of predicting 1; 0 = parity. Binary labels only; missing otherwise or without a sensitive attribute."),
    _c("model", "fairness_eo_diff", "float", "fraction", "Equalized odds difference (fairlearn): the larger of the between-group TPR and FPR differences; 0 = equal error rates. Binary labels only; missing when a group lacks positives or negatives."),
    _c("model", "accuracy_worst_group", "float", "fraction", "Lowest per-group accuracy over the groups of sensitive_attribute (fairlearn MetricFrame); missing without a sensitive attribute."),
    _c("model", "sensitive_attribute", "str", "", "Name of the attribute the fairness columns are computed over (e.g. `sex`); empty when none."),
    _c("training", "train_time_s", "float", "s", "Wall time of the training loop (after warm-up), GPU synchronised."),
    _c("training", "epochs", "int", "epochs", "Epochs run."),
    _c("training", "quality_target", "float", "fraction", "Accuracy target for time-to-accuracy (MLPerf time-to-train)."),
    _c("training", "time_to_accuracy_s", "float", "s", "Training time until accuracy >= quality_target was first observed; missing if never reached."),
    _c("training", "cost_to_accuracy_usd", "float", "USD", "time_to_accuracy_s / 3600 x price_per_hour_usd (DAWNBench)."),
    _c("resources", "peak_memory_mb", "float", "MiB", "Peak resident set size of the measuring process (CPU) or torch.cuda.max_memory_allocated (GPU)."),
    _c("resources", "cpu_util_pct", "float", "%", "Mean CPU utilisation of the measuring process during the window (psutil), 100 = one core."),
    _c("resources", "gpu_util_pct", "float", "%", "Mean GPU utilisation sampled through NVML; missing without a GPU."),
    _c("energy", "energy_j", "float", "J", "Energy over the measured window from a sensor (NVML total energy counter, RAPL); missing without one."),
    _c("energy", "energy_per_sample_j", "float", "J/sample", "energy_j / samples."),
    _c("energy", "avg_power_w", "float", "W", "energy_j / window duration."),
    _c("energy", "energy_source", "str", "", "`nvml`, `rapl` or `none` (no sensor: the energy columns are missing)."),
    _c("cost", "price_per_hour_usd", "float", "USD/h", "The hardware's catalog price at the time of the trial."),
    _c("cost", "cost_usd", "float", "USD", "duration of the measured window / 3600 x price_per_hour_usd."),
    _c("loadgen", "loadgen_result", "str", "", "LoadGen's verdict for the run: VALID or INVALID (short runs are often INVALID for min duration / query count)."),
    _c("loadgen", "loadgen_log_dir", "str", "", "Folder holding LoadGen's summary and detail logs for this row."),
    _c("loadgen", "target_qps", "float", "queries/s", "Server / Offline target QPS given to LoadGen."),
    _c("environment", "env_cpu_model", "str", "", "CPU model name (/proc/cpuinfo or platform)."),
    _c("environment", "env_cpu_count", "int", "cores", "Logical CPUs visible to the process."),
    _c("environment", "env_gpu_name", "str", "", "GPU name from NVML; empty without a GPU."),
    _c("environment", "env_gpu_driver", "str", "", "NVIDIA driver version from NVML."),
    _c("environment", "env_gpu_sm_clock_mhz", "float", "MHz", "SM clock at the end of the window (NVML)."),
    _c("environment", "env_gpu_temperature_c", "float", "°C", "GPU temperature at the end of the window (NVML)."),
    _c("environment", "env_gpu_throttle_reasons", "str", "", "NVML clock throttle reasons active at the end of the window, comma-separated."),
    _c("environment", "env_torch_version", "str", "", "torch.__version__."),
    _c("environment", "env_ray_version", "str", "", "ray.__version__ when Ray is importable, else empty."),
    _c("environment", "env_python_version", "str", "", "platform.python_version()."),
    _c("environment", "env_loadavg_before", "float", "", "1-minute load average just before the window."),
    _c("environment", "env_loadavg_after", "float", "", "1-minute load average just after the window."),
    _c("environment", "env_background_load", "bool", "", "True when other processes used more than half a core on average during the window: the row is flagged, not silently mixed in."),
    _c("run", "seed", "int", "", "Seed given to torch, numpy and random for this repeat."),
    _c("run", "start_time", "str", "ISO 8601 UTC", "When the measured window began."),
    _c("run", "duration_s", "float", "s", "Wall time of the whole trial repeat (set-up, warm-up and measurement)."),
    _c("server search", "server_max_qps_within_bound", "float", "queries/s", "Server: the highest target QPS whose LoadGen run kept p99 latency within server_latency_bound_ms (LoadGen's perf-constraint verdict), found by an exponential-then-bisection search over short LoadGen Server runs; target_qps, throughput and latencies are that run's. Missing when no probe passed or no search ran."),
    _c("server search", "server_curve", "str", "", "Server latency under load (loadgen.server_curve): a JSON list of points {fraction, offered_qps, completed_qps, latency_p50_ms, latency_p90_ms, latency_p95_ms, latency_p99_ms, latency_p999_ms, latency_mean_ms (older rows: p50 and p99 only), queries, valid, early_stopping_met, capacity_source}, one LoadGen Server run at each fraction of this repeat's Offline throughput; `valid` when LoadGen's duration and query count were met. The matcher reads capacity at the latency bounds of a request from it."),
    _c("server search", "server_probes", "int", "runs", "LoadGen Server runs the search made (each logged under loadgen_log_dir's parent)."),
    _c("server search", "server_latency_bound_ms", "float", "ms", "The p99 latency bound given to LoadGen (server_target_latency_ns) for a Server row; missing when LoadGen's default applied."),
    _c("llm serving", "ttft_p50_ms", "float", "ms", "Time to first token of a streamed request (send to first non-empty token), median over the run's completed requests."),
    _c("llm serving", "ttft_p90_ms", "float", "ms", "90th percentile of the same."),
    _c("llm serving", "ttft_p99_ms", "float", "ms", "99th percentile of the same."),
    _c("llm serving", "ttft_mean_ms", "float", "ms", "Mean of the same."),
    _c("llm serving", "tpot_p50_ms", "float", "ms", "Time per output token after the first, per request: (end-to-end latency - TTFT) / (output tokens - 1), vLLM's TPOT; median over requests with at least 2 output tokens."),
    _c("llm serving", "tpot_p90_ms", "float", "ms", "90th percentile of the same."),
    _c("llm serving", "tpot_p99_ms", "float", "ms", "99th percentile of the same."),
    _c("llm serving", "tpot_mean_ms", "float", "ms", "Mean of the same."),
    _c("llm serving", "itl_p50_ms", "float", "ms", "Inter-token latency: the gap between consecutive streamed chunks of a request (a chunk of n tokens counts its gap once), median over every gap of the run."),
    _c("llm serving", "itl_p99_ms", "float", "ms", "99th percentile of the same."),
    _c("llm serving", "itl_mean_ms", "float", "ms", "Mean of the same."),
    _c("llm serving", "output_tokens_per_s", "float", "tokens/s", "Output tokens of completed requests / measured window (first send to last completion)."),
    _c("llm serving", "total_tokens_per_s", "float", "tokens/s", "Input + output tokens of completed requests / measured window."),
    _c("llm serving", "requests_per_s", "float", "requests/s", "Completed requests / measured window."),
    _c("llm serving", "goodput_requests_per_s", "float", "requests/s", "Completed requests that met both slo_ttft_ms and slo_tpot_ms / measured window (DistServe's goodput)."),
    _c("llm serving", "slo_ttft_ms", "float", "ms", "The TTFT bound goodput and the rate search were judged by."),
    _c("llm serving", "slo_tpot_ms", "float", "ms", "The TPOT bound goodput and the rate search were judged by."),
    _c("llm serving", "input_tokens_mean", "float", "tokens", "Mean prompt length of the run's requests."),
    _c("llm serving", "output_tokens_mean", "float", "tokens", "Mean output length of the run's completed requests."),
    _c("llm serving", "completed_requests", "int", "requests", "Requests that finished with a complete stream."),
    _c("llm serving", "failed_requests", "int", "requests", "Requests that errored or were cut off (HTTP error, broken stream, timeout)."),
    _c("llm serving", "energy_per_output_token_j", "float", "J/token", "energy_j / output tokens; missing without an energy sensor."),
    _c("llm serving", "max_rate_within_slo_rps", "float", "requests/s", "Server: the highest Poisson arrival rate (requests/s) at which p99 TTFT <= slo_ttft_ms and p99 TPOT <= slo_tpot_ms held, read from llm_curve (measured rates only, never extrapolated); missing when no rate held."),
    _c("llm serving", "llm_curve", "str", "", "LLM latency under load: a JSON list of points {offered_rps, requests_per_s, output_tokens_per_s, goodput_requests_per_s, ttft_p50_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms, itl_p99_ms, completed, failed, within_slo}, one run at each offered rate."),
    _c("scaling", "workers", "int", "processes", "Data-parallel worker processes (torch DDP) of a train row run with cfg_workers; missing for single-process training."),
    _c("scaling", "scaling_efficiency", "float", "fraction", "throughput(workers) / (workers x throughput(1 worker)), the 1-worker baseline measured in the same trial, on the same node, with the same threads per worker; 1 = linear scaling."),
    _c("scaling", "scaling_baseline_samples_per_s", "float", "samples/s", "Training throughput of the 1-worker baseline the efficiency is computed from."),
    _c("fault tolerance", "resumed_from_epoch", "int", "epochs", "Epochs restored from the trial's checkpoint when it started (0: started from scratch); missing when checkpointing is off or for DDP rows."),
    _c("fault tolerance", "time_lost_s", "float", "s", "Wall time the interrupted attempts of this trial spent after their last checkpoint (last heartbeat minus last checkpoint), summed; 0 when no attempt was interrupted; missing when checkpointing is off."),
    _c("fault tolerance", "checkpoint_time_s", "float", "s", "Time spent saving checkpoints in this attempt (excluded from train_time_s, included in time_to_accuracy_s)."),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)
BY_NAME = {c.name: c for c in COLUMNS}


def config_columns(names: list[str] | tuple[str, ...]) -> list[str]:
    """The configuration (hyperparameter) columns among `names`."""
    return [n for n in names if n.startswith(CONFIG_PREFIX)]


def markdown() -> str:
    """docs/results-schema.md, generated so that the docs never drift from the code."""
    lines = [
        "# Results schema",
        "",
        "Generated by `python -m results.schema` from `results/schema.py`; do not edit by hand.",
        "",
        "One row per measured (sweep, trial, repeat, scenario); the results store de-duplicates on that key",
        "(the newest `start_time` wins). Every hyperparameter is a column of its own named `cfg_<name>`",
        "(`cfg_batch_size`, `cfg_threads`, `cfg_dtype`, ...). A metric that could not be measured is",
        "missing (null), never 0 and never estimated.",
        "",
    ]
    group = None
    for col in COLUMNS:
        if col.group != group:
            group = col.group
            lines += ["", f"## {group}", "", "| column | type | unit | how it is obtained |", "|---|---|---|---|"]
        lines.append(f"| `{col.name}` | {col.dtype} | {col.unit} | {col.how} |")
    lines += ["", "## Pattern columns", "",
              "- `cfg_<name>`: one column per hyperparameter.",
              "- `quality_<name>` (float) with `quality_<name>_direction` (`lower` or `higher`): a model-quality score",
              "  an import brings (MAE, error rate, perplexity, ...) in the file's own unit (a percent is stored as a",
              "  fraction), and which way is better. Like `accuracy`, the same in every scenario row of a",
              "  (sweep, trial, repeat)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
