"""The sweep: Ray Tune runs every (hardware, configuration) of a SweepSpec on a node of that hardware.

Each Tune trial asks for the CPUs of its hardware profile plus one unit of the custom resource
`accelerator_type:<name>`, which only nodes of that profile carry; one unit per node means one
trial at a time per node, so trials never disturb each other's measurements. Inside the trial the
measurement core (benchmarks.core, Ray-free) runs each repeat; every repeat's rows are written to
the results store atomically before the next starts, so a retried trial (worker death) or a resumed
sweep (driver death) re-runs only what is missing. Live metrics go through one detached actor
that outlives the short-lived trial actors, so their last values stay scrapeable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.spec import SpecError, SweepSpec, TrialSpec, expand_trials
from benchmarks.store import ResultsStore
from cluster.hardware import HardwareSpec

PUBLISHER_NAME = "benchmatch-metrics"
PUBLISHER_NAMESPACE = "benchmatch"


class SweepError(RuntimeError):
    """The sweep cannot run as asked; the message says what to change."""


@dataclass
class SweepReport:
    sweep_id: str
    results_uri: str
    planned: int  # trial repeats in the sweep
    already_done: int  # found in the store (resume)
    ran: int = 0
    failed: int = 0
    wall_s: float = 0.0
    trial_failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _publisher_cls() -> Any:
    import ray

    from benchmarks.live_metrics import TrialMetrics

    @ray.remote(num_cpus=0, max_restarts=-1)
    class MetricsPublisher:
        """Holds the gauges of every trial; Ray's metrics agent exports them from here."""

        def __init__(self) -> None:
            self._trials: dict[tuple[str, ...], TrialMetrics] = {}

        def _m(self, tags: dict[str, str]) -> TrialMetrics:
            key = tuple(tags[k] for k in ("sweep", "trial", "asset", "hardware", "accelerator"))
            if key not in self._trials:
                self._trials[key] = TrialMetrics(*key)
            return self._trials[key]

        def started(self, tags: dict[str, str], planned: int) -> None:
            self._m(tags).started(planned)

        def progress(self, tags: dict[str, str], event: dict[str, Any]) -> None:
            self._m(tags).progress(event)

        def rows(self, tags: dict[str, str], rows: list[dict[str, Any]]) -> None:
            for row in rows:
                self._m(tags).row(row)

        def finished(self, tags: dict[str, str], status: str, duration_s: float) -> None:
            self._m(tags).finished(status, duration_s)

    return MetricsPublisher


def _get_publisher() -> Any:
    cls = _publisher_cls()
    return cls.options(name=PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE, lifetime="detached",
                       get_if_exists=True).remote()


def _trial_fn(config: dict[str, Any]) -> None:
    """One Tune trial: all pending repeats of one (hardware, configuration). Runs in a Ray worker."""
    import ray
    from ray import tune

    from benchmarks.core import run_trial

    t = config["trial"]
    store = ResultsStore(t["results_uri"])
    done = store.done(t["sweep_id"])
    publisher = ray.get_actor(PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE)
    node_id = ray.get_runtime_context().get_node_id()
    node_ip = ray.util.get_node_ip_address()
    tags = {"sweep": t["sweep_id"], "trial": t["trial_id"], "asset": t["asset"],
            "hardware": t["hardware"]["name"], "accelerator": t["hardware"]["accelerator_type"]}

    def forward(event: dict[str, Any]) -> None:
        publisher.progress.remote(tags, event)  # fire and forget: never slows the measurement

    for spec_dict in t["repeats"]:
        spec = TrialSpec.from_dict(spec_dict)
        if (spec.trial_id, spec.repeat) in done:
            continue  # written by an earlier attempt of this trial
        publisher.started.remote(tags, t["planned"])
        t0 = time.monotonic()
        rows = run_trial(spec, progress=forward)
        for row in rows:
            row["node_id"], row["node_ip"] = node_id, node_ip
        store.write(rows)
        status = "failed" if any(r.get("status") != "ok" for r in rows) else "ok"
        publisher.rows.remote(tags, rows)
        publisher.finished.remote(tags, status, time.monotonic() - t0)
        summary = {f"{r['scenario']}/{k}": r.get(k) for r in rows
                   for k in ("latency_p99_ms", "throughput_samples_per_s", "accuracy")}
        tune.report({"repeat": spec.repeat, "status": status, "node_id": node_id,
                     "error": next((r.get("error") for r in rows if r.get("error")), ""),
                     **{k: v for k, v in summary.items() if isinstance(v, int | float)}})


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", **kwargs)


