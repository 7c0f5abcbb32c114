"""pydantic validation errors in words a person can act on: one function for every front end.

Sweep files, requirements, plans, import mappings and HTTP bodies are all pydantic models; their
errors become (dotted field, message) pairs worded alike everywhere: "must be" rather than
"Input should be", an unknown field with the closest allowed name, the offending value shown
but capped (an error never echoes a megabyte back).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

MSG_REWRITES = (
    ("Input should be ", "must be "),
    ("List should ", "must "),
    ("Value error, ", ""),
    ("Field required", "is required"),
)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...], list[...], dict[..., ...] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def model_at(root: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The model that holds the field at `loc` (list indexes skipped), or None."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _inner_model(model.model_fields[part].annotation)
    return model


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_errors(errors: Iterable[Mapping[str, Any]], root: type[BaseModel]) -> list[tuple[str, str]]:
    """pydantic's `exc.errors()` (or FastAPI's, with a leading "body") as (field, message) pairs."""
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("body",):
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or "(top level)"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            model = model_at(root, loc[:-1])
            allowed = sorted(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if loc else []
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msg = f"unknown field{hint}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        else:
            msg = str(err.get("msg", "invalid"))
            for old, new in MSG_REWRITES:
                msg = msg.replace(old, new)
            first, _, rest = msg.partition(" ")
            model = model_at(root, loc)
            if kind == "value_error" and model is not None and first.split(".")[0] in model.model_fields and rest:
                # A cross-field check names the field it is about first (a dotted path into a list
                # of models, workloads.1.top_k, as well): point the location at it.
                field = ".".join([*(str(p) for p in loc), first])
                msg = rest
            elif kind == "missing" and not loc:
                msg = "a mapping (JSON object) is required"
            elif "input" in err and kind != "missing":
                msg = f"{msg} (got {short(err['input'])})"
        out.append((field, msg))
    return out


def one_line(errors: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{field}: {msg}" for field, msg in errors)
