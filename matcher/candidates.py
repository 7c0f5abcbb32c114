"""The candidate table: one row per (hardware, configuration) describing ONE replica.

Columns (docs/matcher.md "Candidates" has the full story; the metrics are metrics.METRICS):
  hardware, price_per_hour_usd, throughput_qps, accuracy                   required
  latency_p50_ms, _p90_, _p95_, _p99_, _p999_, latency_mean_ms              at least one
  power_w, energy_per_sample_j, inventory, devices (default 1)              optional
  basis ("measured" | "predicted"), repeats, <metric>_point, <metric>_iqr    provenance / band
  cfg_<name>                                                                  the configuration
For predicted rows the metric column holds the conservative bound the MILP uses and
`<metric>_point` the point estimate. A missing value is NaN, never 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matcher.capacity import CURVES, fold_load_levels, llm_points
from matcher.errors import CandidateError, NoDataError, RequirementsError
from matcher.metrics import DEFAULT_LATENCY, LATENCY, METRICS, TRAIN_SCENARIO, metric_values, numeric
from matcher.requirements import MAX_THROUGHPUT_QPS
from results.mapping import DIRECTION_SUFFIX as DIRECTION
from results.mapping import QUALITY
from results.summary import ok_rows

CFG = "cfg_"
REQUIRED = ("hardware", "price_per_hour_usd", *(m.name for m in METRICS if m.presence != "optional"))
OPTIONAL_NUMERIC = (*(m.name for m in METRICS if m.presence == "optional"), "inventory", "devices")
TOKENS_PER_REQUEST = "output_tokens_per_request"  # LLM serving: mean output tokens of the measured requests
KNOWN = set(REQUIRED) | set(OPTIONAL_NUMERIC) | {"basis", "repeats", "asset", "latency_source", "sample_unit",
                                                 TOKENS_PER_REQUEST}


def quality_columns(df: pd.DataFrame) -> list[str]:
    """The quality_<name> score columns (not their _direction, _point or _iqr companions)."""
    return sorted(c for c in df.columns if str(c).startswith(QUALITY) and not str(c).endswith((DIRECTION, "_point",
                                                                                              "_iqr")))


MAX_VALUE = MAX_THROUGHPUT_QPS  # the largest per-replica metric value the matcher takes (ms, samples/s, J, W)


def config_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if str(c).startswith(CFG))


def clean_value(v: Any) -> Any:
    """A config value as a plain Python scalar: 8.0 -> 8, NaN -> None, numpy -> builtin."""
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def config_dict(row: Mapping[str, Any], cfg_cols: Iterable[str], strip: bool = True) -> dict[str, Any]:
    return {(c[len(CFG) :] if strip else c): clean_value(row[c]) for c in cfg_cols}


def config_key(row: Mapping[str, Any], cfg_cols: Iterable[str]) -> str:
    """Canonical text of a configuration, `batch_size=8,dtype=fp32`; '-' for the empty config."""
    parts = [f"{c[len(CFG) :]}={clean_value(row[c])}" for c in sorted(cfg_cols)]
    return ",".join(parts) or "-"


def config_keys(df: pd.DataFrame) -> pd.Series:
    cols = config_columns(df)
    if not cols:
        return pd.Series(["-"] * len(df), index=df.index, dtype=object)
    # Column by column, not df.to_dict("records"): building a dict per row was most of the
    # time of a small table's keys, and this runs twice per answer.
    names = [c[len(CFG):] for c in cols]
    columns = [_texts(name, df[c]) for name, c in zip(names, cols, strict=True)]
    return pd.Series([",".join(parts) for parts in zip(*columns, strict=True)], index=df.index, dtype=object)


def _texts(name: str, col: pd.Series) -> list[str]:
    """`name=value` per cell. A number column is written once per distinct value (a sweep's
    columns hold a handful): an object column may hold True beside 1, which hash alike, so it is
    written cell by cell."""
    if col.dtype.kind in "iuf":
        codes, uniques = pd.factorize(col, use_na_sentinel=False)
        texts = np.array([f"{name}={clean_value(v)}" for v in uniques], dtype=object)
        return texts[codes].tolist()
    return [f"{name}={clean_value(v)}" for v in col.tolist()]


# ----------------------------------------------------------------------------------------------
# Validation shared by the CSV reader and programmatic frames
# ----------------------------------------------------------------------------------------------


def is_blank(v: Any) -> bool:
    """An empty cell, however the table spells it: None, NaN, pandas' NA (nullable dtypes), ""."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""


