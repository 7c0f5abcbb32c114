"""Requirements: what the user needs from a deployment, validated so that every rejection names
the field and says why (`constraints.latency_p99_ms: must be greater than 0`)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster import yamlfile
from cluster.validation import field_errors
from matcher.errors import RequirementsError

# NaN / inf would pass `gt=0` comparisons in surprising ways; reject them at the door.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

# Beyond these the replica counts (demand / per-replica throughput) and the total cost (price x
# hours) overflow the solver's numbers, and the MILP would answer a wrong "infeasible".
MAX_THROUGHPUT_QPS = 1e12
MAX_DURATION_H = 1e6  # about 114 years
# An inventory count beyond this is not a count but "unlimited", which is what leaving the hardware out
# of `inventory` says; larger integers overflow the solver's floats (a 4,000-digit count was a crash).
MAX_DEVICES = 10**12
# Below this share of a replica's capacity the replica counts (demand / (capacity x share)) leave the
# solver's integers: 1e-300 with a large demand was a crash, 1e-9 an answer of 10^11 replicas.
MIN_UTILIZATION = 0.01


def _unicode(text: str) -> str:
    # JSON can carry a lone surrogate ("\ud800"), which no UTF-8 file, log or answer can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"must be valid Unicode text (a lone surrogate at character {exc.start})") from None
    return text


def _devices(n: int) -> int:
    if n > MAX_DEVICES:
        # The message names no number of the input: a 4,000-digit int does not convert to float.
        raise ValueError(f"must be at most {MAX_DEVICES:.0e} devices; leave the hardware out of inventory for no "
                         "limit")
    return n


def _utilization(u: float) -> float:
    if u < MIN_UTILIZATION:
        raise ValueError(f"must be at least {MIN_UTILIZATION}: the share of a replica's capacity to plan for, e.g. "
                         "0.7 for 30% headroom; 1 (the default) plans for the capacity measured")
    return u


# Strict: `true` is not 1 and "3" is not 3 (lax pydantic would take both). A float field still
# takes an integer, so `"latency_p99_ms": 5` stays valid.
Name = Annotated[str, AfterValidator(_unicode)]
Count = Annotated[int, Field(ge=0, strict=True, json_schema_extra={"maximum": MAX_DEVICES}),
                  AfterValidator(_devices)]


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
    max_utilization: Annotated[float, AfterValidator(_utilization)] = Field(
        1.0, gt=0, le=1, strict=True, json_schema_extra={"minimum": MIN_UTILIZATION},
        description=f"Plan each replica for at most this share of its capacity at the SLO ({MIN_UTILIZATION}..1; "
        "headroom for bursts beyond Poisson arrivals). Default 1: the capacity read off a measured Server curve "
        "is already the highest rate whose p99 met the bound in every repeat (docs/matcher.md, capacity at the SLO).")
    slo_confidence: float | None = Field(
        None, ge=0.5, le=0.9999, strict=True,
        description="Size replicas measured on a Server curve so that a fresh run of the same configuration keeps "
        "the latency bounds with this probability (one-sided prediction bound over the repeats, log-normal, spread "
        "pooled per hardware type; docs/matcher.md, capacity at the SLO). Unset: the worst measured repeat, which "
        "the next run beats about once in repeats + 1.")


class Plan(BaseModel):
    """Several workloads placed jointly (matcher.solve.plan): each keeps its own requirements, and
    together they share `inventory` (devices per hardware type) and `budget_per_hour_usd`."""

    model_config = _STRICT

    workloads: list[Requirements] = Field(..., min_length=1, max_length=64)
    inventory: dict[Name, Count] | None = None
    budget_per_hour_usd: float | None = Field(None, gt=0, strict=True)
    objective: Literal["cost", "energy", "latency"] = "cost"

    @model_validator(mode="after")
    def _one_objective_one_option(self) -> Plan:
        # A plan is one MILP with the plan's objective, answering one option per workload: a
        # workload's own objective or top_k would be ignored silently, so they are refused.
        for i, w in enumerate(self.workloads):
            if "objective" in w.model_fields_set and w.objective != self.objective:
                raise ValueError(f"workloads.{i}.objective this workload asks objective '{w.objective}', but a plan has one objective, the "
                                 f"plan's '{self.objective}': set objective at the top level of the plan, not in "
                                 "a workload")
            if "top_k" in w.model_fields_set and w.top_k != 1:
                raise ValueError(f"workloads.{i}.top_k this workload asks top_k {w.top_k}, but a plan answers one option per workload: "
                                 "remove top_k from the workload (POST /recommend ranks several)")
        return self


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


# ----------------------------------------------------------------------------------------------
# Reading documents: JSON (a file, or an HTTP body) and YAML, hostile ones included
# ----------------------------------------------------------------------------------------------

_KEY_OR_BRACKET = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:)?|[\[\]{}]')


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _duplicate_at(text: str) -> tuple[int, int, str] | None:
    """(position of the second occurrence, of the first, the key) of the first key that an object
    repeats; keys are compared as decoded ("a" and "\u0061" are one key)."""
    stack: list[dict[str, int] | None] = []
    for m in _KEY_OR_BRACKET.finditer(text):
        token = m.group(0)
        if token in ("{", "["):
            stack.append({} if token == "{" else None)
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif m.group(2) and stack and stack[-1] is not None:
            try:
                key = json.loads(m.group(1))
            except ValueError:
                continue
            if key in stack[-1]:
                return m.start(), stack[-1][key], key
            stack[-1][key] = m.start()
    return None


def loads_json(data: str | bytes) -> Any:
    """json.loads that refuses an object with a repeated key: JSON leaves its meaning open and
    Python would silently keep the last value (`{"top_k": 1, "top_k": 50}` is 50; a second
    `"constraints": {}` drops every constraint of the first). The refusal is a JSONDecodeError at
    the repeated key's character. Other failures are json.loads' own (JSONDecodeError; ValueError
    for an integer over Python's digit limit; RecursionError for deep nesting)."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        text = data if isinstance(data, str) else data.decode(json.detect_encoding(data), "replace")
        found = _duplicate_at(text)
        pos, first = (found[0], found[1]) if found is not None else (0, 0)
        raise json.JSONDecodeError(f"duplicate key {exc.key!r} (first at character {first}); give each field "
                                   "once", text, pos) from None


def _yaml_float() -> re.Pattern[str]:
    # YAML 1.1 (PyYAML) reads 1e6 and 1.0e12 as text, so `throughput_qps: 1e6` was refused as "not a
    # number"; YAML 1.2 and every person read them as numbers.
    return re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X)


