"""Requirements: what the user needs from a deployment, validated so that every rejection names
the field and says why (`constraints.latency_p99_ms: must be greater than 0`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster.validation import field_errors
from matcher.errors import RequirementsError

# NaN / inf would pass `gt=0` comparisons in surprising ways; reject them at the door.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

# Beyond these the replica counts (demand / per-replica throughput) and the total cost (price x
# hours) overflow the solver's numbers, and the MILP would answer a wrong "infeasible".
MAX_THROUGHPUT_QPS = 1e12
MAX_DURATION_H = 1e6  # about 114 years


def _unicode(text: str) -> str:
    # JSON can carry a lone surrogate ("\ud800"), which no UTF-8 file, log or answer can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"must be valid Unicode text (a lone surrogate at character {exc.start})") from None
    return text


# Strict: `true` is not 1 and "3" is not 3 (lax pydantic would take both). A float field still
# takes an integer, so `"latency_p99_ms": 5` stays valid.
Name = Annotated[str, AfterValidator(_unicode)]
Count = Annotated[int, Field(ge=0, strict=True)]


def _number(description: str, **bounds: float) -> Any:
    return Field(None, strict=True, description=description, **bounds)


class Constraints(BaseModel):
    """All optional; an unset constraint does not restrict the answer."""

    model_config = _STRICT

    # One field per latency statistic (metrics.LATENCY): a bound names the statistic it bounds, and
    # a request that bounds a statistic the data lacks is refused, never checked against another.
    latency_p50_ms: float | None = _number("Max median latency of one query (ms).", gt=0)
    latency_p90_ms: float | None = _number("Max 90th-percentile latency of one query (ms).", gt=0)
    latency_p95_ms: float | None = _number("Max 95th-percentile latency of one query (ms).", gt=0)
    latency_p99_ms: float | None = _number("Max p99 latency of one query (ms).", gt=0)
    latency_p999_ms: float | None = _number("Max 99.9th-percentile latency of one query (ms).", gt=0)
    latency_mean_ms: float | None = _number("Max mean latency of one query (ms).", gt=0)
    throughput_qps: float | None = _number(
        f"Demand: samples per second the deployment must sustain (at most {MAX_THROUGHPUT_QPS:g}).",
        gt=0, le=MAX_THROUGHPUT_QPS)
    budget_per_hour_usd: float | None = _number("Max cost per hour (USD/h).", gt=0)
    budget_total_usd: float | None = _number("Max total cost over duration_h (USD).", gt=0)
    duration_h: float | None = _number(f"How long the deployment runs (h; at most {MAX_DURATION_H:g}).",
                                       gt=0, le=MAX_DURATION_H)
    accuracy: float | None = _number("Min accuracy (fraction 0..1).", ge=0, le=1)
    energy_per_sample_j: float | None = _number("Max energy per sample (J).", gt=0)
    max_power_w: float | None = _number("Max total power of all replicas (W).", gt=0)
    # LLM serving (rows measured by `benchmatch llm-bench` or imported from vLLM / GuideLLM / AIPerf)
    ttft_p50_ms: float | None = _number("Max median time to first token of a request (ms).", gt=0)
    ttft_p99_ms: float | None = _number("Max p99 time to first token of a request (ms).", gt=0)
    tpot_p50_ms: float | None = _number("Max median time per output token after the first (ms).", gt=0)
    tpot_p99_ms: float | None = _number("Max p99 time per output token after the first (ms).", gt=0)
    requests_per_s: float | None = _number(
        "Demand of an LLM workload: requests per second (the same as throughput_qps where a sample is a "
        "request); give this or output_tokens_per_s.", gt=0, le=MAX_THROUGHPUT_QPS)
    output_tokens_per_s: float | None = _number(
        "Demand of an LLM workload: output tokens per second the deployment must generate.",
        gt=0, le=MAX_THROUGHPUT_QPS)
    energy_per_output_token_j: float | None = _number("Max energy per output token (J), where measured.", gt=0)
    quality: dict[Name, Annotated[float, Field(strict=True, ge=-MAX_THROUGHPUT_QPS, le=MAX_THROUGHPUT_QPS)]] | None = \
        Field(None, max_length=32, description=(
            "Bounds on quality scores imported as quality_<name> (MAE, error rate, perplexity, BLEU, ...): "
            "{mae: 0.3} keeps replicas whose score is at most 0.3 where lower is better and at least 0.3 "
            "where higher is better, as the rows' quality_<name>_direction says."))

    @model_validator(mode="after")
    def _total_needs_duration(self) -> Constraints:
        if self.budget_total_usd is not None and self.duration_h is None:
            raise ValueError("duration_h is required when budget_total_usd is set")
        demands = [n for n in ("throughput_qps", "requests_per_s", "output_tokens_per_s") if getattr(self, n) is not None]
        if len(demands) > 1 and not (set(demands) == {"throughput_qps", "requests_per_s"}
                                     and self.throughput_qps == self.requests_per_s):
            raise ValueError(f"give one demand, not {' and '.join(demands)}: the output length of the workload's "
                             "requests turns a request rate into tokens/s and back")
        return self

    @property
    def demand_field(self) -> str | None:
        """The demand the request states (throughput_qps and requests_per_s are one unit: a sample)."""
        for name in ("output_tokens_per_s", "requests_per_s", "throughput_qps"):
            if getattr(self, name) is not None:
                return name
        return None


class Requirements(BaseModel):
    """One workload's requirements. `inventory` counts devices per hardware type (accelerators, or
    1 per CPU-only instance); hardware it does not list is unlimited."""

    model_config = _STRICT

    asset: Name | None = None
    task: Literal["infer", "train"] = "infer"
    objective: Literal["cost", "energy", "latency"] = "cost"
    constraints: Constraints = Field(default_factory=Constraints)
    top_k: int = Field(3, ge=1, le=50, strict=True)
    inventory: dict[Name, Count] | None = None
    max_utilization: float = Field(
        1.0, gt=0, le=1, strict=True,
        description="Plan each replica for at most this share of its capacity at the SLO (headroom for bursts "
        "beyond Poisson arrivals). Default 1: the capacity read off a measured Server curve is already the "
        "highest rate whose p99 met the bound in every repeat (docs/matcher.md, capacity at the SLO).")


class Plan(BaseModel):
    """Several workloads placed jointly (matcher.solve.plan): each keeps its own requirements, and
    together they share `inventory` (devices per hardware type) and `budget_per_hour_usd`."""

    model_config = _STRICT

    workloads: list[Requirements] = Field(..., min_length=1, max_length=64)
    inventory: dict[Name, Count] | None = None
    budget_per_hour_usd: float | None = Field(None, gt=0, strict=True)
    objective: Literal["cost", "energy", "latency"] = "cost"


def flatten_errors(exc: ValidationError, root: type[BaseModel] = Requirements) -> list[tuple[str, str]]:
    """pydantic errors as (dotted field, plain message) pairs (cluster.validation, shared by every front end)."""
    return field_errors(exc.errors(), root)


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
