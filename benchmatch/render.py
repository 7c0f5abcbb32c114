"""Every line `benchmatch` prints for a person. Commands compute; this module words the answer.

`--json` output is the answer's own dict and never passes through here, so a program reading it
and a person reading these lines see the same facts: whatever the JSON says about an answer (time
limit, abstention, relaxations) is printed here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Emit = Callable[[str], None]


def say(msg: str) -> None:
    print(msg, flush=True)


def fmt(v: Any, digits: int = 4, pct: bool = False) -> str:
    """A number for people: missing is '—', floats to `digits` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def value(v: Any) -> str:
    """A configuration value as the user wrote it: 1, not 1.0 (pandas turns int columns with gaps into floats)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def config_text(cfg: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={value(v)}" for k, v in (cfg or {}).items())


def mix_text(hardware: Mapping[str, Any]) -> str:
    return " + ".join(f"{n}×{hw}" for hw, n in hardware.items())


# ---------------------------------------------------------------- models
def print_model_summary(rows: Iterable[Mapping[str, Any]], emit: Emit = say) -> None:
    emit("performance models (cross-validated; MdAPE = median absolute % error; cover = share of held-out "
         "truths inside their band, each band calibrated without its own group: a 90% band should hold ~90%):")
    emit(f"  {'asset':<12} {'metric':<26} {'rows':>5}  {'MdAPE held-out cfg':>18} {'±10%':>7} {'cover':>6}  "
         f"{'MdAPE leave-1-hw-out':>20} {'±10%':>7} {'cover':>6}")
    for r in rows:
        emit(f"  {str(r.get('asset')):<12} {str(r.get('metric')):<26} {r.get('n', ''):>5}  "
             f"{fmt(r.get('mdape_heldout_config'), pct=True):>18} {fmt(r.get('within10_heldout_config'), pct=True):>7} "
             f"{fmt(r.get('coverage_heldout_config'), pct=True):>6}  "
             f"{fmt(r.get('mdape_loho'), pct=True):>20} {fmt(r.get('within10_loho'), pct=True):>7} "
             f"{fmt(r.get('coverage_loho'), pct=True):>6}")


# ---------------------------------------------------------------- answers
_SHOWN = (("latency_p99_ms", "ms p99"), ("throughput_qps", "samples/s"), ("accuracy", "accuracy"))
_LLM_SHOWN = (("ttft_p99_ms", "ms p99 TTFT"), ("tpot_p99_ms", "ms p99 TPOT"), ("output_tokens_per_s", "output tokens/s"),
              ("usd_per_million_output_tokens", "USD per 1M output tokens"), ("energy_per_output_token_j", "J/token"))
_LATENCY_UNITS = {"latency_p50_ms": "ms median", "latency_p90_ms": "ms p90", "latency_p95_ms": "ms p95",
                  "latency_p99_ms": "ms p99", "latency_p999_ms": "ms p99.9", "latency_mean_ms": "ms mean"}


def shown_metrics(latency_statistic: str | None) -> tuple[tuple[str, str], ...]:
    """The metrics an option line shows: the latency statistic the answer was bounded by first."""
    lat = latency_statistic if latency_statistic in _LATENCY_UNITS else "latency_p99_ms"
    return ((lat, _LATENCY_UNITS[lat]), *_SHOWN[1:])


def option_lines(o: Mapping[str, Any], shown: Iterable[tuple[str, str]] = _SHOWN) -> list[str]:
    """One option: its mix, configuration, price and basis, then its predicted metrics with bounds."""
    p = o.get("predicted") or {}
    parts = []
    if p.get("output_tokens_per_s") is not None:
        shown = [(k, "requests/s" if k == "throughput_qps" else u) for k, u in shown]
    for key, unit in shown:
        if p.get(key) is not None:
            bound = p.get(f"{key}_bound")
            parts.append(f"{p[key]:.4g} {unit}" + (f" (bound {bound:.4g})" if bound is not None else ""))
    lines = [f"{mix_text(o['hardware'])}  [{config_text(o.get('config'))}]  "
             f"${o['cost_per_hour_usd']:.4f}/h  ({o.get('basis')})"]
    if parts:
        lines.append("    " + "; ".join(parts))
    llm = [f"{p[k]:.4g} {unit}" for k, unit in _LLM_SHOWN if p.get(k) is not None]
    if llm:  # an LLM deployment: its sample is a request, and what people compare is tokens
        lines.append("    " + "; ".join(llm))
    if o.get("binding"):
        lines.append(f"    binding: {', '.join(o['binding'])}")
    return lines


def _solver_note(ans: Mapping[str, Any]) -> str:
    """What a JSON reader sees in `status`/`optimal`: a time-limited solve is said, not hidden."""
    status = ans.get("status")
    if status == "time_limit" or ans.get("optimal") is False:
        return "; time limit reached, optimality not proven"
    return ""


def print_infeasible(what: str, ans: Mapping[str, Any], emit: Emit = say) -> None:
    """The diagnosis of an infeasible answer: what blocks, and the relaxations that would do."""
    diag = ans.get("diagnosis") or {}
    emit(f"no feasible {what}: " + str(diag.get("message", "")))
    fixes = diag.get("relaxations") or []
    if fixes:
        emit("  any one of these would make it feasible:" if len(fixes) > 1 else "  this would make it feasible:")

    def change(c: Mapping[str, Any]) -> str:
        return f"remove {c.get('field')}" if c.get("to") is None else \
            f"{c.get('field')} {fmt(c.get('from'), 8)} -> {fmt(c.get('to'), 8)}"

    for r in fixes:
        if not isinstance(r, Mapping):
            emit(f"  - {r}")
            continue
        emit(f"  - {' and '.join(change(c) for c in [r, *(r.get('together_with') or [])])}"
             f"  ({r.get('message', '')})")


def print_recommendation(ans: Mapping[str, Any], emit: Emit = say) -> None:
    if not ans.get("feasible"):
        print_infeasible("option", ans, emit)
        return
    emit(f"recommendation (objective: {ans.get('objective')}, {ans.get('candidates_considered')} candidates, "
         f"{ans.get('solver')} in {ans.get('solve_time_s', 0):.3f} s{_solver_note(ans)}):")
    shown = shown_metrics(ans.get("latency_statistic"))
    for o in ans["options"]:
        first, *rest = option_lines(o, shown)
        emit(f"  #{o['rank']}: {first}")
        for line in rest:
            emit("    " + line)
    for note in ans.get("notes") or []:
        emit(f"  note: {note}")


def print_pareto(ans: Mapping[str, Any], emit: Emit = say) -> None:
    if not ans.get("feasible"):
        emit("no feasible option: nothing to put on a cost–latency front (see `recommend` for the diagnosis)")
        return
    emit("cost–latency Pareto front (least cost at each p99 bound; ε-constraint):")
    for r in ans["points"]:
        emit(f"  p99 ≤ {r['latency_p99_ms']:8.3f} ms   ${r['cost_per_hour_usd']:.4f}/h   "
             f"{mix_text(r['hardware'])}  [{config_text(r['config'])}]")


def print_plan(ans: Mapping[str, Any], emit: Emit = say) -> None:
    if not ans.get("feasible"):
        print_infeasible("plan", ans, emit)
        return
    emit(f"plan (objective: {ans['objective']}, {ans['cost_per_hour_usd']:.4f} USD/h in all, "
         f"{ans['candidates_considered']} candidates, {ans['solver']} in {ans['solve_time_s']:.3f} s"
         f"{_solver_note(ans)}):")
    for w in ans["workloads"]:
        first, *rest = option_lines(w["option"], _SHOWN[:2])
        emit(f"  workload {w['index']} ({w.get('asset') or '-'}): {first}")
        for line in rest:
            emit("    " + line)


def print_suggestion(ans: Mapping[str, Any], emit: Emit = say) -> None:
    s = ans["suggestion"]
    best = s.get("best")
    if best:
        emit(f"current best ({s['objective']}): {mix_text(best['hardware'])} [{config_text(best['config'])}] "
             f"at {best['objective_value']:.4g} ({best['basis']})")
    emit(f"{s['measured']} of {s['grid_size']} (hardware, configuration) pairs measured; "
         f"{len(s['trials'])} worth measuring:")
    for i, t in enumerate(s["trials"], 1):
        p = t["predicted"]
        why = {"confirm": "the best option rests on this prediction",
               "explore": "a hyperparameter value never measured (see note)"}.get(t["reason"]) or (
            f"could lower the {s['objective']} by up to {fmt(t['potential_improvement'])}"
            if t["potential_improvement"] is not None else "could make the requirements feasible")
        emit(f"  {i}. {t['hardware']}{'' if t['local'] else ' (not local)'} [{config_text(t['config'])}]: {why}; "
             f"predicted {fmt(p.get('throughput_qps'))} samples/s (band {fmt(p.get('throughput_qps_bound'))}.."
             f"{fmt(p.get('throughput_qps_optimistic'))}), p99 {fmt(p.get('latency_p99_ms'))} ms "
             f"(band {fmt(p.get('latency_p99_ms_optimistic'))}..{fmt(p.get('latency_p99_ms_bound'))})")
    for h, why in sorted(s["skipped_hardware"].items()):
        emit(f"  not predicted: {h}: {why}")
    for note in s["notes"]:
        emit(f"  note: {note}")
    for f in ans.get("files") or []:
        emit(f"wrote {f}; run it with: benchmatch sweep {f}  (then `benchmatch suggest` again)")


def print_import(report: Any, emit: Emit = say) -> None:
    for line in report.lines():
        emit(line)
    if report.dry_run:
        emit("dry run: nothing was written")


# ---------------------------------------------------------------- cluster and sweeps
def print_cluster_up(info: Any, prometheus_url: str | None, emit: Emit = say) -> None:
    emit(f"local cluster up: nodes {', '.join(info.profiles)}")
    emit(f"  Ray address:   {info.address}")
    emit(f"  dashboard:     {info.dashboard_url}   (ray job submit --address {info.dashboard_url})")
    emit(f"  Prometheus SD: {info.service_discovery_file}")
    emit("  token auth: set RAY_AUTH_MODE=token for `ray job submit` (token in ~/.ray/auth_token)")
    if prometheus_url:
        emit(f"  Prometheus:    {prometheus_url} (scrapes the cluster; stopped by `cluster down`)")


def print_cluster_status(info: Any, nodes: Iterable[Mapping[str, Any]], emit: Emit = say) -> None:
    emit(f"cluster at {info.address}, dashboard {info.dashboard_url}")
    for n in nodes:
        emit(f"  {n['profile']:<10} cpus={value(n['cpus']):<4} {n['address']}  {n['node_id'][:12]}  {n['resources']}")
