"""Screening: a workload's candidate table as arrays, each candidate kept or excluded, and its
replica bound (C0) — pure numpy, before any solver variable exists.

The caller's DataFrame is never modified: everything here is a sorted numpy copy. Candidates are
sorted by (hardware, cfg_key), so the model milp.py builds is the same whatever the row order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd

from matcher.candidates import DIRECTION, QUALITY, config_columns, config_dict, config_keys, quality_columns
from matcher.errors import RequirementsError
from matcher.metrics import LATENCY, METRICS, TOKEN_LATENCY, Columns, latency_metric, numeric
from matcher.requirements import Requirements
from matcher.solution import BUDGET_H, BUDGET_TOTAL, POWER, TOL


@dataclass(frozen=True)
class Threshold:
    """A bound each replica used must meet on its own: a cap or a floor on a per-replica metric."""

    name: str  # the requirement field, and the constraint's name in answers
    metric: str  # the metric it bounds (Workload.values)
    sign: int  # +1: value <= bound (a cap); -1: value >= bound (a floor)
    label: str  # the constraint family's label in milp.py's formulation
    unit: str  # as messages print it after a value ("" for a fraction)
    score: str | None = None  # a quality score's name: the bound is constraints.quality[score]

    @property
    def relation(self) -> str:
        return "<=" if self.sign > 0 else ">="

    def bound(self, req: Requirements) -> float | None:
        if self.score is not None:
            return (req.constraints.quality or {}).get(self.score)
        return getattr(req.constraints, self.name)

    def excess(self, values: np.ndarray, bound: float) -> np.ndarray:
        """How far each value is on the wrong side of the bound (<= 0: within it)."""
        return self.sign * (values - bound)

    def breaks(self, values: np.ndarray, bound: float) -> np.ndarray:
        """Beyond the bound by more than the relative tolerance (NaN never breaks: screened apart)."""
        return self.sign * values > self.sign * bound * (1 + self.sign * TOL)


# Labels of the threshold families in milp.py's formulation. A new threshold metric in the metric
# table needs its own label here and a line in that formulation. Every latency statistic is C2.
_LABELS = {**{name: "C2" for name in LATENCY}, **{name: "C2t" for name in TOKEN_LATENCY}, "accuracy": "C3",
           "energy_per_sample_j": "C4", "energy_per_output_token_j": "C4t"}


THRESHOLDS: tuple[Threshold, ...] = tuple(
    Threshold(m.requirement, m.name, +1 if m.constraint == "cap" else -1, _LABELS[m.name], "" if m.fraction else m.unit)
    for m in METRICS if m.requirement and m.constraint in ("cap", "floor") and m.per_replica)

def quality_thresholds(req: Requirements, cands: pd.DataFrame, field: str = "constraints") -> tuple[Threshold, ...]:
    """A threshold per quality score the request bounds (C3q): a cap where lower is better, a floor
    where higher is. A score no candidate has, or one without a single direction, is an error
    naming the field."""
    out = []
    errors = []
    have = [c[len(QUALITY):] for c in quality_columns(cands)]
    for score in sorted(req.constraints.quality or {}):
        col = f"{QUALITY}{score}"
        where = f"{field}.quality.{score}"
        if col not in cands.columns or np.isnan(numeric(cands, col)).all():
            errors.append((where, f"no candidate has the quality score '{score}' ({col}); the data has "
                                  f"{', '.join(have) or 'no quality score'}"))
            continue
        dirs = set(cands[col + DIRECTION].dropna().astype(str)) if col + DIRECTION in cands.columns else set()
        if len(dirs) != 1 or not dirs <= {"lower", "higher"}:
            errors.append((where, f"the direction of '{score}' is {'unknown' if not dirs else 'not one'} "
                                  f"({sorted(dirs)}); import it with direction: lower or higher"))
            continue
        out.append(Threshold(f"quality.{score}", col, +1 if dirs == {"lower"} else -1, "C3q", "", score))
    if errors:
        raise RequirementsError("; ".join(f"{f}: {m}" for f, m in errors), errors)
    return tuple(out)


# A candidate without throughput is useless under a demand, whatever else it lacks: that is the
# reason it is counted under; then the table's order.
MAX_REPLICAS = 10**9  # of one candidate in one answer
TOO_MANY_REPLICAS = f"the demand (more than {MAX_REPLICAS:.0e} replicas each)"
_SCREEN_ORDER = sorted(METRICS, key=lambda m: m.constraint != "demand")


@dataclass
class Workload:
    """One workload's candidates after screening, in (hardware, cfg_key) order."""

    req: Requirements
    prefix: str  # "" for one workload, "workloads[i]." in a plan: names its constraints
    pos: np.ndarray  # caller's iloc positions of kept candidates, in sorted order
    hw: list[str]
    cfg: list[str]
    describe_cfg: Callable[[str], str]  # cfg_key -> "batch_size=8, dtype=fp32" (lazy: only answers need it)
    price: np.ndarray
    devices: np.ndarray
    values: dict[str, np.ndarray]  # metric name (metrics.METRICS) -> its value per candidate
    ub: np.ndarray  # max replicas of each candidate (C0, see screen)
    inventory: dict[str, float]  # devices per hardware; absent = unlimited
    excluded: Counter
    n_total: int
    lat_metric: str = "latency_p99_ms"  # the latency statistic ranked and tie-broken by (metrics.latency_metric)
    thresholds: tuple[Threshold, ...] = ()  # THRESHOLDS and the request's quality bounds

    def take(self, keep: np.ndarray) -> Workload:
        """The same workload over the candidates where `keep` is true (their order kept)."""
        idx = np.flatnonzero(keep)
        return replace(self, pos=self.pos[idx], hw=[self.hw[i] for i in idx], cfg=[self.cfg[i] for i in idx],
                       price=self.price[idx], devices=self.devices[idx],
                       values={k: v[idx] for k, v in self.values.items()}, ub=self.ub[idx])

    @property
    def demand(self) -> float:
        return self.req.constraints.throughput_qps or 0.0

    @property
    def thr(self) -> np.ndarray:
        return self.values["throughput_qps"]

    @property
    def lat(self) -> np.ndarray:
        return self.values[self.lat_metric]

    @property
    def power(self) -> np.ndarray:
        return self.values["power_w"]

    @cached_property
    def power_or_0(self) -> np.ndarray:
        """Power with a missing value as 0 (what enumeration sums)."""
        return np.nan_to_num(self.power, nan=0.0)

    @cached_property
    def lat_or_inf(self) -> np.ndarray:
        """The ranked latency with a missing value as the slowest."""
        return np.nan_to_num(self.lat, nan=math.inf)


