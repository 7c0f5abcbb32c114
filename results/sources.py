"""Reading the file an import is applied to: CSV/TSV, JSON (nested records flattened by a layout),
JSON lines and Parquet, as records labelled as a person finds them in the file (`line 7`,
`records[3]`, a JSON path), plus columns taken from the file's name and joined from a second file."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results.mapping import Join, JsonLayout, MappingError, missing

# ----------------------------------------------------------------------------------------------
# Reading the source: records labelled as a person finds them in the file
# ----------------------------------------------------------------------------------------------


@dataclass
class Record:
    label: str  # "line 7", "record 3", "row 3", '$["p100"]["ResNet-50"]["null"]'
    values: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)  # column -> where its value came from, if not here


@dataclass
class Source:
    path: Path
    columns: list[str]
    records: list[Record]
    bad: list[tuple[str, str]]  # rows unreadable as records: (label, reason)
    positional: bool = False  # columns have positions (CSV, Parquet): errors give the field number
    width: int = -1  # columns of the file itself; joined and file-name columns come after
    aliased: dict[str, str] = field(default_factory=dict)  # column the mapping reads -> the file's name for it

    def __post_init__(self) -> None:
        if self.width < 0:
            self.width = len(self.columns)


def read_source(path: str | os.PathLike[str], delimiter: str = ",", layout: JsonLayout | None = None) -> Source:
    """CSV (.csv, .tsv, .txt), JSON (a list of objects, or {"rows"|"results"|"data": [...]}, or
    nested objects read through `layout`, or one object as one record: `layout.single`), JSON Lines
    (.jsonl, .ndjson) or Parquet (.parquet, .pq). Nested objects inside a record become dotted
    columns (`metrics.p99`)."""
    p = Path(path)
    if not p.exists():
        raise MappingError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(p)
    if suffix == ".json":
        return _read_json(p, layout)
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
                records.append(Record(f"line {start}", dict(zip(header, row, strict=True))))
    except UnicodeDecodeError as exc:
        raise MappingError(f"{p}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise MappingError(f"{p}: not a readable CSV ({exc})") from None
    if header is None:
        raise MappingError(f"{p}: empty file (no header line)")
    return Source(p, header, records, bad, positional=True)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{name}."))
        else:
            out[name] = v
    return out


def _objects(items: list[Any], label: str) -> tuple[list[Record], list[tuple[str, str]], list[str]]:
    records, bad, columns = [], [], {}
    for i, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            bad.append((f"{label} {i}", f"expected an object, got {type(obj).__name__}"))
            continue
        flat = _flatten(obj)
        records.append(Record(f"{label} {i}", flat))
        columns.update(dict.fromkeys(flat))
    return records, bad, list(columns)


def _json_path(keys: Iterable[Any]) -> str:
    return "$" + "".join(f"[{json.dumps(k, ensure_ascii=False)}]" for k in keys)


def _walk(node: Any, levels: list[str], keys: list[str]) -> Iterator[tuple[list[str], Any]]:
    if len(keys) == len(levels) or not isinstance(node, dict):
        yield keys, node
        return
    for k, v in node.items():
        yield from _walk(v, levels, [*keys, str(k)])


def _concatenated(text: str) -> list[tuple[int, Any]] | None:
    """Several JSON documents one after another (`vllm bench serve --append-result` appends one object
    per run to the same .json file): [(line the document starts on, document)], or None when the text
    is not that."""
    decoder, docs, i, line, counted = json.JSONDecoder(), [], 0, 1, 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            break
        try:
            doc, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        line += text.count("\n", counted, i)
        docs.append((line, doc))
        line += text.count("\n", i, end)
        i = counted = end
    return docs if len(docs) > 1 else None


def _read_json(p: Path, layout: JsonLayout | None) -> Source:
    text = p.read_text(encoding="utf-8-sig")
    try:
        docs: list[tuple[int | None, Any]] = [(None, json.loads(text))]
    except json.JSONDecodeError as exc:
        found = _concatenated(text)
        if found is None:
            raise MappingError(f"{p}: not valid JSON: {exc}") from None
        docs = list(found)
    layout = layout or JsonLayout()
    records, bad, columns = [], [], {}
    for line, doc in docs:
        cols, recs, wrong = _json_records(p, doc, layout, f"line {line}" if line is not None else "")
        records += recs
        bad += wrong
        columns.update(dict.fromkeys(cols))
    return Source(p, list(columns), records, bad)


def _json_records(p: Path, doc: Any, layout: JsonLayout,
                  at: str) -> tuple[list[str], list[Record], list[tuple[str, str]]]:
    """The records of one JSON document; `at` ("line 3") names the document in a file of several."""

    def where(label: str) -> str:
        if not at:
            return label
        return at if label == "$" else f"{at}: {label}"

    name = f"{p}: {at}" if at else str(p)
    trail: list[str] = []
    for key in (layout.records or "").split(".") if layout.records else ():
        if not isinstance(doc, dict) or key not in doc:
            raise MappingError(f"{name}: json.records {layout.records!r}: no key {key!r} at {_json_path(trail)}")
        doc, trail = doc[key], [*trail, key]
    if layout.single:
        if not isinstance(doc, dict):
            raise MappingError(f"{name}: json.single: expected an object at {_json_path(trail)}, "
                               f"got {type(doc).__name__}")
        flat = _flatten(doc)
        return list(flat), [Record(where(_json_path(trail)), flat)], []
    if layout.levels:
        if not isinstance(doc, dict):
            raise MappingError(f"{name}: json.levels {layout.levels}: expected an object at {_json_path(trail)}, "
                               f"got {type(doc).__name__}")
        records, bad, columns = [], [], dict.fromkeys(layout.levels)
        for keys, leaf in _walk(doc, layout.levels, []):
            label = where(_json_path([*trail, *keys]))
            if len(keys) < len(layout.levels):
                bad.append((label, f"expected an object for level '{layout.levels[len(keys)]}', "
                                   f"got {type(leaf).__name__}"))
                continue
            row = _flatten(leaf) if isinstance(leaf, dict) else {layout.value: leaf}
            clash = sorted(set(row) & set(layout.levels))
            if clash:
                bad.append((label, f"holds key(s) {clash} that json.levels also names; rename a level"))
                continue
            row = dict(zip(layout.levels, keys, strict=True)) | row
            records.append(Record(label, row))
            columns.update(dict.fromkeys(row))
        return list(columns), records, bad
    if isinstance(doc, dict):
        key = next((k for k in ("rows", "results", "data") if isinstance(doc.get(k), list)), None)
        if key is None:
            if at:  # one object per run, appended: each is a record
                flat = _flatten(doc)
                return list(flat), [Record(at, flat)], []
            raise MappingError(f"{p}: expected a list of objects, or an object with a 'rows', 'results' or "
                               "'data' list (or say where the records are: json: {records: a.b, levels: [...]})")
        doc = doc[key]
    if not isinstance(doc, list):
        raise MappingError(f"{name}: expected a list of objects, got {type(doc).__name__}")
    records, bad, columns = _objects(doc, f"{at}: record" if at else "record")
    return columns, records, bad


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
        flat = _flatten(obj)
        records.append(Record(f"line {n}", flat))
        columns.update(dict.fromkeys(flat))
    return Source(p, list(columns), records, bad)


def _read_parquet(p: Path) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MappingError(f"{p}: not a readable Parquet file ({exc})") from None
    records, bad, columns = _objects(table.to_pylist(), "row")
    return Source(p, list(dict.fromkeys([*table.column_names, *columns])), records, bad, positional=True)


def apply_aliases(src: Source, aliases: Mapping[str, list[str]]) -> None:
    """Columns another version of the tool names differently: a record that lacks the mapping's name
    for a column (or leaves it empty) takes the value of the first other name it holds."""
    for name, others in aliases.items():
        present = [o for o in others if o in src.columns]
        if not present:
            continue
        for rec in src.records:
            if not missing(rec.values.get(name)):
                continue
            for other in present:
                value = rec.values.get(other)
                if not missing(value):
                    rec.values[name] = value
                    if other not in rec.origins:
                        rec.origins[name] = f"named '{other}' in this file"
                    break
        if name not in src.columns:
            src.columns.append(name)
            src.aliased[name] = present[0]


def add_filename_columns(src: Source, pattern: str) -> None:
    hit = re.search(pattern, src.path.name)
    if hit is None:
        raise MappingError(f"{src.path}: the file name {src.path.name!r} does not match the mapping's filename "
                           f"pattern {pattern!r}; rename the file or give the values with --set TARGET=VALUE")
    groups = {k: v for k, v in hit.groupdict().items() if v is not None}
    clash = sorted(set(groups) & set(src.columns))
    if clash:
        raise MappingError(f"{src.path}: filename group(s) {clash} are also columns of the file; rename the group")
    for rec in src.records:
        rec.values.update(groups)
        rec.origins.update(dict.fromkeys(groups, f"file name {src.path.name!r}"))
    src.columns.extend(groups)


def _join_path(src: Source, name: str) -> Path:
    p = Path(name)
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [src.path.parent / p, Path.cwd() / p]
    for c in candidates:
        if c.exists():
            return c
    raise MappingError(f"{src.path}: join file {name!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def _key(rec: Mapping[str, Any], cols: list[str]) -> tuple[str, ...] | None:
    vals = [rec.get(c) for c in cols]
    if any(missing(v) for v in vals):
        return None
    return tuple(str(v).strip() for v in vals)


def apply_join(src: Source, j: Join) -> list[tuple[str, str]]:
    """Add the joined columns to every record; returns the records left without a match (label, reason)."""
    path = _join_path(src, j.file)
    other = read_source(path)
    if other.bad:
        label, reason = other.bad[0]
        raise MappingError(f"{path}: {label}: {reason} (a join file must be clean: it applies to every record)")
    left = [a for a, _ in j.keys()]
    right = [b for _, b in j.keys()]
    missing = sorted(set(right) - set(other.columns))
    if missing:
        raise MappingError(f"{path}: join key column(s) {missing} not in the file (columns: {', '.join(other.columns)})")
    bring = j.columns if j.columns is not None else [c for c in other.columns if c not in right]
    absent = sorted(set(bring) - set(other.columns))
    if absent:
        raise MappingError(f"{path}: join.columns {absent} not in the file (columns: {', '.join(other.columns)})")
    names = {c: f"{j.prefix}{c}" for c in bring}
    clash = sorted(set(names.values()) & set(src.columns))
    if clash:
        raise MappingError(f"{src.path}: joined column(s) {clash} from {path.name} are also columns here; "
                           "give the join a prefix")
    index: dict[tuple[str, ...], Record] = {}
    for rec in other.records:
        key = _key(rec.values, right)
        if key is None:
            continue
        if key in index:
            raise MappingError(f"{path}: {rec.label} repeats the key {dict(zip(right, key, strict=True))} of "
                               f"{index[key].label}; a join needs one row per key")
        index[key] = rec
    unmatched = []
    for rec in src.records:
        key = _key(rec.values, left)
        hit = index.get(key) if key is not None else None
        if hit is None:
            if j.required:
                shown = ", ".join(f"{a} = {rec.values.get(a)!r}" for a in left)
                unmatched.append((rec.label, f"no row of {path.name} has the join key ({shown}); add it there "
                                             "or set `required: false` on the join"))
            continue
        for c, name in names.items():
            rec.values[name] = hit.values.get(c)
            rec.origins[name] = f"{path.name} {hit.label}, column '{c}'"
    src.columns.extend(names.values())
    return unmatched
