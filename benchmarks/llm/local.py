"""A generative asset served in-process: the system under test (a) of an LLM serving run.

A worker thread owns the model and schedules at the iteration level, as vLLM's and Orca's
schedulers do: each iteration first admits waiting requests (up to `max_num_seqs` in flight) and
runs their prefill, which yields their first token, then runs one decode step for every request
in flight. A new request therefore waits for at most one iteration, not for the requests ahead of
it to finish. Sequences run one forward pass each (no batched kernels across requests), which is
what a CPU replica without a paged-attention engine does; the docs say so.

The asset supplies `prefill(model, prompt_ids) -> (token, state)` and
`decode(model, token, state) -> (token, state)` (benchmarks/assets/gpt2.py).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.llm.workload import LLMRequest

OnChunk = Callable[[int], None]


@dataclass
class _Job:
    request: LLMRequest
    on_chunk: OnChunk
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    state: Any = None
    token: int = 0
    produced: int = 0

    def emit(self) -> None:
        self.produced += 1
        self.loop.call_soon_threadsafe(self.on_chunk, 1)

    def finish(self, exc: BaseException | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if exc is None:
                self.future.set_result(self.produced)
            else:
                self.future.set_exception(exc)
        self.loop.call_soon_threadsafe(settle)


@dataclass
class LocalGenerator:
    asset: Any
    model: nn.Module
    max_num_seqs: int = 4
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    name: str = ""

    def __post_init__(self) -> None:
        for attr in ("prefill", "decode"):
            if not callable(getattr(self.asset, attr, None)):
                raise ValueError(f"asset {getattr(self.asset, 'name', self.asset)!r} is not generative: it needs "
                                 "prefill(model, prompt_ids) and decode(model, token, state) (see benchmarks/assets/gpt2.py)")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.name = self.name or getattr(self.asset, "name", "local")

    def describe(self) -> dict[str, Any]:
        return {"engine": "local-eager", "max_num_seqs": self.max_num_seqs}

    async def __aenter__(self) -> LocalGenerator:
        self._thread = threading.Thread(target=self._serve, name="benchmatch-llm-local", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None

    async def run(self, request: LLMRequest, on_chunk: OnChunk) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.put(_Job(request, on_chunk, future, loop))
        return await future

    def _serve(self) -> None:
        # torch's intra-op threads are process-wide: the caller set them (the trial's threads)
        active: list[_Job] = []
        stopping = False
        with torch.inference_mode():
            while not (stopping and not active):
                while not stopping and len(active) < self.max_num_seqs:
                    try:
                        job = self._queue.get(block=not active)
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    if not job.future.done() and self._step(job, first=True):
                        active.append(job)
                for job in list(active):
                    # a request the client gave up on (timeout) frees its slot instead of decoding on
                    if job.future.done() or not self._step(job, first=False):
                        active.remove(job)
                        job.state = None

    def _step(self, job: _Job, first: bool) -> bool:
        """Run a prefill or one decode step; False when the job is finished (or failed)."""
        try:
            if first:
                ids = torch.tensor([job.request.prompt_tokens], dtype=torch.long, device=self.device)
                job.token, job.state = self.asset.prefill(self.model, ids)
            else:
                job.token, job.state = self.asset.decode(self.model, job.token, job.state)
        except Exception as exc:  # one broken request must not stop the server
            job.finish(exc)
            return False
        job.emit()
        if job.produced >= job.request.max_tokens:
            job.state = None
            job.finish()
            return False
        return True