def _inventory(req: Requirements, cands: pd.DataFrame) -> dict[str, float]:
    """Devices available per hardware: the table's `inventory` column, overridden by requirements."""
    inv: dict[str, float] = {}
    if "inventory" in cands.columns:
        col = pd.to_numeric(cands["inventory"], errors="coerce")
        for hw, val in zip(cands["hardware"].astype(str), col, strict=True):
            if not math.isnan(val):
                inv[hw] = min(inv.get(hw, math.inf), float(val))
    inv.update({hw: float(n) for hw, n in (req.inventory or {}).items()})
    return inv


@dataclass(frozen=True)
class TableView:
    """A candidate table's arrays in screening order (hardware, configuration, row): what every
    screen of one table shares, whatever the request. solve() screens a table twice (as it is
    and elastically); building this once per table halves that work."""

    cands: pd.DataFrame
    order: np.ndarray
    hw: np.ndarray
    cfg: np.ndarray
    price: np.ndarray
    devices: np.ndarray
    values: dict[str, np.ndarray]  # every metric of the metric table (metric_values), sorted
    describe_cfg: Callable[[str], str]


def table_view(cands: pd.DataFrame, columns: Columns | None = None) -> TableView:
    """`columns`: cands' Columns where the caller has them already."""
    n_total = len(cands)
    cols = columns if columns is not None and columns.df is cands else Columns(cands)
    keys = config_keys(cands).to_numpy(dtype=object)
    hw = cands["hardware"].astype(str).to_numpy(dtype=object)
    order = np.lexsort((np.arange(n_total), keys.astype(str), hw.astype(str)))
    devices = cols.numeric("devices")[order] if "devices" in cands.columns else np.ones(n_total)
    cfg_cols = config_columns(cands)
    cfg_all = keys[order]
    first_pos = {key: int(order[i]) for i, key in reversed(list(enumerate(cfg_all)))}

    def describe_cfg(key: str) -> str:
        d = config_dict(cands.iloc[first_pos[key]], cfg_cols) if key in first_pos else {}
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "the default configuration"

    return TableView(cands=cands, order=order, hw=hw[order], cfg=cfg_all,
                     price=cols.numeric("price_per_hour_usd")[order],
                     devices=np.where(np.isnan(devices), 1.0, devices),
                     values={m.name: cols.metric(m.name)[order] for m in METRICS},
                     describe_cfg=describe_cfg)


