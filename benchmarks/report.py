"""One self-contained HTML report of result rows: summary, plots, medians with spread, flags.

`write_report(df, out_path)` writes a single file with every plot inlined as a base64 PNG
(matplotlib's Agg canvas through `matplotlib.figure.Figure`, so no pyplot state and no display):
latency CDFs per hardware, Offline throughput against batch size, the cost–latency Pareto front,
scaling curves, the median/spread tables with each group's ratio to the reference measurement,
and the flagged rows. Statistics come from `benchmarks.stats`; docs/report.md describes the page.

Every data string is HTML-escaped; a missing value prints as "—", never 0.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmarks import stats
from results.schema import BY_NAME, CONFIG_PREFIX

TITLES = {
    "summary": "Summary",
    "cdf": "Latency CDF per hardware",
    "batch": "Throughput against batch size (Offline)",
    "pareto": "Cost against p99 latency: Pareto front",
    "scaling": "Scaling",
    "tables": "Median and spread per configuration",
    "flags": "Flags: noisy, INVALID, failed, background load",
    "definitions": "Definitions",
}
TABLE_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_samples_per_s",
                 "accuracy", "time_to_accuracy_s", "energy_per_sample_j", "peak_memory_mb")
LATENCY_COLUMNS = (("latency_p50_ms", 0.50), ("latency_p90_ms", 0.90), ("latency_p95_ms", 0.95),
                   ("latency_p99_ms", 0.99), ("latency_p999_ms", 0.999))
_LOG_PCT = re.compile(r"^result_(\d+\.\d+)_percentile_latency_ns$")
DASH = "—"
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ---------------------------------------------------------------- formatting
def e(value: Any) -> str:
    """HTML-escaped text of a data value; missing values become the dash."""
    if _missing(value):
        return DASH
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 4, pct: bool = False) -> str:
    """A number to `digits` significant digits (or a percentage); missing → dash, never 0."""
    if _missing(value):
        return DASH
    v = float(value)
    if not math.isfinite(v):
        return DASH
    if pct:
        return f"{100 * v:.1f} %"
    if v != 0 and (abs(v) >= 1e9 or abs(v) < 1e-4):
        return f"{v:.{digits - 1}e}"
    rounded = float(f"{v:.{digits}g}")
    if abs(rounded) >= 10**digits:  # 23,060 reads better than 2.306e+04; digits past `digits` are noise
        return f"{rounded:,.0f}"
    return f"{rounded:.{digits}g}"


def _unit(metric: str) -> str:
    col = BY_NAME.get(metric)
    return col.unit if col and col.unit else ""


def _metric_label(metric: str) -> str:
    unit = _unit(metric)
    return f"{metric} ({unit})" if unit else metric


def png_html(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def note_html(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def html_table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Headers are escaped here; cells must already be escaped (they may hold markup like <b>)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cfg_cols(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c.startswith(CONFIG_PREFIX))


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "status" not in df.columns:
        return df
    return df[df["status"].fillna("ok").astype(str) == "ok"]


def _grid(n: int, ncols_max: int = 3, w: float = 4.4, h: float = 3.4) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols_max, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(w * ncols, h * nrows + 0.5))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _scenario_grid(panels: Sequence[tuple[str, str]], hws: Sequence[str]) -> tuple[Figure, list[Any]]:
    """Axes for (scenario, hardware) panels laid out as scenario rows × hardware columns."""
    scens = sorted({sc for sc, _ in panels})
    fig = Figure(figsize=(4.4 * len(hws), 3.4 * len(scens) + 0.5))
    axes = [fig.add_subplot(len(scens), len(hws), scens.index(sc) * len(hws) + hws.index(hw) + 1) for sc, hw in panels]
    return fig, axes


def _plain_log_ticks(ax: Any) -> None:
    """Log axes labelled 0.1, 0.2, 1 ... instead of 2×10⁻¹ on every minor tick (they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() != "log":
            continue
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _style_map(keys: Sequence[Any], options: Sequence[Any]) -> dict[Any, Any]:
    return {k: options[i % len(options)] for i, k in enumerate(sorted(set(keys), key=str))}


# ---------------------------------------------------------------- latency CDF
def _log_points(log_dir: Any) -> list[tuple[float, float]] | None:
    """(latency ms, cumulative fraction) points from a LoadGen detail log, or None if unreadable.

    LoadGen's detail log holds the run's min, p50, p90, p95, p97, p99, p99.9 and max latency (it does
    not hold per-query latencies unless tracing is on, which benchmatch leaves off).
    """
    if _missing(log_dir) or not str(log_dir):
        return None
    path = Path(str(log_dir)) / "mlperf_log_detail.txt"
    if not path.is_file():
        return None
    from benchmarks.loadgen_harness import read_detail_log

    try:
        recs = read_detail_log(path)
    except OSError:
        return None
    pts: list[tuple[float, float]] = []
    for key, (value, _t) in recs.items():
        m = _LOG_PCT.match(key)
        if m and isinstance(value, int | float):
            pts.append((float(value) / 1e6, float(m.group(1)) / 100.0))
    if not pts:
        return None
    for key, frac in (("result_min_latency_ns", 0.0), ("result_max_latency_ns", 1.0)):
        v = recs.get(key, (None, 0))[0]
        if isinstance(v, int | float):
            pts.append((float(v) / 1e6, frac))
    return sorted(pts, key=lambda p: (p[1], p[0]))


def _column_points(row: pd.Series) -> list[tuple[float, float]]:
    pts = [(float(row[c]), q) for c, q in LATENCY_COLUMNS if c in row.index and not _missing(row[c])]
    return sorted(pts, key=lambda p: (p[1], p[0]))


def latency_cdf_section(df: pd.DataFrame) -> str:
    """A panel per (scenario, hardware), a step CDF per configuration (median over repeats)."""
    ok = _ok(df)
    if "latency_p50_ms" not in ok.columns:
        return note_html("No latency columns in these rows: nothing to plot.")
    lat = ok[ok["latency_p50_ms"].notna()]
    if lat.empty:
        return note_html("No row has per-query latencies (Offline reports none): nothing to plot.")
    cfg = _cfg_cols(lat)
    curves: dict[tuple[str, str], dict[str, list[list[tuple[float, float]]]]] = {}
    from_log = from_cols = 0
    for _, row in lat.iterrows():
        pts = _log_points(row.get("loadgen_log_dir"))
        if pts is None:
            pts = _column_points(row)
            from_cols += 1
        else:
            from_log += 1
        if not pts:
            continue
        panel = (str(row["scenario"]), str(row["hardware"]))
        curves.setdefault(panel, {}).setdefault(stats.config_label(row, cfg) or "(no config)", []).append(pts)
    if not curves:
        return note_html("No latency percentiles could be read.")
    if from_cols == 0:
        source = "LoadGen detail logs (min, p50, p90, p95, p97, p99, p99.9, max of each run)"
    elif from_log == 0:
        source = "the p50/p90/p95/p99/p99.9 columns: LoadGen detail logs missing"
    else:
        source = f"LoadGen detail logs ({from_log} rows) and the percentile columns where logs were missing ({from_cols} rows)"
    panels = sorted(curves)
    labels = sorted({lab for p in panels for lab in curves[p]})
    colors, styles = _style_map(labels, _COLORS), _style_map(labels, _STYLES)
    # A row per scenario, a column per hardware, so one column reads as one machine.
    hws = sorted({hw for _, hw in panels})
    fig, axes = _scenario_grid(panels, hws) if len(hws) <= 4 else _grid(len(panels), ncols_max=3)
    for ax, panel in zip(axes, panels, strict=True):
        for lab in sorted(curves[panel]):
            runs = curves[panel][lab]
            # Median over repeats of each percentile's latency; percentiles present in every repeat only.
            fracs = sorted(set.intersection(*({q for _, q in r} for r in runs)))
            xs = [float(np.median([next(x for x, q in r if q == f) for r in runs])) for f in fracs]
            ax.step(xs, fracs, where="post", color=colors[lab], linestyle=styles[lab], marker=".",
                    label=f"{lab} (n={len(runs)})")
        ax.set_xscale("log")
        _plain_log_ticks(ax)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{panel[0]} on {panel[1]}", fontsize=10)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of queries ≤ latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Latency CDF (step through percentile points) from {source}", fontsize=9, y=1.0)
    fig.tight_layout()
    note = note_html(f"Source: {source}. Offline rows have no per-query latency and are not shown. "
                 "Each curve is the median over repeats of each percentile point.")
    return png_html(fig, "latency CDF per hardware") + note


