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

import argparse
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.spec import SpecError, SweepSpec, TrialSpec, expand_trials
from cluster.errors import BenchmatchError
from cluster.hardware import HardwareSpec
from results.consistency import more_cores_slower, pair_trials
from results.store import SETTLED_STATUSES, ResultsStore

PUBLISHER_NAME = "benchmatch-metrics"
PUBLISHER_NAMESPACE = "benchmatch"
KEEP_S = 6 * 3600.0  # how long a finished trial's live metrics stay on the dashboards
MAX_KEPT = 5000  # trials whose metrics are kept at once (the most recently updated)


class SweepError(BenchmatchError, RuntimeError):
    """The sweep cannot run as asked; the message says what to change."""


@dataclass
class SweepReport:
    sweep_id: str
    results_uri: str
    planned: int  # trial repeats in the sweep
    already_done: int  # found in the store (resume)
    ran: int = 0
    failed: int = 0
    skipped: int = 0  # repeats whose configuration cannot run there (status skipped: never measured, never retried)
    wall_s: float = 0.0
    trial_failures: list[str] = field(default_factory=list)
    remeasured: int = 0  # repeats measured again because their rows were flagged
    flagged: list[str] = field(default_factory=list)  # "<trial> r<repeat> <scenario>: <flags>" still flagged
    inconsistent: list[str] = field(default_factory=list)  # results.consistency: more cores slower than fewer
    # trials measured again because they were one side of an inconsistent pair (SweepSpec.remeasure)
    remeasured_for_consistency: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        quality = (f"; {self.remeasured} re-measured, {len(self.flagged)} rows still flagged"
                   if self.remeasured or self.flagged else "")
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (f"sweep {self.sweep_id}: {self.ran} trial repeats run ({self.failed} failed{skipped}{quality}), "
                f"{self.already_done} already done, {self.wall_s:.1f} s. Results: {self.results_uri}")


def _publisher_cls() -> Any:
    import ray

    from benchmarks.live_metrics import TrialMetrics

    @ray.remote(num_cpus=0, max_restarts=-1)
    class MetricsPublisher:
        """Holds the gauges of every trial; Ray's metrics agent exports them from here."""

        def __init__(self) -> None:
            self._trials: dict[tuple[str, ...], TrialMetrics] = {}
            self._lines: dict[str, list[dict[str, Any]]] = {}
            self._lock = threading.Lock()
            threading.Thread(target=self._keep_alive, name="benchmatch-metrics-keepalive", daemon=True).start()

        def _keep_alive(self) -> None:
            """Re-set finished trials' gauges every second: Ray's metrics agent drops a gauge that is
            not set again within two export intervals, and a finished sweep's panels would go blank.
            Kept for KEEP_S after a trial's last update, at most MAX_KEPT trials (the newest)."""
            while True:
                time.sleep(1.0)
                with self._lock:
                    now = time.monotonic()
                    for key in [k for k, m in self._trials.items() if now - m.updated > KEEP_S]:
                        del self._trials[key]
                    for key in sorted(self._trials, key=lambda k: self._trials[k].updated)[:-MAX_KEPT]:
                        del self._trials[key]
                    for m in self._trials.values():
                        m.refresh()

        def _m(self, tags: dict[str, str]) -> TrialMetrics:
            key = tuple(tags[k] for k in ("sweep", "trial", "asset", "hardware", "accelerator"))
            if key not in self._trials:
                self._trials[key] = TrialMetrics(*key)
            return self._trials[key]

        def started(self, tags: dict[str, str], planned: int, again: bool = False) -> None:
            with self._lock:
                self._m(tags).started(planned, again)

        def progress(self, tags: dict[str, str], event: dict[str, Any]) -> None:
            with self._lock:
                self._m(tags).progress(event)

        def rows(self, tags: dict[str, str], rows: list[dict[str, Any]]) -> None:
            with self._lock:
                for row in rows:
                    self._m(tags).row(row)

        def finished(self, tags: dict[str, str], status: str, duration_s: float,
                     line: dict[str, Any] | None = None, again: bool = False) -> None:
            with self._lock:
                self._m(tags).finished(status, duration_s, again)
                if line is not None:
                    self._lines.setdefault(tags["sweep"], []).append(line)

        def drain(self, sweep: str, start: int) -> list[dict[str, Any]]:
            """The finished-repeat lines of a sweep from position `start` on (the driver prints them)."""
            with self._lock:
                return list(self._lines.get(sweep, [])[start:])

    return MetricsPublisher


