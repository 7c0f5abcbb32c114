"""suggest(): which unmeasured (hardware, configuration) pairs are worth measuring next.

The recommendation is only as good as the numbers under it. A pair that was never measured enters
it through a performance model, conservatively: its bound (upper latency, lower throughput). A pair
deserves a measurement when its *optimistic* side could beat the current best option, or when the
best option itself rests on a prediction (measure it to confirm). Optimism in the face of
uncertainty, with the MILP as the judge:

1. best = the MILP on measured + predicted (bounds) candidates, as `recommend` answers: objective B.
2. Every unmeasured pair gets its optimistic numbers: the point estimate mirrored across the
   conformal band (log scale: point²/bound; accuracy: 2·point − bound). The models store one side
   of the band only, so the other side is taken as symmetric; a pair without a band is judged at
   its point estimate.
3. Solve the MILP with the unmeasured pairs at their optimistic numbers. If its objective V < B,
   the unmeasured pairs it uses could improve the answer by up to B − V: suggest them, put them
   back at their conservative numbers, and solve again. Stop when V >= B, or at max_trials.
   Pairs therefore come out ranked by potential improvement.

Before those, two kinds of pair jump the queue: "confirm" (the best option uses an unmeasured
pair) and "explore" (a gap the models cannot speak for: a hyperparameter value never measured on
any hardware, or hardware never measured while its predictions have no band). Without "explore"
the loop can stop early on a confident-looking extrapolation (a batch size never tried predicted
like the nearest one measured).

`benchmarks.spec.sweeps_for_pairs` turns the pairs into SweepSpec documents that `benchmatch sweep` runs, each an
exact grid (no trial outside the suggestion), and `refine` runs the whole loop against a `measure`
function (a real sweep, or an oracle in tests and tests/perf).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from matcher.candidates import (
    CFG,
    candidates_from_results,
    clean_value,
    config_columns,
    config_dict,
    config_key,
    config_keys,
    merge_candidates,
    select_rows,
)
from matcher.capacity import finite_number
from matcher.errors import NoDataError
from matcher.metrics import BY_NAME, METRICS, NAMES, latency_metric, numeric
from matcher.requirements import Requirements, parse_requirements
from matcher.solution import Option
from matcher.solve import solve
from matcher.support import drop_unsupported
from matcher.tokens import solver_view

_TOL = 1e-9


def needed_metrics(req: Requirements) -> tuple[str, ...]:
    """The metrics whose models a requirement can use: fitting only those keeps a refine loop fast.
    Every candidate needs the "value" metrics and its latency statistic; the others only when a
    constraint bounds them or the objective sums them (energy: power), along with what a missing
    one is derived from."""
    out = [m.name for m in METRICS if m.presence == "value" or m.bound(req.constraints) is not None]
    out.append(latency_metric(req.constraints))  # every answer is ranked or tie-broken by one
    if req.objective == "energy":
        out.append("power_w")
    for name in list(out):
        out += BY_NAME[name].derived_from or ()
    return tuple(dict.fromkeys(out))


@dataclass
class SuggestedTrial:
    hardware: str
    config: dict[str, Any]  # without the cfg_ prefix
    reason: str  # "confirm": the best option rests on it; "explore": a hyperparameter value never
    # measured; "improve": its optimistic side beats the best
    potential_improvement: float | None  # best objective - optimistic objective (None: best infeasible)
    optimistic_objective: float | None
    predicted: dict[str, float | None]  # <metric> point, <metric>_bound, <metric>_optimistic
    local: bool  # a local profile (`benchmatch cluster up` runs it); else needs such a Ray node


@dataclass
class Suggestion:
    asset: str
    task: str
    objective: str
    best: dict[str, Any] | None  # objective value, hardware mix, config, basis of the current answer
    trials: list[SuggestedTrial] = field(default_factory=list)
    grid_size: int = 0  # hardware x configurations considered
    measured: int = 0  # of those, already measured
    skipped_hardware: dict[str, str] = field(default_factory=dict)  # no prediction possible, and why
    notes: list[str] = field(default_factory=list)
    asset_ref: str = ""  # how a sweep loads the asset (rows' `asset_ref`) when it is not its name

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_json))


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


# ----------------------------------------------------------------------------------------------
# The grid and the optimistic table
# ----------------------------------------------------------------------------------------------


def config_grid(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Every combination of the hyperparameter values seen in `rows` (cfg_ prefix kept), sorted."""
    cols = config_columns(rows)
    if not cols:
        return [{}]
    values = []
    for c in cols:
        seen = {clean_value(v) for v in rows[c].tolist()} - {None}
        values.append(sorted(seen, key=lambda v: (isinstance(v, str), v)))
    return [dict(zip(cols, combo, strict=True)) for combo in itertools.product(*values)]


