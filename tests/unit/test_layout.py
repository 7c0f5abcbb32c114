"""DESIGN.md's layout rules, checked on the source (every import, function-local ones included):

* data flows one way, `cluster → benchmarks → results ← matcher ← serve`; `cluster` is used by all;
* serve wraps a matcher Workspace and never reads the store itself;
* no import cycle between modules;
* a metric the matcher knows is spelled in its metric table, not across the matcher.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cluster", "benchmarks", "results", "matcher", "serve", "benchmatch")
# Which of our packages each package may import (besides itself).
ALLOWED = {
    "cluster": set(),
    "benchmarks": {"cluster", "results"},
    "results": {"cluster"},
    "matcher": {"cluster", "results"},
    "serve": {"cluster", "matcher"},
    "benchmatch": {"cluster", "benchmarks", "results", "matcher", "serve"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module of ours that `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


GRAPH = {mod: _imports(path) for mod, path in MODULES.items()}


@pytest.mark.parametrize("pkg", PACKAGES)
def test_data_flows_one_way(pkg):
    bad = sorted(f"{mod} imports {dep}" for mod, deps in GRAPH.items() if mod.split(".")[0] == pkg
                 for dep in deps if dep.split(".")[0] not in ALLOWED[pkg] | {pkg})
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg])}: " + "; ".join(bad)


def test_serve_never_touches_the_store():
    touching = sorted(m for m, deps in GRAPH.items() if m.startswith("serve") and any(d.startswith("results") for d in deps))
    assert not touching, f"serve reads data only through matcher.workspace: {touching}"


def test_no_import_cycles():
    # Package __init__ files re-export their children; an edge into a package means its __init__.
    graph = defaultdict(set, {m: {d for d in deps if d != m} for m, deps in GRAPH.items()})
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    # A package's __init__ importing its own child is not a cycle unless the child imports back.
    real = [c for c in cycles if not (len(c) == 2 and c[1].startswith(c[0] + "."))]
    assert not real, "import cycles: " + "; ".join(" -> ".join(c) for c in real)


# A metric's name may appear where the table is, where a requirement field names it, and in the
# independent brute-force oracle (which is deliberately written without the matcher's helpers).
METRIC_HOMES = {"matcher/metrics.py", "matcher/requirements.py", "matcher/screen.py", "matcher/solution.py",
                "matcher/baselines/bruteforce.py", "matcher/candidates.py"}


def test_a_metric_is_spelled_in_the_table_not_across_the_matcher():
    """The issue's example: `energy_per_sample_j` was in 10 matcher files. (The objectives cost,
    energy and latency name the quantity they minimise in the formulation; that is not a metric
    being re-listed.)"""
    word = re.compile(r"(?<![A-Za-z0-9_])energy_per_sample_j(?![A-Za-z0-9_])")
    spread = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "matcher").rglob("*.py")
                    if word.search(p.read_text()) and str(p.relative_to(ROOT)) not in METRIC_HOMES)
    assert not spread, f"energy_per_sample_j is spelled outside the metric table's homes: {spread}"
