"""Import results measured by other tools (MLPerf summaries, CSV/JSON/Parquet tables) as result rows.

A mapping YAML says how a source table becomes rows of results/schema.py:

    columns:   {source column: target column}          unconditional copies
    rules:     [{source, target, unit, when: {col: value}}]  copies that depend on the row (MLPerf's
                                                          Result means samples/s or ms by Scenario)
    constants: {target column: value}                   the same for every row (asset, task, ...)
    units:     {source column: unit}                    converted to the target's unit (us -> ms)
    config:    [source column] | {source column: name}  hyperparameters, stored as cfg_<name>
    values:    {source column: {source value: value}}   rename values before use (system -> catalog)
    extract:   {source column: regex}                   keep the regex's first group ("acc: 76.1")
    rows:      repeats | merge                          what several rows of one trial and scenario
                                                          mean: repeats, or parts of one measurement
    optional:  [source column]                          columns a file may lack (read as empty)
    allow_unknown_hardware: false

Every row is validated (ids present, numbers finite and >= 0, hardware in the catalog) and a bad
row is rejected with its row number as in the file; the good rows are written through
ResultsStore.write, one file per (trial, repeat), under one sweep id (`import-<file stem>`).
docs/matcher.md ("Import") has the details and the shipped mappings are in configs/mappings/.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.errors import BenchmatchError
from cluster.hardware import load_catalog
from cluster.validation import field_errors, one_line
from results.ids import trial_id
from results.schema import BY_NAME, CONFIG_PREFIX
from results.store import ResultsStore, StoreError, check_name

CFG = CONFIG_PREFIX
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline", "train")
_SCENARIO_NAMES = {s.lower(): s for s in SCENARIOS} | {"training": "train"}
# Ids the importer derives itself: a source cannot set them, so that a trial keeps the same id
# whichever tool measured it (results.ids.trial_id of asset, task, hardware, configuration).
DERIVED = ("sweep_id", "trial_id")
METRIC_GROUPS = ("latency", "throughput", "model", "training", "resources", "energy")

# Units a source may state, by dimension, as factors to the dimension's base unit.
_UNITS: dict[str, dict[str, float]] = {
    "time": {"s": 1e3, "sec": 1e3, "seconds": 1e3, "ms": 1.0, "milliseconds": 1.0, "us": 1e-3, "µs": 1e-3,
             "microseconds": 1e-3, "ns": 1e-6, "nanoseconds": 1e-6},  # base: ms
    # One sample per query, as in MLPerf's Server and Offline scenarios.
    "rate": {"samples/s": 1.0, "samples_per_s": 1.0, "qps": 1.0, "queries/s": 1.0, "queries_per_s": 1.0},
    "fraction": {"fraction": 1.0, "percent": 0.01, "%": 0.01},
    "energy": {"j": 1.0, "joules": 1.0, "mj": 1e-3, "millijoules": 1e-3, "kj": 1e3, "wh": 3600.0},
    "power": {"w": 1.0, "watts": 1.0, "mw": 1e-3, "milliwatts": 1e-3, "kw": 1e3},
    "memory": {"mib": 1.0, "gib": 1024.0, "kib": 1 / 1024, "bytes": 1 / 2**20},
}
# Target units (results/schema.py) -> (dimension, factor from the base unit to this unit).
_TARGET_UNITS = {"ms": ("time", 1.0), "s": ("time", 1e-3), "samples/s": ("rate", 1.0), "queries/s": ("rate", 1.0),
                 "fraction": ("fraction", 1.0), "J": ("energy", 1.0), "J/sample": ("energy", 1.0),
                 "W": ("power", 1.0), "MiB": ("memory", 1.0)}


class MappingError(BenchmatchError, ValueError):
    """A mapping file, or the source file it is applied to, is unusable as a whole (nothing is
    written); the message names the file and the field or column."""


# ----------------------------------------------------------------------------------------------
# The mapping
# ----------------------------------------------------------------------------------------------


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    unit: str | None = None
    when: dict[str, str | int | float] = Field(default_factory=dict)


class ColumnMapping(BaseModel):
    """The mapping file (module docstring). Validated; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    columns: dict[str, str] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    config: list[str] | dict[str, str] = Field(default_factory=list)
    values: dict[str, dict[str, str | int | float | None]] = Field(default_factory=dict)
    extract: dict[str, str] = Field(default_factory=dict)
    rows: Literal["repeats", "merge"] = "repeats"
    optional: list[str] = Field(default_factory=list)  # source columns a file may lack (= empty)
    allow_unknown_hardware: bool = False
    delimiter: str = Field(",", min_length=1, max_length=1)

    def all_rules(self) -> list[Rule]:
        """`columns` and `config` as unconditional rules, then the conditional ones."""
        out = [Rule(source=s, target=t, unit=self.units.get(s)) for s, t in self.columns.items()]
        cfg = self.config if isinstance(self.config, dict) else {c: _slug(c) for c in self.config}
        out += [Rule(source=s, target=f"{CFG}{_slug(name)}") for s, name in cfg.items()]
        out += [r if r.unit or r.source not in self.units else r.model_copy(update={"unit": self.units[r.source]})
                for r in self.rules]
        return out

    def sources(self) -> set[str]:
        """Every source column the mapping reads."""
        used = {r.source for r in self.all_rules()} | set(self.units) | set(self.values) | set(self.extract)
        return used | {c for r in self.rules for c in r.when}


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower() or "x"


