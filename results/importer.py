"""Import results measured by other tools (MLPerf summaries, CSV/JSON/Parquet tables) as result rows.

A mapping YAML says how a source file becomes rows of results/schema.py (docs/matcher.md, "Import"):

    columns:   {source: target} or {source: {target, unit, scale, scenario, direction, multiply_by,
               divide_by}}
    rules:     [{source, target, ..., when: {col: value}, unless: {col: value}, value}]   `when`: applies
               where every col holds its value (null: is empty; [a, b]: either; case forgiven); `unless`: not
               where all do; `value`: a fixed value given instead of the source's (Server where a request
               rate is not "inf")
    constants: {target: value}       the same in every row; `benchmatch import --set target=value` adds more
    units / scales: {source: ...}    per source column: `us`, `tokens/s`, `mJ/token`, `GFLOP`; 1e6 or M
    config:    [source] | {source: name}    hyperparameters, stored as cfg_<name>
    values:    {source: {value: replacement}}     rename values first (system -> catalog, "N/A" -> null)
    extract:   {source: regex}       one group: keep it; named groups: new columns
    filter:    {source: regex}       keep only records whose value matches (the others are counted)
    filename:  regex with named groups, matched on the file's name: the groups are columns
    join:      [{file, on, columns, prefix, required}]   columns of a second file, by key
    json:      {records, levels, value, single}   where the records of a JSON file are; nested keys as
               columns; `single: true`: the object is ONE record (a tool's summary of one run)
    rows:      repeats | merge       several rows of one trial and scenario: repeats, or parts of one
    aliases:   {source: [other names]}   a column's names in other versions of the tool's files
    optional / allow_unknown_hardware / delimiter

One source record may hold several metrics: each goes to the result row of its scenario (a column's
`scenario`, else the record's), and metrics that do not depend on the scenario (accuracy, quality
scores, parameters, FLOPs) go to every row the record makes. A value that cannot be a measurement
(text, NaN, inf, a negative number, a 0 latency or throughput) rejects its record, named by its line
(or record, row, JSON path) and column in the file; the other records land.

`import_file` writes the good rows as ONE part file of the store (ResultsStore.write_part, atomic),
after comparing them with the rows the sweep already holds: a new row is added, a row that only
fills missing values of a stored one is merged into it, an identical one is left as it is, and one
that contradicts a stored value is skipped and named (`replace=True`, `--replace`, overrides it).
Nothing stored is ever deleted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from cluster.hardware import load_catalog
from results.convert import (
    ConvertInfo,
    ImportReport,
    Rejection,
    convert_file,
    default_sweep_id,
    label_order,
    missing,
)
from results.mapping import DIRECTION_SUFFIX, QUALITY, SAMPLE_UNIT, ColumnMapping, MappingError, is_quality
from results.schema import KEY_COLUMNS
from results.store import ResultsStore, StoreError

# ----------------------------------------------------------------------------------------------
# Into the store: added, merged, unchanged, or skipped as contradicting
# ----------------------------------------------------------------------------------------------


def _stored_missing(v: Any) -> bool:
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:  # pragma: no cover - pandas is a dependency of the store
        pass
    return missing(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)


_NOT_COMPARED = {"import_source", *KEY_COLUMNS}


def _plain(v: Any) -> Any:
    if _stored_missing(v):
        return None
    return v.item() if hasattr(v, "item") and not isinstance(v, str | bytes) else v


def _check_quality_directions(store: ResultsStore, rows: list[dict[str, Any]]) -> None:
    names = sorted({k for r in rows for k in r if is_quality(k) and k.endswith(DIRECTION_SUFFIX)})
    if not names or not store.files():
        return
    stored = store.read(columns=["asset", *names], on_corrupt="ignore")
    for col in names:
        if col not in stored.columns:
            continue
        for asset in sorted({r["asset"] for r in rows if col in r}):
            mine = {r[col] for r in rows if r.get("asset") == asset and col in r}
            theirs = {v for v in stored.loc[stored["asset"] == asset, col] if not _stored_missing(v)}
            if theirs and theirs != mine:
                name = col[len(QUALITY):-len(DIRECTION_SUFFIX)]
                raise MappingError(f"quality score '{name}' of asset '{asset}' is {'/'.join(sorted(mine))}-is-better "
                                   f"in this mapping but {'/'.join(sorted(theirs))}-is-better in the store; fix the "
                                   "mapping's direction, or name the score differently")


def _sample_unit_warnings(store: ResultsStore, rows: list[dict[str, Any]]) -> list[str]:
    if not store.files():
        return []
    stored = store.read(columns=["asset", SAMPLE_UNIT, "throughput_samples_per_s"], on_corrupt="ignore")
    if stored.empty or "throughput_samples_per_s" not in stored.columns:
        return []
    out = []
    for asset in sorted({r["asset"] for r in rows if "throughput_samples_per_s" in r}):
        mine = {r.get(SAMPLE_UNIT) or "sample" for r in rows
                if r["asset"] == asset and "throughput_samples_per_s" in r}
        sel = stored[(stored["asset"] == asset) & stored["throughput_samples_per_s"].notna()]
        theirs = {(v if isinstance(v, str) and v else "sample")
                  for v in (sel[SAMPLE_UNIT] if SAMPLE_UNIT in sel.columns else ["sample"] * len(sel))}
        if theirs and theirs != mine:
            out.append(f"asset '{asset}': a throughput here counts {'/'.join(sorted(mine))}s, the store's count "
                       f"{'/'.join(sorted(theirs))}s; the matcher must not add them up (check the units)")
    return out


def import_file(
    path: str | os.PathLike[str],
    mapping: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping,
    *,
    results_uri: str | os.PathLike[str],
    catalog: Mapping[str, Any] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    sweep_id: str | None = None,
    dry_run: bool = False,
    replace: bool = False,
    constants: Mapping[str, Any] | None = None,
) -> ImportReport:
    """Convert `path` with `mapping` and write its rows to the results store at `results_uri` as one
    part file (atomic). Each result row is compared with the row the sweep holds for the same (trial,
    repeat, scenario): new rows are added, rows that fill missing values are merged, identical rows
    are left alone, and rows that contradict a stored value are skipped and reported, unless
    `replace` (then the file's values replace the stored ones; the stored row's other columns stay).
    Rejected records are reported, never written; nothing stored is deleted."""
    if catalog is None:
        catalog = load_catalog(catalog_path)
    sweep_id = sweep_id or default_sweep_id(path)
    info = ConvertInfo()
    rows, rejected, labels = convert_file(path, mapping, catalog, sweep_id=sweep_id, constants=constants, info=info)
    report = ImportReport(source=str(path), sweep_id=sweep_id, rejected=rejected, results_uri=str(results_uri),
                          dry_run=dry_run, filtered=info.filtered, warnings=list(info.warnings))
    store = ResultsStore(results_uri)
    _check_quality_directions(store, rows)
    report.warnings += _sample_unit_warnings(store, rows)
    held = store.read(sweep_id, on_corrupt="warn") if store.files(sweep_id) else None
    index: dict[tuple[str, int, str], dict[str, Any]] = {}
    if held is not None and not held.empty:
        for rec in held.to_dict("records"):
            index[(str(rec["trial_id"]), int(rec["repeat"]), str(rec["scenario"]))] = rec
    to_write: list[dict[str, Any]] = []
    landed: set[str] = set()
    for row, row_labels in zip(rows, labels, strict=True):
        key = (row["trial_id"], int(row["repeat"]), row["scenario"])
        stored = index.get(key)
        if stored is None:
            to_write.append(row)
            landed.update(row_labels)
            report.added += 1
            continue
        conflicts, fills = [], []
        for col, new in row.items():
            if col in _NOT_COMPARED or missing(new):
                continue
            old = stored.get(col)
            if _stored_missing(old):
                fills.append(col)
            elif not _same(old, new):
                conflicts.append((col, old, new))
        if not conflicts and not fills:
            report.unchanged += 1
            continue
        if conflicts and not replace:
            col, old, new = conflicts[0]
            more = f" (and {len(conflicts) - 1} more column(s))" if len(conflicts) > 1 else ""
            report.conflicts.append(Rejection(
                ", ".join(row_labels), f"kept the stored row: it holds {col} = {_plain(old)!r} where this file has {new!r}{more} "
                       f"(sweep '{sweep_id}', {row['scenario']}, repeat {row['repeat']}, from "
                       f"{stored.get('import_source') or 'a sweep'}); pass --replace to replace it, or import under "
                       "another --sweep to keep both", None))
            continue
        merged = {k: _plain(v) for k, v in stored.items() if not _stored_missing(v)}
        merged.update({k: v for k, v in row.items() if not missing(v)})
        earlier = stored.get("import_source")
        if isinstance(earlier, str) and earlier and earlier != row["import_source"]:
            merged["import_source"] = f"{earlier}; {row['import_source']}"
        to_write.append(merged)
        landed.update(row_labels)
        if conflicts:
            report.replaced += 1
        else:
            report.merged += 1
    if to_write and not dry_run:
        try:
            report.files.append(store.write_part(to_write))
        except StoreError as exc:  # our checks should have caught it; still name the rows
            report.rejected += [Rejection(label, str(exc)) for label in sorted(landed, key=label_order)]
            report.added = report.merged = report.replaced = 0
            to_write, landed = [], set()
    report.imported = len(landed)
    report.rejected.sort(key=lambda r: label_order(r.row))
    report.trials = len({r["trial_id"] for r in to_write})
    report.assets = sorted({r["asset"] for r in to_write})
    report.hardware = sorted({r["hardware"] for r in to_write})
    return report
