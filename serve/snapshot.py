"""The data a replica answers from, and how it stays fresh.

A `Snapshot` is one `matcher.workspace.Workspace` (every source read once; `strict=False`, so a
source that cannot be read is recorded instead of raised), the fingerprint of the sources it was
read from, and the cache of answers computed on it. `Snapshots` holds the current one. It is
loaded when the replica is constructed, so Serve routes to a replica only once its data is in
memory, candidate tables included (`_prewarm`). At most every `reload_interval_s` one request
thread compares the fingerprint (`fingerprint`: `Sources.fingerprint()`, which lists files, plus
the content digests of the model files, read only when a file's stat changed) with the loaded
one and, when it changed, opens a new workspace and swaps it in with one assignment. Meanwhile the other
threads keep answering from the old snapshot (single flight), and requests in flight finish on
the snapshot they started with.

`SourceNames` is how the sources are shown to clients: by their own names, and paths inside them
relative to those (`results/sweep-1/t-r0.parquet`, `models/modelset.json`, `hardware.yaml`),
never the server's absolute paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from matcher.errors import MatcherError
from matcher.requirements import Requirements
from matcher.workspace import Sources, Workspace

log = logging.getLogger("benchmatch.serve")

UNAVAILABLE = "unavailable"  # first element of a fingerprint taken while the sources cannot be listed


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Names: what a client is shown instead of the server's paths
# ----------------------------------------------------------------------------------------------

# A path that starts at the root and has at least two parts. Not preceded by a path or URL
# character, so "USD/h", "samples/s" and "http://host/a/b" are left alone.
_ABSOLUTE = re.compile(r"(?<![\w.~:/-])(?:/[\w.@+=-]+){2,}/?")


def _location(source: str | None) -> str | None:
    """Where a source is on the server, spelt as the store and the matcher spell it in messages."""
    if not source:
        return None
    if "://" in source:  # pyarrow names remote files without the scheme: "bucket/prefix/..."
        return source.split("://", 1)[1].rstrip("/") or None
    return str(Path(source).expanduser().resolve())


class SourceNames:
    """Each configured source by its own name: the results folder's name, the models folder's
    (under the results folder's when it lies inside it), the candidate file's and the catalog's.
    `text()` rewrites any message the same way; a server path no source covers is cut to its
    last part."""

    def __init__(self, sources: Sources) -> None:
        results = _location(sources.results_uri)
        self.results = self._shown(results, None)
        self.models = self._shown(_location(sources.models_dir), results)
        self.candidates = self._shown(_location(sources.candidates_csv), results)
        self.catalog = self._shown(_location(sources.catalog_file), None) or "catalog"
        pairs: dict[str, str] = {}
        for given, loc, shown in ((sources.results_uri, results, self.results),
                                  (sources.models_dir, _location(sources.models_dir), self.models),
                                  (sources.candidates_csv, _location(sources.candidates_csv), self.candidates),
                                  (sources.catalog_file, _location(sources.catalog_file), self.catalog)):
            if shown is None:
                continue
            # Messages spell a source as it was given; a relative spelling tells nothing of the server.
            spellings = {loc, str(given).rstrip("/")} if str(given).startswith("/") or "://" in str(given) else {loc}
            for spelling in spellings - {None, ""}:
                pairs.setdefault(spelling, shown)
        self._shown_as = pairs
        longest_first = sorted(pairs, key=len, reverse=True)
        # A source's path only where a path ends there: "/srv/results" must not eat "/srv/results2".
        self._known = re.compile(
            r"(?<![\w.~/-])(" + "|".join(re.escape(p) for p in longest_first) + r")(?=$|[/\s'\"(),;:\[\]])"
        ) if pairs else None

    @staticmethod
    def _shown(loc: str | None, parent: str | None) -> str | None:
        if loc is None:
            return None
        if parent and loc.startswith(parent + "/"):
            return PurePosixPath(parent).name + loc[len(parent):]
        return PurePosixPath(loc).name or loc

    def folder(self, shown: str | None) -> str | None:
        """A folder's name as a field shows it: `results/`."""
        return None if shown is None else shown + "/"

    def text(self, message: str) -> str:
        if self._known is not None:
            message = self._known.sub(lambda m: self._shown_as[m.group(1)], message)
        return _ABSOLUTE.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


# ----------------------------------------------------------------------------------------------
# One version of the data
# ----------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What one fingerprint of the sources describes. Replaced whole, never edited in place
    (except the answer cache, which has its own lock)."""

    workspace: Workspace
    fingerprint: tuple[Any, ...]
    loaded_at: str
    load_seconds: float = 0.0
    assets: list[dict[str, Any]] = field(default_factory=list)  # ws.assets(), summarised once
    unreadable: dict[str, str] = field(default_factory=dict)  # source -> why, as clients see it
    warnings: list[str] = field(default_factory=list)  # problems that do not stop answers
    _answers: OrderedDict[str, bytes] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        """Whether every source an answer needs could be read."""
        return not self.unreadable

    def asset_names(self) -> list[str]:
        return [a["asset"] for a in self.assets]

    def answer(self, key: str, compute: Callable[[], bytes], keep: int) -> bytes:
        """The answer for `key` from this snapshot's LRU of `keep` entries, else computed and kept.
        The MILP is deterministic for the same input, so a kept answer is the one a new solve would
        give. Errors propagate and are not kept."""
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
                return hit
        body = compute()
        with self._lock:
            self._answers[key] = body
            while len(self._answers) > keep:
                self._answers.popitem(last=False)
        return body


class ContentDigests:
    """(relative name, BLAKE2b of the bytes) of every file under a folder.

    Sizes and modification times miss a model file replaced by one of the same size whose mtime
    was kept (`cp -p`, `rsync -a`, an unpacked archive) or fell in the same tick of a coarse clock.
    A digest is recomputed only when a file's (size, mtime, ctime, inode) changed: replacing a file
    (a rename) or writing it (even with its mtime restored) always changes its ctime or inode, so
    an unchanged folder costs a listing, not a read."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, ...], str]] = {}
        self._lock = threading.Lock()

    def __call__(self, folder: str | None) -> tuple[Any, ...]:
        if not folder or not os.path.isdir(folder):
            return ()
        out, seen = [], set()
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                if name.startswith("."):
                    continue  # the temporary file of an atomic write; its rename is what counts
                path = os.path.join(dirpath, name)
                try:
                    digest = self._digest(path)
                except OSError:
                    continue  # removed while listing: the next check sees the folder as it is
                seen.add(path)
                out.append((os.path.relpath(path, folder), digest))
        with self._lock:
            for path in set(self._known) - seen:
                del self._known[path]
        return tuple(sorted(out))

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with self._lock:
            hit = self._known.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        with self._lock:
            self._known[path] = (key, h.hexdigest())
        return h.hexdigest()


def fingerprint(sources: Sources, digests: ContentDigests | None = None) -> tuple[Any, ...]:
    """`Sources.fingerprint()` and the content digests of the model files, or (UNAVAILABLE, why)
    while the sources cannot be listed (an object store unreachable for a moment): the freshness
    check never fails a request."""
    try:
        return (*sources.fingerprint(), (digests or ContentDigests())(sources.models_dir))
    except (OSError, ValueError) as exc:  # pyarrow's listing errors are OSError / ArrowInvalid
        return (UNAVAILABLE, f"{type(exc).__name__}: {exc}")


def _load_errors(ws: Workspace) -> dict[str, Exception]:
    return ws.errors


def _prewarm(ws: Workspace, assets: list[dict[str, Any]]) -> None:
    """Build the candidate table of every (asset, task) the data holds, so that the first
    requests after a start or a reload do not each build it again."""
    keys: list[tuple[str | None, str]] = [(a["asset"], t) for a in assets for t in a.get("tasks") or ["infer"]]
    if len(assets) == 1:
        keys += [(None, task) for _, task in keys]  # a request may leave out the only asset
    for asset, task in keys:
        try:
            ws.candidates(Requirements(asset=asset, task=task))
        except MatcherError:
            pass  # the request that asks for it gets this error, naming what is missing


def load_snapshot(sources: Sources, names: SourceNames, fp: tuple[Any, ...] | None = None,
                  digests: ContentDigests | None = None) -> Snapshot:
    """Read the sources once. A source that cannot be read makes the snapshot not ready and is
    named in `unreadable`; nothing here raises."""
    t0 = time.perf_counter()
    fp = fingerprint(sources, digests) if fp is None else fp
    snap = Snapshot(Workspace(sources), fp, now())
    if fp[:1] == (UNAVAILABLE,):
        snap.warnings.append(names.text(f"the sources could not be listed: {fp[1]}"))
    try:
        ws = Workspace.open(sources, strict=False)
    except Exception as exc:
        # The sources are files from outside. Whatever they hold, the replica must come up and say
        # what is wrong; a constructor that raises is restarted by Serve, in a loop, saying nothing.
        log.exception("benchmatch: the sources could not be loaded")
        snap.unreadable["sources"] = names.text(f"the sources could not be loaded: {type(exc).__name__}: {exc}")
    else:
        snap.workspace = ws
        errors = _load_errors(ws)
        for what, exc in errors.items():
            log.warning("benchmatch: %s: %s", what, exc)
        snap.unreadable = {what: names.text(f"{what}: {exc}") for what, exc in errors.items()}
        fatal = {f"{what}: {exc}" for what, exc in errors.items()}
        snap.warnings += [names.text(p) for p in ws.problems if p not in fatal]
        snap.assets = ws.assets()
        if snap.ready:
            _prewarm(ws, snap.assets)
    snap.load_seconds = time.perf_counter() - t0
    return snap


# ----------------------------------------------------------------------------------------------
# The current snapshot, kept fresh
# ----------------------------------------------------------------------------------------------


class Snapshots:
    """The current snapshot: loaded at construction, replaced when the sources change."""

    def __init__(self, sources: Sources, names: SourceNames, *, reload_interval_s: float,
                 clock: Callable[[], float] = time.monotonic, on_reload: Callable[[], None] | None = None) -> None:
        self.sources = sources
        self.names = names
        self.reload_interval_s = reload_interval_s
        self.reloads = 0
        self.listing_problem: str | None = None  # why the last freshness check could not list
        self._clock = clock
        self._on_reload = on_reload
        self._reloading = threading.Lock()
        self._digests = ContentDigests()
        self._current = load_snapshot(sources, names, digests=self._digests)
        self._checked = clock()

    def current(self) -> Snapshot:
        """The current snapshot, reloaded first when the sources changed. A snapshot that is not
        ready is loaded again at every check, so a failure that passes (an object store that was
        unreachable) heals without a change to the files."""
        if self._clock() - self._checked < self.reload_interval_s:
            return self._current
        if not self._reloading.acquire(blocking=False):
            return self._current  # another thread is checking or reloading: answer from what we have
        try:
            self._checked = self._clock()
            fp = fingerprint(self.sources, self._digests)
            if fp[:1] == (UNAVAILABLE,):
                # Keep answering from the data we have rather than replacing it with nothing.
                self.listing_problem = self.names.text(str(fp[1]))
                return self._current
            self.listing_problem = None
            if fp != self._current.fingerprint or not self._current.ready:
                snap = load_snapshot(self.sources, self.names, fp)
                self._current = snap  # one assignment: requests in flight keep the old object
                self.reloads += 1
                log.info("benchmatch: sources changed, reloaded in %.3f s", snap.load_seconds)
                if self._on_reload is not None:
                    self._on_reload()
        finally:
            self._reloading.release()
        return self._current
