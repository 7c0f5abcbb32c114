"""Mapping files: how another tool's table becomes result rows (see results/importer.py for the
keys, docs/matcher.md "Import" for examples). Loading a mapping checks every target, unit and scale
before any file is read, naming the key that is wrong."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cluster.errors import BenchmatchError
from cluster.validation import field_errors, one_line
from results.schema import BY_NAME, CONFIG_PREFIX
from results.units import Conversion, UnitError, conversion, hinted_unit, parse_scale

CFG = CONFIG_PREFIX
QUALITY = "quality_"
DIRECTION_SUFFIX = "_direction"
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline", "train")
_SCENARIO_NAMES = {s.lower(): s for s in SCENARIOS} | {"training": "train"}
# Ids the importer derives itself: a source cannot set them, so that a trial keeps the same id
# whichever tool measured it (results.ids.trial_id of asset, task, hardware, configuration).
DERIVED = ("sweep_id", "trial_id")
METRIC_GROUPS = ("latency", "throughput", "model", "training", "resources", "energy", "llm serving")
# Metrics measured per scenario (a latency is SingleStream's or MultiStream's); the others (model
# metrics, quality scores) are the same whichever scenario a row is, so every row of a record gets them.
SCENARIO_GROUPS = ("latency", "throughput", "training", "resources", "energy", "loadgen", "server search",
                   "llm serving")
# A time, rate, energy, power or size that is 0 was not measured: 0 here is refused, never stored.
POSITIVE = frozenset(
    c.name for c in BY_NAME.values()
    if c.group in ("latency", "training", "energy", "loadgen", "server search", "scaling")
    and c.dtype in ("float", "int") and c.unit not in ("fraction", "")
) | {"throughput_samples_per_s", "samples", "samples_per_query", "parameters", "flops_per_sample",
     "peak_memory_mb"} | {
    # an LLM run's times, rates and lengths; goodput and request counts may truly be 0
    c.name for c in BY_NAME.values()
    if c.group == "llm serving" and c.dtype == "float" and c.name != "goodput_requests_per_s"}
SAMPLE_UNIT = "sample_unit"  # extra column: what one "sample" of a row counts, when not a sample


class MappingError(BenchmatchError, ValueError):
    """A mapping file, or the source file it is applied to, is unusable as a whole (nothing is
    written); the message names the file and the field or column."""


# ----------------------------------------------------------------------------------------------
# The mapping
# ----------------------------------------------------------------------------------------------


class ColumnSpec(BaseModel):
    """How one source column is read: its target and, optionally, unit, scale, scenario, direction."""

    model_config = ConfigDict(extra="forbid")
    target: str
    unit: str | None = None
    scale: float | str | None = None  # a factor (1e6) or a word (k, M, G): counts in millions, ...
    scenario: str | None = None  # the result row this metric belongs to, when not the record's
    direction: Literal["lower", "higher"] | None = None  # which is better, for quality_ targets
    multiply_by: str | None = None  # another source column: steps/s x batch size = samples/s
    divide_by: str | None = None  # another source column: total tokens / completed requests = tokens each


class Rule(ColumnSpec):
    source: str
    # The rule applies where every `when` column holds its value (null: the column is empty; a list:
    # any of its values; case is forgiven), and not where every `unless` column holds its value.
    when: dict[str, str | int | float | None | list[str | int | float | None]] = Field(default_factory=dict)
    unless: dict[str, str | int | float | None | list[str | int | float | None]] = Field(default_factory=dict)
    # A fixed value given instead of the source's, where the source is not empty and the rule
    # applies (`{source: request_rate, target: scenario, value: Offline, when: {request_rate: inf}}`).
    value: str | int | float | bool | None = None

    def conditional(self) -> bool:
        return bool(self.when or self.unless)


class Join(BaseModel):
    """Columns of a second file (scores per model, ...) joined to every record by key."""

    model_config = ConfigDict(extra="forbid")
    file: str  # relative to the imported file's folder (then to the working directory)
    on: str | dict[str, str]  # a column both files have, or {column here: column there, ...}
    columns: list[str] | None = None  # which to bring (default: all but the key)
    prefix: str = ""  # prepended to the brought columns' names
    required: bool = True  # a record without a match is rejected (false: its joined columns are empty)

    def keys(self) -> list[tuple[str, str]]:
        return [(self.on, self.on)] if isinstance(self.on, str) else list(self.on.items())


class JsonLayout(BaseModel):
    """Where the records of a JSON file are: `records` is a dotted path to them; `levels` names the
    keys of nested objects, outermost first ({gpu: {model: value}} -> [gpu, model]); a leaf that is
    not an object is the column `value`. `single: true`: the object at `records` (the whole file
    without it) is ONE record, its nested objects dotted columns (`metrics.ttft.p99`), as a tool's
    summary of one run is written (vLLM `bench serve`, AIPerf `profile_export_aiperf.json`)."""

    model_config = ConfigDict(extra="forbid")
    records: str | None = None
    levels: list[str] = Field(default_factory=list)
    value: str = "value"
    single: bool = False


class ColumnMapping(BaseModel):
    """The mapping file (module docstring). Validated; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    scales: dict[str, float | str] = Field(default_factory=dict)
    config: list[str] | dict[str, str] = Field(default_factory=list)
    values: dict[str, dict[str, str | int | float | None]] = Field(default_factory=dict)
    extract: dict[str, str] = Field(default_factory=dict)
    filter: dict[str, str] = Field(default_factory=dict)
    filename: str | None = None
    join: list[Join] = Field(default_factory=list)
    json_layout: JsonLayout | None = Field(None, alias="json")
    rows: Literal["repeats", "merge"] = "repeats"
    optional: list[str] = Field(default_factory=list)  # source columns a file may lack (= empty)
    # Other names a source column has in other versions of the tool's files: {name the mapping
    # reads: [other names]}; a record that lacks the name (or leaves it empty) is read from the
    # first other name it holds.
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    allow_unknown_hardware: bool = False
    delimiter: str = Field(",", min_length=1, max_length=1)

    @field_validator("columns", mode="before")
    @classmethod
    def _plain_targets(cls, v: Any) -> Any:
        # `source: target` is the short form of `source: {target: target}`.
        if isinstance(v, dict):
            return {s: {"target": t} if isinstance(t, str) else t for s, t in v.items()}
        return v

    @field_validator("aliases", mode="before")
    @classmethod
    def _one_alias(cls, v: Any) -> Any:
        # `name: other` is the short form of `name: [other]`.
        if isinstance(v, dict):
            return {c: [o] if isinstance(o, str) else o for c, o in v.items()}
        return v

    @field_validator("values", mode="before")
    @classmethod
    def _keys_as_text(cls, v: Any) -> Any:
        # YAML reads `{0: null}` with a number as key; a source value is matched as text.
        if isinstance(v, dict):
            return {c: {str(k): x for k, x in t.items()} if isinstance(t, dict) else t for c, t in v.items()}
        return v

    def all_rules(self) -> list[Rule]:
        """`columns` and `config` as unconditional rules, then the conditional ones; `units` and
        `scales` filled in where a rule gives none."""
        out = [Rule(source=s, **spec.model_dump()) for s, spec in self.columns.items()]
        cfg = self.config if isinstance(self.config, dict) else {c: _slug(c) for c in self.config}
        out += [Rule(source=s, target=f"{CFG}{_slug(name)}") for s, name in cfg.items()]
        out += self.rules
        return [r.model_copy(update={"unit": r.unit if r.unit is not None else self.units.get(r.source),
                                     "scale": r.scale if r.scale is not None else self.scales.get(r.source)})
                for r in out]

    def derived_columns(self) -> set[str]:
        """Columns the mapping makes itself: named extract groups, file-name groups, joined columns
        are checked when the file is read."""
        out = {g for p in self.extract.values() for g in _named_groups(p)}
        if self.filename:
            out |= set(_named_groups(self.filename))
        return out

    def sources(self) -> set[str]:
        """Every source column the mapping reads from the file itself."""
        rules = self.all_rules()
        used = {r.source for r in rules} | {c for r in rules for c in (r.multiply_by, r.divide_by) if c}
        used |= set(self.units) | set(self.scales) | set(self.values) | set(self.extract) | set(self.filter)
        used |= {c for r in self.rules for c in (*r.when, *r.unless)}
        used |= {left for j in self.join for left, _ in j.keys()}
        return used - self.derived_columns()


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower() or "x"


