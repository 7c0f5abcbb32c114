"""The benchmatch HTTP service: a Ray Serve deployment with a FastAPI ingress.

    POST /recommend   requirements -> ranked hardware options (Workspace.recommend)
    POST /pareto      requirements -> the cost–latency Pareto front (Workspace.pareto)
    POST /plan        several workloads sharing inventory and budget (Workspace.plan)
    GET  /hardware    the hardware catalog
    GET  /assets      assets in the results store, rows and hardware measured
    GET  /healthz     200 when it can answer (ok | degraded), 503 "not ready" naming what it cannot read
    GET  /docs, /openapi.json

`build_app(args)` is the application builder (`serve run serve/config.yaml`, `import_path:
serve.app:build_app`); serve/runner.py starts it for `benchmatch serve`. The routes are plain
functions on `router` that find their `ServiceCore` on the app state, so the very same FastAPI app
also runs under plain uvicorn (tests/perf/serve_load.py measures Serve's overhead against that).
"""

from __future__ import annotations

import email.message
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve as ray_serve
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException

from cluster.validation import field_errors, one_line
from matcher.recommend import PlanRecommendation, Recommendation
from matcher.requirements import loads_json
from serve.core import MAX_BODY_BYTES, ServiceCore, ServiceError, ServiceSettings
from serve.jsonable import dumps
from serve.loopback import keep_replica_grpc_on_loopback
from serve.metrics import recorder, route_label
from serve.schemas import (
    ERROR_RESPONSES,
    AssetsResponse,
    HardwareResponse,
    HealthResponse,
    PlanRequest,
    Requirements,
)

log = logging.getLogger("benchmatch.serve")

DEPLOYMENT_NAME = "BenchmatchService"
APP_NAME = "benchmatch"
MAX_QUEUED_REQUESTS = 32
DEFAULT_NUM_CPUS = 1.0
DEFAULT_AUTOSCALING: dict[str, Any] = {
    "min_replicas": 1,
    "max_replicas": 4,
    # A cached answer takes ~1 ms and a fresh MILP tens of ms on one core: a few requests in
    # flight per replica keep it busy without queueing solves behind each other for long.
    "target_ongoing_requests": 4,
    "upscale_delay_s": 5.0,
    "downscale_delay_s": 120.0,
}


# ----------------------------------------------------------------------------------------------
# Where a request finds its ServiceCore
# ----------------------------------------------------------------------------------------------


def core_of(app: Any) -> ServiceCore:
    """The app's ServiceCore: set on app.state by the plain-uvicorn path, or owned by the Serve
    replica (Serve hands every replica its own copy of the app, so caching it there is safe)."""
    core = getattr(app.state, "core", None)
    if core is None:
        core = ray_serve.get_replica_context().servable_object.core
        app.state.core = core
    return core


def get_core(request: Request) -> ServiceCore:
    return core_of(request.app)


Core = Annotated[ServiceCore, Depends(get_core)]


# ----------------------------------------------------------------------------------------------
# Errors: every answer other than 200 has the same JSON shape (schemas.ErrorResponse)
# ----------------------------------------------------------------------------------------------


def error_response(status: int, detail: str, kind: str, errors: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(ServiceError(status, detail, errors, kind).body()), status_code=status,
                    media_type="application/json", headers=headers)


_ROOT_MODELS: dict[str, type[BaseModel]] = {"/plan": PlanRequest}


def _route_path(scope: dict[str, Any]) -> str:
    """The matched route's template (set by the router), else the raw path: independent of the
    route prefix the application is mounted at."""
    route = scope.get("route")
    return getattr(route, "path", None) or scope.get("path", "")


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = list(exc.errors())
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        loc = bad_json.get("loc", ())
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        why = (bad_json.get("ctx") or {}).get("error", "")
        return error_response(400, f"request body is not valid JSON{where}: {why}".rstrip(": "), "InvalidJSON")
    if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
        # FastAPI hands over raw bytes when the Content-Type is not JSON (`curl -d` sends a form
        # type unless told otherwise): say that, rather than "not a dictionary".
        got = request.headers.get("content-type") or "none"
        return error_response(415, f"send the body as JSON with 'Content-Type: application/json' (got {got!r})",
                              "UnsupportedMediaType")
    # Worded as the CLI words them: one flattening of pydantic's errors (cluster.validation).
    pairs = field_errors(errors, _ROOT_MODELS.get(_route_path(request.scope), Requirements))
    return error_response(422, one_line(pairs), "RequirementsError",
                          [{"field": f, "message": m} for f, m in pairs])


