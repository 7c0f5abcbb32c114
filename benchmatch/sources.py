"""Where a matcher command reads its candidates: one rule for every subcommand.

`--candidates CSV` wins and skips results and models; otherwise the results store, plus the saved
performance models in `--models` (default RESULTS/models) when that folder exists.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_RESULTS = "results"


def default_models_dir(results: str) -> str:
    return os.path.join(results, "models") if "://" not in results else "models"


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results store to answer from")
    p.add_argument("--models", help="performance models folder (default: RESULTS/models if present)")
    p.add_argument("--candidates", help="CSV of your own candidates; skips results and models")


def candidate_sources(a: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for matcher.api's *_from_sources / build_candidates."""
    if a.candidates:
        return {"results_uri": None, "candidates_csv": a.candidates, "models_dir": None,
                "catalog_path": getattr(a, "catalog", None)}
    models = a.models or default_models_dir(a.results)
    return {"results_uri": a.results, "candidates_csv": None,
            "models_dir": models if os.path.isdir(models) else None, "catalog_path": getattr(a, "catalog", None)}
