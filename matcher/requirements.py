"""Requirements: what the user needs from a deployment, validated so that every rejection names
the field and says why (`constraints.latency_p99_ms: must be greater than 0`)."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from matcher.errors import RequirementsError

# NaN / inf would pass `gt=0` comparisons in surprising ways; reject them at the door.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class Constraints(BaseModel):
    """All optional; an unset constraint does not restrict the answer."""

    model_config = _STRICT

    latency_p99_ms: float | None = Field(None, gt=0, description="Max p99 latency of one query (ms).")
    throughput_qps: float | None = Field(
        None, gt=0, description="Demand: samples per second the deployment must sustain."
    )
    budget_per_hour_usd: float | None = Field(None, gt=0, description="Max cost per hour (USD/h).")
    budget_total_usd: float | None = Field(None, gt=0, description="Max total cost over duration_h (USD).")
    duration_h: float | None = Field(None, gt=0, description="How long the deployment runs (h).")
    accuracy: float | None = Field(None, ge=0, le=1, description="Min accuracy (fraction 0..1).")
    energy_per_sample_j: float | None = Field(None, gt=0, description="Max energy per sample (J).")
    max_power_w: float | None = Field(None, gt=0, description="Max total power of all replicas (W).")

    @model_validator(mode="after")
    def _total_needs_duration(self) -> Constraints:
        if self.budget_total_usd is not None and self.duration_h is None:
            raise ValueError("duration_h is required when budget_total_usd is set")
        return self


class Requirements(BaseModel):
    """One workload's requirements. `inventory` counts devices per hardware type (accelerators, or
    1 per CPU-only instance); hardware it does not list is unlimited."""

    model_config = _STRICT

    asset: str | None = None
    task: Literal["infer", "train"] = "infer"
    objective: Literal["cost", "energy", "latency"] = "cost"
    constraints: Constraints = Field(default_factory=Constraints)
    top_k: int = Field(3, ge=1, le=50)
    inventory: dict[str, Annotated[int, Field(ge=0)]] | None = None


_MSG_REWRITES = (
    ("Input should be ", "must be "),
    ("List should ", "must "),
    ("Value error, ", ""),
    ("Field required", "is required"),
)


class Plan(BaseModel):
    """Several workloads placed jointly (matcher.solve.plan): each keeps its own requirements, and
    together they share `inventory` (devices per hardware type) and `budget_per_hour_usd`."""

    model_config = _STRICT

    workloads: list[Requirements] = Field(..., min_length=1, max_length=64)
    inventory: dict[str, Annotated[int, Field(ge=0)]] | None = None
    budget_per_hour_usd: float | None = Field(None, gt=0)
    objective: Literal["cost", "energy", "latency"] = "cost"


def _allowed_fields(loc: tuple[Any, ...], root: type[BaseModel] = Requirements) -> list[str]:
    """Fields of the model that holds the last element of `loc`."""
    model, parts = root, list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if model is Plan and part == "workloads":
            model = Requirements
            if parts and isinstance(parts[0], int):
                parts.pop(0)
        elif model is Requirements and part == "constraints":
            model = Constraints
    return sorted(model.model_fields)


def flatten_errors(exc: ValidationError, root: type[BaseModel] = Requirements) -> list[tuple[str, str]]:
    """pydantic errors as (dotted field, plain message) pairs."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc, root)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msg = f"unknown field{hint} (allowed: {', '.join(allowed)})"
        else:
            msg = err["msg"]
            for old, new in _MSG_REWRITES:
                msg = msg.replace(old, new)
            # A cross-field check says which field it is about first: point the location at it.
            first = msg.split(" ", 1)[0]
            if err["type"] == "value_error" and first in _allowed_fields(loc + ("",), root):
                field = ".".join([*(str(p) for p in loc), first])
                msg = msg.split(" ", 1)[1]
                out.append((field, msg))
                continue
            if "input" in err and err["type"] not in ("missing",):
                msg = f"{msg} (got {err['input']!r})"
        out.append((field, msg))
    return out


def parse_requirements(data: Any, source: str = "requirements") -> Requirements:
    """Validate a mapping (already parsed from JSON/YAML/HTTP). Raises RequirementsError."""
    if isinstance(data, Requirements):
        return data
    if not isinstance(data, dict):
        raise RequirementsError(
            f"{source}: expected a mapping of requirement fields, got {type(data).__name__}",
            [("(top level)", "expected a mapping")],
        )
    try:
        return Requirements.model_validate(data)
    except ValidationError as exc:
        errors = flatten_errors(exc)
        lines = "; ".join(f"{f}: {m}" for f, m in errors)
        raise RequirementsError(f"{source}: {lines}", errors) from None


def parse_plan(data: Any, source: str = "plan") -> Plan:
    """Validate a plan document; errors name `workloads.1.constraints.latency_p99_ms` and so on."""
    if isinstance(data, Plan):
        return data
    if not isinstance(data, dict):
        raise RequirementsError(f"{source}: expected a mapping with 'workloads', got {type(data).__name__}",
                                [("(top level)", "expected a mapping")])
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        errors = flatten_errors(exc, Plan)
        raise RequirementsError(f"{source}: " + "; ".join(f"{f}: {m}" for f, m in errors), errors) from None


def load_requirements(path: str | os.PathLike[str]) -> Requirements:
    """Read requirements from a YAML or JSON file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RequirementsError(f"{path}: requirements file not found") from None
    except OSError as exc:
        raise RequirementsError(f"{path}: cannot read ({exc})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise RequirementsError(f"{path}: not valid {kind}: {exc}") from None
    if data is None:
        data = {}
    return parse_requirements(data, source=str(path))
