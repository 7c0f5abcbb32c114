"""Pydantic models of the HTTP API, for validation and for the OpenAPI document at /openapi.json.

The request models are the matcher's own (`Requirements`, `Plan`), and so are the answers of
POST /recommend and /plan (`matcher.recommend.Recommendation`, `PlanRecommendation`, used as the
routes' response_model): the service and the CLI accept and answer exactly the same documents.
The models here describe what only the service answers: its errors, /hardware, /assets, /healthz.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from matcher.requirements import Plan, Requirements

# POST /plan takes the matcher's Plan document, as `benchmatch plan` does: {workloads:
# [Requirements], inventory, budget_per_hour_usd, objective}.
PlanRequest = Plan

__all__ = [
    "AssetsResponse",
    "ERROR_RESPONSES",
    "ErrorResponse",
    "HardwareResponse",
    "HealthResponse",
    "Plan",
    "PlanRequest",
    "Requirements",
]

_OPEN = ConfigDict(extra="allow")


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. constraints.latency_p99_ms.")
    message: str


class ErrorResponse(BaseModel):
    """Every non-200 answer. Echoed input is capped: `detail` at 2,000 characters, `errors` at 20
    entries of at most 300 characters each."""

    detail: str = Field(description="What went wrong and what to change, in one line.")
    kind: str = Field(description="Error class, e.g. RequirementsError, NoDataError, NotReady, InvalidJSON.")
    status: int
    errors: list[FieldError] | None = None


class HardwareResponse(BaseModel):
    model_config = _OPEN

    catalog: str = Field(description="The catalog file's name.")
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

    results: str | None = Field(description="The results folder's name (`results/`), when configured.")
    candidates_csv: str | None = Field(description="The candidate file's name, when configured.")
    count: int
    assets: list[AssetSummary]


class HealthResponse(BaseModel):
    model_config = _OPEN

    status: Literal["ok", "degraded", "not ready"] = Field(
        description="ok; degraded: answering, but something was skipped or cannot be listed; not ready "
                    "(HTTP 503): a source that answers need cannot be read.")
    ready: bool
    problems: list[str] = Field(description="Each problem, naming the file by its name in the store.")
    data: dict[str, Any]
    loaded_at: str
    reloads: int
    slo_ms: float | None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Malformed JSON (InvalidJSON, with the character), or the matcher rejected the input.",
        404: "No data for the asset named (GET /assets lists them).",
        409: "The service's data cannot answer this (no results for the task, unusable candidates or models).",
        413: "Request body over the size limit (1 MiB by default).",
        415: "The body was not sent as JSON (Content-Type: application/json).",
        422: "A field is invalid; `errors` names each one.",
        503: "Not ready: a source that answers need (catalog, results, models, candidates) cannot be read; "
             "the detail names it (see GET /healthz). Retry-After says when the replica looks again.",
    }.items()
}
