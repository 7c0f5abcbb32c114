"""The decision in the report (`benchmatch report --requirements FILE`): the recommendation for a
requirements file, beside the measured latency-vs-load curves its replicas are sized from, the
models' predictions against what was measured (with their bands), and what the answer left out.

It lives with the CLI, not in benchmarks/report.py: the report belongs to the measuring side,
which never imports the matcher (docs/architecture.md); the report takes these as extra sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmarks.report import e, html_table, note_html, num, png_html
from matcher.candidates import parse_curve
from matcher.models import train_models
from matcher.requirements import Requirements
from matcher.workspace import Workspace

Section = tuple[str, str, str]  # anchor, title, HTML


def _mix(hardware: Mapping[str, int]) -> str:
    return " + ".join(f"{n}×{hw}" for hw, n in hardware.items())


def _cfg(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "the default configuration"


def _answer_section(req: Requirements, ans: Mapping[str, Any]) -> str:
    asked = ", ".join(f"{k} = {v}" for k, v in req.constraints.model_dump(exclude_none=True).items()) or "none"
    out = [f"<p><b>Asset</b> {e(req.asset or 'the only one')}, <b>objective</b> {e(req.objective)}, "
           f"<b>constraints</b> {e(asked)}; latency bounded and ranked as <b>{e(ans.get('latency_statistic'))}</b>; "
           f"solved by {e(ans.get('solver'))}, status {e(ans.get('status'))}.</p>"]
    lat = str(ans.get("latency_statistic") or "latency_p99_ms")
    if ans.get("feasible"):
        rows = []
        for o in ans["options"]:
            p = o.get("predicted") or {}
            rows.append([e(o["rank"]), e(_mix(o["hardware"])), e(_cfg(o.get("config") or {})),
                         num(o["cost_per_hour_usd"]), f"{num(p.get(lat))} ({num(p.get(lat + '_bound'))})",
                         f"{num(p.get('throughput_qps'))} ({num(p.get('throughput_qps_bound'))})",
                         e(o.get("basis")), e(", ".join(o.get("binding") or []))])
        out.append(html_table(["rank", "hardware", "configuration", "USD/h", f"{lat} (bound)",
                               "samples/s (bound)", "basis", "binding"], rows, "data"))
    else:
        diag = ans.get("diagnosis") or {}
        out.append(f'<p class="warn">No feasible option: {e(diag.get("message", ""))}</p>')
        fixes = [f"{r.get('field')}: {r.get('from')} → {r.get('to')}" for r in diag.get("relaxations") or []]
        if fixes:
            out.append("<p>Any one of these would do:</p><ul>" + "".join(f"<li>{e(f)}</li>" for f in fixes) + "</ul>")
    notes = ans.get("notes") or []
    if notes:
        out.append("<p><b>What the answer rests on</b> (measurements left out, predictions withheld, emulation):</p>"
                   "<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "".join(out)


def _pair_rows(rows: pd.DataFrame, hardware: str, config: Mapping[str, Any]) -> pd.DataFrame:
    sel = rows[rows["hardware"].astype(str) == hardware]
    for k, v in config.items():
        col = f"cfg_{k}"
        if col in sel.columns:
            sel = sel[sel[col].astype(str) == str(v)]
    return sel


def _curves_section(req: Requirements, ans: Mapping[str, Any], rows: pd.DataFrame) -> str:
    """Each option's (hardware, configuration): every repeat's Server curve of the bounded
    statistic, the bound, and the load each replica of the option carries."""
    if not ans.get("feasible"):
        return note_html("No option: nothing to show under load.")
    lat = str(ans.get("latency_statistic") or "latency_p99_ms")
    bound = getattr(req.constraints, lat, None)
    demand = req.constraints.throughput_qps
    panels = []
    for o in ans["options"]:
        cfg = o.get("config") or {}
        if "configurations" in cfg:
            continue
        # One hardware type: each of its n replicas carries demand / n (with a mix, shares differ).
        load = demand / o["hardware"][next(iter(o["hardware"]))] if demand and len(o["hardware"]) == 1 else None
        for hw in o["hardware"]:
            pair = _pair_rows(rows, hw, cfg)
            cells = pair.loc[pair["scenario"].astype(str) == "Server", "server_curve"] \
                if {"scenario", "server_curve"} <= set(pair.columns) else []
            curves = [c for c in map(parse_curve, cells) if c]
            panels.append((o["rank"], hw, cfg, curves, load))
    if not panels:
        return note_html("No option's pairs were measured under load.")
    fig = Figure(figsize=(4.6 * min(len(panels), 3), 3.6 * ((len(panels) + 2) // 3)))
    cols = min(len(panels), 3)
    without = []
    for k, (rank, hw, cfg, curves, load) in enumerate(panels):
        ax = fig.add_subplot((len(panels) + 2) // 3, cols, k + 1)
        drawn = False
        for r, curve in enumerate(curves):
            pts = sorted((min(p.get("offered_qps") or 0, p.get("completed_qps") or np.inf), p.get(lat))
                         for p in curve if isinstance(p.get(lat), int | float))
            if pts:
                ax.plot([q for q, _ in pts], [v for _, v in pts], marker="o", ms=3, label=f"repeat {r}")
                drawn = True
        if not drawn:
            without.append(f"#{rank} {hw} [{_cfg(cfg)}]")
        if bound is not None:
            ax.axhline(bound, color="red", ls="--", lw=1, label=f"bound {bound:g} ms")
        if load is not None:
            ax.axvline(load, color="gray", ls=":", lw=1, label=f"load a replica carries: {load:.4g}/s")
        ax.set_title(f"#{rank} {hw}\n{_cfg(cfg)}", fontsize=9)
        ax.set_xlabel("samples/s offered to one replica")
        ax.set_ylabel(f"{lat} (ms)")
        ax.set_yscale("log")
        if drawn:
            ax.legend(fontsize=7)
    text = ("Each replica is sized from the highest rate at which every repeat's curve stays under the bound "
            "(docs/matcher.md, capacity at the SLO).")
    if without:
        text += f" Not measured under load (latency and capacity measured apart): {', '.join(without)}."
    return png_html(fig, "latency against offered load for the recommended pairs") + note_html(text)


def _models_section(rows: pd.DataFrame, catalog: Mapping[str, Any], asset: str, lat: str) -> str:
    """Out-of-fold predictions against the measurements, with each prediction's band (the bound
    the matcher uses), for the metrics that size and screen a replica."""
    ms = train_models(rows, catalog, assets=[asset], metrics=(lat, "throughput_qps"))
    models = [(m, ms.models[(asset, m)]) for m in (lat, "throughput_qps") if (asset, m) in ms.models]
    if not models:
        why = "; ".join(f"{m}: {w}" for (_, m), w in ms.skipped.items()) or "no model could be fitted"
        return note_html(f"No performance model for {asset}: {why}.")
    fig = Figure(figsize=(9.4, 4.0))
    rows_out = []
    for k, (metric, model) in enumerate(models):
        ax = fig.add_subplot(1, 2, k + 1)
        for regime, color in (("heldout_config", "tab:blue"), ("loho", "tab:orange")):
            if regime not in model.oof_:
                continue
            y, pred, bound = model.oof_[regime]
            ok = np.isfinite(pred) & np.isfinite(bound)
            low, high = np.minimum(pred, bound), np.maximum(pred, bound)
            ax.errorbar(y[ok], pred[ok], yerr=[pred[ok] - low[ok], high[ok] - pred[ok]], fmt="o", ms=3, color=color,
                        alpha=0.7, lw=0.8, label="held-out configuration" if regime == "heldout_config" else
                        "leave-one-hardware-out")
            cv = model.cv_.get(regime, {})
            rows_out.append([e(metric), e(regime), num(cv.get("mdape"), pct=True), num(cv.get("within10"), pct=True),
                             num(cv.get("coverage"), pct=True), e(len(y))])
        lims = [np.nanmin(model.oof_[next(iter(model.oof_))][0]), np.nanmax(model.oof_[next(iter(model.oof_))][0])]
        ax.plot(lims, lims, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {metric}")
        ax.set_ylabel("predicted (bar: to the bound)")
        ax.set_title(f"{asset}: {metric}", fontsize=9)
        ax.legend(fontsize=7)
    table = html_table(["metric", "held out", "MdAPE", "within ±10%", "band coverage", "values"], rows_out, "data")
    return (png_html(fig, "predicted against measured, out of fold") + table +
            note_html("Each point was predicted by a model fitted without it (its configuration, or its hardware "
                      "type); the bar reaches the band's conservative bound. A prediction answers only where its "
                      "error is within 25% (docs/matcher.md, when a model abstains)."))


def decision_sections(ws: Workspace, req: Requirements, rows: pd.DataFrame,
                      catalog: Mapping[str, Any]) -> list[Section]:
    """The report's decision sections for `req` on the workspace's data; `rows` are the report's rows."""
    ans = ws.recommend(req)
    asset = req.asset or (sorted(set(rows["asset"].astype(str)))[0] if "asset" in rows and len(rows) else "")
    mine = rows[rows["asset"].astype(str) == asset] if "asset" in rows else rows
    lat = str(ans.get("latency_statistic") or "latency_p99_ms")
    return [("decision", f"Decision: {asset}", _answer_section(req, ans)),
            ("load", "Latency under load for the recommended pairs", _curves_section(req, ans, mine)),
            ("models", "Predicted against measured (out of fold)", _models_section(mine, catalog, asset, lat))]