async def _on_service_error(request: Request, exc: ServiceError) -> Response:
    return Response(dumps(exc.body()), status_code=exc.status, media_type="application/json", headers=exc.headers)


_STRING = r'"(?:[^"\\]|\\.)*"'
_BRACKETS = re.compile(_STRING + r"|[\[\]{}]")
MAX_NESTING = 100  # a plan nests 4 levels; json.loads gives up near the interpreter's recursion limit


def json_problem(body: bytes, cause: BaseException | None) -> str | None:
    """Why json.loads refused `body` and at which character, for the failures it raises without a
    position (FastAPI turns those into a bare "error parsing the body"): bytes that are not UTF-8,
    nesting deeper than the interpreter's recursion limit, an integer longer than Python converts."""
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not valid UTF-8 at byte {cause.start}"
    text = body.decode("utf-8", "replace")
    if isinstance(cause, RecursionError):
        depth = 0
        for m in _BRACKETS.finditer(text):
            token = m.group(0)
            if token in ("[", "{"):
                depth += 1
                if depth > MAX_NESTING:
                    return (f"request body is not valid JSON at character {m.start()}: "
                            f"nested more than {MAX_NESTING} levels deep")
            elif token in ("]", "}"):
                depth -= 1
        return "request body is not valid JSON: nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        limit = sys.get_int_max_str_digits()
        for m in re.finditer(_STRING + rf"|-?\d{{{limit + 1},}}", text):
            if not m.group(0).startswith('"'):
                return (f"request body is not valid JSON at character {m.start()}: "
                        f"an integer of more than {limit} digits")
    return None


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI read the body into this request before its json.loads failed.
        why = json_problem(await request.body(), exc.__cause__)
        if why is not None:
            return error_response(400, why, "InvalidJSON")
    kinds = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}; see /docs for the routes"
    return error_response(exc.status_code, detail, kinds.get(exc.status_code, "HTTPError"),
                          headers=getattr(exc, "headers", None))


# ----------------------------------------------------------------------------------------------
# Middleware: body size limit and request metrics, as plain ASGI (no per-request task overhead)
# ----------------------------------------------------------------------------------------------


