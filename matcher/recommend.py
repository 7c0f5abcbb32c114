"""recommend(): requirements + candidates -> a Recommendation (the JSON answer of the CLI and HTTP).

The answer shape is documented in docs/matcher.md ("The answer") and must stay stable."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from matcher.candidates import (
    DIRECTION,
    config_columns,
    config_dict,
    is_blank,
    quality_columns,
    validate_candidates,
)
from matcher.capacity import CAPACITY_BOUND, CURVE_QUERIES, CURVES, FROM_CURVE, at_slo
from matcher.diagnose import apply_relaxations, set_field
from matcher.errors import RequirementsError
from matcher.metrics import (
    LATENCY,
    LATENCY_WORDS,
    METRICS,
    TOKEN_LATENCY,
    TOKEN_WORDS,
    Columns,
    curve_bounds,
    latency_bounds,
    latency_metric,
    metric_values,
)
from matcher.requirements import Plan, Requirements, parse_plan, parse_requirements
from matcher.solution import Diagnosis, Fix, Option, PlanSolution, Relaxation, Status
from matcher.solve import plan as solve_plan
from matcher.solve import solve
from matcher.tokens import check_units, solver_view, usd_per_million_tokens, with_token_capacity


class ChangeOut(BaseModel):
    """One change to the request: put `to` at `field` (a path into the request: constraints.<name>,
    inventory.<hardware>; in a plan workloads.<i>.…, budget_per_hour_usd); `to: null` drops it."""

    # `from` is a Python keyword: the attribute is from_, the JSON key "from" (CLI and HTTP alike).
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    field: str
    from_: float | int | None = Field(alias="from")
    to: float | int | None


class RelaxationOut(ChangeOut):
    """One fix, enough on its own: this change together with `together_with` (usually empty).
    constraint / required / best_achievable repeat name, from and to under their earlier names."""

    constraint: str
    required: float | int | None
    best_achievable: float | int | None
    message: str
    together_with: list[ChangeOut] = []


class DiagnosisOut(BaseModel):
    blocking: list[str]
    message: str
    relaxations: list[RelaxationOut]  # every fix found, the smallest joint relaxation first


class OptionOut(BaseModel):
    rank: int
    hardware: dict[str, int]
    config: dict[str, Any]
    cost_per_hour_usd: float
    predicted: dict[str, float | None]
    basis: Literal["measured", "predicted"]
    binding: list[str]
    band: dict[str, Any]


class Recommendation(BaseModel):
    feasible: bool
    objective: str
    options: list[OptionOut]
    diagnosis: DiagnosisOut | None
    solver: str
    # "time_limit" with options: they are the best found, not proven optimal (readers of the JSON,
    # benchmatch/render.py among them, say so).
    status: Status
    solve_time_s: float
    candidates_considered: int
    # The latency statistic the answer was bounded and ranked by (metrics.latency_metric): a p99
    # SLO and a mean bound are different promises, so the answer names which one it kept.
    latency_statistic: str = "latency_p99_ms"
    # What the answer rests on that a reader must know: pairs left out (flagged measurements,
    # predictions withheld), emulated hardware, latency not measured under load.
    notes: list[str] = []


def _f(x: Any) -> float | None:
    """A JSON-safe float: NaN/inf/None -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class _Numbers:
    """A candidate table's columns, each converted once per answer: an answer reads every metric
    and a few text columns of a few rows per option, and a DataFrame of those rows (iloc,
    iterrows) cost more than the solve at the quickstart's size."""

    def __init__(self, cands: pd.DataFrame, columns: Columns | None = None) -> None:
        self.cands = cands
        self._cols = columns if columns is not None else Columns(cands)
        self._raw: dict[str, np.ndarray] = {}

    def col(self, name: str, pos: list[int]) -> np.ndarray:
        return self._cols.numeric(name)[pos]

    def metric(self, name: str, pos: list[int]) -> np.ndarray:
        return self._cols.metric(name)[pos]

    def cells(self, name: str, pos: list[int]) -> list[Any]:
        """The column's values at `pos` as stored (None for every row without the column)."""
        if name not in self._raw:
            self._raw[name] = (self.cands[name].to_numpy(dtype=object) if name in self.cands.columns
                               else np.full(len(self.cands), None, dtype=object))
        return list(self._raw[name][pos])

    def text(self, name: str, pos: list[int]) -> list[str]:
        """The column's non-missing values at `pos`, as text."""
        return [str(v) for v in self.cells(name, pos) if not is_blank(v)]


