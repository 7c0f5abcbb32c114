"""Measuring processes that live for a whole sweep, one per node of CPU-only hardware.

A Tune trial starts in a fresh Ray worker process. Measuring inside it meant importing torch and
the measurement core there (1.5–2.7 s on this machine) before the first repeat, on every node, after
Tune's own set-up (about 3.5 s): a tax on the sweep's wall time that dominated short sweeps. The
sweep now starts one `MeasureWorker` per node when it begins, so those imports overlap Tune's
set-up, and each trial hands its batch of configurations to the worker on its own node.

What does not change: the trial still holds the node's CPUs and its `accelerator_type:<name>`
unit while the worker measures (the worker itself asks for no CPU, so it never blocks a trial),
so there is still one measurement at a time per node; every repeat's rows are written by the
worker as soon as it finishes; a worker that dies (its node died, the process crashed) is not
restarted: the trial measures in its own process instead, and a resumed sweep re-runs only what
is missing. GPU hardware keeps measuring in the trial's process: Ray makes a GPU visible only to a
process that holds it, and the trial does.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.spec import TrialSpec
from results.store import ResultsStore

NAMESPACE = "benchmatch"


def worker_name(sweep_id: str, node_id: str) -> str:
    return f"benchmatch-measure-{sweep_id}-{node_id}"


def run_batch(batch: dict[str, Any]) -> int:
    """The pending repeats of a batch of configurations on one hardware, in turn; returns how many
    ran. Each configuration keeps its own trial id, rows and live-metric labels, and its rows the
    node that measured them. Runs in a trial's process or in the node's MeasureWorker."""
    import ray

    from benchmarks.core import failed_rows, measure, repeat_status
    from benchmarks.sweep import PUBLISHER_NAME, PUBLISHER_NAMESPACE, finished_line

    store = ResultsStore(batch["results_uri"])
    publisher = ray.get_actor(PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE)
    hw = batch["hardware"]
    node_id = ray.get_runtime_context().get_node_id()
    node_ip = ray.util.get_node_ip_address()
    ran = 0
    for t in batch["units"]:
        tags = {"sweep": batch["sweep_id"], "trial": t["trial_id"], "asset": t["asset"],
                "hardware": hw["name"], "accelerator": hw["accelerator_type"]}

        def forward(event: dict[str, Any], tags: dict[str, str] = tags) -> None:
            publisher.progress.remote(tags, event)  # fire and forget: never slows the measurement

        for spec_dict in t["repeats"]:
            spec = TrialSpec.from_dict({**spec_dict, "hardware": hw})
            again = bool(batch.get("again"))
            if not again and store.repeat_ok(spec.sweep_id, spec.trial_id, spec.repeat):
                continue  # written by an earlier attempt of this trial (a worker died after writing it)
            publisher.started.remote(tags, batch["planned"], again)
            t0 = time.monotonic()
            try:
                rows = measure(spec, progress=forward)
            except Exception as exc:  # noqa: BLE001 - a trial that cannot run is a failed row, not a Tune retry
                rows = failed_rows(spec, exc)
            for row in rows:
                row["node_id"], row["node_ip"] = node_id, node_ip
            store.write(rows)
            status = repeat_status(rows)
            publisher.rows.remote(tags, rows)
            publisher.finished.remote(tags, status, time.monotonic() - t0,
                                      finished_line(t, hw, spec.repeat, status, rows), again)
            ran += 1
    return ran


def _worker_cls() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class MeasureWorker:
        def __init__(self) -> None:
            import benchmarks.core  # noqa: F401 - the point: torch and the core load while Tune sets up

        def ready(self) -> bool:
            return True

        def run(self, batch: dict[str, Any]) -> int:
            return run_batch(batch)

    return MeasureWorker


def start_workers(sweep_id: str, resources: list[str]) -> list[Any]:
    """One MeasureWorker on every live node that carries one of `resources` (CPU-only hardware's
    `accelerator_type:<name>`); returns their handles without waiting for them to be ready."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls = _worker_cls()
    handles = []
    for node in ray.nodes():
        if node.get("Alive") and any(node["Resources"].get(r, 0) >= 1 for r in resources):
            handles.append(cls.options(
                name=worker_name(sweep_id, node["NodeID"]), namespace=NAMESPACE, get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote())
    return handles


def stop_workers(handles: list[Any]) -> None:
    import ray

    for h in handles:
        try:
            ray.kill(h)
        except Exception:  # noqa: BLE001 - already gone with its node: nothing left to stop
            pass


def run_on_worker(batch: dict[str, Any], node_id: str) -> int | None:
    """The batch measured by the MeasureWorker of node `node_id` (the caller's); None when it has
    none or it died (the caller measures in its own process then)."""
    import ray

    try:
        worker = ray.get_actor(worker_name(batch["sweep_id"], node_id), namespace=NAMESPACE)
        return int(ray.get(worker.run.remote(batch)))
    except (ValueError, ray.exceptions.RayActorError):
        return None
