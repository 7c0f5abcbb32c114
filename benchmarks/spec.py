"""SweepSpec (the YAML a user writes) and TrialSpec (one unit of measurement handed to the core).

The core (`benchmarks.core.run_trial`) takes a TrialSpec and returns result rows; it never imports
Ray, so the same call runs on a GPU box that has only torch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster import yamlfile
from cluster.errors import BenchmatchError
from cluster.hardware import HardwareSpec
from cluster.validation import field_errors, one_line
from results.ids import trial_id

if TYPE_CHECKING:  # loading assets imports torch; reading a sweep file must not
    from benchmarks.assets import ResolvedAsset

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")


class SpecError(BenchmatchError, ValueError):
    """A sweep file is unusable; the message names the file, line or field."""


class LoadGenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenarios: list[Literal["SingleStream", "MultiStream", "Server", "Offline"]] = ["SingleStream", "MultiStream", "Offline"]
    min_duration_ms: int = Field(500, ge=10, description="LoadGen min_duration per scenario; MLPerf uses 600000")
    min_query_count: int = Field(32, ge=1)
    server_target_qps: float | None = Field(None, gt=0)
    server_latency_bound_ms: float | None = Field(None, gt=0)
    offline_samples: int = Field(512, ge=1, description="samples LoadGen issues in the Offline scenario")
    server_search: bool | None = Field(
        None,
        description="search for the highest QPS whose p99 stays within server_latency_bound_ms; "
        "None: search when the bound is set and server_target_qps is not (a given target is then the start)",
    )
    server_search_max_probes: int = Field(8, ge=2, le=32, description="LoadGen Server runs the search may make")
    server_search_tolerance: float = Field(
        0.05, gt=0, lt=1, description="the search stops once the highest passing and lowest failing QPS are this close (relative)"
    )
    server_curve: list[float] | None = Field(
        None, min_length=2, max_length=12,
        description="measure the Server scenario's latency-vs-load curve: one LoadGen Server run at each of these "
        "fractions of the Offline throughput measured just before (e.g. [0.25, 0.5, 0.75, 0.9]); the matcher sizes "
        "replicas from it (docs/matcher.md, capacity at the SLO)",
    )
    server_curve_min_queries: int = Field(
        500, ge=1, le=1_000_000,
        description="queries each server_curve point runs at least (beside min_duration_ms): a p99 needs about 500 "
        "to be more than the run's slowest few (docs/matcher.md); answers resting on fewer say so",
    )

    @model_validator(mode="after")
    def _search_needs_bound(self) -> LoadGenSettings:
        if self.server_search and self.server_latency_bound_ms is None:
            raise ValueError("server_search needs server_latency_bound_ms: the search looks for the highest QPS within that bound")
        if self.server_curve is not None:
            if any(not 0 < f <= 1.5 for f in self.server_curve) or sorted(set(self.server_curve)) != self.server_curve:
                raise ValueError("server_curve must be increasing fractions of the Offline throughput in (0, 1.5]")
            if not {"Server", "Offline"} <= set(self.scenarios):
                raise ValueError("server_curve needs both Server and Offline in scenarios: its loads are fractions "
                                 "of the Offline throughput")
            if self.server_search:
                raise ValueError("server_curve and server_search are two ways to measure Server; choose one")
        return self

    @property
    def curve(self) -> bool:
        return self.server_curve is not None

    @property
    def searches_server(self) -> bool:
        """Whether the Server scenario searches for the latency-bounded peak (see docs/measurement.md)."""
        if self.server_latency_bound_ms is None or self.server_search is False or self.server_curve is not None:
            return False
        return self.server_search is True or self.server_target_qps is None


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(3, ge=1)
    quality_target: float | None = Field(0.9, gt=0, le=1)
    checkpoint: bool = Field(
        True, description="save model + optimizer every epoch and resume an interrupted trial from it (docs/measurement.md)"
    )


class SweepSpec(BaseModel):
    """A sweep file: the asset, task, hyperparameter space, hardware targets and settings."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", max_length=128)
    asset: str
    task: Literal["train", "infer"] = "infer"
    space: dict[str, list[Any]] = Field(default_factory=dict, description="hyperparameter -> values (grid)")
    hardware: list[str] = Field(..., min_length=1)
    repeats: int = Field(1, ge=1, le=100)
    seed: int = 0
    loadgen: LoadGenSettings = Field(default_factory=LoadGenSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    results_uri: str = "results-store"
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0, description="retries of a trial whose worker died")
    configs_per_trial: int = Field(
        16, ge=1, le=1024,
        description="configurations one Ray Tune trial measures in turn on its node; each keeps its own trial id "
        "and rows. Tune's per-trial cost is then paid once per batch (1: one Tune trial per configuration)",
    )
    remeasure: int = Field(
        2, ge=0, le=5,
        description="a repeat whose rows are flagged (LoadGen INVALID, background load, Offline far below "
        "SingleStream) is measured again up to this many times, each with twice the LoadGen duration; the least "
        "flagged attempt is kept, its flags in the rows",
    )

    @field_validator("name")
    @classmethod
    def _name_is_one_path_component(cls, v: str) -> str:
        if v in (".", "..") or v.startswith("."):
            raise ValueError("must not start with '.': the name is a folder of the results store")
        return v

    @field_validator("space")
    @classmethod
    def _non_empty_values(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"space.{key} must be a non-empty list of values")
        return v

    def configs(self) -> list[dict[str, Any]]:
        """The hyperparameter grid, in a stable order."""
        keys = sorted(self.space)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(self.space[k] for k in keys))]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML; errors name the file and the field (or the YAML line)."""
    path = Path(path)
    if not path.is_file() and not path.exists():
        raise SpecError(f"{path}: sweep file not found")
    try:
        doc = yamlfile.load(path)
    except yamlfile.YamlError as exc:
        raise SpecError(str(exc)) from None
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a mapping with keys name, asset, task, space, hardware, ...")
    try:
        spec = SweepSpec.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(f"{path}: " + one_line(field_errors(exc.errors(), SweepSpec))) from None
    from benchmarks.assets import resolve_asset_path

    try:  # a relative `file.py:Object` means: where the user runs the command, else beside the sweep file
        return spec.model_copy(update={"asset": resolve_asset_path(spec.asset, [path.resolve().parent])})
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}") from exc


@dataclass
class TrialSpec:
    """Everything the measurement core needs for one (trial, repeat). Plain data: no Ray inside."""

    sweep_id: str
    trial_id: str
    repeat: int
    asset: str  # the asset's own name (rows, ids)
    task: str
    hardware: HardwareSpec
    config: dict[str, Any]
    seed: int
    loadgen: LoadGenSettings = field(default_factory=LoadGenSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    log_dir: str = "results-store/logs"
    num_cpus: int | None = None  # CPUs granted to the trial (Ray resources); caps torch threads
    asset_ref: str = ""  # how to load the asset when it differs from its name (`file.py:Object`, `module:Object`)
    asset_source: str | None = None  # a file asset's text, so the trial loads it on any node
    remeasure: int = 0  # flagged repeats measured again up to this many times (SweepSpec.remeasure)
    attempt: int = 0  # which measurement of this repeat (0: the first); later ones log beside the first

    @property
    def loader_ref(self) -> str:
        return self.asset_ref or self.asset

    @property
    def trial_dir(self) -> Path:
        """This (trial, repeat)'s folder for LoadGen logs, checkpoints and error tracebacks."""
        suffix = f"-a{self.attempt}" if self.attempt else ""
        return Path(self.log_dir) / self.sweep_id / f"{self.trial_id}-r{self.repeat}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loadgen"] = self.loadgen.model_dump()
        d["train"] = self.train.model_dump()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        d = dict(d)
        d["hardware"] = HardwareSpec(**d["hardware"])
        d["loadgen"] = LoadGenSettings(**d.get("loadgen", {}))
        d["train"] = TrainSettings(**d.get("train", {}))
        return cls(**d)