def _predicted(nums: _Numbers, pos: list[int], n: np.ndarray) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Metrics of a mix (the candidate rows at `pos`, n replicas each), each combined over its
    replicas as the metric table says (capacities add up; per-query figures take the worst).
    `<metric>` is the point estimate and `<metric>_bound` the conservative bound the MILP used,
    where a band exists."""
    out: dict[str, float | None] = {}
    band: dict[str, Any] = {}
    for m in METRICS:
        bound = nums.metric(m.name, pos)
        point = nums.col(f"{m.name}_point", pos)
        has_band = ~np.isnan(point)
        point = np.where(has_band, point, bound)

        def combine(v: np.ndarray, how: str = m.combine) -> float | None:
            if np.isnan(v).all():
                return None
            if how == "sum":
                return None if np.isnan(v).any() else float(n @ v)
            return float(np.nanmin(v) if how == "min" else np.nanmax(v))

        out[m.name] = _f(combine(point))
        if has_band.any():
            out[f"{m.name}_bound"] = _f(combine(bound))
            methods = (m.name == "throughput_qps" and nums.text(CAPACITY_BOUND, pos)) or nums.text("band_method", pos)
            band[m.name] = {"point": out[m.name], "bound": out[f"{m.name}_bound"], "side": m.side,
                            "method": methods[0] if methods else "model bound"}
        else:
            iqr = nums.col(f"{m.name}_iqr", pos)
            if not np.isnan(iqr).all():
                repeats = nums.col("repeats", pos)
                band[m.name] = {"iqr": _f(np.nanmax(iqr)), "repeats": None if np.isnan(repeats).all()
                                else int(np.nanmin(repeats)),
                                "note": "spread of the measured repeats (largest over the hardware used)"}
    for col in quality_columns(nums.cands):
        values = nums.col(col, pos)
        direction = set(nums.text(col + DIRECTION, pos))
        if not np.isnan(values).all() and len(direction) == 1:  # "worst" needs to know which way is better
            out[col] = _f(np.nanmax(values) if direction == {"lower"} else np.nanmin(values))  # the worst replica's
    return out, band


def _option_out(opt: Option, nums: _Numbers, cfg_cols: list[str]) -> OptionOut:
    pos = list(opt.replicas)
    n = np.array([opt.replicas[p] for p in pos], dtype=float)
    columns = {c: nums.cells(c, pos) for c in cfg_cols}
    configs = [config_dict({c: columns[c][i] for c in cfg_cols}, cfg_cols) for i in range(len(pos))]
    # Compared as configuration keys compare them: 1 and "1" in one column are one configuration.
    unique = {tuple(sorted((k, str(v)) for k, v in c.items())) for c in configs}
    if len(unique) == 1:
        config = configs[0]
    else:  # only with single_config=False: say which configuration runs where
        config = {"configurations": [{"hardware": str(hw), "replicas": int(k), **c}
                                     for hw, k, c in zip(nums.cells("hardware", pos), n, configs, strict=True)]}
    predicted, band = _predicted(nums, pos, n)
    if predicted.get("output_tokens_per_s"):  # an LLM deployment: what its tokens cost at capacity
        cost = float(opt.cost_per_hour_usd)
        predicted["usd_per_million_output_tokens"] = _f(usd_per_million_tokens(cost, predicted["output_tokens_per_s"]))
        if predicted.get("output_tokens_per_s_bound"):
            predicted["usd_per_million_output_tokens_bound"] = _f(
                usd_per_million_tokens(cost, predicted["output_tokens_per_s_bound"]))
    basis = "predicted" if "predicted" in nums.text("basis", pos) else "measured"
    return OptionOut(rank=opt.rank, hardware=dict(opt.mix), config=config,
                     cost_per_hour_usd=round(opt.cost_per_hour_usd, 9), predicted=predicted, basis=basis,
                     binding=list(opt.binding), band=band)


def latency_notes(cands: pd.DataFrame, options: list[OptionOut]) -> list[str]:
    """Say when an option's latency and its capacity were not measured together (no Server curve)."""
    measured = [o for o in options if o.basis == "measured"]
    if "latency_source" not in cands.columns or not measured:
        return []
    pairs = list(zip(cands["hardware"].astype(str).tolist(), cands["latency_source"].tolist(), strict=True))
    out = []
    for o in measured:
        src = sorted({str(x) for hw, x in pairs if hw in o.hardware and not is_blank(x)
                      and not str(x).startswith(FROM_CURVE)})
        partly = [x.split(f"; {FROM_CURVE} for the rest")[0] for x in src if f"; {FROM_CURVE} for the rest" in x]
        whole = [x for x in src if f"; {FROM_CURVE} for the rest" not in x]
        if whole:
            out.append(f"option #{o.rank}: its latency comes from {', '.join(whole)} and its capacity from Offline, measured "
                       "apart: the latency at the load it is sized for was not measured (add loadgen.server_curve)")
        if partly:
            out.append(f"option #{o.rank}: its capacity is read off its Server curve at the bounds the curve records; "
                       f"its latency comes from {', '.join(partly)}, measured apart from the load it is sized for")
    return out


