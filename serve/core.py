"""What the HTTP service does, without HTTP or Ray: load the data, keep it fresh, answer.

`ServiceCore` owns one immutable `Snapshot` of the data (catalog, result rows, the asset summary,
a cache of answers). A request first calls `snapshot()`, which at most every `reload_interval_s`
compares a cheap fingerprint of the sources (store file names, sizes and mtimes; the models
folder; the candidates CSV; the catalog) with the loaded one and, when it changed, builds a new
snapshot and swaps it in. Requests in flight keep the snapshot they started with, so new results
and models are picked up without downtime and without a half-loaded state ever being visible.

Every failure a client can cause becomes a `ServiceError` with a 4xx status and a message that
says what to change; the FastAPI layer (serve/app.py) only turns it into JSON.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cluster.hardware import DEFAULT_CATALOG, CatalogError, HardwareSpec, load_catalog
from matcher.errors import CandidateError, MatcherError, ModelError, NoDataError, RequirementsError
from matcher.requirements import Requirements

log = logging.getLogger("benchmatch.serve")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a requirements document is a few hundred bytes


class ServiceError(Exception):
    """An answer other than 200: HTTP status, a one-line message a person can act on, and
    (for validation) the failing fields as [{"field": "constraints.latency_p99_ms", "message": ...}]."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 kind: str = "error"):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.kind = kind

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.detail, "kind": self.kind, "status": self.status}
        if self.errors:
            out["errors"] = self.errors
        return out


@dataclass(frozen=True)
class ServiceSettings:
    """The application's arguments (config.yaml `args`, `build_app(args)`, `run_service`)."""

    results_uri: str | None = None
    models_dir: str | None = None
    candidates_csv: str | None = None
    catalog_path: str | None = None
    slo_ms: float | None = 100.0  # the service's own latency objective (metrics, /healthz)
    reload_interval_s: float = 5.0
    max_body_bytes: int = MAX_BODY_BYTES
    answer_cache_size: int = 512
    # The CLI's defaults (matcher.api.recommend_from_sources): the same question gets the same answer.
    solver: str = "cbc"
    time_limit_s: float | None = 60.0

    def sources(self) -> dict[str, Any]:
        """Keyword arguments of matcher.api.recommend_from_sources."""
        return {
            "results_uri": self.results_uri,
            "candidates_csv": self.candidates_csv,
            "models_dir": self.models_dir,
            "catalog_path": self.catalog_path,
        }


# ----------------------------------------------------------------------------------------------
# JSON: the matcher's answers hold numpy scalars, tuples and NaN; JSON has none of them
# ----------------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None (a missing number stays missing, never 0), numpy ->
    builtins, tuples/sets -> lists, dataclasses and pydantic models -> dicts."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict | Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((jsonable(v) for v in obj), key=repr)
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any) -> bytes:
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False).encode()


# ----------------------------------------------------------------------------------------------
# Fingerprint of the sources: cheap enough to take every few seconds
# ----------------------------------------------------------------------------------------------


def _stat(path: str | os.PathLike[str] | None) -> tuple[Any, ...]:
    if not path:
        return ()
    try:
        st = os.stat(path)
    except OSError:
        return ("missing",)
    return (st.st_size, st.st_mtime_ns)


def _tree(path: str | None) -> tuple[Any, ...]:
    """(relative name, size, mtime) of every file under a folder; a model file replaced in
    place changes its mtime even when the folder's own mtime stays put."""
    if not path:
        return ()
    root = Path(path)
    if not root.is_dir():
        return ("missing",)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith("."):
                continue  # temporary files of an atomic write
            p = os.path.join(dirpath, name)
            out.append((os.path.relpath(p, root), *_stat(p)))
    return tuple(sorted(out))


def _store_files(uri: str | None) -> tuple[Any, ...]:
    if not uri:
        return ()
    from benchmarks.store import ResultsStore

    store = ResultsStore(uri)
    paths = store.files()
    if not paths:
        return ()
    # One batched listing call: size and mtime catch a trial file rewritten under the same name.
    infos = store.fs.get_file_info(paths)
    return tuple((i.path, i.size, i.mtime_ns) for i in infos)


