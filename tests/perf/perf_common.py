"""What the perf scripts that read a results store share: the machine line and the rows."""

from __future__ import annotations

import os
import platform

import pandas as pd

from results.store import ResultsStore


def machine_line(seed: int | None = None) -> str:
    """Python, CPUs and load average now: printed first, so a figure comes with its conditions."""
    line = (f"Python {platform.python_version()}, {os.cpu_count()} logical CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at start")
    return line if seed is None else f"{line}; seed {seed}"


def read_results_or_exit(uri: str) -> pd.DataFrame:
    rows = ResultsStore(uri).read()
    if rows.empty:
        raise SystemExit(f"{uri}: no results; run `benchmatch quickstart` or a sweep first")
    return rows
