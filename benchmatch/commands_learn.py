"""`benchmatch import | plan | suggest`: bring in others' results, place several workloads at once,
and say which trials to measure next. `register(subparsers)` adds the three subcommands; each
command function takes the parsed argparse Namespace and returns the exit code."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmatch.sources import DEFAULT_RESULTS, add_source_args, candidate_sources


def _say(msg: str) -> None:
    print(msg, flush=True)


def _catalog_path(a: argparse.Namespace) -> str | None:
    return getattr(a, "catalog", None)  # the top-level --catalog option of `benchmatch`


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- import
def cmd_import(a: argparse.Namespace) -> int:
    """Exit 0 when every row was imported, 1 when some were rejected (the good ones are written)."""
    from matcher.importer import import_file

    report = import_file(a.file, a.mapping, results_uri=a.results, catalog_path=_catalog_path(a),
                         sweep_id=a.sweep, dry_run=getattr(a, "dry_run", False))
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            _say(line)
        if report.dry_run:
            _say("dry run: nothing was written")
    return 1 if report.rejected else 0


# ---------------------------------------------------------------- plan
def _load_document(path: str, what: str) -> Any:
    import yaml

    from matcher.errors import RequirementsError

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise RequirementsError(f"{p}: {what} file not found") from None
    try:
        return json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RequirementsError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}") from None


def _option_lines(o: dict[str, Any]) -> list[str]:
    mix = " + ".join(f"{n}×{hw}" for hw, n in o["hardware"].items())
    cfg = ", ".join(f"{k}={v}" for k, v in (o.get("config") or {}).items())
    p = o.get("predicted") or {}
    parts = []
    for key, unit in (("latency_p99_ms", "ms p99"), ("throughput_qps", "samples/s")):
        if p.get(key) is not None:
            bound = p.get(f"{key}_bound")
            parts.append(f"{p[key]:.4g} {unit}" + (f" (bound {bound:.4g})" if bound is not None else ""))
    lines = [f"{mix}  [{cfg}]  ${o['cost_per_hour_usd']:.4f}/h  ({o.get('basis')})"]
    if parts:
        lines.append("    " + "; ".join(parts))
    return lines


def print_plan(ans: dict[str, Any]) -> None:
    if not ans.get("feasible"):
        from benchmatch.cli import print_infeasible

        print_infeasible("plan", ans, _say)
        return
    _say(f"plan (objective: {ans['objective']}, {ans['cost_per_hour_usd']:.4f} USD/h in all, "
         f"{ans['candidates_considered']} candidates, {ans['solver']} in {ans['solve_time_s']:.3f} s):")
    for w in ans["workloads"]:
        lines = _option_lines(w["option"])
        _say(f"  workload {w['index']} ({w.get('asset') or '-'}): {lines[0]}")
        for extra in lines[1:]:
            _say("    " + extra)


def cmd_plan(a: argparse.Namespace) -> int:
    """Exit 0 with a feasible plan, 3 without one (as `recommend`)."""
    from matcher.api import plan_from_sources
    from matcher.requirements import parse_plan

    plan = parse_plan(_load_document(a.plan, "plan"), source=a.plan)
    ans = plan_from_sources(plan, **candidate_sources(a))
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
    else:
        print_plan(ans)
    return 0 if ans.get("feasible") else 3


# ---------------------------------------------------------------- suggest
def _sweep_paths(out: str, n: int) -> list[Path]:
    p = Path(out)
    return [p] + [p.with_name(f"{p.stem}-{i}{p.suffix or '.yaml'}") for i in range(2, n + 1)]


def cmd_suggest(a: argparse.Namespace) -> int:
    from matcher.api import suggest_from_sources
    from matcher.requirements import load_requirements

    ans = suggest_from_sources(load_requirements(a.requirements), results_uri=a.results, models_dir=a.models,
                               catalog_path=_catalog_path(a), space_from=a.space_from,
                               local_only=a.local_only, max_trials=a.max_trials)
    files: list[str] = []
    if a.out and ans["sweeps"]:
        import yaml

        for path, doc in zip(_sweep_paths(a.out, len(ans["sweeps"])), ans["sweeps"], strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("# Written by `benchmatch suggest`: exactly the suggested trials.\n"
                           + yaml.safe_dump(doc, sort_keys=False))
            os.replace(tmp, path)
            files.append(str(path))
    ans["files"] = files
    if a.json:
        print(json.dumps(ans, indent=2, default=str))
        return 0
    s = ans["suggestion"]
    best = s.get("best")
    if best:
        mix = " + ".join(f"{n}×{hw}" for hw, n in best["hardware"].items())
        cfg = ", ".join(f"{k}={v}" for k, v in best["config"].items())
        _say(f"current best ({s['objective']}): {mix} [{cfg}] at {best['objective_value']:.4g} "
             f"({best['basis']})")
    _say(f"{s['measured']} of {s['grid_size']} (hardware, configuration) pairs measured; "
         f"{len(s['trials'])} worth measuring:")
    for i, t in enumerate(s["trials"], 1):
        cfg = ", ".join(f"{k}={v}" for k, v in t["config"].items())
        p = t["predicted"]
        why = {"confirm": "the best option rests on this prediction",
               "explore": "a hyperparameter value never measured (see note)"}.get(t["reason"]) or (
            f"could lower the {s['objective']} by up to {_fmt(t['potential_improvement'])}"
            if t["potential_improvement"] is not None else "could make the requirements feasible")
        _say(f"  {i}. {t['hardware']}{'' if t['local'] else ' (not local)'} [{cfg}]: {why}; predicted "
             f"{_fmt(p.get('throughput_qps'))} samples/s (band {_fmt(p.get('throughput_qps_bound'))}.."
             f"{_fmt(p.get('throughput_qps_optimistic'))}), p99 {_fmt(p.get('latency_p99_ms'))} ms "
             f"(band {_fmt(p.get('latency_p99_ms_optimistic'))}..{_fmt(p.get('latency_p99_ms_bound'))})")
    for h, why in sorted(s["skipped_hardware"].items()):
        _say(f"  not predicted: {h}: {why}")
    for note in s["notes"]:
        _say(f"  note: {note}")
    for f in files:
        _say(f"wrote {f}; run it with: benchmatch sweep {f}  (then `benchmatch suggest` again)")
    return 0


# ---------------------------------------------------------------- wiring
def register(sub: Any) -> None:
    """Add `import`, `plan` and `suggest` to the `benchmatch` subparsers."""
    i = sub.add_parser("import", help="import results of other tools (MLPerf summary, CSV, JSON, Parquet) "
                                      "through a column mapping")
    i.add_argument("file", help="CSV (.csv/.tsv), JSON (.json/.jsonl) or Parquet file")
    i.add_argument("--mapping", required=True, help="column mapping YAML (see configs/mappings/)")
    i.add_argument("--results", default=DEFAULT_RESULTS, help="results store to write to")
    i.add_argument("--sweep", help="sweep id of the imported rows (default: import-<file stem>)")
    i.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_import)

    p = sub.add_parser("plan", help="place several workloads sharing inventory and budget (PLAN: YAML/JSON)")
    p.add_argument("plan", help="plan file: workloads (requirements each), inventory, budget_per_hour_usd, objective")
    add_source_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plan)

    s = sub.add_parser("suggest", help="the unmeasured (hardware, configuration) trials worth measuring next")
    s.add_argument("requirements", help="requirements YAML or JSON")
    s.add_argument("--results", default=DEFAULT_RESULTS)
    s.add_argument("--models", help="a saved model set to predict with (default: fit one on the results now)")
    s.add_argument("--out", help="write the suggested trials as sweep file(s): OUT, OUT-2.yaml, ...")
    s.add_argument("--max-trials", type=int, default=10, help="at most this many trials (default 10)")
    s.add_argument("--space-from", help="a sweep file whose space (and settings) to consider "
                                        "(default: the configurations seen in the results)")
    s.add_argument("--local-only", action="store_true", help="only the local profiles of the catalog")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_suggest)
