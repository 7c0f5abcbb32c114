"""What the HTTP service does, without HTTP or Ray: answer from the current snapshot of the data
(serve/snapshot.py), and turn every reason not to answer into one status code.

Answers are the workspace's own (`Workspace.recommend`, `.plan`, `.pareto`: what `benchmatch
recommend --json` prints for the same requirements and data), cached per snapshot. Every failure
a client can cause becomes a `ServiceError` with a 4xx status and a message that says what to
change; data the service cannot read is a 503 that names the file. `http_error` is the one
mapping from the matcher's errors to statuses; the FastAPI layer (serve/app.py) only writes JSON.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cluster.hardware import CatalogError
from matcher.errors import CandidateError, MatcherError, ModelError, NoDataError, RequirementsError
from matcher.requirements import Plan, Requirements
from matcher.workspace import Sources, Workspace
from serve.jsonable import dumps
from serve.snapshot import Snapshot, Snapshots, SourceNames, now

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a requirements document is a few hundred bytes
# An error echoes what the client sent only this far: a 1 MiB body must not come back as megabytes.
MAX_DETAIL_CHARS = 2000
MAX_FIELD_ERRORS = 20
MAX_ERROR_CHARS = 300


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text) - limit + 30} more characters)"


class ServiceError(Exception):
    """An answer other than 200: HTTP status, a one-line message a person can act on, and
    (for validation) the failing fields as [{"field": "constraints.latency_p99_ms", "message": ...}]."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 kind: str = "error", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.kind = kind
        self.headers = headers

    def body(self) -> dict[str, Any]:
        detail = self.detail
        if len(self.errors) > MAX_FIELD_ERRORS:
            detail = f"{len(self.errors)} errors, the first {MAX_FIELD_ERRORS} listed in `errors`: {detail}"
        out: dict[str, Any] = {"detail": _cap(detail, MAX_DETAIL_CHARS), "kind": self.kind, "status": self.status}
        if self.errors:
            out["errors"] = [{"field": _cap(e["field"], MAX_ERROR_CHARS), "message": _cap(e["message"], MAX_ERROR_CHARS)}
                             for e in self.errors[:MAX_FIELD_ERRORS]]
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
    # The CLI's defaults (Workspace.recommend): the same question gets the same answer.
    solver: str = "cbc"
    time_limit_s: float | None = 60.0

    def sources(self) -> Sources:
        return Sources(results_uri=self.results_uri, models_dir=self.models_dir,
                       candidates_csv=self.candidates_csv, catalog_path=self.catalog_path)


def http_error(exc: MatcherError | CatalogError, names: SourceNames, known: Sequence[str],
               asked: Sequence[str | None] = (), fields: Sequence[str] | None = None) -> ServiceError:
    """The status of a matcher error: the client's input is unusable (4xx) or the service's data
    cannot answer it (409). `known`: the assets with data; `asked`: the assets the request named,
    `fields` where it named each (default `asset`).
    Messages show sources by name, never by the server's path."""
    detail = names.text(str(exc))
    if isinstance(exc, RequirementsError):
        errors = [{"field": f, "message": names.text(m)} for f, m in exc.errors]
        return ServiceError(422, detail, errors, kind="RequirementsError")
    if isinstance(exc, NoDataError):
        at = next((i for i, a in enumerate(asked) if a is not None and a not in known), None)
        if at is not None:
            unknown = asked[at]
            hint = f" (assets with data: {', '.join(known)}; GET /assets)" if known else " (GET /assets)"
            field = fields[at] if fields is not None else "asset"
            return ServiceError(404, detail + ("" if "assets present" in detail else hint),
                                [{"field": field, "message": f"no data for asset '{unknown}'"}], kind="NoDataError")
        return ServiceError(409, detail, kind="NoDataError")
    if isinstance(exc, CandidateError | ModelError):
        # The candidate table and the models belong to the service, yet it is the request (asset,
        # task) that selected them: 409 says "the data cannot answer this" without blaming the
        # request's syntax. The message names the file to fix.
        return ServiceError(409, detail, kind=type(exc).__name__)
    if isinstance(exc, CatalogError):
        return ServiceError(503, detail, kind="CatalogError")
    return ServiceError(400, detail, kind=type(exc).__name__)


