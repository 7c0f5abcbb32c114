"""The one call the CLI (`benchmatch recommend`) and the HTTP service (`POST /recommend`) make."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from matcher.candidates import candidates_from_csv, candidates_from_results, merge_candidates, select_rows
from matcher.errors import ModelError, NoDataError
from matcher.recommend import recommend
from matcher.requirements import Requirements, parse_requirements


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