def check_asset(spec: SweepSpec) -> ResolvedAsset:
    """Load the sweep's asset here, once, before any trial is scheduled: a broken asset is one clear
    SpecError, not a failure (and retries) per trial."""
    from benchmarks.assets import get_asset, resolve_asset

    try:
        asset = resolve_asset(spec.asset)
    except ValueError as exc:
        raise SpecError(str(exc)) from exc
    tasks = tuple(getattr(get_asset(asset.ref), "tasks", ()))
    if spec.task not in tasks:
        raise SpecError(f"asset {asset.name!r} supports tasks {list(tasks)}, not {spec.task!r}")
    return asset


def expand_trials(spec: SweepSpec, catalog: dict[str, HardwareSpec],
                  asset: ResolvedAsset | None = None) -> list[TrialSpec]:
    """Every (hardware, config, repeat) of a sweep, with unknown hardware named in the error."""
    unknown = [h for h in spec.hardware if h not in catalog]
    if unknown:
        raise SpecError(f"hardware {unknown} not in the catalog; known: {sorted(catalog)}")
    asset = asset or check_asset(spec)
    ref = asset.ref if asset.ref != asset.name else ""
    out = []
    for hw in spec.hardware:
        for cfg in spec.configs():
            tid = trial_id(asset.name, spec.task, hw, cfg)
            for rep in range(spec.repeats):
                out.append(
                    TrialSpec(
                        sweep_id=spec.name, trial_id=tid, repeat=rep, asset=asset.name, task=spec.task,
                        hardware=catalog[hw], config=dict(cfg), seed=spec.seed + rep,
                        loadgen=spec.loadgen, train=spec.train,
                        log_dir=f"{spec.results_uri}/logs" if "://" not in spec.results_uri else "results-store/logs",
                        asset_ref=ref, asset_source=asset.source, remeasure=spec.remeasure,
                    )
                )
    return out


