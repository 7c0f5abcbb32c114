"""Grafana dashboards (JSON) and provisioning (YAML) for benchmatch, plus helpers to read their queries.

    for title, expr in panel_queries(SWEEPS_DASHBOARD):
        promql = render_query(expr, {"sweep": "quickstart"}, range_s=600, step_s=5, scrape_interval_s=5)

`render_query` substitutes Grafana's template variables the way Grafana does before it sends a
query to Prometheus, so tests can run every panel against a real Prometheus.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"
PROVISIONING_DIR = HERE / "provisioning"
SWEEPS_DASHBOARD = DASHBOARDS_DIR / "benchmatch-sweeps.json"
SERVICE_DASHBOARD = DASHBOARDS_DIR / "benchmatch-service.json"
LLM_DASHBOARD = DASHBOARDS_DIR / "benchmatch-llm.json"


def dashboard_files() -> list[Path]:
    """Every dashboard JSON shipped in cluster/grafana/dashboards/."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from _panels(panel.get("panels") or [])


def panel_targets(dashboard_path: str | os.PathLike[str]) -> list[tuple[str, str, bool]]:
    """(panel title, PromQL expr, instant) of every query target of every panel, in dashboard order.

    `instant` targets are evaluated once at the range's end (Grafana's "Instant" query type); the
    others as range queries. A panel with several targets gives several entries, titled
    "<panel> [<refId>]" after the first.
    """
    out: list[tuple[str, str, bool]] = []
    for panel in _panels(load_dashboard(dashboard_path).get("panels", [])):
        targets = [t for t in panel.get("targets") or [] if t.get("expr")]
        for i, target in enumerate(targets):
            title = panel.get("title", "") if i == 0 else f"{panel.get('title', '')} [{target.get('refId', i)}]"
            out.append((title, target["expr"], bool(target.get("instant")) and not target.get("range")))
    return out


def panel_queries(dashboard_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) of every query target of every panel, in dashboard order."""
    return [(title, expr) for title, expr, _ in panel_targets(dashboard_path)]


def _duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds (whole seconds, at least 1s)."""
    return f"{max(1, round(seconds))}s"


def render_query(
    expr: str,
    variables: Mapping[str, str] | None = None,
    *,
    range_s: float = 3600.0,
    step_s: float = 15.0,
    scrape_interval_s: float = 5.0,
) -> str:
    """`expr` with Grafana's variables replaced, as Grafana would send it.

    Dashboard variables (`$sweep`, `${sweep}`, `[[sweep]]`) take `variables[name]`, or `.*` (the
    dashboards' "All" value) when not given. Built-ins: `$__range` is the dashboard's time range,
    `$__interval` the step, and `$__rate_interval` = max(step + scrape interval, 4 x scrape interval),
    Grafana's definition for a Prometheus data source whose scrape interval is known.
    """
    variables = dict(variables or {})
    builtins = {
        "__rate_interval": _duration(max(step_s + scrape_interval_s, 4 * scrape_interval_s)),
        "__interval": _duration(step_s),
        "__range": _duration(range_s),
        "__range_s": str(int(range_s)),
    }

    def value(name: str) -> str:
        if name in builtins:
            return builtins[name]
        return variables.get(name, ".*")

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m.group(1)), expr)
    expr = re.sub(r"\[\[(\w+)\]\]", lambda m: value(m.group(1)), expr)
    return re.sub(r"\$(\w+)", lambda m: value(m.group(1)), expr)


def template_variables(dashboard_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The dashboard's template variables (name, type, query), for checks and docs."""
    return list(load_dashboard(dashboard_path).get("templating", {}).get("list", []))