def fingerprint(s: ServiceSettings) -> tuple[Any, ...]:
    """What changes when the data changes. A source that cannot be listed (an object store that
    is unreachable for a moment) gives a marker instead of an error, so a request never fails on
    the freshness check; the snapshot then reports the problem."""
    try:
        return _fingerprint(s)
    except Exception as exc:  # listing a remote store can fail in many ways; none is the client's
        return ("unavailable", f"{type(exc).__name__}: {exc}")


def _fingerprint(s: ServiceSettings) -> tuple[Any, ...]:
    return (
        _store_files(s.results_uri),
        _tree(s.models_dir),
        _stat(s.candidates_csv),
        _stat(s.catalog_path or os.environ.get("BENCHMATCH_CATALOG") or DEFAULT_CATALOG),
    )


# ----------------------------------------------------------------------------------------------
# Snapshot: everything derived from one fingerprint
# ----------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sorted_str(values: Any) -> list[str]:
    return sorted({str(v) for v in values if v is not None and str(v) not in ("", "nan")})


def summarize_results(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per asset: rows, successful rows, tasks, scenarios, hardware measured, sweeps."""
    if df is None or df.empty or "asset" not in df.columns:
        return []
    out = []
    for asset, grp in df.groupby(df["asset"].astype(str), sort=True):
        ok = grp[grp["status"].astype(str) == "ok"] if "status" in grp.columns else grp
        cfg = [c for c in grp.columns if str(c).startswith("cfg_") and grp[c].notna().any()]
        out.append({
            "asset": asset,
            "rows": int(len(grp)),
            "ok_rows": int(len(ok)),
            "tasks": _sorted_str(grp["task"]) if "task" in grp else [],
            "scenarios": _sorted_str(grp["scenario"]) if "scenario" in grp else [],
            "hardware": _sorted_str(ok["hardware"]) if "hardware" in ok else [],
            "hardware_rows": {str(k): int(v) for k, v in ok["hardware"].astype(str).value_counts().sort_index().items()}
            if "hardware" in ok else {},
            "sweeps": _sorted_str(grp["sweep_id"]) if "sweep_id" in grp else [],
            "config_columns": sorted(c[len("cfg_"):] for c in cfg),
            "last_start_time": (max(_sorted_str(grp["start_time"])) if "start_time" in grp
                                and _sorted_str(grp["start_time"]) else None),
        })
    return out


def summarize_candidates(df: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    """The candidate CSV as /assets rows: one per asset column value, or one for the whole file."""
    if df is None or df.empty:
        return []
    groups = df.groupby(df["asset"].astype(str)) if "asset" in df.columns else [(f"(all rows of {source})", df)]
    out = []
    for asset, grp in groups:
        out.append({
            "asset": str(asset),
            "rows": int(len(grp)),
            "ok_rows": int(len(grp)),
            "tasks": [],
            "scenarios": [],
            "hardware": _sorted_str(grp["hardware"]),
            "hardware_rows": {str(k): int(v) for k, v in grp["hardware"].astype(str).value_counts().sort_index().items()},
            "sweeps": [],
            "config_columns": sorted(str(c)[len("cfg_"):] for c in grp.columns if str(c).startswith("cfg_")),
            "last_start_time": None,
            "source": "candidates_csv",
        })
    return out


@dataclass
class Snapshot:
    """The data one fingerprint describes. Replaced whole, never edited in place (except the
    answer cache, which has its own lock)."""

    fingerprint: tuple[Any, ...]
    loaded_at: str
    load_seconds: float
    catalog: dict[str, HardwareSpec] = field(default_factory=dict)
    catalog_source: str = ""
    results: pd.DataFrame | None = None
    result_files: int = 0
    candidates: pd.DataFrame | None = None
    model_files: int = 0
    assets: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answers: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    candidate_tables: dict[tuple[str | None, str], pd.DataFrame] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def asset_names(self) -> list[str]:
        return [a["asset"] for a in self.assets]


def load_snapshot(s: ServiceSettings, fp: tuple[Any, ...] | None = None) -> Snapshot:
    """Read the sources once. A source that cannot be read is reported (`problems`), not fatal:
    /healthz says what is wrong and the other routes still answer."""
    t0 = time.perf_counter()
    fp = fingerprint(s) if fp is None else fp
    snap = Snapshot(fingerprint=fp, loaded_at=_now(), load_seconds=0.0)
    if fp[:1] == ("unavailable",):
        snap.problems.append(f"sources could not be listed: {fp[1]}")
    cat_path = s.catalog_path or os.environ.get("BENCHMATCH_CATALOG") or str(DEFAULT_CATALOG)
    snap.catalog_source = str(cat_path)
    try:
        snap.catalog = load_catalog(cat_path)
    except CatalogError as exc:
        snap.problems.append(f"catalog: {exc}")
    if s.results_uri:
        from benchmarks.store import ResultsStore

        store = ResultsStore(s.results_uri)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                snap.results = store.read(on_corrupt="warn")
                snap.result_files = len(store.files())
            except Exception as exc:  # a broken store must not stop the service; /healthz names it
                snap.problems.append(f"results store {s.results_uri}: {type(exc).__name__}: {exc}")
        snap.problems += [f"results store: {w.message}" for w in caught]
        snap.assets += summarize_results(snap.results)
    if s.candidates_csv:
        from matcher.candidates import candidates_from_csv

        try:
            snap.candidates = candidates_from_csv(s.candidates_csv)
            snap.assets += summarize_candidates(snap.candidates, Path(s.candidates_csv).name)
        except CandidateError as exc:
            snap.problems.append(f"candidates: {exc}")
    if s.models_dir and fp[:1] != ("unavailable",):
        # No folder yet is normal before the first `benchmatch train`: answers rest on measurements.
        snap.model_files = sum(1 for entry in fp[1] if entry != "missing")
    snap.load_seconds = time.perf_counter() - t0
    return snap


# ----------------------------------------------------------------------------------------------
# The service
# ----------------------------------------------------------------------------------------------


def _matcher_api() -> Any | None:
    try:
        return importlib.import_module("matcher.api")
    except ImportError as exc:
        if exc.name not in ("matcher.api", "matcher"):
            raise  # matcher.api exists but is broken: that is a bug to see, not to hide
        return None


def field_errors(exc: RequirementsError) -> list[dict[str, str]]:
    return [{"field": f, "message": m} for f, m in getattr(exc, "errors", [])]


class ServiceCore:
    """The service's state and handlers. Thread-safe: FastAPI runs sync routes in a threadpool."""

    def __init__(self, settings: ServiceSettings, *, on_reload: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._on_reload = on_reload
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._snap = load_snapshot(settings)
        self._checked = clock()
        self.reloads = 0
        self.listing_problem: str | None = None
        self.started_at = _now()

    # -- data freshness ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current data, reloaded first when the sources changed (checked at most every
        reload_interval_s; the check itself lists files, it reads none)."""
        if self._clock() - self._checked < self.settings.reload_interval_s:
            return self._snap
        # One thread checks; the others keep answering from the current snapshot meanwhile.
        if not self._reload_lock.acquire(blocking=False):
            return self._snap
        try:
            self._checked = self._clock()
            fp = fingerprint(self.settings)
            self.listing_problem = fp[1] if fp[:1] == ("unavailable",) else None
            # Sources that cannot be listed right now: keep answering from the data we have
            # rather than replacing it with nothing.
            if self.listing_problem is None and fp != self._snap.fingerprint:
                snap = load_snapshot(self.settings, fp)
                self._snap = snap  # atomic swap; requests in flight keep the old object
                self.reloads += 1
                log.info("benchmatch: data changed, reloaded in %.3f s", snap.load_seconds)
                if self._on_reload is not None:
                    self._on_reload()
        finally:
            self._reload_lock.release()
        return self._snap

    # -- routes --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        snap = self.snapshot()
        api = _matcher_api()
        problems = list(snap.problems)
        if self.listing_problem is not None:
            problems.append(f"sources could not be listed; answering from the data loaded at {snap.loaded_at}: "
                            f"{self.listing_problem}")
        if api is None:
            problems.append("matcher.api is not importable: /recommend and /plan answer 503")
        s = self.settings
        rows = 0 if snap.results is None else len(snap.results)
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "data": {
                "results_uri": s.results_uri,
                "result_files": snap.result_files,
                "result_rows": rows,
                "assets": snap.asset_names(),
                "candidates_csv": s.candidates_csv,
                "candidate_rows": 0 if snap.candidates is None else len(snap.candidates),
                "models_dir": s.models_dir,
                "model_files": snap.model_files,
                "catalog": snap.catalog_source,
                "hardware_types": len(snap.catalog),
            },
            "loaded_at": snap.loaded_at,
            "load_seconds": round(snap.load_seconds, 4),
            "reloads": self.reloads,
            "reload_interval_s": s.reload_interval_s,
            "slo_ms": s.slo_ms,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "matcher": {"api": api is not None, "plan": api is not None and hasattr(api, "plan_from_sources")},
        }

    def hardware(self) -> dict[str, Any]:
        snap = self.snapshot()
        if not snap.catalog:
            raise ServiceError(503, f"the hardware catalog could not be loaded: {'; '.join(snap.problems)}",
                               kind="CatalogError")
        return {
            "catalog": snap.catalog_source,
            "count": len(snap.catalog),
            "hardware": [spec.to_dict() for spec in snap.catalog.values()],
        }

    def assets(self) -> dict[str, Any]:
        snap = self.snapshot()
        return {
            "results_uri": self.settings.results_uri,
            "candidates_csv": self.settings.candidates_csv,
            "count": len(snap.assets),
            "assets": snap.assets,
        }

    def recommend(self, req: Requirements) -> bytes:
        """The JSON bytes of matcher.api.recommend_from_sources(req, ...) for the current data.

        Answers are cached per (data fingerprint, requirements): the MILP is deterministic for
        the same input, so a repeated question costs a dict lookup instead of reading the
        results and solving again. Only successful answers are cached."""
        snap = self.snapshot()
        return self._cached(snap, req.model_dump_json(), lambda: self._call(snap, req.asset, self._answer, snap, req))

    def pareto(self, req: Requirements) -> bytes:
        """The cost–latency Pareto front (matcher.pareto.pareto_answer), cached like recommend."""
        snap = self.snapshot()
        return self._cached(snap, "pareto:" + req.model_dump_json(),
                            lambda: self._call(snap, req.asset, self._pareto_answer, snap, req))

    def _pareto_answer(self, snap: Snapshot, req: Requirements) -> dict[str, Any]:
        from matcher.pareto import pareto_answer

        api = self._api("build_candidates")
        s = self.settings
        return pareto_answer(req, self._candidates(snap, api, req), solver=s.solver,
                             time_limit_s=s.time_limit_s or 60.0)

    def _cached(self, snap: Snapshot, key: str, compute: Callable[[], Any]) -> bytes:
        """The answer's JSON bytes from the snapshot's LRU, else computed and remembered. Errors
        propagate and are not cached."""
        with snap.lock:
            hit = snap.answers.get(key)
            if hit is not None:
                snap.answers.move_to_end(key)
                return hit
        body = dumps(compute())
        with snap.lock:
            snap.answers[key] = body
            while len(snap.answers) > self.settings.answer_cache_size:
                snap.answers.popitem(last=False)
        return body

    def plan(self, plan: Any) -> bytes:
        """The JSON bytes of matcher.api.plan_from_sources(plan, ...), cached like recommend."""
        api = _matcher_api()
        if api is None or not hasattr(api, "plan_from_sources"):
            raise ServiceError(
                501,
                "planning several workloads is not available in this build: matcher.api.plan_from_sources "
                "is missing; ask POST /recommend once per workload instead",
                kind="NotImplemented",
            )
        snap = self.snapshot()
        known = snap.asset_names()
        unknown = next((w.asset for w in plan.workloads if w.asset is not None and w.asset not in known), None)
        return self._cached(snap, "plan:" + plan.model_dump_json(),
                            lambda: self._call(snap, unknown, self._plan_answer, snap, plan))

    # -- helpers -------------------------------------------------------------------------------

    def _answer(self, snap: Snapshot, req: Requirements) -> dict[str, Any]:
        """recommend_from_sources(req, ...), with the candidate table kept per (asset, task) for
        the life of the snapshot: the store is read once per data change, not once per request.
        It is the same composition as matcher.api.recommend_from_sources (build_candidates, then
        recommend); tests/integration/test_serve.py checks that the answers stay identical."""
        api = self._api("recommend_from_sources")
        s = self.settings
        if not hasattr(api, "build_candidates"):
            return api.recommend_from_sources(req, **s.sources(), solver=s.solver, time_limit_s=s.time_limit_s)
        from matcher.recommend import recommend

        cands = self._candidates(snap, api, req)
        return recommend(req, cands, solver=s.solver, time_limit_s=s.time_limit_s).model_dump()

    def _plan_answer(self, snap: Snapshot, plan: Any) -> dict[str, Any]:
        """plan_from_sources(plan, ...), from the snapshot's candidate tables (same composition:
        one table per workload's (asset, task), then matcher.recommend.recommend_plan)."""
        api = _matcher_api()
        s = self.settings
        if not hasattr(api, "build_candidates"):
            return api.plan_from_sources(plan, **s.sources(), solver=s.solver, time_limit_s=s.time_limit_s)
        from matcher.recommend import recommend_plan

        tables = [self._candidates(snap, api, req) for req in plan.workloads]
        return recommend_plan(plan, tables, solver=s.solver, time_limit_s=s.time_limit_s).model_dump()

    def _candidates(self, snap: Snapshot, api: Any, req: Requirements) -> pd.DataFrame:
        """The candidate table of (asset, task), built once per snapshot from the rows in memory."""
        key = (req.asset, req.task)
        cands = snap.candidate_tables.get(key)
        if cands is None:
            cands = api.build_candidates(req, **self.settings.sources(), results=snap.results)
            with snap.lock:
                snap.candidate_tables[key] = cands
        return cands

    def _api(self, name: str) -> Any:
        api = _matcher_api()
        if api is None or not hasattr(api, name):
            raise ServiceError(503, f"the matcher is not installed in this build (matcher.api.{name} missing)",
                               kind="Unavailable")
        return api

    def _call(self, snap: Snapshot, asset: str | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a matcher call and turn its ValueErrors (the caller's input being unusable) into
        4xx answers that say what to change."""
        try:
            return fn(*args, **kwargs)
        except RequirementsError as exc:
            raise ServiceError(422, str(exc), field_errors(exc), kind="RequirementsError") from None
        except NoDataError as exc:
            known = snap.asset_names()
            if asset is not None and asset not in known:
                hint = f" (assets with data: {', '.join(known)}; GET /assets)" if known else " (GET /assets)"
                raise ServiceError(404, f"{exc}{hint if 'assets present' not in str(exc) else ''}",
                                   [{"field": "asset", "message": f"no data for asset '{asset}'"}],
                                   kind="NoDataError") from None
            raise ServiceError(409, str(exc), kind="NoDataError") from None
        except (CandidateError, ModelError) as exc:
            # The candidate table and the models belong to the service, yet it is the request
            # (asset, task) that selected them; a 409 says "the server's data cannot answer this"
            # without blaming the request's syntax. The message names the file to fix.
            raise ServiceError(409, str(exc), kind=type(exc).__name__) from None
        except (MatcherError, ValueError) as exc:
            raise ServiceError(400, str(exc), kind=type(exc).__name__) from None
