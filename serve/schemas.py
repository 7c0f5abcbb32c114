"""Pydantic models of the HTTP API, for validation and for the OpenAPI document at /openapi.json.

The request model of POST /recommend is the matcher's own `Requirements`, so the service and the
CLI accept exactly the same documents and a rejected field is named the same way. Response
models document the answers; the routes return the matcher's dict as is (they are not filtered
through these models, so a field the matcher adds is never silently dropped).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from matcher.requirements import Plan, Requirements

# POST /plan takes the matcher's Plan document, as `benchmatch` does: {workloads: [Requirements],
# inventory, budget_per_hour_usd, objective}.
PlanRequest = Plan

__all__ = [
    "AssetsResponse",
    "Plan",
    "ErrorResponse",
    "HardwareResponse",
    "HealthResponse",
    "PlanRequest",
    "RecommendResponse",
    "Requirements",
]

_OPEN = ConfigDict(extra="allow")


class Option(BaseModel):
    model_config = _OPEN

    rank: int
    hardware: dict[str, int] = Field(description="Hardware type -> replicas.")
    config: dict[str, Any] = Field(description="The configuration (hyperparameters) to run.")
    cost_per_hour_usd: float | None = None
    predicted: dict[str, Any] = Field(default_factory=dict, description="Predicted metrics with bounds.")
    basis: str | None = Field(None, description="'measured' or 'predicted': what the numbers rest on.")
    binding: list[str] = Field(default_factory=list, description="Constraints at their limit.")
    band: Any = Field(None, description="Uncertainty band of the prediction.")


class RecommendResponse(BaseModel):
    """matcher.api.recommend_from_sources, unchanged (NaN becomes null)."""

    model_config = _OPEN

    feasible: bool
    objective: str
    options: list[Option]
    diagnosis: Any = Field(None, description="When infeasible: the blocking constraint and the cheapest relaxation.")
    solver: str | None = None
    solve_time_s: float | None = None
    candidates_considered: int | None = None


class PlanWorkload(BaseModel):
    model_config = _OPEN

    index: int
    asset: str | None
    option: Option | None = Field(None, description="Null when the workload could not be placed.")


class PlanResponse(BaseModel):
    """matcher.api.plan_from_sources, unchanged (NaN becomes null)."""

    model_config = _OPEN

    feasible: bool
    objective: str
    cost_per_hour_usd: float | None = None
    workloads: list[PlanWorkload]
    diagnosis: Any = None
    solver: str | None = None
    solve_time_s: float | None = None
    candidates_considered: int | None = None


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. constraints.latency_p99_ms.")
    message: str


class ErrorResponse(BaseModel):
    """Every non-200 answer."""

    detail: str = Field(description="What went wrong and what to change, in one line.")
    kind: str = Field(description="Error class, e.g. RequirementsError, NoDataError, RequestTooLarge.")
    status: int
    errors: list[FieldError] | None = None


class HardwareResponse(BaseModel):
    model_config = _OPEN

    catalog: str = Field(description="The catalog file.")
    count: int
    hardware: list[dict[str, Any]] = Field(description="HardwareSpec records (cluster/hardware.py).")


class AssetSummary(BaseModel):
    model_config = _OPEN

    asset: str
    rows: int
    ok_rows: int
    tasks: list[str]
    scenarios: list[str]
    hardware: list[str] = Field(description="Hardware with successful rows.")
    hardware_rows: dict[str, int]
    sweeps: list[str]
    config_columns: list[str]
    last_start_time: str | None = None


class AssetsResponse(BaseModel):
    model_config = _OPEN

    results_uri: str | None
    candidates_csv: str | None
    count: int
    assets: list[AssetSummary]


class HealthResponse(BaseModel):
    model_config = _OPEN

    status: Literal["ok", "degraded"]
    problems: list[str]
    data: dict[str, Any]
    loaded_at: str
    reloads: int
    slo_ms: float | None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed JSON, or the matcher rejected the input.",
        404: "No data for the asset named (GET /assets lists them).",
        409: "The service's data cannot answer this (no results for the task, unusable candidates or models).",
        413: "Request body over the size limit (1 MiB by default).",
        415: "The body was not sent as JSON (Content-Type: application/json).",
        422: "A field is invalid; `errors` names each one.",
        503: "The matcher or the catalog is unavailable.",
    }.items()
}