def _unit_factor(unit: str | None, target: str, where: str) -> float:
    """The factor that turns a value in `unit` into `target`'s unit; 1 without a unit."""
    if unit is None:
        return 1.0
    col = BY_NAME.get(target)
    dim = _TARGET_UNITS.get(col.unit) if col is not None else None
    if dim is None:
        raise MappingError(f"{where}: unit {unit!r} given for '{target}', which takes no unit conversion")
    dimension, to_target = dim
    factors = _UNITS[dimension]
    key = unit.strip().lower() if unit.strip().lower() in factors else unit.strip()
    if key not in factors:
        raise MappingError(f"{where}: unit {unit!r} cannot convert to '{target}' ({col.unit}); "
                           f"known {dimension} units: {', '.join(sorted(factors))}")
    return factors[key] * to_target


def check_mapping(m: ColumnMapping, where: str = "mapping") -> None:
    """Targets exist in the schema, units convert, regexes compile. Raises MappingError."""
    allowed = sorted(n for n in BY_NAME if n not in DERIVED)
    rules = m.all_rules()
    n_plain = len(rules) - len(m.rules)
    for i, r in enumerate(rules):
        what = f"{where}: {'columns' if i < n_plain else f'rules[{i - n_plain}]'} ({r.source} -> {r.target})"
        if r.target in DERIVED:
            raise MappingError(f"{what}: '{r.target}' is derived by the importer and cannot be mapped")
        if not (r.target in BY_NAME or r.target.startswith(CFG)):
            close = difflib.get_close_matches(r.target, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise MappingError(f"{what}: unknown target column '{r.target}'{hint} "
                               f"(targets: the result-row columns of results/schema.py, or cfg_<name>)")
        if r.unit is not None:
            _unit_factor(r.unit, r.target, what)
    for target in m.constants:
        if target in DERIVED or not (target in BY_NAME or target.startswith(CFG)):
            raise MappingError(f"{where}: constants.{target}: not a result-row column that can be set")
    unconditional = {r.target: r.source for r in rules[:n_plain]}
    clash = sorted(set(unconditional) & set(m.constants))
    if clash:
        raise MappingError(f"{where}: constants.{clash[0]} is also mapped from column "
                           f"'{unconditional[clash[0]]}'; keep one")
    for col, pattern in m.extract.items():
        try:
            if re.compile(pattern).groups < 1:
                raise MappingError(f"{where}: extract.{col}: the regex needs one group ( ... ) holding the value")
        except re.error as exc:
            raise MappingError(f"{where}: extract.{col}: not a valid regex ({exc})") from None


def load_mapping(path: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping) -> ColumnMapping:
    """Read and check a mapping YAML (or take a dict / ColumnMapping); errors name the file and key."""
    if isinstance(path, ColumnMapping):
        check_mapping(path)
        return path
    if isinstance(path, Mapping):
        doc, where = dict(path), "mapping"
    else:
        where = str(path)
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise MappingError(f"{where}: mapping file not found") from None
        except yaml.YAMLError as exc:
            raise MappingError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: expected a mapping with keys columns, constants, units, config, ...")
    try:
        m = ColumnMapping.model_validate(doc)
    except ValidationError as exc:
        raise MappingError(f"{where}: " + one_line(field_errors(exc.errors(), ColumnMapping))) from None
    check_mapping(m, where)
    return m


# ----------------------------------------------------------------------------------------------
# Reading the source: (row label, record) pairs, the label as a person finds the row in the file
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    columns: list[str]
    records: list[tuple[str, dict[str, Any]]]  # ("line 7", {column: value})
    bad: list[tuple[str, str]]  # rows unreadable as records: (label, reason)


def read_source(path: str | os.PathLike[str], delimiter: str = ",") -> Source:
    """CSV (.csv, .tsv, .txt), JSON (a list of objects, or {"rows"|"results"|"data": [...]}),
    JSON Lines (.jsonl, .ndjson) or Parquet (.parquet, .pq)."""
    p = Path(path)
    if not p.exists():
        raise MappingError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(p)
    if suffix == ".json":
        return _read_json(p)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    return _read_csv(p, "\t" if suffix == ".tsv" else delimiter)


def _read_csv(p: Path, delimiter: str) -> Source:
    records, bad = [], []
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header: list[str] | None = None
            last = 0
            for row in reader:
                start, last = last + 1, reader.line_num  # a quoted field may span lines
                if not row or all(not c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                    dup = sorted({c for c in header if header.count(c) > 1})
                    if dup or "" in header:
                        raise MappingError(f"{p}: line {start}: header has "
                                           + (f"duplicate column(s) {dup}" if dup else "a column without a name"))
                    continue
                if len(row) != len(header):
                    bad.append((f"line {start}", f"has {len(row)} fields, the header has {len(header)}"))
                    continue
                records.append((f"line {start}", dict(zip(header, row, strict=True))))
    except UnicodeDecodeError as exc:
        raise MappingError(f"{p}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise MappingError(f"{p}: not a readable CSV ({exc})") from None
    if header is None:
        raise MappingError(f"{p}: empty file (no header line)")
    return Source(p, header, records, bad)


def _objects(items: list[Any], label: str) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]], list[str]]:
    records, bad, columns = [], [], {}
    for i, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            bad.append((f"{label} {i}", f"expected an object, got {type(obj).__name__}"))
            continue
        records.append((f"{label} {i}", obj))
        columns.update(dict.fromkeys(obj))
    return records, bad, list(columns)


