"""Live trial metrics through `ray.util.metrics`, scraped by Prometheus from Ray's metrics agents.

Ray prefixes every name with `ray_`, so `benchmatch_trial_latency_p99_seconds` is queried as
`ray_benchmatch_trial_latency_p99_seconds`. Names carry their unit (Prometheus conventions);
counters end in `_total`. Imported only inside Ray workers: the measurement core never needs it.
"""

from __future__ import annotations

import time
from typing import Any

TRIAL_TAGS = ("sweep", "trial", "asset", "hardware", "accelerator")
# `repeat`: each (trial, repeat, scenario) is one stored row, so a series' last value is that row's
# number, and a repeat measured again replaces its old value the way the results store does.
SCENARIO_TAGS = TRIAL_TAGS + ("repeat", "scenario")
COUNT_TAGS = ("sweep", "asset", "hardware", "accelerator", "status")

# name -> (kind, description, tag keys). docs/metrics.md lists the same table.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "benchmatch_trial_latency_p50_seconds": ("gauge", "Median query latency of the scenario", SCENARIO_TAGS),
    "benchmatch_trial_latency_p99_seconds": ("gauge", "p99 query latency of the scenario", SCENARIO_TAGS),
    "benchmatch_trial_throughput_samples_per_second": ("gauge", "Samples per second of the scenario", SCENARIO_TAGS),
    "benchmatch_trial_peak_memory_bytes": ("gauge", "Peak memory of the trial process", SCENARIO_TAGS),
    "benchmatch_trial_energy_joules": ("gauge", "Sensor energy over the window (absent without a sensor)", SCENARIO_TAGS),
    "benchmatch_trial_accuracy_ratio": ("gauge", "Model accuracy measured in the trial", SCENARIO_TAGS),
    "benchmatch_trial_train_loss": ("gauge", "Training loss after the latest epoch", TRIAL_TAGS),
    "benchmatch_trial_progress_ratio": ("gauge", "Progress of the running trial, 0..1", TRIAL_TAGS),
    "benchmatch_sweep_trials": ("gauge", "Trials (x repeats) planned in the sweep", ("sweep",)),
    "benchmatch_trials_started_total": ("counter", "Trial repeats started", COUNT_TAGS[:-1]),
    "benchmatch_trials_completed_total": ("counter", "Trial repeats finished, by status (ok|failed|skipped)", COUNT_TAGS),
    "benchmatch_trials_remeasured_total": (
        "counter", "Finished trial repeats measured again (one side of a more-cores-slower pair)", COUNT_TAGS[:-1]),
    "benchmatch_trial_duration_seconds": ("histogram", "Wall time of one trial repeat", COUNT_TAGS[:-1]),
}
DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]

# result-row column -> (gauge, scale to the gauge's unit)
ROW_GAUGES = {
    "latency_p50_ms": ("benchmatch_trial_latency_p50_seconds", 1e-3),
    "latency_p99_ms": ("benchmatch_trial_latency_p99_seconds", 1e-3),
    "throughput_samples_per_s": ("benchmatch_trial_throughput_samples_per_second", 1.0),
    "peak_memory_mb": ("benchmatch_trial_peak_memory_bytes", 1024.0 * 1024.0),
    "energy_j": ("benchmatch_trial_energy_joules", 1.0),
    "accuracy": ("benchmatch_trial_accuracy_ratio", 1.0),
}


class TrialMetrics:
    """Publishes one trial's live metrics. Created inside the Ray worker that runs the trial."""

    def __init__(self, sweep: str, trial: str, asset: str, hardware: str, accelerator: str):
        from ray.util import metrics as rm  # only inside Ray workers

        self.tags = {"sweep": sweep, "trial": trial, "asset": asset, "hardware": hardware, "accelerator": accelerator}
        self._m: dict[str, Any] = {}
        # Ray's metrics agent forgets a gauge not set again within two export intervals: the last
        # value of each (gauge, labels) is kept so that refresh() can keep finished trials visible.
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.updated = time.monotonic()
        for name, (kind, desc, keys) in METRICS.items():
            if kind == "gauge":
                self._m[name] = rm.Gauge(name, description=desc, tag_keys=keys)
            elif kind == "counter":
                self._m[name] = rm.Counter(name, description=desc, tag_keys=keys)
            else:
                self._m[name] = rm.Histogram(name, description=desc, boundaries=DURATION_BUCKETS, tag_keys=keys)

    def _set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._m[name].set(value, tags=tags)
        self._last[(name, tuple(sorted(tags.items())))] = value
        self.updated = time.monotonic()

    def refresh(self) -> None:
        """Set every gauge to its last value again, so that Prometheus keeps the series."""
        for (name, tags), value in self._last.items():
            self._m[name].set(value, tags=dict(tags))

    def _count_tags(self) -> dict[str, str]:
        return {k: self.tags[k] for k in ("sweep", "asset", "hardware", "accelerator")}

    def started(self, planned: int, again: bool = False) -> None:
        """`again`: a finished repeat measured once more. It was counted when it first ran, so it
        goes to its own counter: counting it as started/finished again would push the sweep's
        progress past 1 and change its failure ratio."""
        self._set("benchmatch_sweep_trials", planned, {"sweep": self.tags["sweep"]})
        counter = "benchmatch_trials_remeasured_total" if again else "benchmatch_trials_started_total"
        self._m[counter].inc(1, tags=self._count_tags())
        self._set("benchmatch_trial_progress_ratio", 0.0, self.tags)

    def progress(self, event: dict[str, Any]) -> None:
        """Forward a progress event of the measurement core (see benchmarks.core). A scenario's
        numbers are published from the repeat's stored rows (row()), not from these events: a
        repeat that is measured again would otherwise show numbers of an attempt that was dropped,
        and the dashboards would disagree with the results store."""
        if "loss" in event and event["loss"] is not None:
            self._set("benchmatch_trial_train_loss", float(event["loss"]), self.tags)
        if "fraction" in event and event["fraction"] is not None:
            self._set("benchmatch_trial_progress_ratio", float(event["fraction"]), self.tags)

    def row(self, row: dict[str, Any]) -> None:
        tags = {**self.tags, "repeat": str(row.get("repeat") or 0), "scenario": str(row.get("scenario") or "")}
        for column, (gauge, scale) in ROW_GAUGES.items():
            value = row.get(column)
            if value is None or value != value:  # missing stays absent, never exported as 0
                continue
            self._set(gauge, float(value) * scale, tags)

    def finished(self, status: str, duration_s: float, again: bool = False) -> None:
        self._set("benchmatch_trial_progress_ratio", 1.0, self.tags)
        if not again:  # see started()
            self._m["benchmatch_trials_completed_total"].inc(1, tags={**self._count_tags(), "status": status})
        self._m["benchmatch_trial_duration_seconds"].observe(duration_s, tags=self._count_tags())