class _DocumentLoader(yamlfile._BoundedLoader):
    """The bounded loader (size, aliases, expansion, nesting: cluster/yamlfile.py) that also refuses a
    mapping with a repeated key (PyYAML keeps the last silently) and reads 1e6 as a number."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # unhashable: construct_mapping says so
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first.line + 1}); give each field once",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_DocumentLoader.add_implicit_resolver("tag:yaml.org,2002:float", _yaml_float(), list("-+0123456789."))


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > yamlfile.MAX_BYTES:
            raise RequirementsError(f"{path}: {size} bytes, larger than {yamlfile.MAX_BYTES // 1024} KiB; a "
                                    "requirements document is a few hundred bytes")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RequirementsError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise RequirementsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise RequirementsError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_document(path: str | os.PathLike[str]) -> Any:
    """A requirements or plan file, parsed: JSON by its suffix, else YAML. Every failure is a
    RequirementsError naming the file and where: not UTF-8, over 1 MiB, malformed, a repeated key,
    nested deeper than the parser goes, alias bombs, integers over Python's digit limit."""
    path = Path(path)
    text = _read_text(path)
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            return loads_json(text)
        return yaml.load(text, Loader=_DocumentLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise RequirementsError(f"{path}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RequirementsError(f"{path}: not valid {kind}: {at}{problem}") from None
    except RecursionError:
        raise RequirementsError(f"{path}: not valid {kind}: nested too deeply (a plan nests 4 levels)") from None
    except ValueError as exc:
        if "digits" in str(exc):
            raise RequirementsError(f"{path}: not valid {kind}: an integer of more than "
                                    f"{sys.get_int_max_str_digits()} digits") from None
        raise RequirementsError(f"{path}: not valid {kind}: {exc}") from None


def _document_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise RequirementsError(f"{path}: is a folder; give a {what} file (YAML or .json)")
    if not path.exists():
        raise RequirementsError(f"{path}: {what} file not found")
    return path


def load_requirements(path: str | os.PathLike[str]) -> Requirements:
    """Read requirements from a YAML or JSON file; errors name the file and the field."""
    path = _document_file(path, "requirements")
    data = load_document(path)
    if data is None:
        data = {}
    return parse_requirements(data, source=str(path))


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a plan (the POST /plan body) from a YAML or JSON file; errors name the file and the field."""
    path = _document_file(path, "plan")
    return parse_plan(load_document(path), source=str(path))
