"""Converting source records into result rows through a mapping: units and scales applied, values
checked (a value that cannot be a measurement rejects its record, named by its line and column),
several metrics of one record sent to the rows of their scenarios, ids derived as a sweep would."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.ids import trial_id
from results.mapping import (
    CFG,
    DIRECTION_SUFFIX,
    METRIC_GROUPS,
    POSITIVE,
    SAMPLE_UNIT,
    SCENARIO_GROUPS,
    SCENARIOS,
    ColumnMapping,
    MappingError,
    Rule,
    check_mapping,
    is_quality,
    load_mapping,
    missing,
    rule_conversion,
    scenario_name,
    with_constants,
)
from results.schema import BY_NAME
from results.sources import Record, Source, add_filename_columns, apply_aliases, apply_join, read_source
from results.store import StoreError, check_name
from results.units import Conversion

# ----------------------------------------------------------------------------------------------
# Converting one record
# ----------------------------------------------------------------------------------------------


class _Reject(Exception):
    """A record-level problem: the record is skipped, the message says why (and in which column)."""

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column




def _number(v: Any, what: str, *, column: str | None = None, positive: bool = False,
            signed: bool = False) -> float:
    if isinstance(v, bool):
        raise _Reject(f"{what} must be a number, got {v!r}", column)
    if isinstance(v, int | float):
        x = float(v)
    else:
        try:
            x = float(str(v).strip())
        except ValueError:
            raise _Reject(f"{what} must be a number, got {v!r}", column) from None
    if not math.isfinite(x):
        raise _Reject(f"{what} must be a finite number, got {v!r} (leave the cell empty when unknown)", column)
    if x < 0 and not signed:
        raise _Reject(f"{what} must be >= 0, got {v!r}", column)
    if x == 0 and positive:
        raise _Reject(f"{what} must be > 0, got {v!r}: a measured time, rate, energy or size is never 0; leave the "
                      "cell empty when it was not measured (or map 0 to empty: values: {column: {'0': null}})", column)
    return x


def _holds(rec: Mapping[str, Any], col: str, expected: Any) -> bool:
    if isinstance(expected, list):  # `when: {col: [a, b]}`: any of them
        return any(_holds(rec, col, e) for e in expected)
    got = rec.get(col)
    if expected is None:  # `when: {col: null}`: the column is empty
        return missing(got)
    # Case is forgiven: a tool that writes `multistream` or `WATTS` means the same.
    return not missing(got) and str(got).strip().casefold() == str(expected).strip().casefold()


def _when_matches(rule: Rule, rec: Mapping[str, Any]) -> bool:
    """Every `when` column holds its value, and not every `unless` column holds its value."""
    if not all(_holds(rec, col, expected) for col, expected in rule.when.items()):
        return False
    return not (rule.unless and all(_holds(rec, col, expected) for col, expected in rule.unless.items()))


@dataclass
class _Plan:
    """A mapping made ready for one file: rules with their conversions, compiled patterns."""

    mapping: ColumnMapping
    rules: list[Rule]
    convs: list[tuple[Conversion, float]]
    extract: dict[str, re.Pattern[str]]
    filters: dict[str, re.Pattern[str]]
    constants: dict[str, Any]

    @classmethod
    def of(cls, m: ColumnMapping, cli: Mapping[str, Any] | None = None) -> _Plan:
        rules = m.all_rules()
        constants = {}
        for target, value in m.constants.items():
            try:
                constants[target] = _constant(target, value)
            except _Reject as exc:
                where = f"--set {target}={value}" if cli and target in cli else f"constants.{target}"
                raise MappingError(f"{where}: {exc}") from None
        return cls(m, rules, [rule_conversion(r, "mapping") for r in rules],
                   {c: re.compile(p) for c, p in m.extract.items()},
                   {c: re.compile(p) for c, p in m.filter.items()}, constants)


def _what(source: str, target: str, origin: str | None) -> str:
    where = f" ({origin})" if origin else ""
    return f"column '{source}'{where}" + (f" (-> {target})" if target != source else "")


def _value(rule: Rule, conv: Conversion, scale: float, raw: Any, rec: Mapping[str, Any], what: str) -> Any:
    """A source value as the target column's value, in its unit; _Reject when it cannot be one."""
    target = rule.target
    col = BY_NAME.get(target)
    if is_quality(target):
        return _number(raw, what, column=rule.source, signed=True) * conv.factor * scale
    if col is not None and col.dtype in ("float", "int"):
        x = _number(raw, what, column=rule.source, positive=target in POSITIVE)
        scaled = conv.factor != 1.0 or scale != 1.0
        if rule.multiply_by:
            other = rec.get(rule.multiply_by)
            if missing(other):
                raise _Reject(f"{what}: column '{rule.multiply_by}' (multiply_by) is empty, so the value cannot "
                              "be converted", rule.multiply_by)
            x *= _number(other, f"column '{rule.multiply_by}' (multiply_by of '{rule.source}')",
                         column=rule.multiply_by, positive=True)
            scaled = True
        if rule.divide_by:
            other = rec.get(rule.divide_by)
            if missing(other):
                raise _Reject(f"{what}: column '{rule.divide_by}' (divide_by) is empty, so the value cannot "
                              "be converted", rule.divide_by)
            x /= _number(other, f"column '{rule.divide_by}' (divide_by of '{rule.source}')",
                         column=rule.divide_by, positive=True)
            scaled = True
        x = x * conv.factor * scale
        if col.dtype == "int":
            if scaled:
                return int(round(x))  # a count stated in millions keeps the precision it was given with
            if not x.is_integer():
                raise _Reject(f"{what} must be a whole number, got {raw!r} (a count in millions or thousands? "
                              "give the column `scale: M` or `scale: k`)", rule.source)
            return int(x)
        return x
    if col is not None and col.dtype == "bool":
        return str(raw).strip().lower() in ("1", "true", "yes")
    if target.startswith(CFG):
        return raw if isinstance(raw, int | float) and not isinstance(raw, bool) else str(raw).strip()
    return str(raw).strip()