# A percentile of a run holds about this many queries beyond it before it is more than the
# slowest few (5 for a p99: 500 queries; LoadGen's early stopping asks 459-662 for a p99 claim).
TAIL_QUERIES = 5


def tail_notes(req: Requirements, nums: _Numbers, options: Sequence[Option]) -> list[str]:
    """Say when an option's capacity at a percentile bound rests on Server runs too short to
    measure that percentile: a p99 of 60 queries is their slowest, and moves between runs by more
    than any headroom (the SLO check against a held-out repeat, docs/performance.md)."""
    if not curve_bounds(req.constraints):
        out = []
    elif req.slo_confidence is None:
        out = fresh_run_notes(nums, options)
    else:
        out = confidence_notes(nums, options, req.slo_confidence)
    quantiles = {s: q for s in curve_bounds(req.constraints) if (q := _quantile(s)) is not None}
    if not quantiles:
        return out
    worst = max(quantiles, key=lambda s: quantiles[s])
    need = math.ceil(TAIL_QUERIES / (1.0 - quantiles[worst]) - 1e-9)
    for opt in options:
        counts = nums.col(CURVE_QUERIES, list(opt.replicas))
        counts = counts[~np.isnan(counts)]
        if counts.size and counts.min() < need:
            out.append(f"option #{opt.rank}: its capacity at the {worst} bound rests on Server runs of as few as "
                       f"{int(counts.min())} queries; that percentile needs about {need} to be more than the slowest "
                       f"few, and varies between runs below that: measure longer "
                       f"(loadgen.server_curve_min_queries >= {need}) before relying on it")
    return out


def confidence_notes(nums: _Numbers, options: Sequence[Option], confidence: float) -> list[str]:
    """Say which options slo_confidence could not size: those without a Server curve, and those
    whose repeats give no spread."""
    out = []
    for opt in options:
        pos = list(opt.replicas)
        sources = [str(x) for x in nums.cells("latency_source", pos)]
        bounds = [str(x) for x in nums.cells(CAPACITY_BOUND, pos) if not is_blank(x)]
        if any(not src.startswith(FROM_CURVE) and f"; {FROM_CURVE} for the rest" not in src for src in sources):
            out.append(f"option #{opt.rank}: slo_confidence {confidence:g} sizes capacities read off Server curves, and "
                       "this option's capacity was not measured on one: it is the figure it has, not a bound for a "
                       "fresh run")
        elif any(b.startswith("one repeat") for b in bounds):
            out.append(f"option #{opt.rank}: slo_confidence {confidence:g} could not be applied: its curves give no "
                       "spread (one repeat, and no configuration measured with repeats to pool one from); its capacity "
                       "is the single run (measure repeats)")
    return out


def fresh_run_notes(nums: _Numbers, options: Sequence[Option]) -> list[str]:
    """Say what sizing from the worst measured repeat promises: a fresh run of the same
    configuration falls below the worst of n exchangeable runs about once in n + 1."""
    by_repeats: dict[int, list[int]] = {}
    for opt in options:
        pos = list(opt.replicas)
        sources, repeats = nums.cells("latency_source", pos), nums.col("repeats", pos)
        n = [int(r) for src, r in zip(sources, repeats, strict=True) if src == FROM_CURVE and r == r]
        if n:
            by_repeats.setdefault(min(n), []).append(opt.rank)
    out = []
    for n, ranks in sorted(by_repeats.items()):
        which = f"option #{ranks[0]}: its" if len(ranks) == 1 else \
            f"options {', '.join(f'#{r}' for r in ranks)}: their"
        out.append(f"{which} capacity at the latency bound is the worst of {n} measured repeat{'s' if n != 1 else ''}, "
                   f"which a fresh run falls below about 1 time in {n + 1}; set slo_confidence (e.g. 0.95) to size "
                   "for a fresh run with that probability")
    return out