def screen(req: Requirements, cands: pd.DataFrame, *, objective: str, elastic: bool, prefix: str = "",
           extra_inventory: Mapping[str, float] | None = None, view: TableView | None = None) -> Workload:
    """Turn the candidate table into arrays and decide, per candidate, whether it may be used.

    Missing data excludes a candidate wherever that number matters (no throughput with a demand,
    no accuracy under a floor, ...): no slack can make an unknown number acceptable. Threshold
    constraints (C2-C4) exclude candidates here in the ordinary model; the elastic model keeps them
    and prices the violation with slack instead. C0: no candidate gets more replicas than it needs
    to carry the whole demand alone (more can never lower cost, power or worst latency), nor more
    than inventory, budget or power cap allow one candidate alone."""
    c = req.constraints
    n_total = len(cands)
    tv = view if view is not None and view.cands is cands else table_view(cands)
    order, hw_all, cfg_all, price, devices = tv.order, tv.hw, tv.cfg, tv.price, tv.devices
    plan_index = re.fullmatch(r"workloads\[(\d+)\]\.", prefix)
    thresholds = (*THRESHOLDS, *quality_thresholds(
        req, cands, f"workloads.{plan_index[1]}.constraints" if plan_index else "constraints"))
    values = dict(tv.values)
    values.update({t.metric: numeric(cands, t.metric)[order] for t in thresholds if t.score is not None})
    thr, power = values["throughput_qps"], values["power_w"]

    keep = np.ones(n_total, dtype=bool)
    excluded: Counter = Counter()

    def drop(mask: np.ndarray, reason: str) -> None:
        hit = mask & keep
        if hit.any():
            excluded[reason] += int(hit.sum())
            keep[hit] = False

    demand = c.throughput_qps or 0.0
    drop(np.isnan(price) | (price < 0), "missing:price_per_hour_usd")
    needed = {m.name for m in METRICS if m.bound(c) is not None}
    lat_metric = latency_metric(c, cands)
    if objective == "latency":
        needed.add(lat_metric)
    for m in _SCREEN_ORDER:
        if m.name in needed:
            v = values[m.name]
            drop(np.isnan(v) | (v <= 0) if m.constraint == "demand" else np.isnan(v), f"missing:{m.name}")
    for t in thresholds:
        if t.score is not None:
            drop(np.isnan(values[t.metric]), f"missing:{t.metric}")
    if objective == "energy":
        drop(np.isnan(power), "missing:power_w (energy objective)")
    if not elastic:
        for t in thresholds:
            bound = t.bound(req)
            if bound is not None:
                drop(t.breaks(values[t.metric], bound), t.name)

    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.ceil(demand / thr - TOL) if demand > 0 else np.ones(n_total)
    # A replica count past any real fleet (a very slow candidate under a huge demand) would also
    # overflow the integer bounds below: such a candidate cannot carry the demand.
    drop(np.isfinite(need) & (need > MAX_REPLICAS), TOO_MANY_REPLICAS)
    need = np.where(np.isfinite(need), np.clip(need, 1, MAX_REPLICAS), 1)
    ub = need.copy()
    inventory = _inventory(req, cands)
    for hw, n in (extra_inventory or {}).items():
        inventory[hw] = min(inventory.get(hw, math.inf), float(n))
    if not elastic:
        caps: list[tuple[str, np.ndarray]] = []
        inv_arr = np.array([inventory.get(h, math.inf) for h in hw_all], dtype=float)
        caps.append(("inventory", inv_arr / devices))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a cap past float is no cap
            if c.budget_per_hour_usd is not None:
                caps.append((BUDGET_H, np.where(price > 0, c.budget_per_hour_usd / price, math.inf)))
            if c.budget_total_usd is not None and c.duration_h is not None:
                per_h = c.budget_total_usd / c.duration_h
                caps.append((BUDGET_TOTAL, np.where(price > 0, per_h / price, math.inf)))
            if c.max_power_w is not None:
                caps.append((POWER, np.where(power > 0, c.max_power_w / power, math.inf)))
        for reason, cap in caps:
            cap = np.floor(cap + TOL)
            drop(cap < 1, reason)
            ub = np.minimum(ub, cap)
    ub = np.where(np.isfinite(ub), ub, need).astype(int)

    k = keep
    values = {name: v[k] for name, v in values.items()}
    values["throughput_qps"] = np.nan_to_num(values["throughput_qps"], nan=0.0)
    return Workload(
        req=req, prefix=prefix, pos=order[k], hw=list(hw_all[k]), cfg=list(cfg_all[k]), describe_cfg=tv.describe_cfg,
        price=price[k], devices=devices[k], values=values, ub=ub[k], inventory=inventory, excluded=excluded,
        n_total=n_total, lat_metric=lat_metric, thresholds=thresholds,
    )
