"""The results store: a Parquet dataset of result rows, written atomically, read de-duplicated.

Layout, under `<uri>/<sweep_id>/`:

* `<trial_id>-r<repeat>.parquet`: one (trial, repeat) of a sweep (`write`), rewritten in place when
  the repeat is measured again, so a resumed sweep finds what is done from file names alone;
* `part-<order>-<id>.parquet`: many (trial, repeat)s in one file (`write_part`): an import, or the
  result of `compact`, which folds a sweep's files into one so that reading a store of tens of
  thousands of rows opens a few files instead of thousands.

A file is first written under a hidden temporary name in the same folder and then renamed, so a
reader never sees a partial file; readers skip hidden names. Rows are de-duplicated on (sweep,
trial, repeat, scenario): the newest write wins (a part's order is in its name, a trial file's is
its modification time; `start_time` breaks ties inside one file), so a retried or resumed trial, a
merged import or a compacted sweep never counts twice. Local folders by default; `s3://` / `gs://`
URIs go through pyarrow filesystems.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.errors import BenchmatchError
from results.schema import BY_NAME, COLUMNS, KEY_COLUMNS

_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


class StoreError(BenchmatchError, RuntimeError):
    """A results file or row is unusable; the message names the file or the field."""


# Statuses of a (trial, repeat) that is settled: measured (`ok`), or a configuration that cannot run
# there (`skipped`, e.g. an engine without that precision). `--resume` and Tune retries run again
# only what is not settled (`failed`): a skipped one would be skipped again, forever.
SETTLED_STATUSES = ("ok", "skipped")

NAME_RULE = "1-128 characters of letters, digits, '.', '_', '=' or '-', not starting with '.'"


def check_name(value: str, what: str) -> str:
    """A name that becomes one path component of the store (a sweep id, a trial id), or a StoreError.

    One rule wherever a name becomes a path: `..`, `.`, a leading dot (hidden, so never read back),
    a separator or an empty name would write outside the sweep's folder or lose the file."""
    text = str(value)
    if not text or len(text) > 128 or text.startswith(".") or _SAFE.search(text):
        raise StoreError(f"{what} {text!r} is not a valid name: use {NAME_RULE}")
    return text


def _safe(part: str) -> str:
    """A path component for an id that may carry other characters (hardware names of imports):
    those become '_'; what would still leave the folder or hide the file is refused."""
    return check_name(_SAFE.sub("_", str(part)), "name")


def _coerce(rows: list[dict[str, Any]]) -> pa.Table:
    """Give known columns their documented type so files from different trials concatenate."""
    df = pd.DataFrame(rows)
    for name in df.columns:
        col = BY_NAME.get(name)
        if col is None:
            continue
        if col.dtype == "float":
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
        elif col.dtype == "int":
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("Int64")
        elif col.dtype == "str":
            df[name] = df[name].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        elif col.dtype == "bool":
            df[name] = df[name].astype("boolean")
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        mixed = [c for c in df.columns if df[c].dtype == object
                 and len({type(v) for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))}) > 1]
        raise StoreError(f"column(s) {mixed or '?'} hold values of several types (numbers and text); give each "
                         f"column one type ({exc})") from None


def validate_row(row: Mapping[str, Any], where: str = "row") -> None:
    """Reject rows that would poison the matcher: missing keys, negative or infinite metrics."""
    for key in KEY_COLUMNS + ("asset", "hardware"):
        if row.get(key) in (None, ""):
            raise StoreError(f"{where}: column '{key}' is required")
    for name, value in row.items():
        col = BY_NAME.get(name)
        if col is None or col.dtype != "float" or value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{where}: column '{name}' must be a number, got {value!r}") from exc
        if math.isinf(v) or v < 0:
            raise StoreError(f"{where}: column '{name}' must be finite and >= 0, got {value!r} (use null when unknown)")


MAX_VALUE = 1e18  # beyond any measurement in any schema unit (FLOPs per sample included): a corrupt value


def poisoned(table: pa.Table) -> str | None:
    """What makes a readable results file unusable (None: nothing): a key column empty, a metric
    that is text, negative or infinite, a negative repeat. Such values would silently steer models
    and answers, so a file holding one is named and skipped as a corrupt one is."""
    names = set(table.column_names)
    for key in (*KEY_COLUMNS, "asset", "hardware"):
        if key not in names:
            continue
        col = table.column(key)
        empty = pc.is_null(col) if not pa.types.is_string(col.type) else pc.or_(pc.is_null(col), pc.equal(col, ""))
        if pc.any(empty).as_py():
            return f"column '{key}' is empty in row {_first(empty) + 1}"
    for spec in COLUMNS:
        if spec.name not in names or spec.dtype not in ("float", "int"):
            continue
        col = table.column(spec.name)
        if pa.types.is_null(col.type):
            continue
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            return f"column '{spec.name}' holds {col.type} values, not numbers"
        values = pc.cast(col, pa.float64())
        bad = pc.or_(pc.or_(pc.is_inf(values), pc.less(values, 0)), pc.greater(values, MAX_VALUE))
        if pc.any(bad).as_py():
            i = _first(bad)
            return (f"column '{spec.name}' is {values[i].as_py()} in row {i + 1} "
                    f"(must be finite, >= 0 and <= {MAX_VALUE:g})")
    return None