def _quantile(stat: str) -> float | None:
    """latency_p99_ms -> 0.99, ttft_p50_ms -> 0.5, latency_p999_ms -> 0.999; a mean -> None."""
    m = re.search(r"_p(\d+)_", stat)
    if m is None:
        return None
    digits = m[1]
    return int(digits) / 10 ** len(digits) if len(digits) > 2 else int(digits) / 100


def sized(cands: pd.DataFrame, req: Requirements) -> pd.DataFrame:
    """The candidates as this request sizes them: each replica's throughput is its capacity at the
    request's latency (and TTFT / TPOT) bounds where a rate curve was measured, derated by
    max_utilization (capacity.py); an LLM replica's tokens/s follows (tokens.py)."""
    return with_token_capacity(at_slo(cands, curve_bounds(req.constraints), req.max_utilization, req.slo_confidence))


# Rounds of completing a fix (each may add the constraint the previous relaxation uncovered), and
# the most fixes carried from one round to the next.
_FIX_ROUNDS, _FIXES = 6, 6


def _demand_field(w: int | None, name: str) -> str:
    """Where workload w's (None: the single request's) demand `name` sits in the request."""
    return f"constraints.{name}" if w is None else f"workloads.{w}.constraints.{name}"


def _in_request_words(fix: Sequence[Relaxation], demands: dict[int | None, str | None]) -> list[Relaxation]:
    """The solver meets every demand as throughput_qps, in the unit the request stated
    (tokens.solver_view): a relaxation of it goes to the field the request used."""
    moved = {_demand_field(w, "throughput_qps"): _demand_field(w, name)
             for w, name in demands.items() if name in _DEMAND_UNITS}
    return [replace(r, field=moved[r.field]) if r.field in moved else r for r in fix]


def _time_left(time_limit_s: float | None, started: float) -> float | None:
    """What a request's time limit leaves for checking its fixes (at least a second)."""
    return None if time_limit_s is None else max(time_limit_s - (time.perf_counter() - started), 1.0)


def sized_fixes(d: Diagnosis, answer: Callable[[list[Relaxation], float | None], tuple[bool, Diagnosis | None]],
                time_limit_s: float | None) -> Diagnosis:
    """The diagnosis's fixes, each checked by answering the relaxed request. The elastic model
    relaxes a latency bound with capacities read at the requested bound; read again at the relaxed
    one (a Server curve gives a tighter bound a lower capacity) the budget or the demand can
    block in turn. Such a fix is completed with what the relaxed request's own diagnosis asks
    (each field keeping the value the user asked for as `from`), or dropped when it cannot be:
    every listed fix makes the request feasible. `answer(fix, seconds)`: whether the request with
    `fix` applied is feasible, and its diagnosis when not. Checking stops at `time_limit_s`; a
    fix not checked by then is not listed."""
    deadline = time.perf_counter() + (time_limit_s if time_limit_s is not None else math.inf)
    out: list[Fix] = []
    todo = [list(fix) for fix in d.fixes]
    timed_out = False
    for _ in range(_FIX_ROUNDS):
        later = []
        for joint in todo:
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                break
            ok, again = answer(joint, None if math.isinf(left) else left)
            if ok:
                if tuple(joint) not in out:
                    out.append(tuple(joint))
                continue
            for more in (again.fixes if again is not None else ())[:_FIXES]:
                grown, fields = list(joint), {r.field: k for k, r in enumerate(joint)}
                for r in more:
                    if r.field in fields:  # relaxed further: `from` stays what the user asked for
                        first = grown[fields[r.field]]
                        grown[fields[r.field]] = replace(r, required=first.required, constraint=first.constraint)
                    else:
                        grown.append(r)
                later.append(grown)
        todo = later[:_FIXES]
        if timed_out or not todo or len(out) >= _FIXES:
            break
    if not out:
        why = "the time limit ended the check" if timed_out else "none was found"
        return Diagnosis(d.blocking, f"{d.message}; no relaxation is listed: each must make the request feasible once "
                         f"capacities are read off the Server curves at the relaxed bounds, and {why}", ())
    asked = {r.constraint for fix in d.fixes for r in fix}
    added = sorted({r.constraint for fix in out for r in fix} - asked)
    msg = d.message
    if added:
        msg += (f" (read off the Server curves at the relaxed latency, the capacity is lower: the fixes also relax "
                f"{', '.join(added)})")
    return Diagnosis(d.blocking, msg, out[0], tuple(out[1:]))


