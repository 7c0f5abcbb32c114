"""The results store: a Parquet dataset, one file per (trial, repeat), written atomically.

Layout: `<uri>/<sweep_id>/<trial_id>-r<repeat>.parquet`. A file is first written under a hidden
temporary name in the same folder and then renamed, so a reader never sees a partial file; readers
skip hidden names. Rows are de-duplicated on (sweep, trial, repeat, scenario), newest first, so
a retried or resumed trial never counts twice. Local folders by default; `s3://` / `gs://` URIs go
through pyarrow filesystems.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.schema import BY_NAME, KEY_COLUMNS
from cluster.errors import BenchmatchError

_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


class StoreError(BenchmatchError, RuntimeError):
    """A results file or row is unusable; the message names the file or the field."""


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
    return pa.Table.from_pandas(df, preserve_index=False)


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


class ResultsStore:
    """Append-only Parquet results at `uri` (a folder path, `file://`, `s3://` or `gs://`)."""

    def __init__(self, uri: str | os.PathLike[str]):
        uri = str(uri)
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, self.root, self.local = pafs.LocalFileSystem(), str(Path(uri).resolve()), True
        self.uri = uri

    def path_for(self, sweep_id: str, trial_id: str, repeat: int) -> str:
        return f"{self.root}/{_safe(sweep_id)}/{_safe(trial_id)}-r{int(repeat)}.parquet"

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
        final = self.path_for(sweep_id, trial_id, repeat)
        folder, name = final.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        table = _coerce(rows)
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

    def fingerprint(self) -> tuple[tuple[str, int | None, int | None], ...]:
        """(path, size, mtime) of every results file, in one listing call: what changes when the
        data changes (a file rewritten under the same name changes size or mtime). Cheap enough
        to take every few seconds; it reads no file."""
        paths = self.files()
        if not paths:
            return ()
        return tuple((i.path, i.size, i.mtime_ns) for i in self.fs.get_file_info(paths))

    def repeat_ok(self, sweep_id: str, trial_id: str, repeat: int) -> bool | None:
        """Whether a (sweep, trial, repeat) is written with every row ok; None when not written (or unreadable)."""
        path = self.path_for(sweep_id, trial_id, repeat)
        try:
            with self.fs.open_input_file(path) as fh:
                status = pq.read_table(fh, columns=["status"]).column("status").to_pylist()
        except (FileNotFoundError, pa.ArrowInvalid, OSError, KeyError):
            return None
        return all(s == "ok" for s in status)

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

    def files(self, sweep_id: str | None = None) -> list[str]:
        base = f"{self.root}/{_safe(sweep_id)}" if sweep_id else self.root
        info = self.fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(base, recursive=True)
        return sorted(
            f.path
            for f in self.fs.get_file_info(sel)
            if f.type == pafs.FileType.File and f.path.endswith(".parquet") and not f.base_name.startswith(".")
        )

    def done(self, sweep_id: str, *, ok_only: bool = False) -> set[tuple[str, int]]:
        """(trial_id, repeat) pairs already written for a sweep, read from file names alone; with
        `ok_only`, only those whose rows all succeeded (that reads the files' status column)."""
        out = set()
        for path in self.files(sweep_id):
            stem = path.rsplit("/", 1)[1][: -len(".parquet")]
            trial, _, rep = stem.rpartition("-r")
            if rep.isdigit():
                out.add((trial, int(rep)))
        if ok_only and out:
            df = self.read(sweep_id)
            if "status" in df.columns and not df.empty:
                failed = df.loc[df["status"] != "ok", ["trial_id", "repeat"]]
                out -= {(str(t), int(r)) for t, r in failed.itertuples(index=False)}
        return out

    def read(self, sweep_id: str | None = None, *, on_corrupt: str = "warn") -> pd.DataFrame:
        """All rows (optionally of one sweep), de-duplicated. A corrupt file is named and skipped
        (`on_corrupt="warn"`) or raised (`"raise"`); the other files are still read."""
        frames = []
        for path in self.files(sweep_id):
            try:
                with self.fs.open_input_file(path) as fh:
                    frames.append(pq.read_table(fh).to_pandas())
            except (pa.ArrowInvalid, OSError) as exc:
                msg = f"results file {path} is unreadable and was skipped ({exc}); move or delete it"
                if on_corrupt == "raise":
                    raise StoreError(msg) from exc
                warnings.warn(msg, stacklevel=2)
        if not frames:
            return pd.DataFrame(columns=list(KEY_COLUMNS))
        frames = [f for f in frames if not f.empty]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(KEY_COLUMNS))
        if "start_time" in df.columns:
            df = df.sort_values("start_time", kind="stable")
        df = df.drop_duplicates(subset=[k for k in KEY_COLUMNS if k in df.columns], keep="last")
        return df.reset_index(drop=True)
