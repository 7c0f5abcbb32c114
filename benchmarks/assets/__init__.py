"""Assets benchmatch can measure, and `get_asset` which also loads a user's own (`module:object`).

A name is either a built-in (`digits-mlp`, `hearts-mlp`, `tiny-cnn`) or a reference to the user's code:
`package.module:Object` (importable) or `path/to/file.py:Object`. The object may be an asset
instance, a class (instantiated without arguments) or a zero-argument factory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.assets.base import DTYPES, Asset, AssetData, TorchAsset, generated_data
from benchmarks.assets.digits_mlp import DigitsMLP
from benchmarks.assets.hearts_mlp import HeartsMLP
from benchmarks.assets.tiny_cnn import TinyCNN

BUILTIN: dict[str, Callable[[], Any]] = {"digits-mlp": DigitsMLP, "hearts-mlp": HeartsMLP, "tiny-cnn": TinyCNN}
REQUIRED = ("name", "tasks", "build", "load_data", "run_batch", "evaluate")

_instances: dict[str, Any] = {}  # one instance per name, so an asset's caches survive across trials

__all__ = ["BUILTIN", "DTYPES", "Asset", "AssetData", "TorchAsset", "generated_data", "get_asset", "list_assets"]


def get_asset(name: str) -> Any:
    """The asset called `name`; a ValueError names the asset and the known ones when it is unknown."""
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
            mod_name = f"benchmatch_user_asset_{path.stem}_{abs(hash(str(path)))}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"asset {ref!r}: cannot load {path} as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
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
