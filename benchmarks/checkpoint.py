"""Checkpoint and resume for training trials, and how much work an interruption cost.

A trial's checkpoint lives beside its logs (`<log_dir>/<sweep>/<trial>-r<repeat>/checkpoint.pt`).
It is a plain state dict (tensors, numbers, strings, lists, dicts) written with `torch.save` to a
temporary file and renamed, and read back with `torch.load(weights_only=True)`: the safe loader,
which refuses arbitrary pickled objects, so a checkpoint can never run code.

Time lost is measured with a heartbeat (`heartbeat.json`): while the training loop runs, a thread
rewrites it every `interval_s` with the wall-clock time (`wall_time`) and the time after which work
would be lost if the process died now (`since`: the loop's start, then each checkpoint's save
time). When a later attempt starts, the killed attempt lost `wall_time - max(since, the
checkpoint's saved_wall_time)`; `lost_before` carries what attempts before it lost, so repeated
kills add up. The heartbeat can be late by at most `interval_s`, so the figure is short by at most
that much. Wall-clock (not monotonic) time is used because the next attempt may run in another
process or on another node that shares the log folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
HEARTBEAT_INTERVAL_S = 0.1


def fingerprint(*parts: Any) -> str:
    """A short hash of what makes a checkpoint reusable (asset, config, seed, settings)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _atomic_write_bytes(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # readers (and a resuming attempt) see the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Resume:
    """What a starting attempt found: the restored state (None: start from scratch) and time lost."""

    state: dict[str, Any] | None
    epoch: int
    time_lost_s: float
    note: str = ""


class TrainCheckpoint:
    """The checkpoint and heartbeat of one (trial, repeat).

    Use: `resume = ckpt.begin()` before the loop; `ckpt.start_heartbeat()` when the loop starts;
    `ckpt.save(state)` after each epoch; `ckpt.finish()` when the trial completed (removes both
    files, so a later run of the same trial starts afresh).
    """

    def __init__(self, path: str | Path, fingerprint: str, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.path = Path(path)
        self.heartbeat_path = self.path.with_name("heartbeat.json")
        self.fingerprint = fingerprint
        self.interval_s = interval_s
        self._lost_before = 0.0
        self._since = 0.0
        self._epoch = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------------- resume

    def begin(self) -> Resume:
        """Load the checkpoint if it belongs to this trial, and account for the attempt that died."""
        state, note = self._load()
        saved_at = float(state["saved_wall_time"]) if state is not None else 0.0
        lost = 0.0
        beat = self._read_heartbeat()
        if beat is not None:
            previous = float(beat.get("lost_before", 0.0))
            # A heartbeat left behind means an attempt's loop died (a completed one removes it).
            last = float(beat["wall_time"]) - max(float(beat["since"]), saved_at)
            lost = previous + max(last, 0.0)
        self._lost_before = lost
        epoch = int(state["epoch"]) if state is not None else 0
        self._epoch = epoch
        return Resume(state=state, epoch=epoch, time_lost_s=lost, note=note)

    def _load(self) -> tuple[dict[str, Any] | None, str]:
        if not self.path.exists():
            return None, ""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: train from scratch rather than fail
            return None, f"checkpoint {self.path} unreadable ({type(exc).__name__}: {exc}); starting from scratch"
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return None, f"checkpoint {self.path} has an unknown format; starting from scratch"
        if state.get("fingerprint") != self.fingerprint:
            return None, f"checkpoint {self.path} belongs to another configuration; starting from scratch"
        return state, ""

    def _read_heartbeat(self) -> dict[str, Any] | None:
        try:
            beat = json.loads(self.heartbeat_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(beat, dict) or beat.get("fingerprint") != self.fingerprint:
            return None
        if not all(isinstance(beat.get(k), int | float) for k in ("wall_time", "since")):
            return None
        return beat

    # ----------------------------------------------------------------------------- heartbeat

    def start_heartbeat(self) -> None:
        """Beat from now on; work done from now until the first save would be lost by a kill."""
        self._since = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="benchmatch-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
            except OSError:
                pass  # a missed beat only makes time_lost_s a little shorter

    def _beat(self) -> None:
        with self._lock:
            beat = {"fingerprint": self.fingerprint, "wall_time": time.time(), "since": self._since,
                    "epoch": self._epoch, "lost_before": self._lost_before, "pid": os.getpid()}
        data = json.dumps(beat).encode()
        _atomic_write_bytes(self.heartbeat_path, lambda fh: fh.write(data))

    # ---------------------------------------------------------------------------------- save

    def save(self, state: dict[str, Any], epoch: int) -> float:
        """Write `state` (plain tensors and numbers) atomically; returns the seconds it took."""
        t0 = time.perf_counter()
        now = time.time()
        full = dict(state, format=FORMAT, fingerprint=self.fingerprint, epoch=int(epoch), saved_wall_time=now)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.path, lambda fh: torch.save(full, fh))
        with self._lock:
            self._since, self._epoch = now, int(epoch)
        return time.perf_counter() - t0

    def finish(self) -> None:
        """The trial completed: nothing to resume, nothing lost any more."""
        self.stop_heartbeat()
        self.path.unlink(missing_ok=True)
        self.heartbeat_path.unlink(missing_ok=True)


__all__ = ["FORMAT", "Resume", "TrainCheckpoint", "fingerprint"]