def _numbers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _one_inventory_per_hardware(out: pd.DataFrame, where: str, row_name: Callable[[int], str]) -> None:
    """An inventory counts the devices of a hardware type, so its rows must agree (a blank takes
    the others' number): two numbers for one type would leave the matcher to guess which holds."""
    seen: dict[str, tuple[float, int]] = {}
    for pos, (hw, n) in enumerate(zip(out["hardware"].tolist(), out["inventory"].tolist(), strict=True)):
        if math.isnan(n):
            continue
        if hw in seen and seen[hw][0] != n:
            first, at = seen[hw]
            raise CandidateError(
                f"{where}: column 'inventory' is {first:g} for hardware '{hw}' at {row_name(at)} but {n:g} at "
                f"{row_name(pos)}; it counts that hardware's devices, so give one number per hardware (or leave "
                "the other rows blank)")
        seen.setdefault(hw, (n, pos))


def validate_candidates(df: pd.DataFrame, where: str = "candidates", line_offset: int | None = None) -> pd.DataFrame:
    """Check a candidate table and return a normalised copy (numeric dtypes, defaults filled).

    `line_offset` turns positions into file line numbers (CSV: header is line 1, so offset 2);
    without it errors name the DataFrame index label."""
    if not isinstance(df, pd.DataFrame):
        raise CandidateError(f"{where}: expected a DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CandidateError(
            f"{where}: missing required column(s) {missing}; a candidate table needs {list(REQUIRED)} and at "
            f"least one latency statistic ({', '.join(LATENCY)})"
        )
    if not any(c in df.columns for c in LATENCY):
        raise CandidateError(f"{where}: no latency column; a candidate table needs at least one of {', '.join(LATENCY)} "
                             "(name the statistic your numbers are: a mean is latency_mean_ms, a median latency_p50_ms)")
    if df.empty:
        raise CandidateError(f"{where}: no candidate rows")
    out = df.copy()

    def row_name(pos: int) -> str:
        if line_offset is not None:
            return f"line {pos + line_offset}"
        if not out.index.is_unique:  # a label several rows carry (pd.concat) would not say which
            return f"the row at position {pos}"
        label = out.index[pos]
        return f"row {label.item() if isinstance(label, np.generic) else label!r}"

    hw = out["hardware"]
    for pos, v in enumerate(hw.tolist()):
        if is_blank(v):
            raise CandidateError(f"{where}: {row_name(pos)}: column 'hardware' is empty")
    out["hardware"] = hw.astype(str).str.strip()

    def check(col: str, *, required: bool, low: float, low_ok: bool, high: float | None = None,
              integer: bool = False) -> None:
        raw = out[col]
        num = _numbers(raw)
        for pos, (r, v) in enumerate(zip(raw.tolist(), num.tolist(), strict=True)):
            if is_blank(r):
                if required:
                    raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' is empty; it is required")
                continue
            if isinstance(r, bool | np.bool_):  # True would count as 1 device or 1 sample/s
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' must be a number, got {r!r}")
            if math.isnan(v) or math.isinf(v):
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' must be a number, got {r!r}")
            if v < low or (v == low and not low_ok):
                rel = ">=" if low_ok else ">"
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' must be {rel} {low:g}, got {r!r}")
            if high is not None and v > high:
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' must be <= {high:g}, got {r!r}")
            if integer and not float(v).is_integer():
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}' must be a whole number, got {r!r}")
        out[col] = num

    # Measured rows must have every "value" metric; predicted rows may lack one (the MILP then
    # excludes them wherever that number matters), so only the CSV path insists.
    strict = line_offset is not None
    check("price_per_hour_usd", required=True, low=0, low_ok=True)
    for m in METRICS:
        if m.name in out:
            # A value past MAX_VALUE is a unit mistake, and would overflow the MILP's numbers into a
            # wrong "infeasible": refused here, naming the line.
            check(m.name, required=strict and m.presence == "value", low=0, low_ok=not m.positive,
                  high=1 if m.fraction else MAX_VALUE)
    for m in METRICS:
        if m.derived_from is not None and all(d in out for d in m.derived_from):
            out[m.name] = metric_values(out, m.name)
    if strict:
        lat = np.column_stack([out[c].to_numpy(dtype=float) for c in LATENCY if c in out])
        blank = np.isnan(lat).all(axis=1)
        if blank.any():
            present = ", ".join(c for c in LATENCY if c in out)
            raise CandidateError(f"{where}: {row_name(int(np.flatnonzero(blank)[0]))}: no latency value; fill one of "
                                 f"{present}")
    for col in quality_columns(out):
        check(col, required=False, low=-MAX_VALUE, low_ok=True, high=MAX_VALUE)
        direction = out.get(col + DIRECTION)
        if direction is not None:
            bad = direction.notna() & ~direction.astype(str).isin(["lower", "higher", ""])
            if bad.any():
                pos = int(np.flatnonzero(bad.to_numpy())[0])
                raise CandidateError(f"{where}: {row_name(pos)}: column '{col}{DIRECTION}' must be 'lower' or 'higher' "
                                     f"(which way the score is better), got {direction.iloc[pos]!r}")
            out[col + DIRECTION] = direction.replace("", np.nan)
    if "inventory" in out:
        check("inventory", required=False, low=0, low_ok=True, integer=True)
        _one_inventory_per_hardware(out, where, row_name)
    if "devices" in out:
        check("devices", required=False, low=1, low_ok=True, integer=True)
        out["devices"] = out["devices"].fillna(1.0)
    else:
        out["devices"] = 1.0
    if "basis" not in out:
        out["basis"] = "measured"
    bad = ~out["basis"].isin(["measured", "predicted"])
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise CandidateError(
            f"{where}: {row_name(pos)}: column 'basis' must be 'measured' or 'predicted', got {out['basis'].iloc[pos]!r}"
        )
    keys = out["hardware"] + "|" + config_keys(out)
    dup = keys.duplicated(keep="first")
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((keys == keys.iloc[pos]).to_numpy())[0])
        raise CandidateError(
            f"{where}: {row_name(pos)} repeats the hardware and configuration of {row_name(first)}; "
            "keep one row per (hardware, configuration)"
        )
    return out


