"""JSON for the service's answers: the matcher's dicts hold numpy scalars, tuples and NaN, and
JSON has none of them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy: NaN/inf -> None (a missing number stays missing, never 0), numpy ->
    builtins, tuples/sets -> lists, dataclasses and pydantic models -> dicts."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict | Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((jsonable(v) for v in obj), key=repr)
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    if is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes of `jsonable(obj)`. ASCII-escaped, so that any text a client sent can be
    echoed back without an encoding error."""
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False).encode()