def _get_publisher() -> Any:
    cls = _publisher_cls()
    # On the head node: a worker node can die mid-sweep (test_cluster_sweep kills one), and the
    # publisher placed there took every later sweep's progress calls down with it (CI, 2026-12-01).
    # The head carries Ray's own "node:__internal_head__" resource (Ray Train pins its state actor so).
    return cls.options(name=PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE, lifetime="detached",
                       get_if_exists=True, resources={"node:__internal_head__": 0.001},
                       scheduling_strategy="DEFAULT").remote()


def _trial_fn(config: dict[str, Any]) -> None:
    """One Tune trial: the pending repeats of a batch of configurations on one hardware, in turn.

    Each configuration keeps its own trial id, rows and live-metric labels; batching them in one
    Tune trial pays Tune's per-trial cost (actor, placement, bookkeeping: about a second here) once
    per batch instead of once per configuration. Runs in a Ray worker."""
    import ray
    from ray import tune

    from benchmarks.core import failed_rows, measure, repeat_status

    batch = config["trial"]
    store = ResultsStore(batch["results_uri"])
    publisher = ray.get_actor(PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE)
    node_id = ray.get_runtime_context().get_node_id()
    node_ip = ray.util.get_node_ip_address()
    hw = batch["hardware"]
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
                                      _line(t, hw, spec.repeat, status, rows), again)
            ran += 1
    # One report per batch: Tune's function trainables block in report() until the driver takes
    # the result (a round trip of about a second here), so per-repeat lines go through the metrics
    # actor instead and the driver prints them as they come.
    tune.report({"repeats_run": ran, "node_id": node_id})