def _first(mask: pa.ChunkedArray) -> int:
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


_PART = re.compile(r"part-(\d{1,20})-[0-9a-f]{8,32}\.parquet")
_TRIAL = re.compile(r"(.+)-r(\d+)\.parquet")
_ORDER = "__store_order"  # a read-time column: the write order of the file a row came from
_READ_TRIES = 3  # a file compacted away between listing and reading is found again in its part


@dataclass(frozen=True)
class StoredFile:
    """One visible results file and what its name and listing say about it."""

    path: str
    size: int | None
    mtime_ns: int | None
    order: int  # newest write wins on read: a part's number, else the modification time
    trial: tuple[str, int] | None  # (trial_id, repeat) of a per-trial file; None for a part


@dataclass
class Compaction:
    """What `compact` did to one sweep."""

    sweep_id: str
    files_in: int  # files folded into the new part
    rows: int  # rows the new part holds (de-duplicated)
    path: str | None  # the new part; None when the sweep was left as it was
    kept: list[str]  # inputs left in place: unreadable, or written again while compacting
    note: str = ""


class ResultsStore:
    """Parquet results at `uri` (a folder path, `file://`, `s3://` or `gs://`)."""

    def __init__(self, uri: str | os.PathLike[str]):
        uri = str(uri)
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, self.root, self.local = pafs.LocalFileSystem(), str(Path(uri).resolve()), True
        self.uri = uri

    # -- writing ---------------------------------------------------------------------------------

    def path_for(self, sweep_id: str, trial_id: str, repeat: int) -> str:
        return f"{self.root}/{_safe(sweep_id)}/{_safe(trial_id)}-r{int(repeat)}.parquet"

    def _put(self, table: pa.Table, final: str) -> str:
        """Write `table` to `final` atomically: a hidden temporary file in the same folder, renamed."""
        folder, name = final.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        self.fs.create_dir(folder, recursive=True)
        if self.local:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # atomic on POSIX: readers see the old file or the new one
        else:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            self.fs.move(tmp, final)
        return final

    def write(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """Write the rows of one (sweep, trial, repeat) as one file, atomically. Returns its path."""
        rows = [dict(r) for r in rows]
        if not rows:
            raise StoreError("write: no rows given")
        for i, row in enumerate(rows):
            validate_row(row, f"row {i}")
        ids = {(r["sweep_id"], r["trial_id"], int(r["repeat"])) for r in rows}
        if len(ids) != 1:
            raise StoreError(f"write: one file holds one (sweep, trial, repeat), got {sorted(ids)}")
        sweep_id, trial_id, repeat = ids.pop()
        return self._put(_coerce(rows), self.path_for(sweep_id, trial_id, repeat))

    def write_part(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """Write rows of one sweep, any number of (trial, repeat)s, as one part file, atomically.

        The part is ordered after every file the sweep holds, so its rows win over earlier rows of
        the same (trial, repeat, scenario) on read. Returns its path."""
        rows = [dict(r) for r in rows]
        if not rows:
            raise StoreError("write_part: no rows given")
        seen: dict[tuple[Any, ...], int] = {}
        for i, row in enumerate(rows):
            validate_row(row, f"row {i}")
            key = (row["trial_id"], int(row["repeat"]), row["scenario"])
            if key in seen:
                raise StoreError(f"write_part: rows {seen[key]} and {i} are both (trial {key[0]!r}, repeat {key[1]}, "
                                 f"scenario {key[2]!r}); one row per key")
            seen[key] = i
        sweeps = {str(r["sweep_id"]) for r in rows}
        if len(sweeps) != 1:
            raise StoreError(f"write_part: one part holds one sweep, got {sorted(sweeps)}")
        sweep_id = sweeps.pop()
        order = max([time.time_ns(), *(f.order + 1 for f in self._listing(sweep_id))])
        return self._put(_coerce(rows), self._part_path(sweep_id, order))

    def _part_path(self, sweep_id: str, order: int) -> str:
        return f"{self.root}/{_safe(sweep_id)}/part-{int(order):020d}-{uuid.uuid4().hex[:16]}.parquet"

    # -- listing ---------------------------------------------------------------------------------

    def _listing(self, sweep_id: str | None = None) -> list[StoredFile]:
        """Every visible results file (of one sweep), in one listing call; it reads no file."""
        base = f"{self.root}/{_safe(sweep_id)}" if sweep_id else self.root
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".parquet") or name.startswith("."):
                continue
            part = _PART.fullmatch(name)
            trial = None if part else _TRIAL.fullmatch(name)
            mtime = info.mtime_ns
            order = int(part.group(1)) if part else (mtime or 0)
            out.append(StoredFile(info.path, info.size, mtime, order,
                                  (trial.group(1), int(trial.group(2))) if trial else None))
        return sorted(out, key=lambda f: f.path)

    def files(self, sweep_id: str | None = None) -> list[str]:
        return [f.path for f in self._listing(sweep_id)]

    def sweeps(self) -> list[str]:
        """The sweep folders of the store."""
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            return []
        return sorted(i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.root))
                      if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))

    def fingerprint(self) -> tuple[tuple[str, int | None, int | None], ...]:
        """(path, size, mtime) of every results file, in one listing call: what changes when the
        data changes (a file rewritten under the same name changes size or mtime). Cheap enough
        to take every few seconds; it reads no file."""
        return tuple((f.path, f.size, f.mtime_ns) for f in self._listing())

    def remove_orphans(self, older_than_s: float = 600.0) -> list[str]:
        """Delete temp files of writes that never finished (a killed writer), older than `older_than_s`.

        A write takes milliseconds, so an old temp file belongs to no running writer; a young one may
        (another sweep writing now) and is left alone."""
        base = self.root
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        now = time.time()
        removed = []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type != pafs.FileType.File or not (info.base_name.startswith(".") and info.base_name.endswith(".tmp")):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else now
            if now - mtime > older_than_s:
                try:
                    self.fs.delete_file(info.path)
                    removed.append(info.path)
                except OSError:
                    pass
        return removed

    # -- reading ---------------------------------------------------------------------------------

    def _table(self, path: str, columns: Sequence[str] | None) -> pa.Table:
        with self.fs.open_input_file(path) as fh:
            if columns is None:
                return pq.read_table(fh, use_threads=False)
            pf = pq.ParquetFile(fh)
            have = set(pf.schema_arrow.names)
            return pf.read(columns=[c for c in columns if c in have], use_threads=False)

    def _frame(self, files: Sequence[StoredFile], columns: Sequence[str] | None, on_corrupt: str,
               sweep_id: str | None = None) -> tuple[pd.DataFrame, list[str]]:
        """The rows of `files`, newest write last, de-duplicated; and the paths that were unreadable.
        A file that vanished since the listing (compacted into a part) sends us to list again."""
        if columns is not None:
            columns = list(dict.fromkeys([*KEY_COLUMNS, "start_time", *columns]))
        for attempt in range(_READ_TRIES):
            tables, orders, bad, gone = [], [], [], False
            for f in files:
                try:
                    t = self._table(f.path, columns)
                except FileNotFoundError:
                    gone = True
                    break
                except (pa.ArrowInvalid, OSError) as exc:
                    problem = f"is unreadable ({exc})"
                else:
                    problem = poisoned(t)
                    problem = f"holds values no measurement has: {problem}" if problem else None
                if problem:
                    msg = f"results file {f.path} {problem}; it was skipped: move or delete it"
                    if on_corrupt == "raise":
                        raise StoreError(msg)
                    if on_corrupt == "warn":
                        warnings.warn(msg, stacklevel=3)
                    bad.append(f.path)
                    continue
                if t.num_rows:
                    tables.append(t)
                    orders.append(f.order)
            if not gone:
                break
            if attempt == _READ_TRIES - 1:
                raise StoreError(f"results files of {self.uri} keep disappearing while read (is a compaction "
                                 "running in a loop?); try again")
            files = self._listing(sweep_id)
        if not tables:
            return pd.DataFrame(columns=list(KEY_COLUMNS)), bad
        try:
            df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # One column holds numbers in one file and text in another (a cfg_ column of two
            # imports): pandas keeps both as objects, as the store always did.
            df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        df[_ORDER] = np.repeat(np.asarray(orders, dtype=np.int64), [t.num_rows for t in tables])
        by = [_ORDER, "start_time"] if "start_time" in df.columns else [_ORDER]
        df = df.sort_values(by, kind="stable")
        df = df.drop_duplicates(subset=[k for k in KEY_COLUMNS if k in df.columns], keep="last")
        return df.drop(columns=[_ORDER]).reset_index(drop=True), bad

    def read(self, sweep_id: str | None = None, *, on_corrupt: str = "warn",
             columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows (optionally of one sweep, and only `columns` with the key columns), de-duplicated.
        A corrupt file is named and skipped (`on_corrupt="warn"`) or raised (`"raise"`); the other
        files are still read."""
        df, _ = self._frame(self._listing(sweep_id), columns, on_corrupt, sweep_id)
        return df

    def done(self, sweep_id: str, *, ok_only: bool = False) -> set[tuple[str, int]]:
        """(trial_id, repeat) pairs already written for a sweep: from file names, and from the
        trial_id/repeat columns of its parts; with `ok_only`, only those whose rows are all settled
        (`ok` or `skipped`, SETTLED_STATUSES: that reads the status column), so a resume runs the failed ones again."""
        files = self._listing(sweep_id)
        out = {f.trial for f in files if f.trial is not None}
        parts = [f for f in files if f.trial is None]
        if not ok_only and not parts:
            return out
        df, _ = self._frame(files if ok_only else parts, ["trial_id", "repeat", "status"], "warn", sweep_id)
        if df.empty:
            return out
        pairs = list(zip(df["trial_id"].astype(str), df["repeat"].astype(int), strict=True))
        out |= set(pairs)
        if ok_only and "status" in df.columns:
            failed = (~df["status"].isin(SETTLED_STATUSES)).to_numpy()
            out -= {p for p, bad in zip(pairs, failed, strict=True) if bad}
        return out

    def repeat_ok(self, sweep_id: str, trial_id: str, repeat: int) -> bool | None:
        """Whether a (sweep, trial, repeat) is written with every row settled (`ok` or `skipped`); None when
        not written (or unreadable)."""
        path = self.path_for(sweep_id, trial_id, repeat)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            try:
                status = self._table(path, ["status"]).column("status").to_pylist()
            except (FileNotFoundError, pa.ArrowInvalid, OSError, KeyError):
                return None
            return all(s in SETTLED_STATUSES for s in status)
        parts = [f for f in self._listing(sweep_id) if f.trial is None]
        if not parts:
            return None
        df, _ = self._frame(parts, ["trial_id", "repeat", "status"], "ignore", sweep_id)
        if df.empty or "status" not in df.columns:
            return None
        mine = df[(df["trial_id"].astype(str) == str(trial_id)) & (df["repeat"].astype(int) == int(repeat))]
        return None if mine.empty else bool(mine["status"].isin(SETTLED_STATUSES).all())

    # -- compaction ------------------------------------------------------------------------------

    def compact(self, sweep_id: str | None = None, *, min_files: int = 2) -> list[Compaction]:
        """Fold each sweep's files (or one sweep's) into one part file, so that reading opens one
        file per sweep. The part holds exactly what `read` returned for the sweep and takes the
        write order of the newest file it replaces, so anything written meanwhile still wins; each
        replaced file is deleted only after the part is in place and only if it did not change
        since it was listed. Unreadable files are named and left where they are. Compact a sweep
        that is not being written: a file written during the compaction is kept, never lost."""
        out = []
        for sweep in [sweep_id] if sweep_id else self.sweeps():
            files = self._listing(sweep)
            if len(files) < min_files:
                out.append(Compaction(sweep, 0, 0, None, [], f"{len(files)} file(s): nothing to compact"))
                continue
            df, bad = self._frame(files, None, "warn", sweep)
            inputs = [f for f in files if f.path not in bad]
            if df.empty or not inputs:
                out.append(Compaction(sweep, 0, 0, None, bad, "no readable rows"))
                continue
            try:
                table = pa.Table.from_pandas(df, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                out.append(Compaction(sweep, 0, len(df), None, [f.path for f in files],
                                      f"left as it is: a column holds numbers in one file and text in another ({exc})"))
                continue
            path = self._put(table, self._part_path(sweep, max(f.order for f in inputs)))
            now = {f.path: f for f in self._listing(sweep)}
            kept = list(bad)
            for f in inputs:
                cur = now.get(f.path)
                if cur is None:
                    continue
                if (cur.size, cur.mtime_ns) != (f.size, f.mtime_ns):
                    kept.append(f.path)  # written again since we read it: it is newer than the part
                    continue
                try:
                    self.fs.delete_file(f.path)
                except OSError:
                    kept.append(f.path)
            out.append(Compaction(sweep, len(inputs), len(df), path, kept))
        return out


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m results.store",
                                description="Maintain a results store: `compact` folds each sweep's files into one.")
    p.add_argument("command", choices=["compact"])
    p.add_argument("results", help="results store (folder or URI)")
    p.add_argument("--sweep", help="only this sweep")
    a = p.parse_args(argv)
    for c in ResultsStore(a.results).compact(a.sweep):
        what = f"{c.files_in} files -> {c.path} ({c.rows} rows)" if c.path else c.note
        print(f"{c.sweep_id}: {what}" + (f"; kept {len(c.kept)}: {', '.join(c.kept)}" if c.kept else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