def _constant(target: str, value: Any) -> Any:
    col = BY_NAME.get(target)
    if col is not None and col.dtype in ("float", "int") and not missing(value):
        x = _number(value, "the value", column=None, positive=target in POSITIVE)
        if col.dtype == "int":
            if not x.is_integer():
                raise _Reject(f"the value must be a whole number, got {value!r}")
            return int(x)
        return x
    if col is not None and col.dtype == "str" and not missing(value):
        return str(value).strip()
    return value


def _is_metric(target: str) -> bool:
    if is_quality(target):
        return not target.endswith(DIRECTION_SUFFIX)
    return target in BY_NAME and BY_NAME[target].group in METRIC_GROUPS


def _scenario_specific(target: str) -> bool:
    col = BY_NAME.get(target)
    return col is not None and col.group in SCENARIO_GROUPS


def _convert(rec: Record, plan: _Plan) -> list[dict[str, Any]]:
    """One source record -> its partial result rows, one per scenario (targets only; ids come later)."""
    m = plan.mapping
    # A list of one plain value is that value (AIPerf's `model_names: ["llama"]`).
    values = {k: v[0] if isinstance(v, list) and len(v) == 1 and not isinstance(v[0], dict | list) else v
              for k, v in rec.values.items()}
    for col, table in m.values.items():
        raw = values.get(col)
        if not missing(raw) and str(raw).strip() in table:
            values[col] = table[str(raw).strip()]
    for col, rx in plan.extract.items():
        raw = values.get(col)
        if missing(raw):
            continue
        hit = rx.search(str(raw))
        if hit is None:
            raise _Reject(f"column '{col}' = {raw!r} does not match extract pattern {rx.pattern!r}", col)
        if rx.groupindex:
            values.update({k: v for k, v in hit.groupdict().items() if v is not None})
        else:
            values[col] = hit.group(1)
    buckets: dict[str | None, dict[str, Any]] = {None: {}}
    origin: dict[tuple[str | None, str], str] = {}
    items: dict[str | None, dict[str, str]] = {}
    unread = ({r.source for r in plan.rules if r.conditional()}
              - {r.source for r in plan.rules if not r.conditional()})
    for rule, (conv, scale) in zip(plan.rules, plan.convs, strict=True):
        if not _when_matches(rule, values):
            continue
        unread.discard(rule.source)
        raw = values.get(rule.source)
        if rule.value is not None and not missing(raw):
            raw = rule.value
        elif isinstance(raw, dict | list):
            raise _Reject(f"column '{rule.source}' holds a nested value ({type(raw).__name__}"
                          + (f" of {len(raw)}" if isinstance(raw, list) else "") + "); map a flat "
                          "column, or read nested objects with json: {levels: [...]}", rule.source)
        if missing(raw):
            continue
        scen = scenario_name(rule.scenario) if rule.scenario else None
        if (scen, rule.target) in origin:
            raise _Reject(f"columns '{origin[(scen, rule.target)]}' and '{rule.source}' both give '{rule.target}'",
                          rule.source)
        what = _what(rule.source, rule.target, rec.origins.get(rule.source))
        buckets.setdefault(scen, {})[rule.target] = _value(rule, conv, scale, raw, values, what)
        origin[(scen, rule.target)] = rule.source
        if is_quality(rule.target):
            buckets[scen][rule.target + DIRECTION_SUFFIX] = rule.direction
        if conv.item is not None:
            seen = items.setdefault(scen, {})
            if seen and conv.item not in seen:
                first = next(iter(seen.items()))
                raise _Reject(f"column '{rule.source}' counts {conv.item}s where column '{first[1]}' counts "
                              f"{first[0]}s; one row's samples are one kind", rule.source)
            seen[conv.item] = rule.source
    for col in sorted(unread):
        if not missing(values.get(col)):
            # A value we do not know how to read (MLPerf's Tokens/s) is not silently dropped.
            conds = sorted({c for r in plan.rules if r.source == col for c in (*r.when, *r.unless)})
            seen_when = ", ".join(f"{c}={values.get(c)!r}" for c in conds)
            raise _Reject(f"column '{col}' = {values[col]!r} matches no rule of the mapping ({seen_when})", col)
    buckets[None].update(plan.constants)
    base = buckets.pop(None)
    if len(buckets) == 0 and str(base.get("status", "ok")).strip().lower() == "ok" and not any(
            _is_metric(k) for k in base):
        raise _Reject("no metric value: every mapped metric column is empty for this row")
    shared = {k: v for k, v in base.items() if not _scenario_specific(k)}
    own = {k: v for k, v in base.items() if _scenario_specific(k)}
    item_of = {scen: next(iter(seen)) for scen, seen in items.items() if seen}
    if not buckets:
        row = {**shared, **own}
        if None in item_of:
            row[SAMPLE_UNIT] = item_of[None]
        return [row]
    rows: dict[str, dict[str, Any]] = {}
    for scen, metrics in buckets.items():
        rows[scen] = {**shared, **metrics, "scenario": scen}
        if scen in item_of:
            rows[scen][SAMPLE_UNIT] = item_of[scen]
    if own:
        scen0 = scenario_name(shared.get("scenario")) if not missing(shared.get("scenario")) else None
        if scen0 is None:
            col = next(origin.get((None, k), k) for k in own)
            raise _Reject(f"column '{col}' gives '{next(iter(own))}' without a scenario: give its mapping a "
                          f"`scenario:` or map a scenario column", col)
        row = rows.setdefault(scen0, {**shared, "scenario": scen0})
        clash = sorted(k for k in own if k in row)
        if clash:
            raise _Reject(f"'{clash[0]}' of scenario {scen0} is given twice (by the record's scenario and by a "
                          f"column's `scenario: {scen0}`)", origin.get((None, clash[0])))
        row.update(own)
        if None in item_of:
            row[SAMPLE_UNIT] = item_of[None]
    return list(rows.values())