def _optimistic(point: np.ndarray, bound: np.ndarray, metric: str) -> np.ndarray:
    """The other side of the band, taken as symmetric to the conservative one (module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if BY_NAME[metric].fraction:  # a fraction's band is additive on its own scale
            opt = np.clip(2 * point - bound, 0.0, 1.0)
        else:
            opt = point * point / bound
    return np.where(np.isfinite(opt) & (opt > 0), opt, point)


def optimistic_table(table: pd.DataFrame, rows: Sequence[int]) -> pd.DataFrame:
    """A copy of `table` whose predicted rows at positions `rows` carry their optimistic numbers."""
    out = table.copy()
    idx = np.asarray(list(rows), dtype=int)
    if len(idx) == 0:
        return out
    for m in NAMES:
        pcol = f"{m}_point"
        if pcol not in out or m not in out:
            continue
        point = numeric(out, pcol)[idx]
        bound = numeric(out, m)[idx]
        opt = _optimistic(point, bound, m)
        col = out.columns.get_loc(m)
        out.iloc[idx, col] = np.where(np.isnan(point), bound, opt)
    return out


# ----------------------------------------------------------------------------------------------
# suggest()
# ----------------------------------------------------------------------------------------------


def candidate_table(
    req: Requirements,
    rows: pd.DataFrame,
    catalog: Mapping[str, Any],
    modelset: Any,
    *,
    configs: Sequence[Mapping[str, Any]] | None = None,
    hardware: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Measured candidates plus predictions for every unmeasured pair of hardware x configs.
    Returns (table, skipped hardware -> why, asset)."""
    from matcher.models import predict_candidates

    ok, asset = select_rows(rows, req.asset, req.task)
    measured = candidates_from_results(ok, catalog, asset=asset, task=req.task)
    grid = list(configs) if configs is not None else config_grid(ok)
    grid = [{(k if str(k).startswith(CFG) else f"{CFG}{k}"): v for k, v in c.items()} for c in grid]
    names = list(hardware) if hardware is not None else sorted(catalog)
    if modelset is None or not any(a == asset for a, _ in modelset.models):
        return measured, {h: "no performance model for the asset" for h in names}, asset
    predicted = predict_candidates(modelset, catalog, configs=grid, hardware_names=names, asset=asset)
    skipped = dict(predicted.attrs.get("skipped_hardware", {}))
    # A pair whose configuration cannot run on its hardware is not worth measuring either.
    predicted, _ = drop_unsupported(predicted, ok, catalog)
    return merge_candidates(measured, predicted).reset_index(drop=True), skipped, asset


def _top1(req: Requirements, table: pd.DataFrame, solver: str) -> Option | None:
    from matcher.recommend import sized  # recommend imports this module's users, not this module

    # As recommend sizes it: capacity at the request's bounds, in the unit of its demand.
    sol = solve(*solver_view(req, sized(table, req)), top_k=1, explain=False, solver=solver)
    return sol.options[0] if sol.options else None