# ----------------------------------------------------------------------------------------------
# Source a: a user's CSV
# ----------------------------------------------------------------------------------------------


def candidates_from_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read candidates from a CSV: the REQUIRED columns, optional `inventory`, `devices`,
    `power_w`, `energy_per_sample_j`, and every other column is configuration (stored as cfg_<name>).
    Errors name the file, the line (header = line 1) and the column."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise CandidateError(f"{path}: candidates file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CandidateError(f"{path}: not a readable CSV ({exc})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    blank_names = [i + 1 for i, c in enumerate(raw.columns) if c == "" or c.startswith("Unnamed:")]
    if blank_names:
        raise CandidateError(f"{path}: line 1: column {blank_names[0]} has no name")
    rename = {c: f"{CFG}{c}" for c in raw.columns if c not in KNOWN and not c.startswith((CFG, QUALITY))}
    raw = raw.rename(columns=rename)
    # Config values: numbers where the whole column is numeric, text otherwise.
    for col in config_columns(raw):
        values = raw[col].replace("", np.nan)
        num = pd.to_numeric(values, errors="coerce")
        raw[col] = num if num.notna().sum() == values.notna().sum() else values.astype(object)
    out = validate_candidates(raw, where=str(path), line_offset=2)
    out["basis"] = "measured"  # a user table states numbers as facts; predicted rows come from models
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Source b: result rows from the results store (results/schema.py)
# ----------------------------------------------------------------------------------------------


def _median(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


def _by_group(values: np.ndarray, gid: np.ndarray, n: int, how: str) -> np.ndarray:
    """A per-group statistic of `values` ignoring NaN (NaN for a group without values); iqr needs 2."""
    s = pd.Series(values).groupby(gid)
    if how == "median":
        res = s.median()
    elif how == "max":
        res = s.max()
    elif how == "min":
        res = s.min()
    else:
        res = (s.quantile(0.75) - s.quantile(0.25)).where(s.count() >= 2)
    return res.reindex(range(n)).to_numpy(dtype=float)


def _measured_mask(rows: pd.DataFrame, scen: np.ndarray, values: np.ndarray, gid: np.ndarray, n: int,
                   m: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Which rows measure metric `m` for their group, and the scenario each group reads it from
    (the rule of metrics.measured_rows, for all groups at once)."""
    has = ~np.isnan(values)
    if task == TRAIN_SCENARIO:
        return scen == TRAIN_SCENARIO, np.full(n, TRAIN_SCENARIO, dtype=object)
    if m.row_scenarios is None:
        use = has.copy()
        rep = [c for c in ("sweep_id", "trial_id", "repeat") if c in rows.columns]
        if rep:  # each repeat once: the value does not depend on the scenario
            dup = pd.DataFrame({"g": gid, **{c: rows[c].to_numpy() for c in rep}})[use].duplicated()
            use[np.flatnonzero(use)[dup.to_numpy()]] = False
        return use, np.full(n, "", dtype=object)
    chosen = np.full(n, m.row_scenarios[-1], dtype=object)
    decided = np.zeros(n, dtype=bool)
    for sc in m.row_scenarios:
        with_value = np.zeros(n, dtype=bool)
        with_value[np.unique(gid[(scen == sc) & has])] = True
        pick = with_value & ~decided
        chosen[pick] = sc
        decided |= pick
    return scen == chosen[gid], chosen


def _worst(v: np.ndarray, side: str) -> float:
    """The conservative end of measured values: the largest where more is worse, else the smallest."""
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan
    return float(v.max() if side == "upper" else v.min())


def parse_curve(cell: Any) -> list[dict[str, Any]] | None:
    if not isinstance(cell, str) or not cell:
        return None
    try:
        curve = json.loads(cell)
    except json.JSONDecodeError:
        return None
    return curve if isinstance(curve, list) and curve else None


def flagged(rows: pd.DataFrame) -> pd.Series:
    """Rows whose `flags` say they are not a trustworthy measurement (benchmarks.core.row_flags)."""
    if "flags" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows["flags"].fillna("").astype(str).str.strip() != ""


def flagged_pairs(df: pd.DataFrame, asset: str, task: str) -> list[str]:
    """'hardware [config]: flags' for each (hardware, configuration) whose rows are all flagged: left
    out of the measured candidates, so the answer says what to measure again."""
    rows = ok_rows(df, task)
    rows = rows[rows["asset"].astype(str) == asset] if "asset" in rows.columns else rows
    if rows.empty or "flags" not in rows.columns:
        return []
    cfg = [c for c in config_columns(rows) if rows[c].notna().any()]
    out = []
    for key, grp in rows.groupby(["hardware", *cfg], dropna=False, sort=True):
        if flagged(grp).all():
            key = key if isinstance(key, tuple) else (key,)
            conf = ", ".join(f"{c[len(CFG):]}={clean_value(v)}" for c, v in zip(cfg, key[1:], strict=True))
            why = sorted({f for fl in grp["flags"].astype(str) for f in fl.split(",") if f})
            out.append(f"{key[0]} [{conf}]: {', '.join(why)}")
    return out


def _iqr(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(np.quantile(v, 0.75) - np.quantile(v, 0.25)) if len(v) >= 2 else math.nan


def select_rows(df: pd.DataFrame, asset: str | None, task: str, where: str = "results") -> tuple[pd.DataFrame, str]:
    """The ok rows of one asset and task. Picks the asset when only one is present."""
    if df is None or df.empty or "asset" not in df.columns:
        raise NoDataError(f"{where}: no result rows; run a sweep first (benchmatch sweep CONFIG)")
    rows = ok_rows(df, task)
    assets = sorted(set(rows["asset"].dropna().astype(str)))
    if asset is None:
        if len(assets) > 1:
            raise RequirementsError(
                f"asset: {where} holds results for several assets ({', '.join(assets)}); say which one",
                [("asset", "required when the results hold several assets")],
            )
        if not assets:
            raise NoDataError(f"{where}: no successful '{task}' rows; run a sweep first")
        asset = assets[0]
    rows = rows[rows["asset"].astype(str) == asset]
    if rows.empty:
        present = ", ".join(sorted(set(df["asset"].dropna().astype(str)))) or "none"
        raise NoDataError(
            f"{where}: no successful '{task}' rows for asset '{asset}' (assets present: {present}); "
            f"run a sweep for it first"
        )
    # Drop hyperparameters that belong to other assets sharing the store (all missing here).
    cfg = [c for c in config_columns(rows) if rows[c].notna().any()]
    drop = [c for c in config_columns(rows) if c not in cfg]
    return rows.drop(columns=drop).copy(), asset


def candidates_from_results(
    df: pd.DataFrame,
    catalog: Mapping[str, Any],
    asset: str | None = None,
    task: str = "infer",
) -> pd.DataFrame:
    """Measured candidates from result rows: one per (asset, hardware, cfg_*), medians over repeats.

    Each metric is the median of its `row_column` over the rows metrics.measured_rows picks. infer:
    latency_p99_ms = MultiStream p99 (one query = one batch of cfg_batch_size samples), SingleStream
    p99 when the group has no MultiStream value; throughput_qps = Offline throughput_samples_per_s;
    accuracy = every row that has it, once per repeat; energy_per_sample_j and power_w (avg_power_w)
    from Offline rows. train: the `train` rows (p99 step time, training samples/s). Price and
    devices come from the catalog, else from the rows."""
    rows, asset = select_rows(df, asset, task)
    rows = fold_load_levels(rows[~flagged(rows)])
    if rows.empty:
        raise NoDataError(f"every measured row of asset '{asset}' is flagged (see the `flags` column: "
                          "LoadGen INVALID, background load, or Offline far below SingleStream); measure again "
                          "on a quiet machine or with longer LoadGen runs")
    cfg = config_columns(rows)
    keys = ["hardware", *cfg]
    # One pass of group aggregates per metric (not a Python loop per group): a store of tens of
    # thousands of rows answers in well under a second.
    rows = rows.reset_index(drop=True)
    gid = rows.groupby(keys, dropna=False, sort=True).ngroup().to_numpy()
    first = rows.groupby(gid, sort=True)[keys].first()
    out = pd.DataFrame({"asset": asset, "hardware": first["hardware"].astype(str).to_numpy()})
    for c in cfg:
        out[c] = first[c].to_numpy()
    n_groups = len(out)
    catalog_price = [getattr(catalog.get(h), "price_per_hour_usd", None) for h in out["hardware"]]
    row_price = _by_group(numeric(rows, "price_per_hour_usd"), gid, n_groups, "median")
    out["price_per_hour_usd"] = [float(cp) if cp is not None else rp for cp, rp in zip(catalog_price, row_price,
                                                                                      strict=True)]
    row_devices = _by_group(numeric(rows, "device_count"), gid, n_groups, "median")
    out["devices"] = [float(catalog[h].devices) if h in catalog else float(max(int(0 if math.isnan(d) else d), 1))
                      for h, d in zip(out["hardware"], row_devices, strict=True)]
    repeats = (pd.Series(rows["repeat"].to_numpy()).groupby(gid).nunique().reindex(range(n_groups)).to_numpy()
               if "repeat" in rows.columns else np.bincount(gid, minlength=n_groups))
    scen = rows["scenario"].astype(str).to_numpy() if "scenario" in rows.columns else np.array([""] * len(rows))
    source: dict[str, np.ndarray] = {}
    for m in METRICS:
        values = numeric(rows, m.row_column)
        use, source[m.name] = _measured_mask(rows, scen, values, gid, n_groups, m, task)
        v = np.where(use, values, np.nan)
        median = _by_group(v, gid, n_groups, "median")
        if m.spread:
            # Like a prediction: the column holds the conservative bound the MILP sizes with (the worst
            # repeat), `_point` the median; one repeat gives no spread, and the band says so.
            out[f"{m.name}_iqr"] = _by_group(v, gid, n_groups, "iqr")
            out[f"{m.name}_point"] = median
            out[m.name] = _by_group(v, gid, n_groups, "max" if m.side == "upper" else "min")
        else:
            out[m.name] = median
    out["basis"] = "measured"
    out["repeats"] = repeats.astype(int)
    # Where the latency was read: p99's scenario, else that of the first statistic measured.
    src = np.full(n_groups, "", dtype=object)
    for name in (DEFAULT_LATENCY, *LATENCY):
        fill = (src == "") & ~np.isnan(out[name].to_numpy(dtype=float))
        src[fill] = source[name][fill]
    out["latency_source"] = src
    out["band_method"] = [f"measured: worst of {r} repeat{'s' if r != 1 else ''}" for r in out["repeats"]]
    curves: list[list[Any]] = [[] for _ in range(n_groups)]
    for column, convert in (("server_curve", None), ("llm_curve", llm_points)):
        if {"scenario", column} <= set(rows.columns):
            for g, cell in zip(gid[scen == "Server"], rows.loc[scen == "Server", column], strict=True):
                c = parse_curve(cell)
                if c and convert is not None:
                    c = convert(c)
                if c:
                    curves[g].append(c)
    if any(curves):
        out[CURVES] = [json.dumps(c) if c else np.nan for c in curves]
    for extra in ("parameters", "flops_per_sample", "time_to_accuracy_s", "cost_to_accuracy_usd"):
        if extra in rows.columns:
            out[extra] = _by_group(numeric(rows, extra), gid, n_groups, "median")
    if "output_tokens_mean" in rows.columns:
        out[TOKENS_PER_REQUEST] = _by_group(numeric(rows, "output_tokens_mean"), gid, n_groups, "median")
    if "sample_unit" in rows.columns:
        units = {str(u) for u in rows["sample_unit"].fillna("") if str(u)}
        out["sample_unit"] = units.pop() if len(units) == 1 else ""
    for col in quality_columns(rows):
        # A score does not depend on the scenario: the worst repeat, as for the other thresholds.
        values = numeric(rows, col)
        direction = rows[col + DIRECTION].astype(object) if col + DIRECTION in rows.columns else None
        dirs = set(direction.dropna().astype(str)) if direction is not None else set()
        out[col] = _by_group(values, gid, n_groups, "max" if dirs == {"lower"} else "min")
        out[col + DIRECTION] = dirs.pop() if len(dirs) == 1 else np.nan
    cands = out
    return validate_candidates(cands, where=f"candidates of asset '{asset}'").reset_index(drop=True)


def merge_candidates(measured: pd.DataFrame, predicted: pd.DataFrame | None) -> pd.DataFrame:
    """Measured rows plus predicted rows for (hardware, configuration) pairs never measured."""
    if predicted is None or predicted.empty:
        return measured.copy()
    if measured is None or measured.empty:
        return predicted.copy()
    have = set(measured["hardware"].astype(str) + "|" + config_keys(measured))
    pkeys = predicted["hardware"].astype(str) + "|" + config_keys(predicted)
    fresh = predicted[~pkeys.isin(have)]
    merged = pd.concat([measured, fresh], ignore_index=True, sort=False)
    return merged