def _finish(row: dict[str, Any], m: ColumnMapping, catalog: Mapping[str, Any]) -> dict[str, Any]:
    """Ids, scenario and task, and the hardware checked against the catalog."""
    for key in ("asset", "hardware"):
        if missing(row.get(key)):
            raise _Reject(f"'{key}' is empty; map a column to it, set constants.{key}, or pass --set {key}=...")
        row[key] = str(row[key]).strip()
    scen = row.get("scenario")
    task = str(row.get("task", "")).strip().lower() or None
    if missing(scen):
        if task != "train":
            raise _Reject("'scenario' is empty; map a column to it or set constants.scenario "
                          f"(one of {', '.join(SCENARIOS)})")
        scen = "train"
    name = scenario_name(scen)
    if name is None:
        raise _Reject(f"scenario {scen!r} is not one of {', '.join(SCENARIOS)}")
    row["scenario"] = name
    task = task or ("train" if name == "train" else "infer")
    if task not in ("infer", "train") or (task == "train") != (name == "train"):
        raise _Reject(f"task {task!r} does not fit scenario '{name}' (infer: LoadGen scenarios; train: 'train')")
    row["task"] = task
    status = str(row.get("status", "ok")).strip().lower() or "ok"
    if status not in ("ok", "failed"):
        raise _Reject(f"status {row.get('status')!r} must be 'ok' or 'failed'")
    row["status"] = status
    row.setdefault("error", "")
    spec = catalog.get(row["hardware"])
    if spec is None and not m.allow_unknown_hardware:
        known = ", ".join(sorted(catalog))
        raise _Reject(f"hardware '{row['hardware']}' is not in the hardware catalog (known: {known}); map it with "
                      "`values: {<column>: {<name>: <catalog name>}}`, add it to the catalog, or set "
                      "allow_unknown_hardware: true")
    if spec is not None:
        # One row describes one instance of a catalog entry; a result of 8 GPUs is not one of 1.
        given = row.get("device_count")
        if given is not None and int(given) != int(spec.device_count):
            raise _Reject(f"device_count {given} differs from the catalog's '{spec.name}' "
                          f"({spec.device_count}); map the system to a catalog entry with that many devices")
        row.setdefault("device_count", int(spec.device_count))
        row.setdefault("accelerator_type", spec.accelerator_type)
    if row["status"] == "ok" and not any(_is_metric(k) for k in row):
        raise _Reject("no metric value: every mapped metric column is empty for this row")
    return row


