"""Assets benchmatch can measure, and `get_asset` which also loads a user's own (`module:object`).

A reference is either a built-in (`digits-mlp`, `hearts-mlp`, `tiny-cnn`, `gpt2`, and the deployed
architectures with random weights `resnet50`, `mobilenet-v2`, `mobilenet-v3`, `vit-b16`, `bert-base`) or the user's code:
`package.module:Object` (importable) or `path/to/file.py:Object`. The object may be an asset
instance, a class (instantiated without arguments) or a zero-argument factory.

A file reference is resolved where the user runs the command (then beside the sweep file), and the
file's text travels with every trial (`ResolvedAsset.source`): a Tune trial runs in its own working
directory, possibly on another machine, where the user's relative path means nothing. Results and
answers name an asset by its own `name` attribute (else the object's name), never by a path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.assets.base import DTYPES, Asset, AssetData, TorchAsset, generated_data
from benchmarks.assets.bert_base import BertBase
from benchmarks.assets.digits_mlp import DigitsMLP
from benchmarks.assets.gpt2 import GPT2
from benchmarks.assets.hearts_mlp import HeartsMLP
from benchmarks.assets.mobilenet_v2 import MobileNetV2
from benchmarks.assets.mobilenet_v3 import MobileNetV3
from benchmarks.assets.resnet50 import ResNet50
from benchmarks.assets.tiny_cnn import TinyCNN
from benchmarks.assets.vit_b16 import ViTB16

BUILTIN: dict[str, Callable[[], Any]] = {"digits-mlp": DigitsMLP, "hearts-mlp": HeartsMLP, "tiny-cnn": TinyCNN,
                                         "gpt2": GPT2,
                                         # Deployed architectures, random weights: transformers (assets/hf.py); MobileNetV3 from its paper.
                                         "resnet50": ResNet50, "mobilenet-v2": MobileNetV2,
                                         "mobilenet-v3": MobileNetV3, "vit-b16": ViTB16,
                                         "bert-base": BertBase}
REQUIRED = ("tasks", "build", "load_data", "run_batch", "evaluate")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

__all__ = ["BUILTIN", "DTYPES", "Asset", "AssetData", "ResolvedAsset", "TorchAsset", "asset_name", "generated_data",
           "get_asset", "list_assets", "loadable_ref", "resolve_asset", "resolve_asset_path"]

_instances: dict[str, Any] = {}  # one instance per reference, so an asset's caches survive across trials


@dataclass(frozen=True)
class ResolvedAsset:
    """An asset reference checked on the machine that submits the sweep."""

    ref: str  # how to load it: a built-in name, `module:Object`, or an absolute `file.py:Object`
    name: str  # the asset's own name: what rows, models and answers call it
    source: str | None = None  # the text of a file asset, shipped with each trial


def _split_file_ref(ref: str) -> tuple[str, str] | None:
    """(path, object) of a `path/to/file.py:Object` reference, else None."""
    path, sep, attr = ref.rpartition(":")
    return (path, attr) if sep and path.endswith(".py") else None


def resolve_asset_path(ref: str, search: Sequence[str | os.PathLike[str]] = ()) -> str:
    """Make a relative file reference absolute: looked up in the current directory (where the user
    runs the command), then in each folder of `search` (e.g. the sweep file's). Other references
    are returned unchanged. A file found nowhere is a ValueError naming every place looked in."""
    parts = _split_file_ref(ref)
    if parts is None:
        return ref
    path, attr = parts
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        places = [candidate]
    else:
        places = [Path.cwd() / candidate] + [Path(d) / candidate for d in search]
    for place in places:
        if place.is_file():
            return f"{place.resolve()}:{attr}"
    looked = ", ".join(str(p) for p in dict.fromkeys(places))
    raise ValueError(f"asset {ref!r}: file {path!r} not found (looked in {looked}); give a path relative to "
                     "where you run the command, or an absolute one")


def asset_name(asset: Any, ref: str) -> str:
    """The name an asset is known by: its `name` attribute, else the object's name in the reference."""
    name = getattr(asset, "name", None)
    if not isinstance(name, str) or not name or name == "unnamed":
        name = ref.rpartition(":")[2] if ":" in ref else ref
    if not NAME_PATTERN.match(name):
        raise ValueError(f"asset {ref!r}: its name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit); set a `name` attribute on the asset")
    return name


def resolve_asset(ref: str, search: Sequence[str | os.PathLike[str]] = ()) -> ResolvedAsset:
    """Check that `ref` loads here (so a broken asset fails once, before any cluster starts) and
    return what every trial needs to load it again elsewhere."""
    ref = resolve_asset_path(ref, search)
    asset = get_asset(ref)
    parts = _split_file_ref(ref)
    source = Path(parts[0]).read_text() if parts else None
    return ResolvedAsset(ref=ref, name=asset_name(asset, ref), source=source)


def _asset_cache() -> Path:
    home = os.environ.get("BENCHMATCH_HOME") or str(Path.home() / ".benchmatch")
    return Path(home) / "assets"


def loadable_ref(ref: str, source: str | None) -> str:
    """A reference that loads on this machine: a file asset whose path does not exist here (a Tune
    trial's own working dir, another node) is written from its shipped source into a per-user cache
    keyed by the content, so every trial and DDP worker on a node loads the same file."""
    parts = _split_file_ref(ref)
    if parts is None or source is None or Path(parts[0]).is_file():
        return ref
    path, attr = parts
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    target = _asset_cache() / digest / Path(path).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, target)
    return f"{target}:{attr}"


def get_asset(name: str) -> Any:
    """The asset a reference names; a ValueError names the asset and the known ones when it is unknown."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"asset must be a non-empty string, got {name!r}; known assets: {sorted(BUILTIN)}")
    if name in _instances:
        return _instances[name]
    if name in BUILTIN:
        asset = BUILTIN[name]()
    elif ":" in name:
        asset = _load_user_asset(name)
    else:
        raise ValueError(
            f"unknown asset {name!r}; known assets: {sorted(BUILTIN)} "
            "(or give your own as 'package.module:Object' or 'path/to/file.py:Object')"
        )
    missing = [attr for attr in REQUIRED if not hasattr(asset, attr)]
    if missing:
        raise ValueError(f"asset {name!r} lacks {missing}; an asset needs {list(REQUIRED)} (see benchmarks/assets/base.py)")
    _instances[name] = asset
    return asset


def list_assets() -> list[dict[str, Any]]:
    """Name, tasks and description of each built-in asset."""
    out = []
    for name in sorted(BUILTIN):
        asset = get_asset(name)
        out.append({"name": name, "tasks": list(asset.tasks), "description": getattr(asset, "description", "")})
    return out


def _load_user_asset(ref: str) -> Any:
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise ValueError(f"asset {ref!r}: expected 'module:object' or 'file.py:object'")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"asset {ref!r}: file {path} not found")
            mod_name = f"benchmatch_user_asset_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"asset {ref!r}: cannot load {path} as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # the user's module itself fails: say where, in one line
                sys.modules.pop(mod_name, None)
                raise ValueError(f"asset {ref!r}: importing {path.name} raised {type(exc).__name__}: {exc}") from exc
        else:
            module = importlib.import_module(module_ref)
    except ImportError as exc:
        raise ValueError(f"asset {ref!r}: cannot import module {module_ref!r} ({exc})") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"asset {ref!r}: module {module_ref!r} has no attribute {attr!r}") from exc
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "build")):
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(f"asset {ref!r}: {attr}() must build an asset without arguments, but raised: {exc}") from exc
    return obj