class ServiceCore:
    """The service's state and handlers. Thread-safe: FastAPI runs sync routes in a threadpool.
    Constructing it loads the data, so a replica is ready when its constructor returns."""

    def __init__(self, settings: ServiceSettings, *, on_reload: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        sources = settings.sources()
        self.names = SourceNames(sources)
        self.started_at = now()
        self._snapshots = Snapshots(sources, self.names, reload_interval_s=settings.reload_interval_s,
                                    clock=clock, on_reload=on_reload)

    @property
    def reloads(self) -> int:
        return self._snapshots.reloads

    def snapshot(self) -> Snapshot:
        return self._snapshots.current()

    # -- routes --------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 "not ready" while a source an answer needs cannot be read,
        else 200, "degraded" when something was skipped or the sources cannot be listed."""
        snap = self.snapshot()
        ws, s, names = snap.workspace, self.settings, self.names
        problems = [*snap.unreadable.values(), *snap.warnings]
        if self._snapshots.listing_problem is not None:
            problems.append(f"the sources could not be listed; answering from the data loaded at {snap.loaded_at}: "
                            f"{self._snapshots.listing_problem}")
        status = "not ready" if not snap.ready else "degraded" if problems else "ok"
        return (200 if snap.ready else 503), {
            "status": status,
            "ready": snap.ready,
            "problems": problems,
            "data": {
                "results": names.folder(names.results),
                "result_files": ws.result_files,
                "result_rows": 0 if ws.rows is None else len(ws.rows),
                "assets": snap.asset_names(),
                "candidates_csv": names.candidates,
                "candidate_rows": 0 if ws.table is None else len(ws.table),
                "models": names.folder(names.models),
                "models_loaded": 0 if ws.models is None else len(ws.models.models),
                "catalog": names.catalog,
                "hardware_types": len(ws.catalog),
            },
            "loaded_at": snap.loaded_at,
            "load_seconds": round(snap.load_seconds, 4),
            "reloads": self.reloads,
            "reload_interval_s": s.reload_interval_s,
            "slo_ms": s.slo_ms,
            "started_at": self.started_at,
            "pid": os.getpid(),
        }

    def hardware(self) -> dict[str, Any]:
        snap = self.snapshot()
        catalog = snap.workspace.catalog
        if not catalog and not snap.ready:
            kind = "CatalogError" if "catalog" in snap.unreadable else "NotReady"
            raise ServiceError(503, snap.unreadable.get("catalog") or "; ".join(snap.unreadable.values()),
                               kind=kind, headers=self._retry_after())
        return {"catalog": self.names.catalog, "count": len(catalog),
                "hardware": [spec.to_dict() for spec in catalog.values()]}

    def assets(self) -> dict[str, Any]:
        snap = self.snapshot()
        return {"results": self.names.folder(self.names.results), "candidates_csv": self.names.candidates,
                "count": len(snap.assets), "assets": snap.assets}

    def recommend(self, req: Requirements) -> bytes:
        """The JSON bytes of Workspace.recommend(req): what `benchmatch recommend --json` prints."""
        s = self.settings
        return self._answer("recommend", req, [req.asset],
                            lambda ws: ws.recommend(req, solver=s.solver, time_limit_s=s.time_limit_s))

    def pareto(self, req: Requirements) -> bytes:
        """The cost–latency Pareto front (Workspace.pareto), with the inventory checked as
        /recommend checks it."""
        s = self.settings

        def front(ws: Workspace) -> dict[str, Any]:
            return ws.pareto(req, solver=s.solver, time_limit_s=s.time_limit_s)

        return self._answer("pareto", req, [req.asset], front)

    def plan(self, plan: Plan) -> bytes:
        """The JSON bytes of Workspace.plan(plan): the workloads placed jointly."""
        s = self.settings
        return self._answer("plan", plan, [w.asset for w in plan.workloads],
                            lambda ws: ws.plan(plan, solver=s.solver, time_limit_s=s.time_limit_s),
                            [f"workloads.{i}.asset" for i in range(len(plan.workloads))])

    # -- helpers -------------------------------------------------------------------------------

    def _answer(self, route: str, doc: BaseModel, asked: Sequence[str | None],
                compute: Callable[[Workspace], Any], fields: Sequence[str] | None = None) -> bytes:
        """The answer from the snapshot's cache (keyed by route and document), else computed."""
        snap = self.snapshot()
        if not snap.ready:
            raise ServiceError(503, "the service cannot answer until its data can be read: "
                               + "; ".join(snap.unreadable.values()) + " (GET /healthz)",
                               kind="NotReady", headers=self._retry_after())
        try:
            return snap.answer(f"{route}:{doc.model_dump_json()}", lambda: dumps(compute(snap.workspace)),
                               self.settings.answer_cache_size)
        except (MatcherError, CatalogError) as exc:
            raise http_error(exc, self.names, snap.asset_names(), asked, fields) from None

    def _retry_after(self) -> dict[str, str]:
        # The next reload attempt is at most reload_interval_s away.
        return {"Retry-After": str(max(1, math.ceil(self.settings.reload_interval_s)))}