def _line(t: dict[str, Any], hw: dict[str, Any], repeat: int, status: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the driver prints for one finished repeat."""
    by = {r.get("scenario"): r for r in rows}
    p99 = next((by[s].get("latency_p99_ms") for s in ("MultiStream", "SingleStream") if s in by
                and by[s].get("latency_p99_ms") is not None), None)
    tput = next((by[s].get("throughput_samples_per_s") for s in ("Offline", "train") if s in by
                 and by[s].get("throughput_samples_per_s") is not None), None)
    return {"hardware": hw["name"], "config": " ".join(f"{k}={v}" for k, v in t["config"].items()),
            "repeat": repeat, "status": status, "p99": p99, "tput": tput,
            "error": next((r.get("error") for r in rows if r.get("error")), ""),
            "flags": ",".join(sorted({f for r in rows for f in str(r.get("flags") or "").split(",") if f})),
            "remeasured": int(rows[0].get("remeasured") or 0)}


def _connect(address: str | None) -> None:
    """Connect to the named cluster. Never `address="auto"`: with several Ray instances on a machine,
    "auto" picks any of them, and a sweep must land on the cluster it was meant for."""
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if not target:
        raise SweepError("not connected to a Ray cluster: pass --address (or set RAY_ADDRESS), start "
                         "`benchmatch cluster up`, or run `benchmatch sweep` to start an embedded one")
    ray.init(address=target, logging_level="ERROR", log_to_driver=False)


def gcs_address() -> str:
    """The GCS address of the cluster this process is connected to (named in placement errors)."""
    import ray

    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # an older Ray without the field: the message is still useful without it
        return "unknown"


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
            f"no node of the Ray cluster at {gcs_address()} can run hardware {missing}: a node needs the resource "
            f"'accelerator_type:<name>' and the profile's CPUs/GPUs. Nodes offer {have or 'none'}. "
            "Start `benchmatch cluster up`, add nodes with those resources, or remove the targets from the sweep."
        )


class _Progress:
    """A Tune callback that prints one line per finished trial repeat, as the trials tell the
    metrics actor (polled at most every half second from Tune's driver loop)."""

    def __new__(cls, sweep: str, total: int, emit: Callable[[str], None]) -> Any:
        import ray
        from ray.tune import Callback

        class _CB(Callback):
            def __init__(self) -> None:
                self.n = 0
                self.polled = 0.0
                self.publisher = ray.get_actor(PUBLISHER_NAME, namespace=PUBLISHER_NAMESPACE)
                # Lines of an earlier run of this sweep on the same cluster are not this run's.
                self.cursor = len(ray.get(self.publisher.drain.remote(sweep, 0)))

            def _drain(self) -> None:
                self.polled = time.monotonic()
                lines = ray.get(self.publisher.drain.remote(sweep, self.cursor))
                self.cursor += len(lines)
                for line in lines:
                    self.n += 1
                    extra = (f" p99={line['p99']:.2f} ms" if line["p99"] else "") + (
                        f" {line['tput']:.0f} samples/s" if line["tput"] else "")
                    err = (f" ({line['error']})" if line["status"] == "skipped" else
                           f" ERROR {line['error']}" if line["status"] != "ok" else "")
                    again = f", re-measured {line['remeasured']}x" if line["remeasured"] else ""
                    status = f"FLAGGED ({line['flags']})" if line["flags"] else line["status"]
                    emit(f"  [{self.n}/{total}] {line['hardware']:<10} {line['config']} r{line['repeat']}: "
                         f"{status}{again}{extra}{err}")

            def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
                if time.monotonic() - self.polled >= 0.5:
                    self._drain()

            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self._drain()

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self._drain()
                ids = ", ".join(u["trial_id"] for u in trial.config["trial"]["units"])
                emit(f"  trial of {ids} errored; Tune retries it (it resumes the missing repeats)")

            def on_experiment_end(self, trials: list, **info: Any) -> None:
                self._drain()

        return _CB()


def run_sweep(spec: SweepSpec, catalog: dict[str, HardwareSpec], *, address: str | None = None,
              resume: bool = False, progress: Callable[[str], None] = print,
              tune_dir: str | None = None) -> SweepReport:
    """Run a sweep on the Ray cluster at `address` (or the one this process is connected to)."""
    from ray import tune

    store = ResultsStore(spec.results_uri)
    trials = expand_trials(spec, catalog)
    for path in store.remove_orphans():
        progress(f"  removed {path}: the temp file of a write that never finished")
    if store.done(spec.name) and not resume:
        raise SweepError(
            f"sweep '{spec.name}' already has {len(store.done(spec.name))} results in {spec.results_uri}; pass "
            "--resume to run only the missing (and failed) trials, or give the sweep another name"
        )
    done = store.done(spec.name, ok_only=True)  # a resumed sweep measures failed repeats again
    report = SweepReport(spec.name, spec.results_uri, planned=len(trials),
                         already_done=sum((t.trial_id, t.repeat) in done for t in trials))
    _connect(address)
    targets = [catalog[h] for h in spec.hardware]
    check_cluster(targets)
    _get_publisher()

    uri = store.uri if "://" in store.uri else store.root
    todo = _units(spec, catalog, [t for t in trials if (t.trial_id, t.repeat) not in done], uri, len(trials))
    progress(f"sweep {spec.name}: {len(trials)} trial repeats on {', '.join(spec.hardware)}"
             f" ({report.already_done} already done)")
    t0 = time.monotonic()

    def _fit(todo: list[dict[str, Any]], total: int) -> None:
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
                callbacks=[_Progress(spec.name, total, progress)],
            ),
        )
        grid = tuner.fit()
        for res in grid:
            if res.error:
                ids = ", ".join(u["trial_id"] for u in res.config["trial"]["units"])
                report.trial_failures.append(f"{ids}: {str(res.error).splitlines()[0]}")

    if todo:
        _fit(todo, report.planned - report.already_done)
    report.wall_s = time.monotonic() - t0
    planned = {(t.trial_id, t.repeat) for t in trials}
    after = store.done(spec.name) & planned
    report.ran = len(after) - report.already_done
    df = store.read(spec.name)
    if not df.empty and "flags" in df.columns:
        keys = df["trial_id"].astype(str) + "|" + df["repeat"].astype(str)
        mine = df[keys.isin({f"{t}|{r}" for t, r in planned})]  # this sweep file's trials, not older ones
        report.remeasured = int(mine.drop_duplicates(["trial_id", "repeat"])["remeasured"].fillna(0).gt(0).sum())
        flagged = mine[mine["flags"].fillna("").astype(str) != ""]
        report.flagged = [f"{r.trial_id} r{r.repeat} {r.scenario}: {r.flags}" for r in flagged.itertuples()]
        for line in report.flagged[:10]:
            progress(f"  flagged (not counted as measured by the matcher): {line}")
        if len(report.flagged) > 10:
            progress(f"  ... and {len(report.flagged) - 10} more flagged rows (see the `flags` column)")
        local = {h: catalog[h].cpu_cores for h in spec.hardware if catalog[h].local}
        found = more_cores_slower(mine, local)
        again = pair_trials(mine, found) if spec.remeasure > 0 else set()
        if again:
            # Both sides of each pair once more, back to back: a neighbour's burst or a frequency
            # drop during one side's run is gone or hits both; what stays inconsistent stays out.
            redo = [t for t in trials if t.trial_id in again]
            for line in found:
                progress(f"  inconsistent, measuring the pair again: {line}")
            _fit(_units(spec, catalog, redo, uri, len(trials), again=True), len(redo))
            report.remeasured_for_consistency = sorted(again)
            df = store.read(spec.name)
            mine = df[(df["trial_id"].astype(str) + "|" + df["repeat"].astype(str)).isin(
                {f"{t}|{r}" for t, r in planned})]
            found = more_cores_slower(mine, local)
            progress(f"  re-measured {len(redo)} trial repeats of {len(again)} trials; "
                     f"{len(found)} pairs still inconsistent")
            report.wall_s = time.monotonic() - t0
        report.inconsistent = [str(i) for i in found]
        for line in report.inconsistent:
            progress(f"  INCONSISTENT (more cores slower beyond the spread; left out by the matcher): {line}")
    if not df.empty and "status" in df.columns:
        skipped = df.loc[df["status"] == "skipped"].drop_duplicates(["trial_id", "repeat"])
        report.skipped = len(skipped)
        for reason, group in skipped.groupby(skipped["error"].astype(str), sort=False):
            progress(f"  {len(group)} trial repeats skipped (not measured, not retried): {reason}")
        bad = df.loc[~df["status"].isin(SETTLED_STATUSES)].drop_duplicates(["trial_id", "repeat"])
        report.failed = len(bad)
        report.trial_failures += [f"{r.trial_id} r{r.repeat}: {r.error}" for r in bad.itertuples()]
        if len(bad):
            first = bad.iloc[0]
            progress(f"  {len(bad)} trial repeats failed; first: {first['trial_id']} r{first['repeat']}: "
                     f"{first['error']} (traceback in the trial's error.txt under {spec.results_uri}/logs); "
                     "fix the cause and run again with --resume to measure only those")
    missing = report.planned - len(after)
    if missing:
        progress(f"  {missing} trial repeats are missing after the sweep; run again with --resume")
    return report


