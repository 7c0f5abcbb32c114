"""One matcher workspace: everything an answer is computed from, read once.

    ws = Workspace.open(Sources(results_uri="results", models_dir="results/models"))
    ws.recommend(req)          # the JSON-ready answer the CLI prints and POST /recommend returns
    ws.plan(plan); ws.pareto(req); ws.suggest(req); ws.assets()

A workspace holds the hardware catalog, the result rows, a user's candidate table and the saved
model set, all loaded by `open` (so a service replica is ready when it is constructed, and the
first request does not pay for loading). Candidate tables are built once per (asset, task) and
kept, thread-safely, for the life of the workspace; new data means a new workspace (serve/
swaps them when `Sources.fingerprint()` changes). The CLI and the service both hold one, so there
is exactly one way sources become answers.

`strict=False` (the service) records a source that cannot be read in `problems` instead of
raising, so the other routes keep answering and /healthz can say what is wrong; a request that
needs the broken source still gets the error that names it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cluster.hardware import DEFAULT_CATALOG, CatalogError, HardwareSpec, load_catalog
from matcher.candidates import (
    candidates_from_csv,
    candidates_from_results,
    config_keys,
    flagged_pairs,
    merge_candidates,
    select_rows,
    validate_candidates,
)
from matcher.capacity import CURVES
from matcher.errors import MatcherError, ModelError, NoDataError, RequirementsError
from matcher.models import ModelSet, predict_candidates, without_abstained
from matcher.pareto import pareto_answer
from matcher.recommend import recommend, recommend_plan
from matcher.requirements import Plan, Requirements, parse_plan, parse_requirements
from matcher.suggest import Suggestion, suggest
from matcher.support import drop_unsupported
from results.consistency import inconsistent_rows, more_cores_slower
from results.store import ResultsStore
from results.summary import summarize_candidates, summarize_results

MODELSET_INDEX = "modelset.json"


def _stat(path: str | os.PathLike[str] | None) -> tuple[Any, ...]:
    if not path:
        return ()
    try:
        st = os.stat(path)
    except OSError:
        return ("missing",)
    return (st.st_size, st.st_mtime_ns)


def _tree(path: str | os.PathLike[str] | None) -> tuple[Any, ...]:
    """(relative name, size, mtime) of every file under a folder: a model file replaced in place
    changes its mtime even when modelset.json stays put."""
    if not path:
        return ()
    root = Path(path)
    if not root.is_dir():
        return ("missing",)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith("."):
                continue  # temporary files of an atomic write
            p = os.path.join(dirpath, name)
            out.append((os.path.relpath(p, root), *_stat(p)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Sources:
    """Where a workspace reads from. Relative paths are taken as given (the caller's directory)."""

    results_uri: str | None = None
    models_dir: str | None = None
    candidates_csv: str | None = None
    catalog_path: str | None = None

    @property
    def catalog_file(self) -> str:
        return str(self.catalog_path or os.environ.get("BENCHMATCH_CATALOG") or DEFAULT_CATALOG)

    def fingerprint(self) -> tuple[Any, ...]:
        """What changes when the data changes; cheap (it lists files, it reads none)."""
        return (
            ResultsStore(self.results_uri).fingerprint() if self.results_uri else (),
            _tree(self.models_dir),
            _stat(self.candidates_csv),
            _stat(self.catalog_file),
        )


@dataclass
class Workspace:
    sources: Sources
    catalog: dict[str, HardwareSpec] = field(default_factory=dict)
    rows: pd.DataFrame | None = None  # result rows (None without a results store)
    result_files: int = 0
    table: pd.DataFrame | None = None  # the user's candidate CSV, when given
    models: ModelSet | None = None
    problems: list[str] = field(default_factory=list)
    _errors: dict[str, MatcherError | CatalogError] = field(default_factory=dict, repr=False)
    _candidates: dict[tuple[str | None, str], pd.DataFrame] = field(default_factory=dict, repr=False)
    _validated: dict[tuple[str | None, str], pd.DataFrame] = field(default_factory=dict, repr=False)
    _notes: dict[tuple[str | None, str], list[str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, sources: Sources, *, strict: bool = True) -> Workspace:
        """Read every source once. strict: the first unreadable source raises (the CLI); else it
        is recorded in `problems` and raised again by the requests that need it (the service)."""
        ws = cls(sources)
        ws._load("catalog", lambda: setattr(ws, "catalog", load_catalog(sources.catalog_path)), strict)
        if sources.candidates_csv:
            ws._load("candidates", lambda: setattr(ws, "table", candidates_from_csv(sources.candidates_csv)), strict)
        elif sources.results_uri:
            ws._load("results", ws._read_results, strict)
        if sources.models_dir and (Path(sources.models_dir) / MODELSET_INDEX).exists() and not sources.candidates_csv:
            ws._load("models", lambda: setattr(ws, "models", ModelSet.load(sources.models_dir)), strict)
        return ws

    def _load(self, what: str, read: Any, strict: bool) -> None:
        try:
            read()
        except (MatcherError, CatalogError) as exc:
            if strict:
                raise
            self._errors[what] = exc
            self.problems.append(f"{what}: {exc}")

    def _read_results(self) -> None:
        store = ResultsStore(self.sources.results_uri)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.rows = store.read(on_corrupt="warn")
            self.result_files = len(store.files())
        for w in caught:  # a corrupt file is skipped, named, and reported; the others still count
            self.problems.append(f"results store: {w.message}")

    @property
    def errors(self) -> dict[str, Exception]:
        """The sources that could not be read (strict=False), by kind: what /healthz reports and
        what the requests needing them raise."""
        return dict(self._errors)

    def _need(self, what: str) -> None:
        if what in self._errors:
            raise self._errors[what]

    # -- candidates ----------------------------------------------------------------------------

    def candidates(self, req: Requirements) -> pd.DataFrame:
        """The candidate table for `req`: the user's CSV, or measured rows of (asset, task) plus
        model predictions for unmeasured (hardware, configuration) pairs. Built once per key."""
        key = (req.asset, req.task)
        hit = self._candidates.get(key)
        if hit is not None:
            return hit
        notes: list[str] = []
        table = self._build_candidates(req, notes)
        with self._lock:
            self._notes.setdefault(key, notes)
            return self._candidates.setdefault(key, table)

    def validated_candidates(self, req: Requirements) -> pd.DataFrame:
        """`candidates(req)` checked and normalised by validate_candidates, once per key: it was a
        third of a fresh answer's time when done per request. A table that fails the check is not
        kept, so every request gets its error."""
        key = (req.asset, req.task)
        hit = self._validated.get(key)
        if hit is not None:
            return hit
        table = validate_candidates(self.candidates(req))
        with self._lock:
            return self._validated.setdefault(key, table)

    def notes(self, req: Requirements, hardware: Iterable[str] = ()) -> list[str]:
        """What an answer for `req` rests on that its reader must know: measurements left out as
        flagged, predictions withheld, and which of `hardware` is emulated on this machine."""
        self.candidates(req)
        out = list(self._notes.get((req.asset, req.task), []))
        for hw in sorted(set(hardware)):
            spec = self.catalog.get(hw)
            if spec is not None and spec.local:
                out.append(f"{hw} is an emulated profile (a Ray node with {spec.cpu_cores} CPU"
                           f"{'s' if spec.cpu_cores != 1 else ''} on the machine that measured it), not an "
                           f"instance you can rent; its price: {spec.price_source or 'set in the catalog'}")
        return out

    def _build_candidates(self, req: Requirements, notes: list[str]) -> pd.DataFrame:
        self._need("catalog")
        if self.sources.candidates_csv:
            self._need("candidates")
            return self.table
        if not self.sources.results_uri:
            raise NoDataError("no candidates: give candidates_csv (a table) or results_uri (a results store)")
        self._need("results")
        where = str(self.sources.results_uri)
        if self.rows is None or self.rows.empty:
            raise NoDataError(f"{where}: the results store is empty; run a sweep first (benchmatch sweep CONFIG)")
        rows, asset = select_rows(self.rows, req.asset, req.task, where=where)
        notes += [f"left out, measured rows flagged: {p}" for p in flagged_pairs(self.rows, asset, req.task)]
        local = {h: spec.cpu_cores for h, spec in self.catalog.items() if spec.local}
        odd = more_cores_slower(rows, local)
        if odd:
            rows = rows[~inconsistent_rows(rows, odd)]
            notes += [f"left out, more cores slower than fewer beyond the spread: {i}; measure it again on a quiet "
                      "machine" for i in odd]
        measured = candidates_from_results(rows, self.catalog, asset=asset, task=req.task)
        self._need("models")
        if self.models is None or asset not in self.models.assets():
            return measured
        if CURVES in measured.columns and measured[CURVES].notna().any():
            # Measured pairs are sized from their latency-vs-load curves; the models predict the
            # saturated Offline throughput, which would over-promise beside them (by 4-5x on the
            # quickstart). Until a model predicts capacity at the SLO, predictions do not answer.
            notes.append("not predicted: this asset's measured pairs are sized from their Server latency-vs-load "
                         "curves, and the performance models predict saturated Offline throughput, not capacity "
                         "at a p99 bound; measure other pairs with loadgen.server_curve (benchmatch suggest says "
                         "which)")
            return measured
        try:
            predicted = predict_candidates(self.models, self.catalog, asset=asset)
        except ModelError as exc:
            notes.append(f"no predictions: {exc}")
            return measured
        predicted, dropped = drop_unsupported(predicted, rows, self.catalog)
        notes += dropped
        predicted, withheld = without_abstained(predicted)
        have = set(measured["hardware"].astype(str) + "|" + config_keys(measured))
        by_reason: dict[str, list[str]] = {}
        for w in withheld:
            if not _measured_already(w, have):
                pair, _, why = w.partition("]: ")
                by_reason.setdefault(why, []).append(pair + "]")
        for why, pairs in by_reason.items():
            hws = sorted({p.split(" [", 1)[0] for p in pairs})
            notes.append(f"not measured and not predicted ({len(pairs)} pair{'s' if len(pairs) != 1 else ''} on "
                         f"{', '.join(hws)}): {why}")
        return merge_candidates(measured, predicted)

    # -- answers -------------------------------------------------------------------------------

    def recommend(self, req: Mapping[str, Any] | Requirements, *, solver: str = "cbc",
                  time_limit_s: float | None = 60.0) -> dict[str, Any]:
        """Requirements -> the JSON-ready answer. Raises the matcher's errors (all ValueErrors that
        name the field, file or asset), which a service maps to 4xx."""
        req = parse_requirements(req)
        ans = recommend(req, self.validated_candidates(req), solver=solver, time_limit_s=time_limit_s,
                        validated=True).model_dump()
        used = {hw for o in ans["options"] for hw in o["hardware"]}
        ans["notes"] = [*self.notes(req, used), *ans["notes"]]
        return ans

    def pareto(self, req: Mapping[str, Any] | Requirements, *, solver: str = "cbc",
               time_limit_s: float | None = 60.0) -> dict[str, Any]:
        req = parse_requirements(req)
        return pareto_answer(req, self.candidates(req), solver=solver, time_limit_s=time_limit_s or 60.0)

    def plan(self, plan: Mapping[str, Any] | Plan, *, solver: str = "cbc",
             time_limit_s: float | None = 60.0) -> dict[str, Any]:
        """Several workloads placed jointly, each on the candidates of its own (asset, task)."""
        plan = parse_plan(plan)
        tables = []
        for i, req in enumerate(plan.workloads):
            try:
                tables.append(self.candidates(req))
            except RequirementsError as exc:  # "asset: required ...": say which workload's
                raise RequirementsError(f"workloads.{i}.{exc}", [(f"workloads.{i}.{f}", m) for f, m in exc.errors]) \
                    from None
        ans = recommend_plan(plan, tables, solver=solver, time_limit_s=time_limit_s).model_dump()
        notes: list[str] = []
        for req, w in zip(plan.workloads, ans["workloads"], strict=True):
            used = set((w.get("option") or {}).get("hardware") or {})
            notes += [n for n in self.notes(req, used) if n not in notes]
        ans["notes"] = [*notes, *ans["notes"]]
        return ans

    def suggest(self, req: Mapping[str, Any] | Requirements, *, configs: Iterable[Mapping[str, Any]] | None = None,
                refit: bool = False, local_only: bool = False, max_trials: int = 10,
                solver: str = "cbc") -> Suggestion:
        """The unmeasured (hardware, configuration) pairs worth measuring for `req`. refit: fit the
        models on the rows now instead of using the saved set (they never lag the measurements)."""
        req = parse_requirements(req)
        if max_trials < 1:
            raise RequirementsError(f"max_trials must be >= 1, got {max_trials}", [("max_trials", "must be >= 1")])
        self._need("catalog")
        self._need("results")
        if self.rows is None or self.rows.empty:
            raise NoDataError(f"{self.sources.results_uri}: the results store is empty; run a sweep first "
                              "(benchmatch sweep CONFIG)")
        self._need("models")
        return suggest(req, self.rows, self.catalog, modelset=None if refit else self.models,
                       configs=list(configs) if configs is not None else None, local_only=local_only,
                       max_trials=max_trials, solver=solver)

    def assets(self) -> list[dict[str, Any]]:
        """Per asset: rows, hardware and configurations this workspace can answer for."""
        if self.table is not None:
            return summarize_candidates(self.table, Path(self.sources.candidates_csv or "").name)
        return summarize_results(self.rows)

    def asset_names(self) -> list[str]:
        return [a["asset"] for a in self.assets()]

    def asset_for_ref(self, ref: str) -> str | None:
        """The name of the asset that rows loaded as `ref` (their `asset_ref`), or named `ref`."""
        if self.rows is None or self.rows.empty or "asset" not in self.rows.columns:
            return None
        names = self.rows["asset"].astype(str)
        by_ref = self.rows["asset_ref"].astype(str) == ref if "asset_ref" in self.rows.columns else names != names
        hit = sorted(set(names[by_ref | (names == ref)]))
        return hit[0] if hit else None


def _measured_already(withheld: str, measured: set[str]) -> bool:
    """Whether a withheld prediction ("hw [k=v, ...]: why") is a pair that was measured anyway."""
    hw, _, rest = withheld.partition(" [")
    cfg = rest.split("]:", 1)[0]
    return f"{hw}|{cfg.replace(' ', '')}" in {m.replace(' ', '') for m in measured}