def _read_json(p: Path) -> Source:
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise MappingError(f"{p}: not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        key = next((k for k in ("rows", "results", "data") if isinstance(doc.get(k), list)), None)
        if key is None:
            raise MappingError(f"{p}: expected a list of objects, or an object with a 'rows', 'results' or "
                               "'data' list")
        doc = doc[key]
    if not isinstance(doc, list):
        raise MappingError(f"{p}: expected a list of objects, got {type(doc).__name__}")
    records, bad, columns = _objects(doc, "record")
    return Source(p, columns, records, bad)


def _read_jsonl(p: Path) -> Source:
    records, bad, columns = [], [], {}
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((f"line {n}", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            bad.append((f"line {n}", f"expected an object, got {type(obj).__name__}"))
            continue
        records.append((f"line {n}", obj))
        columns.update(dict.fromkeys(obj))
    return Source(p, list(columns), records, bad)


def _read_parquet(p: Path) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MappingError(f"{p}: not a readable Parquet file ({exc})") from None
    records, bad, columns = _objects(table.to_pylist(), "row")
    return Source(p, list(table.column_names), records, bad)


# ----------------------------------------------------------------------------------------------
# Converting one record
# ----------------------------------------------------------------------------------------------


class _Reject(Exception):
    """A row-level problem: the row is skipped, the message says why."""


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def _number(v: Any, what: str, *, integer: bool = False) -> float | int:
    if isinstance(v, bool):
        raise _Reject(f"{what} must be a number, got {v!r}")
    if isinstance(v, int | float):
        x = float(v)
    else:
        try:
            x = float(str(v).strip())
        except ValueError:
            raise _Reject(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise _Reject(f"{what} must be a finite number, got {v!r} (leave the cell empty when unknown)")
    if x < 0:
        raise _Reject(f"{what} must be >= 0, got {v!r}")
    if integer:
        if not x.is_integer():
            raise _Reject(f"{what} must be a whole number, got {v!r}")
        return int(x)
    return x


def _when_matches(rule: Rule, rec: Mapping[str, Any]) -> bool:
    for col, expected in rule.when.items():
        got = rec.get(col)
        if _missing(got) or str(got).strip() != str(expected).strip():
            return False
    return True


def _convert(rec: dict[str, Any], m: ColumnMapping, rules: list[Rule], factors: list[float],
             extract: dict[str, re.Pattern[str]]) -> dict[str, Any]:
    """One source record -> one partial result row (targets only; ids are added later)."""
    rec = dict(rec)
    for col, table in m.values.items():
        raw = rec.get(col)
        if not _missing(raw) and str(raw).strip() in table:
            rec[col] = table[str(raw).strip()]
    for col, rx in extract.items():
        raw = rec.get(col)
        if _missing(raw):
            continue
        hit = rx.search(str(raw))
        if hit is None:
            raise _Reject(f"column '{col}' = {raw!r} does not match extract pattern {rx.pattern!r}")
        rec[col] = hit.group(1)
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    unread = {r.source for r in rules if r.when} - {r.source for r in rules if not r.when}
    for rule, factor in zip(rules, factors, strict=True):
        if not _when_matches(rule, rec):
            continue
        unread.discard(rule.source)
        raw = rec.get(rule.source)
        if isinstance(raw, dict | list):
            raise _Reject(f"column '{rule.source}' holds a nested value; map a flat column")
        if _missing(raw):
            continue
        if rule.target in out:
            raise _Reject(f"columns '{origin[rule.target]}' and '{rule.source}' both give '{rule.target}'")
        col = BY_NAME.get(rule.target)
        what = f"column '{rule.source}'" + (f" (-> {rule.target})" if rule.target != rule.source else "")
        if col is not None and col.dtype in ("float", "int"):
            value: Any = _number(raw, what, integer=col.dtype == "int" and factor == 1.0)
            value = value * factor if factor != 1.0 else value
        elif col is not None and col.dtype == "bool":
            value = str(raw).strip().lower() in ("1", "true", "yes")
        elif rule.target.startswith(CFG):
            value = raw if isinstance(raw, int | float) and not isinstance(raw, bool) else str(raw).strip()
        else:
            value = str(raw).strip()
        out[rule.target] = value
        origin[rule.target] = rule.source
    for col in sorted(unread):
        if not _missing(rec.get(col)):
            # A value we do not know how to read (MLPerf's Tokens/s) is not silently dropped.
            conds = sorted({c for r in rules if r.source == col for c in r.when})
            seen = ", ".join(f"{c}={rec.get(c)!r}" for c in conds)
            raise _Reject(f"column '{col}' = {rec[col]!r} matches no rule of the mapping ({seen})")
    for target, value in m.constants.items():
        out[target] = value
    return out


def _finish(row: dict[str, Any], m: ColumnMapping, catalog: Mapping[str, Any]) -> dict[str, Any]:
    """Ids, scenario and task, and the hardware checked against the catalog."""
    for key in ("asset", "hardware"):
        if _missing(row.get(key)):
            raise _Reject(f"'{key}' is empty; map a column to it or set constants.{key}")
        row[key] = str(row[key]).strip()
    scen = row.get("scenario")
    task = str(row.get("task", "")).strip().lower() or None
    if _missing(scen):
        if task != "train":
            raise _Reject("'scenario' is empty; map a column to it or set constants.scenario "
                          f"(one of {', '.join(SCENARIOS)})")
        scen = "train"
    name = _SCENARIO_NAMES.get(re.sub(r"[\s_-]+", "", str(scen)).lower())
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
    if row["status"] == "ok" and not any(
            k in row and BY_NAME[k].group in METRIC_GROUPS for k in row if k in BY_NAME):
        raise _Reject("no metric value: every mapped metric column is empty for this row")
    return row


def _infer_config_types(rows: list[dict[str, Any]]) -> None:
    """Config columns as numbers when every value of the column is numeric (ints when whole), text
    otherwise: a column must have one type, or the results store's files would not concatenate."""
    cols = sorted({k for r in rows for k in r if k.startswith(CFG)})
    for c in cols:
        vals = [r[c] for r in rows if c in r and not _missing(r[c])]
        nums = []
        for v in vals:
            try:
                nums.append(float(v) if not isinstance(v, bool) else math.nan)
            except (TypeError, ValueError):
                nums.append(math.nan)
        numeric = bool(vals) and all(math.isfinite(x) for x in nums)
        whole = numeric and all(x.is_integer() for x in nums)
        for r in rows:
            if c not in r or _missing(r[c]):
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
    row: str  # "line 7", "record 3", "row 3"
    reason: str


@dataclass
class ImportReport:
    source: str
    sweep_id: str
    imported: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    trials: int = 0
    assets: list[str] = field(default_factory=list)
    hardware: list[str] = field(default_factory=list)
    results_uri: str | None = None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sweep_id": self.sweep_id, "imported": self.imported,
                "rejected": [{"row": r.row, "reason": r.reason} for r in self.rejected],
                "files": self.files, "trials": self.trials, "assets": self.assets, "hardware": self.hardware,
                "results_uri": self.results_uri, "dry_run": self.dry_run}

    def lines(self) -> list[str]:
        """What the CLI prints: the count line, then one line per rejected row."""
        out = [f"{self.imported} rows imported, {len(self.rejected)} rejected"
               + (f" (sweep '{self.sweep_id}', {self.trials} trials, {len(self.files)} files in {self.results_uri})"
                  if self.files else "")]
        out += [f"  {self.source}: {r.row}: {r.reason}" for r in self.rejected]
        return out


def default_sweep_id(path: str | os.PathLike[str]) -> str:
    return "import-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-") or "file")


def convert_file(
    path: str | os.PathLike[str],
    mapping: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping,
    catalog: Mapping[str, Any],
    *,
    sweep_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[Rejection], list[int]]:
    """Source file -> (result rows, rejections, source rows per result row), nothing written. Rows carry sweep_id, trial_id
    (results.ids.trial_id of asset, task, hardware and configuration: the id a sweep would give
    the same trial), repeat and `import_source` ("<file>: line 7"). Raises MappingError when the
    mapping or the file is unusable as a whole."""
    m = load_mapping(mapping)
    src = read_source(path, m.delimiter)
    sweep_id = sweep_id or default_sweep_id(path)
    try:
        check_name(sweep_id, "sweep id")
    except StoreError as exc:
        raise MappingError(str(exc)) from None
    absent = sorted(m.sources() - set(src.columns) - set(m.optional))
    if absent and src.records:
        raise MappingError(f"{src.path}: the mapping reads column(s) {absent} that the file does not have "
                           f"(columns: {', '.join(src.columns)})")
    rules = m.all_rules()
    factors = [_unit_factor(r.unit, r.target, "mapping") for r in rules]
    extract = {c: re.compile(p) for c, p in m.extract.items()}
    rejected = [Rejection(label, reason) for label, reason in src.bad]
    good: list[tuple[str, dict[str, Any]]] = []
    for label, rec in src.records:
        try:
            good.append((label, _finish(_convert(rec, m, rules, factors, extract), m, catalog)))
        except _Reject as exc:
            rejected.append(Rejection(label, str(exc)))
    _infer_config_types([r for _, r in good])

    rows: list[dict[str, Any]] = []
    first: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
    counter: dict[tuple[Any, ...], int] = {}
    parts: dict[int, int] = {}  # source rows merged into each result row
    for label, row in good:
        cfg = {k[len(CFG):]: row[k] for k in sorted(row) if k.startswith(CFG) and not _missing(row[k])}
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
                                                 "(rows: merge joins the parts of one measurement)"))
                continue
            prev.update({k: v for k, v in row.items() if k not in prev})
            prev["import_source"] += f", {label}"
            parts[id(prev)] += 1
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
        parts[id(row)] = 1
        rows.append(row)
    rejected.sort(key=lambda r: _label_order(r.row))
    return rows, rejected, [parts[id(r)] for r in rows]


