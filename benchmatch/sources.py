"""Where a matcher command reads its candidates: one rule for every subcommand.

`--candidates CSV` wins and skips results and models; otherwise the results store, plus the saved
performance models in `--models` (default RESULTS/models) when that folder holds a model set.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the matcher imports scikit-learn; `--help` must stay fast
    from matcher.workspace import Sources, Workspace

DEFAULT_RESULTS = "results-store"  # not `results/`: that is the package of the records


def default_models_dir(results: str) -> str:
    return os.path.join(results, "models") if "://" not in results else "models"


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results store to answer from")
    p.add_argument("--models", help="performance models folder (default: RESULTS/models if present)")
    p.add_argument("--candidates", help="CSV of your own candidates; skips results and models")


def candidate_sources(a: argparse.Namespace) -> Sources:
    from matcher.workspace import Sources

    catalog = getattr(a, "catalog", None)
    if a.candidates:
        return Sources(candidates_csv=a.candidates, catalog_path=catalog)
    models = a.models or default_models_dir(a.results)
    return Sources(results_uri=a.results, models_dir=models if os.path.isdir(models) else None,
                   catalog_path=catalog)


def open_workspace(a: argparse.Namespace) -> Workspace:
    """The workspace a recommend/plan command answers from (errors name the unreadable source)."""
    from matcher.workspace import Workspace

    return Workspace.open(candidate_sources(a))