# ---------------------------------------------------------------- throughput vs batch
def batch_section(summary: pd.DataFrame) -> str:
    """Offline throughput (median, IQR as error bar) against cfg_batch_size, a line per hardware × config."""
    if "cfg_batch_size" not in summary.columns:
        return note_html("These rows have no cfg_batch_size: no batch-size plot.")
    s = summary[(summary["scenario"] == "Offline") & (summary["metric"] == "throughput_samples_per_s")]
    s = s[s["cfg_batch_size"].notna()]
    if s.empty:
        return note_html("No Offline throughput was measured: no batch-size plot.")
    others = [c for c in _cfg_cols(s) if c != "cfg_batch_size"]
    s = s.assign(_line=[f"{r['hardware']} {stats.config_label(r, others)}".strip() for _, r in s.iterrows()])
    hws = sorted(s["hardware"].astype(str).unique())
    colors = _style_map(hws, _COLORS)
    styles = _style_map(s["_line"].map(lambda v: v.split(" ", 1)[-1]).tolist(), _STYLES)
    fig = Figure(figsize=(8, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    for line, grp in s.groupby("_line", sort=True):
        grp = grp.sort_values("cfg_batch_size")
        x = grp["cfg_batch_size"].astype(float).to_numpy()
        y = grp["median"].to_numpy(dtype=float)
        lo = (y - grp["q25"].to_numpy(dtype=float))
        hi = (grp["q75"].to_numpy(dtype=float) - y)
        err = None if np.isnan(lo).all() else np.vstack([np.nan_to_num(lo), np.nan_to_num(hi)])
        hw = str(grp["hardware"].iloc[0])
        ax.errorbar(x, y, yerr=err, color=colors[hw], linestyle=styles[str(line).split(" ", 1)[-1]],
                    marker="o", capsize=3, label=f"{line} (n={int(grp['n'].min())}–{int(grp['n'].max())})"
                    if grp["n"].nunique() > 1 else f"{line} (n={int(grp['n'].iloc[0])})")
    if s["cfg_batch_size"].nunique() > 1:
        ax.set_xscale("log", base=2)
    ticks = sorted(s["cfg_batch_size"].astype(float).unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("batch size (cfg_batch_size)")
    ax.set_ylabel("throughput (samples/s), median")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Offline throughput against batch size (error bars: q25–q75 over repeats)", fontsize=10)
    fig.tight_layout()
    return png_html(fig, "throughput against batch size")


# ---------------------------------------------------------------- Pareto
def _prices(df: pd.DataFrame, catalog: Mapping[str, Any] | None) -> dict[str, float]:
    """Price per hour per hardware: the rows' recorded price, else the catalog's; unknown left out."""
    out: dict[str, float] = {}
    if "price_per_hour_usd" in df.columns:
        for hw, p in df.groupby("hardware")["price_per_hour_usd"].median().items():
            if not _missing(p):
                out[str(hw)] = float(p)
    for name, spec in (catalog or {}).items():
        price = getattr(spec, "price_per_hour_usd", None)
        if name not in out and price is not None:
            out[name] = float(price)
    return out


def pareto_mask(cost: Sequence[float], latency: Sequence[float]) -> list[bool]:
    """True for points no other point beats on both cost and latency (ties do not dominate)."""
    c, lat = np.asarray(cost, dtype=float), np.asarray(latency, dtype=float)
    out = []
    for i in range(len(c)):
        dominated = np.any((c <= c[i]) & (lat <= lat[i]) & ((c < c[i]) | (lat < lat[i])))
        out.append(not bool(dominated))
    return out


def pareto_points(summary: pd.DataFrame, df: pd.DataFrame, catalog: Mapping[str, Any] | None) -> pd.DataFrame:
    """Per (scenario, hardware, config): median p99, median throughput, cost per million samples, pareto."""
    cols = ["scenario", "hardware", "config", "latency_p99_ms", "throughput_samples_per_s",
            "price_per_hour_usd", "cost_per_million_usd", "pareto"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    key = [c for c in stats.group_columns(summary) if c in summary.columns]
    wide = summary.pivot_table(index=key, columns="metric", values="median", dropna=False).reset_index()
    if "latency_p99_ms" not in wide.columns or "throughput_samples_per_s" not in wide.columns:
        return pd.DataFrame(columns=cols)
    wide = wide[wide["latency_p99_ms"].notna() & wide["throughput_samples_per_s"].notna()]
    prices = _prices(df, catalog)
    cfg = _cfg_cols(wide)
    rows = []
    for _, r in wide.iterrows():
        price = prices.get(str(r["hardware"]), math.nan)
        tput = float(r["throughput_samples_per_s"])
        cost = price / tput * 1e6 / 3600.0 if tput > 0 and not math.isnan(price) else math.nan
        rows.append({"scenario": r["scenario"], "hardware": r["hardware"], "config": stats.config_label(r, cfg),
                     "latency_p99_ms": float(r["latency_p99_ms"]), "throughput_samples_per_s": tput,
                     "price_per_hour_usd": price, "cost_per_million_usd": cost, "pareto": False})
    out = pd.DataFrame(rows, columns=cols)
    for _, idx in out.groupby("scenario").groups.items():
        sub = out.loc[idx]
        priced = sub[sub["cost_per_million_usd"].notna()]
        if not priced.empty:
            out.loc[priced.index, "pareto"] = pareto_mask(priced["cost_per_million_usd"], priced["latency_p99_ms"])
    return out


def pareto_section(points: pd.DataFrame) -> str:
    if points.empty:
        return note_html("No configuration has both a p99 latency and a throughput: no Pareto plot.")
    priced = points[points["cost_per_million_usd"].notna()]
    unpriced = sorted(set(points["hardware"].astype(str)) - set(priced["hardware"].astype(str)))
    extra = note_html(f"No price for {', '.join(unpriced)}: left out of the cost plot.") if unpriced else ""
    if priced.empty:
        return note_html("No hardware in these rows has a price: no cost plot.") + extra
    scenarios = sorted(priced["scenario"].astype(str).unique())
    hws = sorted(priced["hardware"].astype(str).unique())
    colors, markers = _style_map(hws, _COLORS), _style_map(hws, _MARKERS)
    fig, axes = _grid(len(scenarios), ncols_max=2, w=6.0, h=4.4)
    for ax, scen in zip(axes, scenarios, strict=True):
        sub = priced[priced["scenario"] == scen]
        for hw in hws:
            h = sub[sub["hardware"] == hw]
            if h.empty:
                continue
            ax.scatter(h["latency_p99_ms"], h["cost_per_million_usd"], color=colors[hw], marker=markers[hw],
                       s=28, alpha=0.55, label=hw)
        front = sub[sub["pareto"]].sort_values("latency_p99_ms")
        ax.step(front["latency_p99_ms"], front["cost_per_million_usd"], where="post", color="black",
                linewidth=1, alpha=0.7, label="Pareto front")
        ax.scatter(front["latency_p99_ms"], front["cost_per_million_usd"], s=110, facecolors="none",
                   edgecolors="black", linewidths=1.5)
        for i, (_, r) in enumerate(front.iterrows()):
            # Alternate label offsets so neighbouring front points do not print on top of each other.
            ax.annotate(f"{r['hardware']} {r['config']}", (r["latency_p99_ms"], r["cost_per_million_usd"]),
                        textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -12), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.margins(0.15)
        ax.set_xlabel("p99 latency (ms, median over repeats, log)")
        ax.set_ylabel("cost per million samples (USD, log)")
        ax.set_title(f"{scen}: circled = Pareto-optimal", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    front = priced[priced["pareto"]].sort_values(["scenario", "latency_p99_ms"])
    table = html_table(["scenario", "hardware", "config", "p99 latency (ms)", "throughput (samples/s)",
                    "price (USD/h)", "cost per 1M samples (USD)"],
                   ([e(r["scenario"]), e(r["hardware"]), e(r["config"]), num(r["latency_p99_ms"]),
                     num(r["throughput_samples_per_s"]), num(r["price_per_hour_usd"]),
                     num(r["cost_per_million_usd"])] for _, r in front.iterrows()))
    note = note_html("Cost per million samples = price_per_hour_usd / throughput_samples_per_s × 10⁶ / 3600, "
                 "with the throughput of the same scenario. Pareto-optimal: no other configuration is both "
                 "cheaper and lower in p99 latency.")
    return png_html(fig, "cost against p99 latency, Pareto front") + note + extra + "<h3>Pareto-optimal configurations</h3>" + table


# ---------------------------------------------------------------- scaling
def scaling_dimension(df: pd.DataFrame) -> str | None:
    """The first of cfg_threads, device_count, num_threads that takes more than one value in the rows."""
    for col in ("cfg_threads", "device_count", "num_threads"):
        if col in df.columns and pd.to_numeric(df[col], errors="coerce").dropna().nunique() > 1:
            return col
    return None


def scaling_section(df: pd.DataFrame) -> str:
    """Throughput against the scaling dimension, a panel per scenario, a line per configuration."""
    ok = _ok(df)
    dim = scaling_dimension(ok)
    if dim is None or "throughput_samples_per_s" not in ok.columns:
        return note_html("No scaling dimension in these rows (cfg_threads, device_count and num_threads each take "
                     "one value): no scaling curve. Sweep threads or devices to get one.")
    ok = ok[ok["throughput_samples_per_s"].notna() & ok[dim].notna()]
    others = [c for c in _cfg_cols(ok) if c != dim]
    line_of = [f"{r.get('accelerator_type', '')} {stats.config_label(r, others)}".strip() for _, r in ok.iterrows()]
    ok = ok.assign(_line=line_of, _x=pd.to_numeric(ok[dim], errors="coerce").astype(float))
    scenarios = sorted(ok["scenario"].astype(str).unique())
    lines = sorted(ok["_line"].unique())
    xs = sorted(ok["_x"].unique())
    colors, styles = _style_map(lines, _COLORS), _style_map(lines, _STYLES)
    fig, axes = _grid(len(scenarios), ncols_max=3, w=4.6, h=3.6)
    table_rows = []
    for ax, scen in zip(axes, scenarios, strict=True):
        sub = ok[ok["scenario"] == scen]
        for line, grp in sub.groupby("_line", sort=True):
            med = grp.groupby("_x")["throughput_samples_per_s"].median().sort_index()
            ax.plot(med.index, med.to_numpy(), color=colors[line], linestyle=styles[line], marker="o", label=line)
            x0, y0 = float(med.index[0]), float(med.iloc[0])
            cells = []
            for x in xs:
                if x not in med.index:
                    cells.append(DASH)
                    continue
                y = float(med[x])
                eff = y / (y0 * x / x0) if x0 > 0 and y0 > 0 and x != x0 else math.nan
                cells.append(num(y) + ("" if _missing(eff) else f" <span class=\"dim\">({num(eff, pct=True)})</span>"))
            table_rows.append([e(scen), e(line), *cells])
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(dim)
        ax.set_ylabel("throughput (samples/s), median")
        ax.set_ylim(bottom=0)
        ax.set_title(scen, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    note = note_html(f"Scaling dimension: {dim}. In brackets: scaling efficiency = throughput / (throughput at the "
                 f"smallest {dim} × the {dim} ratio); 100 % is linear scaling. "
                 + ("num_threads differs here because the hardware profiles differ, so each point is also a "
                    "different hardware." if dim == "num_threads" else ""))
    table = html_table(["scenario", "line", *(f"{dim}={x:g}: samples/s" for x in xs)], table_rows, "data")
    return png_html(fig, f"throughput against {dim}") + note + table


# ---------------------------------------------------------------- tables
def _ci(r: pd.Series, coverage: bool = True, digits: int = 4) -> str:
    if _missing(r["ci_low"]):
        return DASH
    text = f"[{num(r['ci_low'], digits)}, {num(r['ci_high'], digits)}]"
    return text + (f" ({num(r['ci_level'], pct=True)})" if coverage else "")


def _vs_ref(r: pd.Series) -> str:
    if _missing(r.get("vs_ref")):
        return DASH
    return f"{float(r['vs_ref']):.3g}× ref"


def _cell(r: pd.Series, coverage: bool) -> str:
    """One metric of one configuration: the median (and its ratio to the reference) over its spread."""
    iqr = DASH if _missing(r["iqr"]) else f"{num(r['iqr'], 3)} ({num(r['rel_iqr'], pct=True)})"
    noisy = " <b class=\"warn\">noisy</b>" if not _missing(r["noisy"]) and r["noisy"] else ""
    lines = [f"<b>{num(r['median'])}</b> <span class=\"ref\">{_vs_ref(r)}</span>",
             f"<span class=\"dim\">IQR {iqr}</span>{noisy}",
             f"<span class=\"dim\">CV {num(r['cv'], pct=True)}</span>",
             f"<span class=\"dim\">CI {_ci(r, coverage, 3)}</span>"]
    return "<br>".join(lines)


def tables_section(summary: pd.DataFrame) -> str:
    """Per (asset, task, scenario): a row per hardware × config, a column per metric."""
    if summary.empty:
        return note_html("No successful rows: nothing to summarise.")
    cfg = _cfg_cols(summary)
    parts = []
    scope = [c for c in ("asset", "task", "scenario") if c in summary.columns]
    order = {m: i for i, m in enumerate(TABLE_METRICS)}
    for key, grp in summary.groupby(scope, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ref = grp[["ref_hardware", "ref_config"]].dropna().drop_duplicates()
        ref_txt = "; ".join(f"{e(h)} {e(c)}" for h, c in ref.itertuples(index=False)) or DASH
        parts.append(f"<h3>{' · '.join(e(k) for k in key)}</h3>"
                     f"<p class=\"dim\">reference (1×): {ref_txt}</p>")
        metrics = sorted(grp["metric"].unique(), key=lambda m: (order.get(m, 99), m))
        # One coverage for the whole table (the usual case: equal repeats) goes in the caption, not every cell.
        levels = grp["ci_level"].dropna().round(6).unique()
        same = len(levels) <= 1
        if len(levels) == 1:
            parts.append(f"<p class=\"dim\">median CI coverage: {num(levels[0], pct=True)}"
                         + (" (95 % needs n ≥ 6; with fewer repeats the interval is [min, max])"
                            if levels[0] < 0.95 else "") + "</p>")
        rows = []
        for ident, g in grp.groupby(["hardware", *cfg], dropna=False, sort=True):
            ident = ident if isinstance(ident, tuple) else (ident,)
            by_metric = {r["metric"]: r for _, r in g.iterrows()}
            ns = sorted({int(v) for v in g["n"]})
            row = [e(ident[0]), e(stats.config_label(g.iloc[0], cfg)), e("–".join(str(n) for n in (ns[0], ns[-1]))
                                                                          if len(ns) > 1 else ns[0])]
            row += [_cell(by_metric[m], not same) if m in by_metric else DASH for m in metrics]
            rows.append(row)
        parts.append('<div class="scroll">' + html_table(["hardware", "config", "n", *(_metric_label(m) for m in metrics)],
                                                      rows, "data") + "</div>")
    parts.append(note_html("Each cell: median over repeats and its ratio to the reference (throughput/accuracy: "
                       "speed-up, > 1 better; latency/memory/energy: ratio, < 1 better); IQR (IQR/median) and CV; "
                       "the median's confidence interval with its coverage. — = not measurable (n < 2 or no value)."))
    return "".join(parts)


def _flag_rows(fl: pd.DataFrame, which: str) -> list[list[str]]:
    sub = fl[fl["flag"] == which]
    cfg = _cfg_cols(sub)
    return [[e(r.get("sweep_id")), e(r.get("trial_id")), e(r.get("repeat")), e(r.get("scenario")), e(r.get("hardware")),
             e(stats.config_label(r, cfg)), e(r["detail"])] for _, r in sub.iterrows()]


def flags_section(summary: pd.DataFrame, df: pd.DataFrame) -> str:
    parts = []
    cfg = _cfg_cols(summary)
    noisy = summary[summary["noisy"].fillna(False).astype(bool)] if not summary.empty else summary
    parts.append(f"<h3>Noisy results (IQR/median &gt; {stats.NOISY_THRESHOLD:.0%}): {len(noisy)}</h3>")
    if len(noisy):
        parts.append(html_table(["scenario", "hardware", "config", "metric", "n", "median", "IQR/median", "CV"],
                            ([e(r["scenario"]), e(r["hardware"]), e(stats.config_label(r, cfg)), e(r["metric"]),
                              e(r["n"]), num(r["median"]), num(r["rel_iqr"], pct=True), num(r["cv"], pct=True)]
                             for _, r in noisy.iterrows())))
    single = int((summary["n"] < 2).sum()) if not summary.empty else 0
    if single:
        parts.append(note_html(f"{single} of {len(summary)} (configuration, metric) groups have a single repeat: "
                           "their spread and noise cannot be judged (set `repeats: 3` or more in the sweep)."))
    fl = stats.flags(df)
    headers = ["sweep", "trial", "repeat", "scenario", "hardware", "config", "detail"]
    for which, title in (("loadgen INVALID", "LoadGen INVALID runs"), ("failed", "Failed trials"),
                         ("skipped", "Skipped configurations (cannot run there; never measured)"),
                         ("background load", "Rows measured under background load")):
        rows = _flag_rows(fl, which)
        parts.append(f"<h3>{html.escape(title)}: {len(rows)}</h3>")
        if rows:
            parts.append(html_table(headers, rows))
    return "".join(parts)


# ---------------------------------------------------------------- summary + page
def _values(df: pd.DataFrame, col: str) -> str:
    if col not in df.columns:
        return DASH
    vals = sorted({str(v) for v in df[col].dropna() if str(v)})
    return ", ".join(e(v) for v in vals) or DASH


def summary_section(df: pd.DataFrame, catalog: Mapping[str, Any] | None, reference: stats.Reference,
                    generated: datetime) -> str:
    ok = _ok(df)
    status = df["status"].fillna("ok").astype(str) if "status" in df.columns else pd.Series(["ok"] * len(df))
    prices = _prices(df, catalog)
    hw_txt = ", ".join(f"{e(h)} ({num(prices[h])} USD/h)" if h in prices else f"{e(h)} (no price)"
                       for h in sorted({str(v) for v in df.get("hardware", pd.Series(dtype=str)).dropna()})) or DASH
    reps = df.groupby(["sweep_id", "trial_id"])["repeat"].nunique() if {"sweep_id", "trial_id", "repeat"} <= set(df.columns) else pd.Series(dtype=int)
    rep_txt = DASH if reps.empty else (str(int(reps.min())) if reps.min() == reps.max() else f"{int(reps.min())}–{int(reps.max())}")
    times = sorted(str(t) for t in df.get("start_time", pd.Series(dtype=str)).dropna() if str(t))
    when = f"{e(times[0])} … {e(times[-1])}" if times else DASH
    env = []
    for col in ("env_cpu_model", "env_gpu_name", "env_torch_version", "env_python_version"):
        if col in df.columns and _values(df, col) != DASH:
            env.append(f"{col[4:]}: {_values(df, col)}")
    ref_txt = (f"hardware {e(reference.hardware)}" if reference.hardware else
               "first measured of " + ", ".join(e(h) for h in reference.preferred_hardware) + ", else the cheapest measured")
    if reference.config:
        ref_txt += "; " + ", ".join(f"{e(k)}={e(v)}" for k, v in reference.config.items())
    ref_txt += "; other cfg columns at their smallest value (cfg_dtype: float32, cfg_engine: eager, cfg_quantization: none)"
    items = [
        ("sweeps", _values(df, "sweep_id")), ("assets", _values(df, "asset")), ("tasks", _values(df, "task")),
        ("scenarios", _values(df, "scenario")), ("hardware", hw_txt),
        ("rows", f"{len(df)} ({len(ok)} ok, {int((~status.isin(['ok', 'skipped'])).sum())} failed"
                 + (f", {int((status == 'skipped').sum())} skipped)" if (status == "skipped").any() else ")")),
        ("trials", str(df["trial_id"].nunique()) if "trial_id" in df.columns else DASH),
        ("repeats per trial", rep_txt), ("measured", when), ("environment", "; ".join(env) or DASH),
        ("reference", ref_txt), ("report generated", e(generated.strftime("%Y-%m-%d %H:%M:%S UTC"))),
    ]
    return "<dl class=\"summary\">" + "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


DEFINITIONS = f"""
<ul>
<li><b>Group</b>: one configuration = (asset, task, scenario, hardware, every cfg_* column); its rows are the
repeats. Failed rows are left out of the statistics and listed under Flags.</li>
<li><b>n</b>: repeats with a value; <b>median</b>; <b>IQR</b> = q75 − q25 (linear interpolation);
<b>CV</b> = sample standard deviation / mean. With n &lt; 2 there is no spread: shown as {DASH}.</li>
<li><b>Median CI</b>: distribution-free interval from order statistics: [x₍ₗ₎, x₍ₙ₊₁₋ₗ₎] with the largest l whose
binomial coverage 1 − 2·P(Bin(n, ½) ≤ l−1) is ≥ 95 %. Below n = 6 no such pair exists: the interval is
[min, max] and its real coverage (e.g. 93.75 % at n = 5) is shown in brackets.</li>
<li><b>Noisy</b>: IQR / median &gt; 10 % (DESIGN.md).</li>
<li><b>vs reference</b>: median / the reference's median for the same (asset, task, scenario, metric). For
throughput it is the speed-up (&gt; 1 faster); for latency the ratio (&lt; 1 faster). Reference: see Summary.
No reference measurement for a metric → {DASH}.</li>
<li><b>Latency CDF</b>: LoadGen's detail log holds percentile points, not per-query latencies (tracing is off),
so each curve is a step function through those points.</li>
</ul>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1380px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}h3{margin:18px 0 6px;font-size:1.02em}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}dl.summary dt{font-weight:600;color:#555}dl.summary dd{margin:0}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}td{font-variant-numeric:tabular-nums}table.data td{vertical-align:top}table.data td:nth-child(n+4){text-align:right;white-space:nowrap}
img.plot{max-width:100%;display:block;margin:8px 0}.note{color:#555;font-size:13px;font-style:italic}
.dim{color:#777;font-size:12px}.scroll{overflow-x:auto}.warn{color:#b00}nav a{margin-right:12px;font-size:14px}
"""


def build_report(df: pd.DataFrame, catalog: Mapping[str, Any] | None = None, title: str = "benchmatch report",
                 reference: stats.Reference | None = None, generated: datetime | None = None,
                 extra: Sequence[tuple[str, str, str]] = ()) -> str:
    """The report page as one HTML string (see `write_report`). `extra`: (anchor, title, HTML)
    sections placed after the summary (the decision, from benchmatch/decision.py)."""
    reference = reference or default_reference(catalog)
    generated = generated or datetime.now(timezone.utc)
    summary = report_summary(df, reference)
    points = pareto_points(summary, df, catalog)
    titles = {**TITLES, **{key: name for key, name, _ in extra}}
    sections = [
        ("summary", summary_section(df, catalog, reference, generated)),
        *((key, content) for key, _, content in extra),
        ("cdf", latency_cdf_section(df)),
        ("batch", batch_section(summary)),
        ("pareto", pareto_section(points)),
        ("scaling", scaling_section(df)),
        ("tables", tables_section(summary)),
        ("flags", flags_section(summary, df)),
        ("definitions", DEFINITIONS),
    ]
    nav = "".join(f'<a href="#{k}">{html.escape(titles[k])}</a>' for k, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{html.escape(titles[k])}</h2>{content}</section>' for k, content in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n")


def default_reference(catalog: Mapping[str, Any] | None) -> stats.Reference:
    """The first local profile of the catalog (local-1c in configs/hardware.yaml) is the reference."""
    local = [name for name, spec in (catalog or {}).items() if getattr(spec, "local", False)]
    return stats.Reference(preferred_hardware=tuple(local[:1]) or ("local-1c",))


def report_summary(df: pd.DataFrame, reference: stats.Reference | None = None) -> pd.DataFrame:
    """The statistics table the report shows: `stats.summarize` + `stats.baseline_ratios`."""
    summary = stats.summarize(df, metrics=stats.present_metrics(df, TABLE_METRICS))
    return stats.baseline_ratios(summary, reference or stats.Reference())


def write_report(df: pd.DataFrame, out_path: str | os.PathLike[str], catalog: Mapping[str, Any] | None = None,
                 title: str = "benchmatch report", reference: stats.Reference | None = None,
                 extra: Sequence[tuple[str, str, str]] = ()) -> Path:
    """Write the report for result rows `df` to `out_path` (one self-contained HTML file); returns its path.

    `catalog` (name → HardwareSpec) supplies prices the rows lack and the default reference hardware
    (its first local profile). Written to a temporary name and renamed, so a reader never sees half a page.
    """
    out = Path(out_path)
    page = build_report(df, catalog, title, reference, extra=extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