# ---- sweep files for chosen (hardware, configuration) pairs (`benchmatch suggest --out`) ----


def _plain(v: Any) -> Any:
    """A configuration value as YAML writes it: 8.0 -> 8, numpy scalars -> builtins."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def grids(configs: list[tuple[tuple[str, Any], ...]]) -> list[dict[str, list[Any]]]:
    """Split a set of configurations into exact grids (a grid's product is exactly its part)."""
    if not configs:
        return []
    keys = [k for k, _ in configs[0]]
    as_dicts = [dict(c) for c in configs]

    def is_grid(part: list[dict[str, Any]]) -> dict[str, list[Any]] | None:
        space = {k: sorted({c[k] for c in part}, key=lambda v: (isinstance(v, str), v)) for k in keys}
        n = math.prod(len(v) for v in space.values()) if space else 1
        return space if n == len(part) else None

    whole = is_grid(as_dicts)
    if whole is not None:
        return [whole]
    best: list[dict[str, list[Any]]] | None = None
    for k in keys:  # vary one key per sweep, fix the others: always exact
        parts: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for c in as_dicts:
            parts.setdefault(tuple(c[o] for o in keys if o != k), []).append(c)
        spaces = [is_grid(p) for p in parts.values()]
        if all(s is not None for s in spaces) and (best is None or len(spaces) < len(best)):
            best = spaces  # type: ignore[assignment]
    return best or [{k: [v] for k, v in c.items()} for c in as_dicts]


def sweeps_for_pairs(
    pairs: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    asset: str,
    task: str,
    results_uri: str,
    template: SweepSpec | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """SweepSpec documents (validated dicts) that measure exactly these (hardware, configuration)
    pairs: hardware with the same configurations share a sweep, and configurations that do not
    form a grid are split into grids that vary one hyperparameter. `asset` is how the sweep loads
    it (a built-in name, `module:Object`, `file.py:Object`); `template` lends its settings
    (repeats, seed, loadgen, train, concurrency)."""
    by_hw: dict[str, list[tuple[tuple[str, Any], ...]]] = {}
    for hw, cfg in pairs:
        by_hw.setdefault(hw, []).append(tuple(sorted((k, _plain(v)) for k, v in cfg.items())))
    groups: dict[tuple[Any, ...], list[str]] = {}
    for hw, cfgs in by_hw.items():
        groups.setdefault(tuple(sorted(set(cfgs), key=repr)), []).append(hw)
    base: dict[str, Any] = {}
    if template is not None:
        base = template.model_dump(exclude={"name", "asset", "task", "space", "hardware", "results_uri"})
    prefix = name or f"suggest-{_name_part(asset)}"
    docs = []
    for cfgs, hws in sorted(groups.items(), key=lambda kv: kv[1]):
        for space in grids(list(cfgs)):
            body = {"asset": asset, "task": task, "space": space, "hardware": sorted(hws)}
            digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
            doc = {"name": f"{prefix}-{digest}", **body, **base, "results_uri": results_uri}
            docs.append(SweepSpec.model_validate(doc).model_dump(mode="json"))
    return docs


def _name_part(asset: str) -> str:
    """A sweep-name part from an asset reference: `path/encoder.py:TinyEncoder` -> `TinyEncoder`."""
    tail = asset.rpartition(":")[2] or asset
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.") or "asset"