class _TooLarge(StarletteHTTPException):
    """Raised from `receive` once a chunked body crosses the limit. An HTTPException, because
    FastAPI re-raises those from body parsing (anything else would become a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes; "
                              "a requirements document is a few hundred bytes")


class LimitAndMeasure:
    """Rejects bodies over the size limit with 413 (by Content-Length up front; for chunked
    bodies as soon as the limit is crossed) and records every request's route, status, time."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            core = core_of(scope["app"])
            limit, slo_s = core.settings.max_body_bytes, core.settings.slo_ms
            slo_s = None if slo_s is None else slo_s / 1000.0
        except Exception:  # no core yet (replica starting): defaults still protect the service
            limit, slo_s = MAX_BODY_BYTES, None
        state = {"status": 500, "started": False, "received": 0}

        async def send_tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        async def receive_limited() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise _TooLarge(limit)
            return message

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            # A malformed Content-Length is the HTTP server's to reject (400), not a size problem.
            if length is not None and length.isdigit() and int(length) > limit:
                await self._too_large(scope, send_tracked, limit)
            else:
                await self.app(scope, receive_limited, send_tracked)
        except _TooLarge:
            if not state["started"]:
                await self._too_large(scope, send_tracked, limit)
        finally:
            route = route_label(_route_path(scope))
            recorder().request(route, scope.get("method", ""), state["status"], time.perf_counter() - t0,
                               slo_s if route != "other" else None)

    @staticmethod
    async def _too_large(scope: dict[str, Any], send: Any, limit: int) -> None:
        resp = error_response(
            413, f"request body is larger than {limit} bytes; a requirements document is a few hundred bytes",
            "RequestTooLarge", headers={"Connection": "close"})
        await resp(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------

def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this type as JSON (none given, application/json, +json)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    sub = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


class StrictJSONRoute(APIRoute):
    """A route whose JSON body may not repeat a key within an object. Python's json keeps the last
    value silently, so `{"top_k": 1, "top_k": 50}` was answered as 50 and a second `"constraints":
    {}` dropped every constraint of the first: refused instead with 400 InvalidJSON at the repeated
    key's character. Only a body that parses otherwise is checked here; every other failure is left
    to FastAPI's own parsing (and _on_validation_error / _on_http_error)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method == "POST" and _is_json(request.headers.get("content-type")):
                body = await request.body()  # cached on the request: FastAPI reads it from there
                if body:
                    try:
                        loads_json(body)
                    except json.JSONDecodeError as exc:
                        if exc.msg.startswith("duplicate key"):
                            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                                           "msg": "JSON decode error", "input": {},
                                                           "ctx": {"error": exc.msg}}]) from None
                    except (ValueError, RecursionError):
                        pass
            return await handler(request)

        return strict


router = APIRouter(route_class=StrictJSONRoute)
_JSON = "application/json"


def _json(body: bytes, status: int = 200) -> Response:
    # A Response is sent as is: the matcher's answer bytes (cached per snapshot) are not parsed
    # again into the response_model, which only documents them.
    return Response(body, status_code=status, media_type=_JSON)


@router.post(
    "/recommend",
    summary="Recommend hardware, counts and configuration for one workload",
    response_model=Recommendation,
    responses={200: {"description": "Ranked options, or a diagnosis when nothing is feasible (feasible: false)."},
               **ERROR_RESPONSES},
)
def recommend(req: Requirements, core: Core) -> Response:
    """The answer of `benchmatch recommend --json` for the same requirements (Workspace.recommend).
    An infeasible request is a 200 with `feasible: false` and a `diagnosis` naming the blocking
    constraint and the cheapest relaxation; `status` is the solver's (`time_limit`: the options
    are the best found, not proven optimal)."""
    return _json(core.recommend(req))


@router.post(
    "/pareto",
    summary="The cost–latency Pareto front for one workload",
    responses={200: {"description": "`{feasible, objective, method, points: [{latency_p99_ms, "
                     "cost_per_hour_usd, hardware, config}], notes}`, slowest-cheapest first; `notes` says when the "
                     "request's objective is not cost (the front is always cost against p99)."}, **ERROR_RESPONSES},
)
def pareto(req: Requirements, core: Core) -> Response:
    """The answer of `benchmatch recommend --pareto --json`: the least cost at each p99 bound
    (ε-constraint), under the other constraints of the same requirements."""
    return _json(core.pareto(req))


@router.post(
    "/plan",
    summary="Place several workloads that share inventory and budget",
    response_model=PlanRecommendation,
    responses={200: {"description": "One option per workload, or a diagnosis."}, **ERROR_RESPONSES},
)
def plan(body: PlanRequest, core: Core) -> Response:
    """The answer of `benchmatch plan --json` (Workspace.plan): each workload keeps its own
    constraints; together they fit the shared inventory and budget per hour."""
    return _json(core.plan(body))


@router.get("/hardware", summary="The hardware catalog", response_model=HardwareResponse,
            responses={503: ERROR_RESPONSES[503]})
def hardware(core: Core) -> Response:
    return _json(dumps(core.hardware()))


@router.get("/assets", summary="Assets with results, their row counts and the hardware measured",
            response_model=AssetsResponse)
def assets(core: Core) -> Response:
    return _json(dumps(core.assets()))


@router.get("/healthz", summary="Whether the service can answer, and what data is loaded",
            response_model=HealthResponse,
            responses={503: {"model": HealthResponse,
                             "description": "Not ready: a source that answers need cannot be read; "
                                            "`problems` names it."}})
def healthz(core: Core) -> Response:
    status, body = core.health()
    return _json(dumps(body), status)


def create_app() -> FastAPI:
    """The FastAPI app, without a ServiceCore: Serve replicas supply theirs; for plain uvicorn set
    `app.state.core = ServiceCore(...)`."""
    app = FastAPI(
        title="benchmatch",
        version="0.1.0",
        description=(
            "Recommends the hardware, count and configuration that meet an AI asset's requirements, "
            "from benchmarks measured with Ray Tune and performance models. Errors are JSON "
            "`{detail, kind, status, errors?}`; a client mistake is always a 4xx."
        ),
    )
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_middleware(LimitAndMeasure)
    return app


fastapi_app = create_app()


# ----------------------------------------------------------------------------------------------
# The Serve deployment and the application builder
# ----------------------------------------------------------------------------------------------


@ray_serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=16,
    # Shed load instead of queueing without bound: past this many requests waiting at the proxy,
    # a client gets a quick 503 with Retry-After rather than a wait that grows until it times out
    # (tests/perf/serve_load.py shows the unbounded queue collapsing under overload).
    max_queued_requests=MAX_QUEUED_REQUESTS,
    backpressure_config={"status_code": 503, "retry_after_s": 1},
    autoscaling_config=DEFAULT_AUTOSCALING,
    ray_actor_options={"num_cpus": DEFAULT_NUM_CPUS},
    health_check_period_s=5.0,
    graceful_shutdown_timeout_s=10.0,
)
@ray_serve.ingress(fastapi_app)
class BenchmatchService:
    """One replica. Its constructor loads the data (ServiceCore), so Serve sends it requests only
    once it can answer them; it then answers from memory and reloads when the data changes."""

    def __init__(self, settings: dict[str, Any]) -> None:
        keep_replica_grpc_on_loopback()  # runs before Serve starts this replica's gRPC server
        self.core = ServiceCore(ServiceSettings(**settings), on_reload=recorder().reloaded)


class AppArgs(BaseModel):
    """`args` of the application (config.yaml, `serve run serve.app:build_app key=value`)."""

    model_config = ConfigDict(extra="forbid")

    results_uri: str | None = Field(None, description="Results store (folder, file://, s3://, gs://).")
    models_dir: str | None = Field(None, description="Folder of fitted performance models.")
    candidates_csv: str | None = Field(None, description="A candidate table instead of results (and models).")
    catalog_path: str | None = Field(None, description="Hardware catalog YAML (default configs/hardware.yaml).")
    slo_ms: float | None = Field(100.0, gt=0, description="The service's own latency objective (ms).")
    reload_interval_s: float = Field(5.0, ge=0, description="How often to look for new results/models.")
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0)
    answer_cache_size: int = Field(512, ge=0, description="Answers kept per data version (0: none).")
    solver: Literal["cbc", "highs"] = Field("cbc", description="MILP solver; the CLI's default is cbc.")
    time_limit_s: float | None = Field(60.0, gt=0, description="Solver time limit per request.")
    # Shape of the deployment; a config file's `deployments:` section overrides these too.
    num_replicas: int | None = Field(None, ge=1, description="A fixed replica count instead of autoscaling.")
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling bound (default: as many replicas "
                                     "as the cluster's CPUs hold, at most 4).")
    target_ongoing_requests: float | None = Field(None, gt=0)
    num_cpus: float | None = Field(None, ge=0, description="CPUs reserved per replica (default 1).")
    max_queued_requests: int | None = Field(None, ge=-1, description="Requests queued at each proxy before "
                                            f"503 (default {MAX_QUEUED_REQUESTS}; -1: no limit).")


def _abs(path: str | None) -> str | None:
    """Paths relative to where the service is started, made absolute here: replicas may run
    with another working directory."""
    if not path or "://" in path:
        return path
    from pathlib import Path

    return str(Path(path).expanduser().resolve())


def settings_from_args(args: AppArgs) -> ServiceSettings:
    return ServiceSettings(
        results_uri=_abs(args.results_uri),
        models_dir=_abs(args.models_dir),
        candidates_csv=_abs(args.candidates_csv),
        catalog_path=_abs(args.catalog_path),
        slo_ms=args.slo_ms,
        reload_interval_s=args.reload_interval_s,
        max_body_bytes=args.max_body_bytes,
        answer_cache_size=args.answer_cache_size,
        solver=args.solver,
        time_limit_s=args.time_limit_s,
    )


def cluster_cpus() -> float | None:
    """CPUs of the Ray cluster this process is connected to (where `serve run` and `serve deploy`
    build the application), else of this machine (a Ray that `serve.run` is about to start here)."""
    try:
        import ray

        if ray.is_initialized():
            return float(ray.cluster_resources().get("CPU", 0.0)) or None
    except Exception:  # an unreachable cluster: the machine's count is the better guess
        pass
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def fit_to_cluster(auto: dict[str, Any], num_cpus: float, cpus: float | None) -> dict[str, Any]:
    """Autoscaling bounds that the cluster can schedule: no more replicas of `num_cpus` each than
    `cpus` holds (at least one). Replicas beyond that would wait for CPUs forever on a fixed
    machine, while Serve keeps counting them as wanted."""
    if not cpus or num_cpus <= 0:
        return auto
    fits = max(1, int(cpus // num_cpus))
    out = {**auto, "max_replicas": min(auto["max_replicas"], fits)}
    out["min_replicas"] = min(out["min_replicas"], out["max_replicas"])
    return out


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Application builder: `serve.app:build_app` with args results_uri, models_dir,
    candidates_csv, catalog_path, slo_ms, reload_interval_s, and the deployment shape
    (num_replicas | min_replicas/max_replicas/target_ongoing_requests, num_cpus).

    Without `max_replicas` the autoscaling bound is what the cluster holds when the app is built
    (`fit_to_cluster`); a given `max_replicas` is kept, with a warning when the cluster cannot
    hold it now (an autoscaling cluster may grow to it)."""
    try:
        parsed = AppArgs.model_validate(dict(args or {}))
    except ValidationError as exc:
        raise ValueError(f"benchmatch application args: {one_line(field_errors(exc.errors(), AppArgs))}") from None
    options: dict[str, Any] = {}
    num_cpus = parsed.num_cpus if parsed.num_cpus is not None else DEFAULT_NUM_CPUS
    if parsed.num_replicas is not None:
        options["num_replicas"] = parsed.num_replicas
        options["autoscaling_config"] = None
    else:
        shape = {k: getattr(parsed, k) for k in ("min_replicas", "max_replicas", "target_ongoing_requests")
                 if getattr(parsed, k) is not None}
        auto = {**DEFAULT_AUTOSCALING, **shape}
        auto["max_replicas"] = max(auto["max_replicas"], auto["min_replicas"], 1)
        cpus = cluster_cpus()
        if parsed.max_replicas is None:
            auto = fit_to_cluster(auto, num_cpus, cpus)
        elif cpus and auto["max_replicas"] * num_cpus > cpus:
            log.warning("benchmatch: max_replicas %d x num_cpus %g exceeds the %g CPUs of this cluster; "
                        "replicas beyond that wait until the cluster grows", auto["max_replicas"], num_cpus, cpus)
        options["autoscaling_config"] = auto
    if parsed.num_cpus is not None:
        options["ray_actor_options"] = {"num_cpus": parsed.num_cpus}
    if parsed.max_queued_requests is not None:
        options["max_queued_requests"] = parsed.max_queued_requests
    deployment = BenchmatchService.options(**options) if options else BenchmatchService
    return deployment.bind(asdict(settings_from_args(parsed)))


__all__ = [
    "APP_NAME",
    "AppArgs",
    "BenchmatchService",
    "build_app",
    "cluster_cpus",
    "create_app",
    "fit_to_cluster",
    "fastapi_app",
    "json_problem",
]
