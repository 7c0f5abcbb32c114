"""The one call the CLI (`benchmatch recommend`) and the HTTP service (`POST /recommend`) make."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from matcher.candidates import candidates_from_csv, candidates_from_results, merge_candidates, select_rows
from matcher.errors import ModelError, NoDataError
from matcher.recommend import recommend, recommend_plan
from matcher.requirements import Plan, Requirements, parse_plan, parse_requirements


def build_candidates(
    req: Requirements,
    *,
    results_uri: str | os.PathLike[str] | None = None,
    candidates_csv: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    results: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The candidate table for `req`: from a CSV, or from result rows (a store URI, or rows already
    read) plus model predictions for unmeasured (hardware, configuration) pairs when `models_dir`
    holds a model set for the asset."""
    if candidates_csv is not None:
        return candidates_from_csv(candidates_csv)
    if results_uri is None and results is None:
        raise NoDataError("no candidates: give candidates_csv (a table) or results_uri (a results store)")
    from cluster.hardware import load_catalog  # the catalog is shared by every stage

    catalog = load_catalog(catalog_path)
    where = str(results_uri) if results_uri is not None else "results"
    if results is None:
        from benchmarks.store import ResultsStore  # reading rows only; never the measuring code

        results = ResultsStore(results_uri).read()
    if results.empty:
        raise NoDataError(f"{where}: the results store is empty; run a sweep first (benchmatch sweep CONFIG)")
    rows, asset = select_rows(results, req.asset, req.task, where=where)
    measured = candidates_from_results(rows, catalog, asset=asset, task=req.task)
    if models_dir is None or not (Path(models_dir) / "modelset.json").exists():
        return measured
    from matcher.models import predict_candidates

    ms = _load_models(Path(models_dir))
    if asset not in ms.assets():
        return measured
    try:
        predicted = predict_candidates(ms, catalog, asset=asset)
    except ModelError:
        return measured
    return merge_candidates(measured, predicted)


_MODELS: dict[str, tuple[float, object]] = {}


def _load_models(directory: Path):
    """ModelSet.load, cached while modelset.json is unchanged: a service answers many requests
    from one model set, and loading scikit-learn trees through skops takes about a second."""
    from matcher.models import ModelSet

    key = str(directory.resolve())
    mtime = (directory / "modelset.json").stat().st_mtime
    hit = _MODELS.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    ms = ModelSet.load(directory)
    _MODELS[key] = (mtime, ms)
    return ms


def recommend_from_sources(
    req: dict[str, Any] | Requirements,
    *,
    results_uri: str | os.PathLike[str] | None = None,
    candidates_csv: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
) -> dict[str, Any]:
    """Requirements (a dict or Requirements) + a source of candidates -> the JSON answer (a dict).

    Raises RequirementsError (bad requirements), CandidateError (bad table), NoDataError (nothing
    measured for the asset), ModelError (unreadable model set): all ValueErrors a service maps to
    4xx."""
    req = parse_requirements(req)
    cands = build_candidates(req, results_uri=results_uri, candidates_csv=candidates_csv,
                             models_dir=models_dir, catalog_path=catalog_path)
    return recommend(req, cands, solver=solver, time_limit_s=time_limit_s).model_dump()


def plan_from_sources(
    plan: dict[str, Any] | Plan,
    *,
    results_uri: str | os.PathLike[str] | None = None,
    candidates_csv: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    solver: str = "cbc",
    time_limit_s: float | None = 60.0,
) -> dict[str, Any]:
    """`{workloads: [requirements...], inventory, budget_per_hour_usd, objective}` + a source of
    candidates -> the plan answer (a dict): each workload's candidates are built as for
    recommend_from_sources (its own asset and task), then placed jointly (matcher.solve.plan)."""
    plan = parse_plan(plan)
    tables: dict[tuple[str | None, str], pd.DataFrame] = {}
    per_workload = []
    for req in plan.workloads:
        key = (req.asset, req.task)
        if key not in tables:
            tables[key] = build_candidates(req, results_uri=results_uri, candidates_csv=candidates_csv,
                                           models_dir=models_dir, catalog_path=catalog_path)
        per_workload.append(tables[key])
    return recommend_plan(plan, per_workload, solver=solver, time_limit_s=time_limit_s).model_dump()


def import_results(
    path: str | os.PathLike[str],
    mapping: str | os.PathLike[str] | dict[str, Any],
    *,
    results_uri: str | os.PathLike[str],
    catalog_path: str | os.PathLike[str] | None = None,
    sweep_id: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """`benchmatch import`: rows of another tool's table (CSV, JSON, Parquet) through a column
    mapping into the results store. Returns the report as a dict: imported, rejected [{row, reason}],
    files, sweep_id. Raises MappingError (a ValueError) when the mapping or file is unusable."""
    from matcher.importer import import_file

    return import_file(path, mapping, results_uri=results_uri, catalog_path=catalog_path, sweep_id=sweep_id,
                       dry_run=dry_run).to_dict()


def suggest_from_sources(
    req: dict[str, Any] | Requirements,
    *,
    results_uri: str | os.PathLike[str],
    models_dir: str | os.PathLike[str] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    space_from: str | os.PathLike[str] | None = None,
    local_only: bool = False,
    max_trials: int = 10,
    solver: str = "cbc",
) -> dict[str, Any]:
    """`benchmatch suggest`: the unmeasured (hardware, configuration) pairs worth measuring for
    `req`, and sweep documents that measure exactly them. Models come from `models_dir` when given,
    else are fitted on the results now (so they never lag behind the measurements). `space_from`: a
    sweep file whose space is the configurations to consider and whose settings the sweeps copy.
    Returns {"suggestion": {...}, "sweeps": [SweepSpec dicts]}."""
    from cluster.hardware import load_catalog
    from matcher.suggest import suggest, suggestion_sweeps

    req = parse_requirements(req)
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    catalog = load_catalog(catalog_path)
    from benchmarks.store import ResultsStore  # reading rows only; never the measuring code

    rows = ResultsStore(results_uri).read()
    if rows.empty:
        raise NoDataError(f"{results_uri}: the results store is empty; run a sweep first (benchmatch sweep CONFIG)")
    template = configs = None
    if space_from is not None:
        from benchmarks.spec import load_sweep

        template = load_sweep(space_from)
        if req.asset is not None and template.asset != req.asset:
            raise ValueError(f"{space_from}: the sweep is for asset '{template.asset}', the requirements for "
                             f"'{req.asset}'")
        req = req.model_copy(update={"asset": template.asset, "task": template.task})
        configs = template.configs()
    if models_dir is not None and not (Path(models_dir) / "modelset.json").exists():
        raise ModelError(f"{models_dir}: no model set here (modelset.json); run `benchmatch train`, or leave "
                         "models out to fit them on the results now")
    modelset = _load_models(Path(models_dir)) if models_dir is not None else None
    s = suggest(req, rows, catalog, modelset=modelset, configs=configs, local_only=local_only,
                max_trials=max_trials, solver=solver)
    sweeps = suggestion_sweeps(s, results_uri=str(results_uri), template=template)
    return {"suggestion": s.to_dict(), "sweeps": sweeps}
