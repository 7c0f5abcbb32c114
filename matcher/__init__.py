"""Learn and match: performance models, the candidate table, the MILP, requirements.

Public API (docs/matcher.md):
    load_requirements, parse_requirements, Requirements, Constraints
    candidates_from_csv, candidates_from_results, merge_candidates, validate_candidates
    PerformanceModel, ModelSet, train_models, predict_candidates
    solve, plan, diagnose, apply_relaxations, Solution, PlanSolution
    recommend, Recommendation, recommend_from_sources
    Plan, parse_plan, recommend_plan, PlanRecommendation, plan_from_sources
    brute_force, greedy
    MatcherError, RequirementsError, CandidateError, NoDataError, ModelError
Models are imported lazily (scikit-learn is slow to import and the HTTP path may not need it).
`matcher.solve` and `matcher.diagnose` are these functions, which shadow the modules of the same
name as attributes of the package: reach the modules with `from matcher.solve import ...`.
"""

from __future__ import annotations

from typing import Any

from matcher.api import build_candidates, plan_from_sources, recommend_from_sources
from matcher.baselines.bruteforce import brute_force
from matcher.baselines.greedy import greedy
from matcher.candidates import (
    candidates_from_csv,
    candidates_from_results,
    merge_candidates,
    validate_candidates,
)
from matcher.diagnose import apply_relaxations, diagnose
from matcher.errors import CandidateError, MatcherError, ModelError, NoDataError, RequirementsError
from matcher.recommend import PlanRecommendation, Recommendation, recommend, recommend_plan
from matcher.requirements import (
    Constraints,
    Plan,
    Requirements,
    load_requirements,
    parse_plan,
    parse_requirements,
)
from matcher.solution import Diagnosis, Option, PlanSolution, Solution
from matcher.solve import plan, solve

_LAZY = {"PerformanceModel", "ModelSet", "train_models", "predict_candidates"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from matcher import models

        return getattr(models, name)
    raise AttributeError(f"module 'matcher' has no attribute {name!r}")


__all__ = [
    "CandidateError", "Constraints", "Diagnosis", "MatcherError", "ModelError", "ModelSet", "NoDataError",
    "Option", "PerformanceModel", "Plan", "PlanRecommendation", "PlanSolution", "Recommendation", "Requirements", "RequirementsError",
    "Solution", "apply_relaxations", "brute_force", "build_candidates", "candidates_from_csv",
    "candidates_from_results", "diagnose", "greedy", "load_requirements", "merge_candidates", "parse_requirements",
    "parse_plan", "plan", "plan_from_sources", "predict_candidates", "recommend", "recommend_from_sources",
    "recommend_plan", "solve", "train_models",
    "validate_candidates",
]