def check_statistics(req: Requirements, cands: pd.DataFrame, field: str = "constraints") -> None:
    """A latency bound on a statistic no candidate has is an error naming the ones that exist:
    checking it against another statistic (a p99 SLO against a mean) would promise what no
    measurement showed."""
    have = [s for s in LATENCY if not np.isnan(metric_values(cands, s)).all()]
    errors = [(f"{field}.{s}", f"no candidate has a {LATENCY_WORDS[s]} latency ({s}); the data has "
                               f"{', '.join(have) or 'no latency statistic'}")
              for s in latency_bounds(req.constraints) if s not in have]
    errors += [(f"{field}.{s}", f"no candidate has a {TOKEN_WORDS[s]} ({s}): it is measured for LLM serving "
                               "(benchmatch llm-bench, or an import of vLLM / GuideLLM / AIPerf results)")
               for s in TOKEN_LATENCY if getattr(req.constraints, s) is not None
               and np.isnan(metric_values(cands, s)).all()]
    if errors:
        fix = "; bound one of those instead, knowing it is a different promise" if have else ""
        raise RequirementsError("; ".join(f"{f}: {m}" for f, m in errors) + fix, errors)
    check_units(req, cands, field)


def check_inventory(inventory: dict[str, int] | None, cands: pd.DataFrame | list[pd.DataFrame],
                     field: str = "inventory") -> None:
    tables = cands if isinstance(cands, list) else [cands]
    known = set().union(*(set(t["hardware"].astype(str)) for t in tables))
    unknown = sorted(set(inventory or {}) - known)
    if unknown:
        raise RequirementsError(
            f"{field}: unknown hardware {unknown}; the candidates cover {sorted(known)}",
            [(f"{field}.{u}", "no candidate runs on this hardware") for u in unknown],
        )


def recommend(
    req: Requirements | dict,
    candidates: pd.DataFrame,
    solver: str = "cbc",
    *,
    single_config: bool = True,
    time_limit_s: float | None = 60.0,
    notes: list[str] | None = None,
    validated: bool = False,
) -> Recommendation:
    """Rank up to req.top_k options meeting `req` on `candidates`, or diagnose why none does.

    `validated`: `candidates` is already validate_candidates' output (a caller answering many
    requests from one table checks it once); nothing here changes it.

    A time-limited solve that found options returns them with `diagnosis.message` saying that
    optimality was not proven (blocking and relaxations empty)."""
    started = time.perf_counter()
    req = parse_requirements(req)
    unsized = candidates if validated else validate_candidates(candidates)
    check_statistics(req, unsized)
    cands = sized(unsized, req)
    check_inventory(req.inventory, cands)
    sreq, scands = solver_view(req, cands)
    columns = Columns(cands)
    sol = solve(sreq, scands, single_config=single_config, solver=solver, time_limit_s=time_limit_s, columns=columns)
    if not sol.options and sol.diagnosis is not None and sol.diagnosis.fixes and CURVES in unsized.columns:
        def answer(fix: list[Relaxation], seconds: float | None) -> tuple[bool, Diagnosis | None]:
            relaxed = apply_relaxations(req, _in_request_words(fix, {None: req.constraints.demand_field}))
            again = solve(*solver_view(relaxed, sized(unsized, relaxed)), single_config=single_config, solver=solver,
                          time_limit_s=seconds)
            return bool(again.options), again.diagnosis

        sol = replace(sol, diagnosis=sized_fixes(sol.diagnosis, answer, _time_left(time_limit_s, started)))
    cfg_cols = config_columns(cands)
    nums = _Numbers(cands, columns)
    options = [_option_out(o, nums, cfg_cols) for o in sol.options]
    for o in options:  # the solver's name for every demand, in the request's words
        _rename_binding(o, req.constraints.demand_field)
    diagnosis = _renamed_demand(_diagnosis_out(sol.diagnosis, sol.status, sol.reason, bool(options)),
                                {None: req.constraints.demand_field})
    return Recommendation(feasible=bool(options), objective=req.objective, options=options, diagnosis=diagnosis,
                          solver=sol.solver, status=sol.status, solve_time_s=round(sol.solve_time_s, 6),
                          candidates_considered=sol.candidates_considered,
                          latency_statistic=latency_metric(req.constraints, cands),
                          notes=[*(notes or []), *latency_notes(cands, options), *tail_notes(req, nums, sol.options)])


