"""Summaries of result rows that every stage shows: which rows count, and what a store holds.

`ok_rows` is the one rule for "the rows an answer may use" (status ok, the task asked for);
`summarize_results` / `summarize_candidates` are what `GET /assets` and `benchmatch report` list.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from results.schema import CONFIG_PREFIX


def ok_rows(df: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
    """The rows that succeeded, of `task` when given. Rows without a status column count as ok
    (tables written by other tools), rows without a task column as any task."""
    rows = df
    if "status" in rows.columns:
        rows = rows[rows["status"].astype(str) == "ok"]
    if task is not None and "task" in rows.columns:
        rows = rows[rows["task"].astype(str) == task]
    return rows


def _sorted_str(values: Any) -> list[str]:
    return sorted({str(v) for v in values if v is not None and str(v) not in ("", "nan")})


def _hardware_rows(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df["hardware"].astype(str).value_counts().sort_index().items()}


def summarize_results(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Per asset: rows, successful rows, tasks, scenarios, hardware measured, sweeps."""
    if df is None or df.empty or "asset" not in df.columns:
        return []
    out = []
    for asset, grp in df.groupby(df["asset"].astype(str), sort=True):
        ok = ok_rows(grp)
        cfg = [c for c in grp.columns if str(c).startswith(CONFIG_PREFIX) and grp[c].notna().any()]
        starts = _sorted_str(grp["start_time"]) if "start_time" in grp else []
        out.append({
            "asset": asset,
            "rows": int(len(grp)),
            "ok_rows": int(len(ok)),
            "tasks": _sorted_str(grp["task"]) if "task" in grp else [],
            "scenarios": _sorted_str(grp["scenario"]) if "scenario" in grp else [],
            "hardware": _sorted_str(ok["hardware"]) if "hardware" in ok else [],
            "hardware_rows": _hardware_rows(ok) if "hardware" in ok else {},
            "sweeps": _sorted_str(grp["sweep_id"]) if "sweep_id" in grp else [],
            "config_columns": sorted(c[len(CONFIG_PREFIX):] for c in cfg),
            "last_start_time": max(starts) if starts else None,
        })
    return out


def summarize_candidates(df: pd.DataFrame | None, source: str) -> list[dict[str, Any]]:
    """A candidate table (CSV) as /assets rows: one per `asset` value, or one for the whole file."""
    if df is None or df.empty:
        return []
    groups = df.groupby(df["asset"].astype(str)) if "asset" in df.columns else [(f"(all rows of {source})", df)]
    out = []
    for asset, grp in groups:
        out.append({
            "asset": str(asset),
            "rows": int(len(grp)),
            "ok_rows": int(len(grp)),
            "tasks": [],
            "scenarios": [],
            "hardware": _sorted_str(grp["hardware"]),
            "hardware_rows": _hardware_rows(grp),
            "sweeps": [],
            "config_columns": sorted(str(c)[len(CONFIG_PREFIX):] for c in grp.columns
                                     if str(c).startswith(CONFIG_PREFIX)),
            "last_start_time": None,
            "source": "candidates_csv",
        })
    return out
