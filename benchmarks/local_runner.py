"""Run a whole sweep on this machine without Ray: every (config, repeat), one after the other.

This is how the measurement core runs on a GPU box that has torch but not Ray: probe the machine
(`cluster.probe.probe_local()`) or name a catalog entry, and every trial is measured here *as* that
hardware. Trials already in the store are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.core import measure
from benchmarks.spec import SweepSpec, TrialSpec, expand_trials
from cluster.hardware import HardwareSpec
from results.store import SETTLED_STATUSES, ResultsStore


def local_trials(spec: SweepSpec, hardware: HardwareSpec) -> list[TrialSpec]:
    """Every (config, repeat) of the sweep as TrialSpecs for `hardware`, with the ids the Ray sweep uses."""
    return expand_trials(spec.model_copy(update={"hardware": [hardware.name]}), {hardware.name: hardware})


def _describe(event: dict[str, Any]) -> str:
    phase = event.get("phase", "")
    if phase == "train":
        acc = event.get("accuracy")
        return f"epoch {event.get('epoch')}/{event.get('epochs')} loss {event.get('loss', float('nan')):.4f}" + (
            f" accuracy {acc:.4f}" if acc is not None else "")
    if phase == "infer":
        tput = event.get("throughput_samples_per_s")
        p99 = event.get("latency_p99_ms")
        return (f"{event.get('scenario')}: {tput:.1f} samples/s" if tput else f"{event.get('scenario')}:") + (
            f", p99 {p99:.3f} ms" if p99 else "") + f" [{event.get('loadgen_result')}]"
    if phase == "accuracy":
        return f"accuracy {event.get('accuracy')}"
    return ""


def run_sweep_locally(
    spec: SweepSpec,
    hardware: HardwareSpec,
    store: ResultsStore,
    resume: bool = True,
    progress: Callable[[str], Any] | None = print,
) -> int:
    """Measure every trial of `spec` here as `hardware`; returns how many (trial, repeat)s were run.

    Each trial's rows are written to `store` as soon as it finishes (one atomic file per repeat).
    With `resume`, (trial_id, repeat) pairs already in the store are skipped unless they failed (a
    skipped configuration stays skipped: it would not run now either).
    """
    say = progress or (lambda _msg: None)
    trials = local_trials(spec, hardware)
    done = store.done(spec.name, ok_only=True) if resume else set()
    todo = [t for t in trials if (t.trial_id, t.repeat) not in done]
    if len(todo) < len(trials):
        say(f"{spec.name}: {len(trials) - len(todo)} of {len(trials)} trial repeats already in {store.uri}; skipped")
    for n, trial in enumerate(todo, 1):
        label = f"[{n}/{len(todo)}] {trial.trial_id} r{trial.repeat} {trial.config}"
        say(f"{label} on {hardware.name}")

        def forward(event: dict[str, Any], label: str = label) -> None:
            text = _describe(event)
            if text:
                say(f"{label}: {text}")

        rows = measure(trial, progress=forward)
        path = store.write(rows)
        failed = [r for r in rows if r.get("status") not in SETTLED_STATUSES]
        skipped = [r for r in rows if r.get("status") == "skipped"]
        flags = sorted({f for r in rows for f in str(r.get("flags") or "").split(",") if f})
        status = (f"FAILED: {failed[0]['error']}" if failed else f"skipped: {skipped[0]['error']}" if skipped
                  else f"FLAGGED ({', '.join(flags)})" if flags else "ok")
        if rows[0].get("remeasured"):
            status += f", re-measured {rows[0]['remeasured']}x"
        say(f"{label}: {status} ({rows[0]['duration_s']:.1f} s) -> {path}")
    return len(todo)
