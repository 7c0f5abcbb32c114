"""HardwareSpec, the record every stage uses to name a machine, and the YAML catalog that lists them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cluster import yamlfile
from cluster.errors import BenchmatchError

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "configs" / "hardware.yaml"
RESOURCE_PREFIX = "accelerator_type:"
NODE_LABEL = "ray.io/accelerator-type"


class CatalogError(BenchmatchError, ValueError):
    """A hardware catalog entry is malformed; the message names the file, entry and field."""


@dataclass(frozen=True)
class HardwareSpec:
    """One hardware type. Numbers that are unknown stay None; they are never guessed."""

    name: str
    accelerator_type: str  # Ray's accelerator names (H100, A10G, ...) or "cpu"
    device_count: int = 0  # accelerators per instance; 0 for CPU-only
    cpu_cores: int = 1
    memory_gb: float | None = None
    peak_tflops: float | None = None  # dense fp32 (CPU) / bf16 tensor (GPU), per instance
    memory_bandwidth_gbps: float | None = None
    tdp_w: float | None = None  # per instance, sum over devices
    price_per_hour_usd: float | None = None
    price_source: str | None = None
    price_date: str | None = None
    local: bool = False  # an emulated profile of the local cluster (a Ray node on this machine)
    notes: str = ""
    # Configuration values this hardware runs, per option (`{engine: [onnxruntime, tflite]}`): a
    # prediction with another value of a listed option never answers (matcher/support.py).
    supports: dict[str, list[Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resource_name(self) -> str:
        """The Ray custom resource a node of this type carries (one unit per node)."""
        return f"{RESOURCE_PREFIX}{self.name}"

    @property
    def devices(self) -> int:
        """Units counted against inventory: accelerators, or 1 for a CPU-only instance."""
        return max(self.device_count, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELD_NAMES = {f.name for f in fields(HardwareSpec)}
_REQUIRED = ("name", "accelerator_type")


def _spec_from_entry(entry: Any, where: str) -> HardwareSpec:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: expected a mapping of hardware fields, got {type(entry).__name__}")
    unknown = set(entry) - _FIELD_NAMES
    if unknown:
        raise CatalogError(
            f"{where}: unknown field(s) {sorted(unknown)}; allowed fields are {sorted(_FIELD_NAMES)}"
        )
    for req in _REQUIRED:
        if not entry.get(req):
            raise CatalogError(f"{where}: field '{req}' is required")
    for num in ("device_count", "cpu_cores"):
        if num in entry and (not isinstance(entry[num], int) or entry[num] < 0):
            raise CatalogError(f"{where}: field '{num}' must be a non-negative integer, got {entry[num]!r}")
    for num in ("memory_gb", "peak_tflops", "memory_bandwidth_gbps", "tdp_w", "price_per_hour_usd"):
        val = entry.get(num)
        if val is not None and (not isinstance(val, int | float) or val < 0):
            raise CatalogError(f"{where}: field '{num}' must be a non-negative number or null, got {val!r}")
    if entry.get("price_per_hour_usd") is not None and not entry.get("price_source"):
        raise CatalogError(f"{where}: a price needs 'price_source' (where the price was read, and when)")
    if entry.get("price_date") is not None:
        entry = {**entry, "price_date": str(entry["price_date"])}
    supports = entry.get("supports")
    if supports is not None and not (isinstance(supports, dict) and all(
            isinstance(k, str) and k and isinstance(v, list) and v and
            all(isinstance(x, str | int | float | bool) for x in v) for k, v in supports.items())):
        raise CatalogError(f"{where}: field 'supports' must map option names to non-empty lists of values "
                           f"(e.g. {{engine: [onnxruntime, tflite]}}), got {supports!r}")
    entry = {**entry, "supports": supports or {}}
    return HardwareSpec(**entry)


def load_catalog(path: str | os.PathLike[str] | None = None) -> dict[str, HardwareSpec]:
    """Read a catalog YAML (`hardware: [ {name, accelerator_type, ...}, ... ]`), keyed by name."""
    path = Path(path or os.environ.get("BENCHMATCH_CATALOG", DEFAULT_CATALOG))
    if not path.exists():
        raise CatalogError(f"{path}: hardware catalog not found")
    try:
        doc = yamlfile.load(path)
    except yamlfile.YamlError as exc:
        raise CatalogError(str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hardware"), list):
        raise CatalogError(f"{path}: expected a top-level key 'hardware' holding a list of entries")
    catalog: dict[str, HardwareSpec] = {}
    for i, entry in enumerate(doc["hardware"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        spec = _spec_from_entry(entry, f"{path}: hardware[{i}]" + (f" ({name})" if name else ""))
        if spec.name in catalog:
            raise CatalogError(f"{path}: hardware[{i}]: duplicate name '{spec.name}'")
        catalog[spec.name] = spec
    return catalog


def local_profiles(catalog: dict[str, HardwareSpec]) -> list[HardwareSpec]:
    """The emulated profiles that `benchmatch cluster up` starts as Ray nodes."""
    return [spec for spec in catalog.values() if spec.local]
