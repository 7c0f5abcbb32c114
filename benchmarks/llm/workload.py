"""What an LLM serving run sends: prompts of given lengths, output lengths, and arrival times.

Lengths follow vLLM's `random` dataset (a mean and a range ratio: uniform in mean x [1-r, 1+r]),
arrivals a Poisson process (or gamma with vLLM's `burstiness`), all seeded, so two systems under
test receive the same requests at the same instants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LengthDist:
    """Token counts uniform in mean x [1 - range_ratio, 1 + range_ratio], at least 1."""

    mean: int
    range_ratio: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.mean, bool) or not isinstance(self.mean, int) or self.mean < 1:
            raise ValueError(f"a token length must be a positive integer, got {self.mean!r}")
        if not 0.0 <= self.range_ratio < 1.0:
            raise ValueError(f"range_ratio must be in [0, 1), got {self.range_ratio!r}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        lo = max(1, math.floor(self.mean * (1 - self.range_ratio)))
        hi = max(lo, math.ceil(self.mean * (1 + self.range_ratio)))
        return rng.integers(lo, hi + 1, size=n)


@dataclass(frozen=True)
class LLMRequest:
    index: int
    prompt_tokens: tuple[int, ...]
    max_tokens: int

    @property
    def input_tokens(self) -> int:
        return len(self.prompt_tokens)


@dataclass(frozen=True)
class LLMWorkload:
    """The requests of one run. Prompt token ids are drawn from [token_low, token_high): ordinary ids
    that every tokenizer of the usual size has, so a remote server accepts them as a token prompt."""

    input_len: LengthDist
    output_len: LengthDist
    num_requests: int = 32
    seed: int = 0
    token_low: int = 100
    token_high: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.num_requests, bool) or not isinstance(self.num_requests, int) or self.num_requests < 1:
            raise ValueError(f"num_requests must be a positive integer, got {self.num_requests!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not 0 <= self.token_low < self.token_high:
            raise ValueError(f"token ids must satisfy 0 <= token_low < token_high, got {self.token_low}, {self.token_high}")

    def requests(self, run: int = 0) -> list[LLMRequest]:
        """The requests of one run. Lengths are the same in every run; the prompt ids are drawn afresh
        for each `run` index, so a server's prefix cache never answers a later run from an earlier
        one (vLLM and SGLang cache prefixes by default: replayed prompts would flatter the TTFT)."""
        rng = np.random.default_rng(self.seed)
        ins = self.input_len.sample(rng, self.num_requests)
        outs = self.output_len.sample(rng, self.num_requests)
        ids = np.random.default_rng([self.seed, run])
        return [LLMRequest(i, tuple(int(t) for t in ids.integers(self.token_low, self.token_high, size=int(n))),
                           int(m)) for i, (n, m) in enumerate(zip(ins, outs, strict=True))]

    def describe(self) -> dict[str, int | float]:
        """The request pattern as configuration columns (cfg_...)."""
        return {"input_len": self.input_len.mean, "output_len": self.output_len.mean,
                "range_ratio": max(self.input_len.range_ratio, self.output_len.range_ratio)}


def arrival_times(rate: float, n: int, seed: int, burstiness: float = 1.0) -> np.ndarray:
    """Send offsets in seconds of n requests at `rate` requests/s: gamma inter-arrivals with shape
    `burstiness` (1 = Poisson, < 1 burstier, > 1 more even), mean 1/rate; rate = inf sends all at once."""
    if not rate > 0:
        raise ValueError(f"an arrival rate must be > 0 requests/s (inf: all at once), got {rate!r}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness!r}")
    if math.isinf(rate):
        return np.zeros(n)
    rng = np.random.default_rng(seed + 7919)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0  # the first request opens the window
    return np.cumsum(gaps)
