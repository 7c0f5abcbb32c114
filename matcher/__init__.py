"""Learn and match: performance models, the candidate table, the MILP, requirements.

Start at `matcher.workspace`: `Workspace.open(Sources(...))` reads the results, models, candidate
table and catalog once and answers `recommend`, `plan`, `pareto`, `suggest` and `assets`; the CLI
and the HTTP service both hold one (docs/matcher.md). The parts, each its own module:

    requirements   Requirements, Constraints, Plan, load_requirements, parse_requirements, parse_plan
    metrics        the metric table (MetricSpec): every number the matcher knows
    candidates     candidates_from_csv / candidates_from_results / merge_candidates
    models         PerformanceModel, ModelSet, train_models, predict_candidates
    screen, milp   the screen and the formulation; solve (top-k), diagnose (relaxations)
    recommend      recommend / recommend_plan: the JSON answers
    pareto, suggest, baselines (brute_force, greedy)
    errors         MatcherError and its kinds

This package imports nothing heavy itself: `import matcher` does not load scikit-learn.
"""

from __future__ import annotations

from matcher.errors import CandidateError, MatcherError, ModelError, NoDataError, RequirementsError
from matcher.requirements import (
    Constraints,
    Plan,
    Requirements,
    load_requirements,
    parse_plan,
    parse_requirements,
)

__all__ = [
    "CandidateError", "Constraints", "MatcherError", "ModelError", "NoDataError", "Plan", "Requirements",
    "RequirementsError", "load_requirements", "parse_plan", "parse_requirements",
]