_DEMAND_UNITS = {"output_tokens_per_s": "tokens/s", "requests_per_s": "requests/s"}


def _renamed_demand(d: DiagnosisOut | None, demands: dict[int | None, str | None]) -> DiagnosisOut | None:
    """The diagnosis in the request's own words. The solver meets every demand as throughput_qps
    (tokens.solver_view), so where a workload (None: the single request) stated requests_per_s or
    output_tokens_per_s, the fields, constraint names, blocking entries and messages that name its
    demand are renamed back, with the demand's unit in those messages; nothing else is touched."""
    pairs: list[tuple[str, str, str]] = []  # (solver's name, request's name, unit)
    for w, name in demands.items():
        if name not in _DEMAND_UNITS:
            continue
        unit = _DEMAND_UNITS[name]
        pairs.append((_demand_field(w, "throughput_qps"), _demand_field(w, name), unit))
        if w is None:
            pairs.append(("throughput_qps", name, unit))
        else:
            pairs += [(f"workloads[{w}].throughput_qps", f"workloads[{w}].{name}", unit),
                      (f"workloads[{w}]: throughput_qps", f"workloads[{w}]: {name}", unit)]
    if d is None or not pairs:
        return d

    def text(s: str) -> str:
        for old, new, unit in pairs:
            if old in s:
                s = s.replace(old, new).replace("samples/s", unit)
        return s

    def exact(s: str) -> str:
        return next((new for old, new, _ in pairs if s == old), s)

    relaxations = [r.model_copy(update={
        "field": exact(r.field), "constraint": exact(r.constraint), "message": text(r.message),
        "together_with": [c.model_copy(update={"field": exact(c.field)}) for c in r.together_with]})
        for r in d.relaxations]
    return d.model_copy(update={"blocking": [text(b) for b in d.blocking], "message": text(d.message),
                                "relaxations": relaxations})


def _rename_binding(option: OptionOut | None, demand: str | None) -> None:
    if option is not None and demand in _DEMAND_UNITS:
        option.binding = [demand if b == "throughput_qps" else b for b in option.binding]


def _value(x: Any) -> float | int | None:
    # An inventory is a whole number of devices in the request: keep it an integer in the answer.
    return x if isinstance(x, int) and not isinstance(x, bool) else _f(x)


def _relaxation_out(fix: Fix) -> RelaxationOut:
    first, *rest = fix
    return RelaxationOut(
        field=first.field, from_=_value(first.required), to=_value(first.best_achievable),
        constraint=first.constraint, required=_value(first.required), best_achievable=_value(first.best_achievable),
        message="; ".join(r.message for r in fix),
        together_with=[ChangeOut(field=r.field, from_=_value(r.required), to=_value(r.best_achievable)) for r in rest])


def _diagnosis_out(d: Diagnosis | None, status: str, reason: str, have_options: bool) -> DiagnosisOut | None:
    if d is not None:
        return DiagnosisOut(blocking=list(d.blocking), message=d.message,
                            relaxations=[_relaxation_out(fix) for fix in d.fixes])
    if status != "optimal" or not have_options:
        return DiagnosisOut(blocking=[], message=f"{status}: {reason}", relaxations=[])
    return None


class WorkloadOut(BaseModel):
    index: int
    asset: str | None
    option: OptionOut | None
    latency_statistic: str = "latency_p99_ms"  # as Recommendation.latency_statistic