def _named_groups(pattern: str) -> list[str]:
    try:
        return list(re.compile(pattern).groupindex)
    except re.error:
        return []


def scenario_name(value: Any) -> str | None:
    """SingleStream, MultiStream, Server, Offline or train for any spelling ("single-stream"), else None."""
    return _SCENARIO_NAMES.get(re.sub(r"[\s_-]+", "", str(value)).lower())


def is_quality(target: str) -> bool:
    return target.startswith(QUALITY)


def _target_unit(target: str) -> str | None:
    if is_quality(target):
        return "quality"
    col = BY_NAME.get(target)
    return col.unit if col is not None else None


def _numeric(target: str) -> bool:
    col = BY_NAME.get(target)
    return is_quality(target) or (col is not None and col.dtype in ("float", "int"))


def _settable(target: str) -> bool:
    return target not in DERIVED and (target in BY_NAME or target.startswith(CFG) or is_quality(target))


def _check_target(target: str, what: str) -> None:
    allowed = sorted(n for n in BY_NAME if n not in DERIVED)
    if target in DERIVED:
        raise MappingError(f"{what}: '{target}' is derived by the importer and cannot be mapped")
    if is_quality(target):
        name = target[len(QUALITY):]
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name) or name.endswith(DIRECTION_SUFFIX):
            raise MappingError(f"{what}: '{target}' is not a valid quality column: use quality_<name> with "
                               f"lower-case letters, digits and '_' (not ending in '{DIRECTION_SUFFIX}')")
        return
    if not (target in BY_NAME or target.startswith(CFG)):
        close = difflib.get_close_matches(target, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise MappingError(f"{what}: unknown target column '{target}'{hint} (targets: the result-row columns "
                           "of results/schema.py, cfg_<name> for a hyperparameter, quality_<name> for a "
                           "quality score with its direction)")


def rule_conversion(r: Rule, what: str) -> tuple[Conversion, float]:
    try:
        conv = conversion(r.unit, _target_unit(r.target), target=r.target, where=what)
        scale = parse_scale(r.scale, what)
    except UnitError as exc:
        raise MappingError(str(exc)) from None
    return conv, scale


def check_mapping(m: ColumnMapping, where: str = "mapping") -> list[str]:
    """Targets exist, units and scales convert, regexes compile, quality targets say their direction.
    Raises MappingError; returns warnings (a column whose name suggests a unit the mapping does not give)."""
    warnings: list[str] = []
    rules = m.all_rules()
    n_plain = len(rules) - len(m.rules)
    for i, r in enumerate(rules):
        what = f"{where}: {'columns' if i < n_plain else f'rules[{i - n_plain}]'} ({r.source} -> {r.target})"
        _check_target(r.target, what)
        if is_quality(r.target) and r.direction is None:
            raise MappingError(f"{what}: a quality score needs its direction: `direction: lower` (error rate, "
                               "MAE, perplexity) or `direction: higher` (accuracy, F1, BLEU)")
        if r.direction is not None and not is_quality(r.target):
            raise MappingError(f"{what}: `direction` is for quality_<name> targets (accuracy is higher-is-better; "
                               f"map a lower-is-better score to quality_<name> with direction: lower)")
        if r.scenario is not None:
            if scenario_name(r.scenario) is None:
                raise MappingError(f"{what}: scenario {r.scenario!r} is not one of {', '.join(SCENARIOS)}")
            col = BY_NAME.get(r.target)
            if col is None or col.group not in SCENARIO_GROUPS:
                raise MappingError(f"{what}: `scenario` is for metrics measured per scenario (latency, "
                                   f"throughput, energy, ...); '{r.target}' goes to every row of the record")
        if (r.scale is not None or r.multiply_by or r.divide_by) and not _numeric(r.target):
            raise MappingError(f"{what}: `scale` and `multiply_by` apply to numeric columns (so does "
                               f"`divide_by`); '{r.target}' is not one")
        if r.target == "scenario" and r.value is not None and scenario_name(r.value) is None:
            raise MappingError(f"{what}: value {r.value!r} is not one of {', '.join(SCENARIOS)}")
        rule_conversion(r, what)
        if r.unit is None and r.scale is None and not r.multiply_by and not r.divide_by and r.value is None:
            hint = hinted_unit(r.source, _target_unit(r.target))
            if hint is not None:
                warnings.append(f"{where}: column '{r.source}' -> {r.target}: its name suggests {hint}, but the "
                                f"mapping gives no unit, so values are read as {_target_unit(r.target)}; add "
                                f"`unit: {hint}` (or `unit: {_target_unit(r.target)}` to say that is right)")
    for target in m.constants:
        if not _settable(target):
            raise MappingError(f"{where}: constants.{target}: not a result-row column that can be set "
                               "(a result-row column of results/schema.py, cfg_<name> or quality_<name>)")
        if is_quality(target):
            raise MappingError(f"{where}: constants.{target}: a quality score comes from a column with its "
                               "direction, not from a constant")
    unconditional = {r.target: r.source for r in rules[:n_plain] if r.scenario is None}
    clash = sorted(set(unconditional) & set(m.constants))
    if clash:
        raise MappingError(f"{where}: constants.{clash[0]} is also mapped from column "
                           f"'{unconditional[clash[0]]}'; keep one")
    for key, table in (("extract", m.extract), ("filter", m.filter)):
        for col, pattern in table.items():
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise MappingError(f"{where}: {key}.{col}: not a valid regex ({exc})") from None
            if key == "extract" and rx.groups < 1:
                raise MappingError(f"{where}: extract.{col}: the regex needs one group ( ... ) holding the value, "
                                   "or named groups (?P<name> ... ) that become columns")
    if m.filename is not None:
        try:
            rx = re.compile(m.filename)
        except re.error as exc:
            raise MappingError(f"{where}: filename: not a valid regex ({exc})") from None
        if not rx.groupindex:
            raise MappingError(f"{where}: filename: the regex needs named groups (?P<name> ... ); each becomes a "
                               "column every record of the file has")
    for name, others in m.aliases.items():
        bad = [o for o in others if not str(o).strip() or o == name]
        if not others or bad:
            raise MappingError(f"{where}: aliases.{name}: give the other names of column '{name}' (not empty, "
                               f"not '{name}' itself), e.g. `aliases: {{{name}: [old_name]}}`")
    if m.json_layout is not None and len(set(m.json_layout.levels)) != len(m.json_layout.levels):
        raise MappingError(f"{where}: json.levels: names must differ, got {m.json_layout.levels}")
    if m.json_layout is not None and m.json_layout.single and m.json_layout.levels:
        raise MappingError(f"{where}: json: `single` (one object is one record) and `levels` (nested objects "
                           "are records) exclude each other; keep one")
    return warnings


def load_mapping(path: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping) -> ColumnMapping:
    """Read and check a mapping YAML (or take a dict / ColumnMapping); errors name the file and key."""
    if isinstance(path, ColumnMapping):
        check_mapping(path)
        return path
    if isinstance(path, Mapping):
        doc, where = dict(path), "mapping"
    else:
        where = str(path)
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise MappingError(f"{where}: mapping file not found") from None
        except yaml.YAMLError as exc:
            raise MappingError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: expected a mapping with keys columns, constants, units, config, ...")
    try:
        m = ColumnMapping.model_validate(doc)
    except ValidationError as exc:
        raise MappingError(f"{where}: " + one_line(field_errors(exc.errors(), ColumnMapping))) from None
    check_mapping(m, where)
    return m


def with_constants(m: ColumnMapping, constants: Mapping[str, Any] | None, where: str = "--set") -> ColumnMapping:
    """The mapping with constants given on the command line (`--set target=value`) added; they
    override the mapping's own constants but not a column the mapping reads."""
    if not constants:
        return m
    rules = m.all_rules()
    plain = {r.target: r.source for r in rules[:len(rules) - len(m.rules)] if r.scenario is None}
    for target in constants:
        if not _settable(target) or is_quality(target):
            raise MappingError(f"{where} {target}=...: '{target}' is not a result-row column that can be set "
                               "(a column of results/schema.py such as hardware, asset, scenario, task, or cfg_<name>)")
        if target in plain:
            raise MappingError(f"{where} {target}=...: the mapping reads '{target}' from column '{plain[target]}'; "
                               "drop --set or that column's mapping")
    return m.model_copy(update={"constants": {**m.constants, **dict(constants)}})


def parse_set(items: Iterable[str] | None) -> dict[str, Any]:
    """`--set key=value` arguments as constants (YAML scalars: 8 is a number, fp16 is text)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise MappingError(f"--set {item!r}: expected TARGET=VALUE, e.g. --set hardware=jetson-nano")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        if not isinstance(parsed, str | int | float | bool) or parsed is None:
            parsed = value
        out[key.strip()] = parsed
    return out

def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")