def _infer_config_types(rows: list[dict[str, Any]]) -> None:
    """Config columns as numbers when every value of the column is numeric (ints when whole), text
    otherwise: a column must have one type, or the results store's files would not concatenate."""
    cols = sorted({k for r in rows for k in r if k.startswith(CFG)})
    for c in cols:
        vals = [r[c] for r in rows if c in r and not missing(r[c])]
        nums = []
        for v in vals:
            try:
                nums.append(float(v) if not isinstance(v, bool) else math.nan)
            except (TypeError, ValueError):
                nums.append(math.nan)
        numeric = bool(vals) and all(math.isfinite(x) for x in nums)
        whole = numeric and all(x.is_integer() for x in nums)
        for r in rows:
            if c not in r or missing(r[c]):
                continue
            if numeric:
                x = float(r[c])
                r[c] = int(x) if whole else x
            else:
                r[c] = str(r[c])


# ----------------------------------------------------------------------------------------------
# The whole file
# ----------------------------------------------------------------------------------------------


@dataclass
class Rejection:
    row: str  # "line 7", "record 3", "row 3", a JSON path
    reason: str
    column: str | None = None  # the file's column the problem is in, when it is one column's
    field: int | None = None  # its position in the line (CSV, Parquet), from 1

    def text(self) -> str:
        return self.reason + (f" (field {self.field})" if self.field else "")

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason, "column": self.column, "field": self.field}