def check_cluster(targets: list[HardwareSpec]) -> None:
    """Fail fast, naming the hardware, when no live node can run a target's trials."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    missing = []
    for hw in targets:
        fits = [n for n in nodes if n["Resources"].get(hw.resource_name, 0) >= 1
                and n["Resources"].get("CPU", 0) >= hw.cpu_cores
                and n["Resources"].get("GPU", 0) >= hw.device_count]
        if not fits:
            missing.append(hw.name)
    if missing:
        have = sorted({k for n in nodes for k in n["Resources"] if k.startswith("accelerator_type:")})
        raise SweepError(
            f"no node of this Ray cluster can run hardware {missing}: a node needs the resource "
            f"'accelerator_type:<name>' and the profile's CPUs/GPUs. Nodes offer {have or 'none'}. "
            "Start `benchmatch cluster up`, add nodes with those resources, or remove the targets from the sweep."
        )


class _Progress:
    """A Tune callback that prints one line per finished trial repeat."""

    def __new__(cls, total: int, emit: Callable[[str], None]) -> Any:
        from ray.tune import Callback

        class _CB(Callback):
            def __init__(self) -> None:
                self.n = 0

            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                self.n += 1
                t = trial.config["trial"]
                cfg = " ".join(f"{k}={v}" for k, v in t["config"].items())
                p99 = result.get("MultiStream/latency_p99_ms") or result.get("SingleStream/latency_p99_ms")
                thr = result.get("Offline/throughput_samples_per_s") or result.get("train/throughput_samples_per_s")
                extra = (f" p99={p99:.2f} ms" if p99 else "") + (f" {thr:.0f} samples/s" if thr else "")
                err = f" ERROR {result.get('error')}" if result.get("status") != "ok" else ""
                emit(f"  [{self.n}/{total}] {t['hardware']['name']:<10} {cfg} r{result.get('repeat')}: "
                     f"{result.get('status')}{extra}{err}")

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                emit(f"  trial {trial.config['trial']['trial_id']} errored; Tune retries it (resumes missing repeats)")

        return _CB()


def run_sweep(spec: SweepSpec, catalog: dict[str, HardwareSpec], *, address: str | None = None,
              resume: bool = False, progress: Callable[[str], None] = print,
              tune_dir: str | None = None) -> SweepReport:
    """Run a sweep on the Ray cluster at `address` (or the one this process is connected to)."""
    from ray import tune

    store = ResultsStore(spec.results_uri)
    trials = expand_trials(spec, catalog)
    done = store.done(spec.name)
    if done and not resume:
        raise SweepError(
            f"sweep '{spec.name}' already has {len(done)} results in {spec.results_uri}; pass --resume to run "
            "only the missing trials, or give the sweep another name"
        )
    report = SweepReport(spec.name, spec.results_uri, planned=len(trials),
                         already_done=sum((t.trial_id, t.repeat) in done for t in trials))
    _connect(address)
    targets = [catalog[h] for h in spec.hardware]
    check_cluster(targets)
    _get_publisher()

    by_trial: dict[str, list[TrialSpec]] = {}
    for t in trials:
        if (t.trial_id, t.repeat) not in done:
            t.num_cpus = t.hardware.cpu_cores
            by_trial.setdefault(t.trial_id, []).append(t)
    todo = [
        {"sweep_id": spec.name, "trial_id": tid, "asset": ts[0].asset, "hardware": ts[0].hardware.to_dict(),
         "config": ts[0].config, "results_uri": store.uri if "://" in store.uri else store.root,
         "planned": len(trials), "repeats": [t.to_dict() for t in ts]}
        for tid, ts in by_trial.items()
    ]
    progress(f"sweep {spec.name}: {len(trials)} trial repeats on {', '.join(spec.hardware)}"
             f" ({report.already_done} already done)")
    t0 = time.monotonic()
    if todo:
        def resources(config: dict[str, Any]) -> dict[str, float]:
            hw = config["trial"]["hardware"]
            res = {"cpu": hw["cpu_cores"], f"accelerator_type:{hw['name']}": 1}
            if hw["device_count"]:
                res["gpu"] = hw["device_count"]
            return res

        storage = Path(tune_dir or os.environ.get("BENCHMATCH_TUNE_DIR", Path.home() / ".benchmatch" / "tune"))
        tuner = tune.Tuner(
            tune.with_resources(_trial_fn, resources),
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{int(time.time())}", storage_path=str(storage.resolve()), verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.max_retries),
                callbacks=[_Progress(report.planned - report.already_done, progress)],
            ),
        )
        grid = tuner.fit()
        for res in grid:
            if res.error:
                report.trial_failures.append(f"{res.config['trial']['trial_id']}: {str(res.error).splitlines()[0]}")
    report.wall_s = time.monotonic() - t0
    after = store.done(spec.name)
    report.ran = len(after) - report.already_done
    df = store.read(spec.name)
    if not df.empty and "status" in df.columns:
        report.failed = int(df.loc[df["status"] != "ok", ["trial_id", "repeat"]].drop_duplicates().shape[0])
    missing = report.planned - len(after)
    if missing:
        progress(f"  {missing} trial repeats are missing after the sweep; run again with --resume")
    return report


def prepare(path: str, *, catalog_path: str | None = None,
            results_uri: str | None = None) -> tuple[SweepSpec, dict[str, HardwareSpec]]:
    """Read and check a sweep file and the catalog; relative local results paths become absolute."""
    from benchmarks.spec import load_sweep
    from cluster.hardware import load_catalog

    spec = load_sweep(path)
    uri = results_uri or spec.results_uri
    if "://" not in uri:
        uri = os.path.abspath(uri)
    spec = spec.model_copy(update={"results_uri": uri})
    catalog = load_catalog(catalog_path)
    try:
        expand_trials(spec, catalog)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc
    return spec, catalog


def load_and_run(path: str, *, address: str | None = None, resume: bool = False,
                 catalog_path: str | None = None, results_uri: str | None = None,
                 progress: Callable[[str], None] = print) -> SweepReport:
    """Read a sweep file and run it on the cluster this process is connected to (or `address`)."""
    spec, catalog = prepare(path, catalog_path=catalog_path, results_uri=results_uri)
    return run_sweep(spec, catalog, address=address, resume=resume, progress=progress)