def _label_order(label: str) -> tuple[int, str]:
    num = re.search(r"\d+", label)
    return (int(num.group()) if num else 0, label)


def import_file(
    path: str | os.PathLike[str],
    mapping: str | os.PathLike[str] | Mapping[str, Any] | ColumnMapping,
    *,
    results_uri: str | os.PathLike[str],
    catalog: Mapping[str, Any] | None = None,
    catalog_path: str | os.PathLike[str] | None = None,
    sweep_id: str | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Convert `path` with `mapping` and write the good rows to the results store at `results_uri`,
    one file per (trial, repeat) through ResultsStore.write (atomic). Rejected rows are reported,
    never written; rows already in the store are never touched except the files of this sweep id's
    same (trial, repeat), which a re-import replaces."""
    if catalog is None:
        catalog = load_catalog(catalog_path)
    sweep_id = sweep_id or default_sweep_id(path)
    rows, rejected, parts = convert_file(path, mapping, catalog, sweep_id=sweep_id)
    report = ImportReport(source=str(path), sweep_id=sweep_id, rejected=rejected,
                          results_uri=str(results_uri), dry_run=dry_run)
    groups: dict[tuple[str, int], list[tuple[dict[str, Any], int]]] = {}
    for row, n in zip(rows, parts, strict=True):
        groups.setdefault((row["trial_id"], row["repeat"]), []).append((row, n))
    store = None if dry_run else ResultsStore(results_uri)
    written: list[dict[str, Any]] = []
    for group in groups.values():
        if store is not None:
            try:
                report.files.append(store.write([r for r, _ in group]))
            except StoreError as exc:  # our checks should have caught it; still name the rows
                for r, _ in group:
                    report.rejected.append(Rejection(r["import_source"].split(": ", 1)[1], str(exc)))
                continue
        written.extend(r for r, _ in group)
        report.imported += sum(n for _, n in group)
    report.rejected.sort(key=lambda r: _label_order(r.row))
    report.trials = len({r["trial_id"] for r in written})
    report.assets = sorted({r["asset"] for r in written})
    report.hardware = sorted({r["hardware"] for r in written})
    return report