@dataclass
class ConvertInfo:
    """What convert_file found, beyond the rows: records left out by `filter`, and warnings."""

    filtered: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    source: str
    sweep_id: str
    imported: int = 0  # source records whose rows landed (added, merged or replaced)
    rejected: list[Rejection] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    trials: int = 0
    assets: list[str] = field(default_factory=list)
    hardware: list[str] = field(default_factory=list)
    results_uri: str | None = None
    dry_run: bool = False
    added: int = 0  # result rows new to the store
    merged: int = 0  # result rows that filled missing values of a stored row
    replaced: int = 0  # result rows whose values replaced stored ones (replace=True)
    unchanged: int = 0  # result rows the store already held, value for value
    conflicts: list[Rejection] = field(default_factory=list)  # rows skipped: they contradict the store
    filtered: int = 0  # records the mapping's filter left out
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything in the file is in the store: nothing rejected, nothing contradicting it."""
        return not self.rejected and not self.conflicts

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sweep_id": self.sweep_id, "imported": self.imported,
                "rejected": [r.to_dict() for r in self.rejected],
                "files": self.files, "trials": self.trials, "assets": self.assets, "hardware": self.hardware,
                "results_uri": self.results_uri, "dry_run": self.dry_run,
                "rows": {"added": self.added, "merged": self.merged, "replaced": self.replaced,
                         "unchanged": self.unchanged, "conflicting": len(self.conflicts)},
                "conflicts": [r.to_dict() for r in self.conflicts], "filtered": self.filtered,
                "warnings": self.warnings}

    def lines(self) -> list[str]:
        """What the CLI prints: the count line, what happened to the result rows, then one line per
        skipped or rejected record."""
        n_files = len(self.files)
        out = [f"{self.imported} rows imported, {len(self.rejected)} rejected"
               + (f" (sweep '{self.sweep_id}', {self.trials} trials, {n_files} file{'s' if n_files != 1 else ''} "
                  f"in {self.results_uri})" if self.files else "")]
        counts = [f"{self.added} added", f"{self.merged} merged into stored rows", f"{self.replaced} replaced",
                  f"{self.unchanged} already stored"]
        if self.conflicts:
            counts.append(f"{len(self.conflicts)} skipped: they contradict stored rows")
        out.append(("would be " if self.dry_run else "") + "result rows: " + ", ".join(counts))
        if self.filtered:
            out.append(f"{self.filtered} records left out by the mapping's filter")
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"  {self.source}: {r.row}: {r.text()}" for r in self.rejected]
        out += [f"  {self.source}: {r.row}: {r.text()}" for r in self.conflicts]
        return out


def default_sweep_id(path: str | os.PathLike[str]) -> str:
    return "import-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-") or "file")


def _field(src: Source, col: str | None) -> int | None:
    col = src.aliased.get(col, col) if col is not None else None
    if col is None or not src.positional or col not in src.columns[:src.width]:
        return None
    return src.columns.index(col) + 1


def convert_file(
    path: str | os.PathLike[str],
    mapping: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping,
    catalog: Mapping[str, Any],
    *,
    sweep_id: str | None = None,
    constants: Mapping[str, Any] | None = None,
    info: ConvertInfo | None = None,
) -> tuple[list[dict[str, Any]], list[Rejection], list[list[str]]]:
    """Source file -> (result rows, rejections, the labels of the source records of each result
    row), nothing written.
    Rows carry sweep_id, trial_id (results.ids.trial_id of asset, task, hardware and configuration:
    the id a sweep would give the same trial), repeat and `import_source` ("<file>: line 7").
    `constants` are `--set` values. Raises MappingError when the mapping or the file is unusable as
    a whole; `info` (when given) receives the filtered count and warnings."""
    m = with_constants(load_mapping(mapping), constants)
    info = info if info is not None else ConvertInfo()
    info.warnings.extend(check_mapping(m))
    plan = _Plan.of(m, constants)
    src = read_source(path, m.delimiter, m.json_layout)
    sweep_id = sweep_id or default_sweep_id(path)
    try:
        check_name(sweep_id, "sweep id")
    except StoreError as exc:
        raise MappingError(str(exc)) from None
    if m.aliases:
        apply_aliases(src, m.aliases)
    if m.filename:
        add_filename_columns(src, m.filename)
    rejected = [Rejection(label, reason) for label, reason in src.bad]
    unmatched: dict[str, str] = {}
    for j in m.join:
        for label, reason in apply_join(src, j):
            unmatched.setdefault(label, reason)
    absent = sorted(m.sources() - set(src.columns) - set(m.optional))
    if absent and src.records:
        raise MappingError(_absent_message(src, m, absent))
    good: list[tuple[str, dict[str, Any]]] = []
    for rec in src.records:
        if rec.label in unmatched:
            rejected.append(Rejection(rec.label, unmatched[rec.label]))
            continue
        if any(missing(rec.values.get(c)) or rx.fullmatch(str(rec.values.get(c)).strip()) is None
               for c, rx in plan.filters.items()):
            info.filtered += 1
            continue
        try:
            good.extend((rec.label, _finish(row, m, catalog)) for row in _convert(rec, plan))
        except _Reject as exc:
            rejected.append(Rejection(rec.label, str(exc), exc.column, _field(src, exc.column)))
    _infer_config_types([r for _, r in good])

    rows: list[dict[str, Any]] = []
    first: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
    counter: dict[tuple[Any, ...], int] = {}
    sources: dict[int, list[str]] = {}  # labels of the source records of each result row
    for label, row in good:
        cfg = {k[len(CFG):]: row[k] for k in sorted(row) if k.startswith(CFG) and not missing(row[k])}
        tid = trial_id(row["asset"], row["task"], row["hardware"], cfg)
        given_repeat = row.get("repeat")
        key = (tid, row["scenario"], given_repeat)
        if m.rows == "merge" and key in first:
            # Another part of the same measurement (MLPerf prints power in its own row).
            prev_label, prev = first[key]
            clash = sorted(k for k in row if k in prev and k not in ("import_source",) and prev[k] != row[k]
                           and k not in ("asset", "task", "hardware", "scenario", "status", "error"))
            if clash:
                rejected.append(Rejection(label, f"repeats column(s) {clash} of {prev_label} with other values "
                                                 "(rows: merge joins the parts of one measurement; if the two are "
                                                 "different systems or configurations, map the column that tells "
                                                 "them apart to hardware or to a config column)"))
                continue
            prev.update({k: v for k, v in row.items() if k not in prev})
            prev["import_source"] += f", {label}"
            sources[id(prev)].append(label)
            continue
        if given_repeat is None:
            given_repeat = counter.get(key, 0)
            counter[key] = given_repeat + 1
        elif key in first:
            rejected.append(Rejection(label, f"repeats trial, scenario and repeat {given_repeat} of {first[key][0]}"))
            continue
        row.update(sweep_id=sweep_id, trial_id=tid, repeat=int(given_repeat),
                   import_source=f"{src.path.name}: {label}")
        first[key] = (label, row)
        sources[id(row)] = [label]
        rows.append(row)
    rejected.sort(key=lambda r: label_order(r.row))
    return rows, rejected, [sources[id(r)] for r in rows]


def _absent_message(src: Source, m: ColumnMapping, absent: list[str]) -> str:
    """The columns the mapping reads and the file lacks, then per column the other names tried and the
    file's closest column, and the file's columns (the first 40). When most are missing, the file is
    probably not what the mapping reads: say that instead of guessing close names."""
    own = src.columns[:src.width]
    wrong_file = len(absent) > 5 and len(absent) > len(m.sources() - set(m.optional)) / 2
    notes = []
    for col in absent:
        note = []
        if m.aliases.get(col):
            note.append("nor " + ", ".join(repr(o) for o in m.aliases[col]) + " either")
        close = [] if wrong_file else difflib.get_close_matches(col, own, n=1, cutoff=0.6)
        if close:
            note.append(f"closest column {close[0]!r}")
        if note:
            notes.append(f"{col!r}: {', '.join(note)}")
    shown = ", ".join(own[:40]) + (f", ... ({len(own)} in all)" if len(own) > 40 else "")
    head = (f"{src.path}: the mapping reads column(s) {absent} that the file does not have (columns: {shown})"
            + (f"; {'; '.join(notes)}" if notes else ""))
    if wrong_file:
        return head + ". Most of what the mapping reads is missing: is this the mapping for this file?"
    return head + (". A file of another version of the tool may name them differently: give the other names "
                   "under `aliases`, or list the columns under `optional` when a file may lack them")


def label_order(label: str) -> tuple[int, str]:
    num = re.search(r"\d+", label) if not label.startswith("$") else None
    return (int(num.group()) if num else 0, label)