class PlanRecommendation(BaseModel):
    """The answer of POST /plan: one option per workload, placed jointly."""

    feasible: bool
    objective: str
    cost_per_hour_usd: float | None
    workloads: list[WorkloadOut]
    diagnosis: DiagnosisOut | None
    solver: str
    status: Status  # as Recommendation.status
    solve_time_s: float
    candidates_considered: int
    # 0 when proven optimal; after a time limit, an upper bound on the relative gap to the optimum
    # ((found - Σ of each workload's own optimum) / found); null when no bound is known.
    mip_gap: float | None = None
    notes: list[str] = []  # as Recommendation.notes


def recommend_plan(
    plan: Plan | dict,
    tables: list[pd.DataFrame],
    solver: str = "cbc",
    *,
    single_config: bool = True,
    time_limit_s: float | None = 60.0,
    notes: list[str] | None = None,
) -> PlanRecommendation:
    """Place every workload of `plan` at once; tables[i] holds workload i's candidates."""
    started = time.perf_counter()
    plan = parse_plan(plan)
    if len(tables) != len(plan.workloads):
        raise ValueError(f"{len(plan.workloads)} workloads but {len(tables)} candidate tables")
    tables = [validate_candidates(t, where=f"candidates of workloads[{i}]") for i, t in enumerate(tables)]
    for i, (req, t) in enumerate(zip(plan.workloads, tables, strict=True)):
        check_statistics(req, t, field=f"workloads.{i}.constraints")
    unsized = tables
    tables = [sized(t, req) for t, req in zip(tables, plan.workloads, strict=True)]
    for i, (req, t) in enumerate(zip(plan.workloads, tables, strict=True)):
        check_inventory(req.inventory, t, field=f"workloads.{i}.inventory")
    check_inventory(plan.inventory, tables)

    def placed_plan(p: Plan, views: list[tuple[Requirements, pd.DataFrame]], seconds: float | None) -> PlanSolution:
        return solve_plan(views, inventory=p.inventory, budget_per_hour_usd=p.budget_per_hour_usd,
                          objective=p.objective, single_config=single_config, solver=solver, time_limit_s=seconds)

    sol = placed_plan(plan, [solver_view(req, t) for req, t in zip(plan.workloads, tables, strict=True)], time_limit_s)
    if (not all(o is not None for o in sol.workloads) and sol.diagnosis is not None and sol.diagnosis.fixes
            and any(CURVES in t.columns for t in unsized)):
        def answer(fix: list[Relaxation], seconds: float | None) -> tuple[bool, Diagnosis | None]:
            doc = plan.model_dump(exclude_unset=True)
            for r in _in_request_words(fix, {i: w.constraints.demand_field for i, w in enumerate(plan.workloads)}):
                set_field(doc, r.field, r.best_achievable)
            relaxed = parse_plan(doc)
            again = placed_plan(relaxed, [solver_view(req, sized(t, req))
                                          for req, t in zip(relaxed.workloads, unsized, strict=True)], seconds)
            return bool(again.workloads) and all(o is not None for o in again.workloads), again.diagnosis

        sol = replace(sol, diagnosis=sized_fixes(sol.diagnosis, answer, _time_left(time_limit_s, started)))
    placed = [o is not None for o in sol.workloads]
    workloads = []
    tails: list[str] = []
    for i, req in enumerate(plan.workloads):
        opt = sol.workloads[i] if i < len(sol.workloads) else None
        nums = _Numbers(tables[i])
        out = _option_out(opt, nums, config_columns(tables[i])) if opt is not None else None
        if opt is not None:
            tails += [f"workload {i}: {n.split(': ', 1)[1]}" for n in tail_notes(req, nums, [opt])]
        _rename_binding(out, req.constraints.demand_field)
        workloads.append(WorkloadOut(index=i, asset=req.asset, option=out,
                                     latency_statistic=latency_metric(req.constraints, tables[i])))
    feasible = bool(placed) and all(placed)
    return PlanRecommendation(
        feasible=feasible, objective=plan.objective,
        cost_per_hour_usd=round(sol.cost_per_hour_usd, 9) if feasible else None,
        workloads=workloads, diagnosis=_renamed_demand(
            _diagnosis_out(sol.diagnosis, sol.status, sol.reason, feasible),
            {i: req.constraints.demand_field for i, req in enumerate(plan.workloads)}),
        solver=sol.solver, status=sol.status, solve_time_s=round(sol.solve_time_s, 6),
        candidates_considered=sol.candidates_considered,
        mip_gap=None if sol.gap is None or not feasible else round(float(sol.gap), 9), notes=[*(notes or []), *tails])