def _pair(table: pd.DataFrame, pos: int, cfg_cols: list[str]) -> tuple[str, dict[str, Any]]:
    row = table.iloc[pos]
    return str(row["hardware"]), config_dict(row, cfg_cols)


def _predicted_numbers(table: pd.DataFrame, opt_table: pd.DataFrame, pos: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for m in ("latency_p99_ms", "throughput_qps"):
        point = table.iloc[pos].get(f"{m}_point")
        out[m] = _f(point)
        out[f"{m}_bound"] = _f(table.iloc[pos].get(m))
        out[f"{m}_optimistic"] = _f(opt_table.iloc[pos].get(m))
    return out


_f = finite_number  # a number for the JSON answer, None when it is not a finite one


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _gaps(values: set[Any], seen: set[Any]) -> set[Any]:
    """The unmeasured values of one hyperparameter that need a trial of their own. A text value
    (an engine, a precision) always does. Numbers only beyond the measured range, and there only
    the outermost on each side: once it is measured, the values between are inside the range,
    where the models interpolate and their held-out-configuration band covers the error. Measuring
    every batch size of a grid before trusting any prediction made suggest spend a quarter of a
    54-pair grid on exploration alone."""
    text = {v for v in values if not _is_number(v)}
    known = [v for v in seen if _is_number(v)]
    numbers = [v for v in values if _is_number(v)]
    if not numbers:
        return text
    lo, hi = (min(known), max(known)) if known else (math.inf, -math.inf)
    below, above = [v for v in numbers if v < lo], [v for v in numbers if v > hi]
    if not known:  # never measured at all: its two ends
        return text | {min(numbers), max(numbers)}
    return text | ({min(below)} if below else set()) | ({max(above)} if above else set())


def _explore(table: pd.DataFrame, ok: pd.DataFrame, predicted: list[int], opt: pd.DataFrame,
             cfg_cols: list[str]) -> list[tuple[int, str]]:
    """Pairs the models cannot speak for, one per gap: a hyperparameter value never measured on any
    hardware and outside what the models can interpolate (_gaps: a model fitted without it has
    seen nothing of its effect: a tree predicts batch 1 like the nearest batch measured, and the
    band, calibrated on what did vary, says nothing either), and hardware never measured whose
    predictions have no band. The pair picked is the
    one with the lowest price per optimistic sample/s among those of the gap."""
    seen = {c: {clean_value(v) for v in ok[c].tolist()} if c in ok else set() for c in cfg_cols}
    price = numeric(table, "price_per_hour_usd")
    thr = numeric(opt, "throughput_qps")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_sample = np.where(thr > 0, price / thr, np.inf)

    def cheapest(rows: list[int]) -> int:
        return min(rows, key=lambda i: (np.nan_to_num(per_sample[i], nan=np.inf), i))

    out = []
    for c in cfg_cols:
        values = {clean_value(table.iloc[p][c]) for p in predicted} - seen[c] - {None}
        for v in sorted(_gaps(values, seen[c]), key=lambda x: (isinstance(x, str), x)):
            p = cheapest([p for p in predicted if clean_value(table.iloc[p][c]) == v])
            out.append((p, f"{c[len(CFG):]}={v} was never measured; the models cannot predict its effect, "
                           "so one trial with it is suggested (reason 'explore')"))
    # Hardware never measured gets a band from leave-one-hardware-out residuals, which need two
    # measured types; with one, its predictions have no band and no evidence of a hardware effect.
    measured_hw = set(ok["hardware"].astype(str))
    hw = table["hardware"].astype(str).to_numpy()
    banded = np.zeros(len(table), dtype=bool)
    for m in ("latency_p99_ms", "throughput_qps"):
        if f"{m}_point" in table:
            banded |= ~np.isnan(numeric(table, m)) & ~np.isnan(numeric(table, f"{m}_point"))
    for h in sorted(set(hw[predicted]) - measured_hw):
        rows = [p for p in predicted if hw[p] == h]
        if not banded[rows].any():
            out.append((cheapest(rows), f"{h} was never measured and its predictions have no band (one hardware "
                                        "type measured); one trial on it is suggested (reason 'explore')"))
    return out


def suggest(
    req: Requirements | Mapping[str, Any],
    rows: pd.DataFrame,
    catalog: Mapping[str, Any],
    *,
    modelset: Any = None,
    configs: Sequence[Mapping[str, Any]] | None = None,
    hardware: Sequence[str] | None = None,
    local_only: bool = False,
    max_trials: int = 10,
    min_improvement: float = 0.0,
    solver: str = "cbc",
) -> Suggestion:
    """Unmeasured (hardware, configuration) pairs worth measuring for `req`, best first.

    rows: result rows (results/schema.py). modelset: a fitted ModelSet; None fits one on `rows`
    (only the metrics `req` needs). configs: the configurations to consider (cfg_ prefix optional;
    default: every combination of the values seen in `rows`). hardware: catalog names to consider
    (default: the whole catalog; `local_only` keeps the local profiles). Hardware the models cannot
    speak for (another class than measured, no price) is listed in `skipped_hardware`.
    min_improvement: suggest only pairs that could lower the objective by more than this fraction
    of the best (0: any improvement at all)."""
    from matcher.models import train_models

    req = parse_requirements(req)
    req1 = req.model_copy(update={"top_k": 1})
    ok, asset = select_rows(rows, req.asset, req.task)
    names = list(hardware) if hardware is not None else sorted(catalog)
    if local_only:
        names = [h for h in names if getattr(catalog.get(h), "local", False)]
    grid = [{(k if str(k).startswith(CFG) else f"{CFG}{k}"): v for k, v in c.items()}
            for c in (list(configs) if configs is not None else config_grid(ok))]
    measured_keys = set(ok["hardware"].astype(str) + "|" + config_keys(ok))
    wanted = {f"{h}|{config_key(c, list(c))}" for h in names for c in grid}
    if wanted <= measured_keys:
        modelset = None  # every pair considered is measured: nothing to predict, no fit needed
    elif modelset is None:
        modelset = train_models(ok, catalog, assets=[asset], task=req.task, metrics=needed_metrics(req))
    table, skipped, asset = candidate_table(req1, rows, catalog, modelset, configs=grid, hardware=names)
    if modelset is None:
        skipped = {}
    from matcher.recommend import check_statistics

    check_statistics(req1, table)  # a TTFT bound or a tokens/s demand on data without them: named
    cfg_cols = config_columns(table)
    basis = table["basis"].astype(str).to_numpy()
    predicted = [i for i in range(len(table)) if basis[i] == "predicted"]
    refs = ok["asset_ref"].dropna().astype(str) if "asset_ref" in ok.columns else []
    refs = sorted({r for r in refs if r and r != asset})
    out = Suggestion(asset=asset, task=req.task, objective=req.objective, best=None,
                     grid_size=len(wanted), measured=len(wanted & measured_keys), skipped_hardware=skipped,
                     asset_ref=refs[-1] if refs else "")
    best = _top1(req1, table, solver)
    B = best.objective_value if best is not None else math.inf
    rests = [p for p in best.replicas if basis[p] == "predicted"] if best is not None else []
    if best is not None:
        out.best = {"objective_value": best.objective_value, "cost_per_hour_usd": best.cost_per_hour_usd,
                    "hardware": dict(best.mix), "config": config_dict(table.iloc[next(iter(best.replicas))], cfg_cols),
                    "basis": "predicted" if rests else "measured"}
    if not predicted:
        out.notes.append("every (hardware, configuration) considered is measured; nothing to suggest"
                         if not skipped else "no prediction possible for the unmeasured hardware (skipped_hardware)")
        return out
    if best is None:
        out.notes.append("no option meets the requirements on the current numbers; suggesting the pairs "
                         "whose optimistic side could make them feasible")
    chosen: list[int] = []
    opt_all = optimistic_table(table, predicted)

    def add(p: int, reason: str, gain: float | None = None, value: float | None = None) -> None:
        hw, cfg = _pair(table, p, cfg_cols)
        out.trials.append(SuggestedTrial(hw, cfg, reason, gain, value, _predicted_numbers(table, opt_all, p),
                                         bool(getattr(catalog.get(hw), "local", False))))
        chosen.append(p)

    for p in rests[:max_trials]:
        add(p, "confirm")
    for p, note in _explore(table, ok, predicted, opt_all, cfg_cols):
        if len(chosen) >= max_trials:
            break
        if p not in chosen:
            add(p, "explore")
            out.notes.append(note)
    while len(chosen) < max_trials:
        pool = [p for p in predicted if p not in chosen]
        if not pool:
            break
        opt = optimistic_table(table, pool)
        o = _top1(req1, opt, solver)
        margin = 0.0 if math.isinf(B) else min_improvement * abs(B) if min_improvement > 0 else _TOL * max(1.0, abs(B))
        if o is None or o.objective_value >= B - margin:
            break
        fresh = [p for p in sorted(o.replicas) if p in pool]
        if not fresh:  # cannot happen: without an optimistic row the optimum is >= B
            break
        gain = None if math.isinf(B) else B - o.objective_value
        for p in fresh[: max_trials - len(chosen)]:
            add(p, "improve", gain, o.objective_value)
    if not out.trials:
        out.notes.append("no unmeasured pair could beat the current best within its band")
    if any(not t.local for t in out.trials):
        out.notes.append("pairs with local=false need a Ray node of that hardware type "
                         "(resource accelerator_type:<name>); --local-only leaves them out")
    return out


# ----------------------------------------------------------------------------------------------
# The loop: suggest, measure, learn, suggest again
# ----------------------------------------------------------------------------------------------


@dataclass
class Round:
    measured_pairs: int  # distinct (hardware, configuration) measured so far
    suggested: int  # pairs suggested this round (0: the loop stops)
    best_objective: float | None  # the recommendation on measured + predicted numbers
    best: dict[str, Any] | None


def refine(
    req: Requirements | Mapping[str, Any],
    rows: pd.DataFrame,
    measure: Callable[[list[SuggestedTrial]], pd.DataFrame],
    catalog: Mapping[str, Any],
    *,
    per_round: int = 2,
    max_rounds: int = 20,
    min_improvement: float = 0.0,
    configs: Sequence[Mapping[str, Any]] | None = None,
    hardware: Sequence[str] | None = None,
    solver: str = "cbc",
) -> tuple[pd.DataFrame, list[Round]]:
    """Suggest `per_round` pairs, `measure` them (it returns their result rows), re-fit the models,
    and repeat until nothing is worth measuring or `max_rounds`. Returns (all rows, rounds); the
    last round's `best` is the recommendation re-derived on everything measured."""
    req = parse_requirements(req)
    rounds: list[Round] = []
    for r in range(max_rounds + 1):
        s = suggest(req, rows, catalog, configs=configs, hardware=hardware, max_trials=per_round,
                    min_improvement=min_improvement, solver=solver)
        pairs = _measured_pairs(rows, req)
        rounds.append(Round(pairs, len(s.trials), (s.best or {}).get("objective_value"), s.best))
        if not s.trials or r == max_rounds:
            break
        new = measure(s.trials)
        if new is None or new.empty:
            raise NoDataError("measure() returned no rows for the suggested trials")
        rows = pd.concat([rows, new], ignore_index=True, sort=False)
    return rows, rounds


def _measured_pairs(rows: pd.DataFrame, req: Requirements) -> int:
    ok, _ = select_rows(rows, req.asset, req.task)
    return int((ok["hardware"].astype(str) + "|" + config_keys(ok)).nunique())