def _units(spec: SweepSpec, catalog: dict[str, HardwareSpec], trials: list[TrialSpec], uri: str,
           planned: int, again: bool = False) -> list[dict[str, Any]]:
    """Tune's grid: the trial repeats to run, batched `configs_per_trial` configurations a Tune
    trial on one hardware (the per-trial tax is paid once a batch). `again`: measure them even
    though the store holds them (a re-measurement; otherwise a repeat already written is skipped)."""
    by_trial: dict[str, list[TrialSpec]] = {}
    for t in trials:
        t.num_cpus = t.hardware.cpu_cores
        by_trial.setdefault(t.trial_id, []).append(t)
    per_hw: dict[str, list[dict[str, Any]]] = {}
    for tid, ts in by_trial.items():
        # The hardware travels once per batch, not once per repeat.
        repeats = [{k: v for k, v in t.to_dict().items() if k != "hardware"} for t in ts]
        per_hw.setdefault(ts[0].hardware.name, []).append(
            {"trial_id": tid, "asset": ts[0].asset, "config": ts[0].config, "repeats": repeats})
    n = spec.configs_per_trial
    return [{"sweep_id": spec.name, "hardware": catalog[hw].to_dict(), "results_uri": uri, "planned": planned,
             "units": units[i:i + n], "again": again}
            for hw, units in per_hw.items() for i in range(0, len(units), n)]


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


# ---- the `sweep` command, shared by `benchmatch sweep` and `python -m benchmarks sweep` (ray job submit)

def add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="sweep file (YAML): asset, task, space, hardware, repeats, loadgen, ...")
    p.add_argument("--address", help="Ray address to run on (default: $RAY_ADDRESS, else the cluster of "
                                     "`benchmatch cluster up`, else an embedded local cluster)")
    p.add_argument("--resume", action="store_true",
                   help="measure only the trial repeats missing from the results store, and the failed ones")
    p.add_argument("--results", help="results URI: a folder, s3:// or gs:// (default: the sweep file's results_uri)")
    p.add_argument("--json", action="store_true", help="print the sweep report as JSON")


def _in_job_package() -> bool:
    """Whether this driver runs inside `ray job submit`'s unpacked working dir."""
    return "working_dir_files" in os.getcwd()


def sweep_command(a: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """Run the sweep file `a.config` as asked; exit 0 when every trial repeat succeeded, 1 otherwise.

    The asset and catalog are checked before any cluster starts, so a broken asset is one line."""
    import json

    from cluster.local import connect

    # Under `ray job submit` the driver's working directory is Ray's unpacked package, which Ray
    # deletes and re-extracts while this driver registers (seen with Ray 2.60): read every file
    # first, make paths absolute, and leave that directory before connecting.
    in_job = _in_job_package()
    results = a.results
    if in_job and not (results and ("://" in results or os.path.isabs(results))):
        raise SpecError("under `ray job submit`, give --results an absolute path or a s3:// / gs:// URI: "
                        "a relative path would land in Ray's temporary copy of the working dir and be lost")
    catalog_path = getattr(a, "catalog", None)
    spec, catalog = prepare(a.config, catalog_path=catalog_path, results_uri=results)
    if in_job:
        os.chdir(os.path.expanduser("~"))
    owned = connect(a.address, catalog_path, progress=say)
    try:
        report = run_sweep(spec, catalog, resume=a.resume, progress=say)
    finally:
        if owned:
            owned.shutdown()
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        say(report.summary())
    return 1 if report.trial_failures else 0
