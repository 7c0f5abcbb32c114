"""Physical consistency across hardware profiles: more cores must not be slower beyond the spread.

Two CPU profiles measured on the same host with the same configuration differ only in the cores
(and, where the configuration does not fix them, the threads) each may use. When the one with more cores is slower on Offline throughput than
the one with fewer, by more than their repeats spread (its best repeat under the other's worst by
more than MARGIN), the measurement is not telling us about the hardware: something else (another
process, a frequency drop, a pinning mistake) slowed it. The pair on the larger profile is then
inconsistent: the sweep prints it and the matcher leaves it out of the measured answers, naming it.
Each row's own flags (benchmarks.core.row_flags) catch what one run can see; this needs two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from results.schema import CONFIG_PREFIX

MARGIN = 0.25  # beyond the spread: the faster profile's worst repeat 25% above the slower's best
# When the profiles ran different thread counts (each its own cores, as the quickstart does), more
# threads can cost a tiny model some speed (seen: 1.2-2.9x on the digits MLP), never an order of
# magnitude (seen: 50-100x under background load): only a slowdown beyond 4x is inconsistent then.
MARGIN_OTHER_THREADS = 3.0


@dataclass(frozen=True)
class Inconsistency:
    asset: str
    hardware: str  # the profile with more cores, slower than it may be
    config: str  # "batch_size=8, threads=1"
    than: str  # the profile with fewer cores
    best: float  # its best Offline samples/s over repeats
    other_worst: float  # the other's worst

    def __str__(self) -> str:
        return (f"{self.hardware} [{self.config}]: at most {self.best:.4g} samples/s with more cores than "
                f"{self.than} ({self.other_worst:.4g} at worst) on the same host")


def more_cores_slower(rows: pd.DataFrame, cores: Mapping[str, int]) -> list[Inconsistency]:
    """The (asset, hardware, configuration) whose Offline throughput breaks the rule above; `cores`
    maps the CPU profiles to compare (a catalog's local profiles) to their core counts."""
    need = {"asset", "hardware", "scenario", "throughput_samples_per_s"}
    if rows is None or rows.empty or not need <= set(rows.columns):
        return []
    off = rows[(rows["scenario"].astype(str) == "Offline") & rows["hardware"].astype(str).isin(list(cores))]
    if "status" in off.columns:
        off = off[off["status"].astype(str) == "ok"]
    if off.empty:
        return []
    if "hostname" not in off.columns or off["hostname"].isna().all():
        return []  # rows that do not say where they ran (imports): no two are known to share a host
    cfg = sorted(c for c in off.columns if str(c).startswith(CONFIG_PREFIX) and off[c].notna().any())
    host = ["hostname"]
    tput = pd.to_numeric(off["throughput_samples_per_s"], errors="coerce")
    off = off.assign(_t=tput)[tput.notna()]
    threads = pd.to_numeric(off["num_threads"], errors="coerce") if "num_threads" in off.columns else np.nan
    off = off.assign(_threads=threads)
    out = []
    for key, grp in off.groupby(["asset", *host, *cfg], dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        per = grp.groupby(grp["hardware"].astype(str)).agg(min=("_t", "min"), max=("_t", "max"),
                                                           threads=("_threads", "max"))
        if len(per) < 2:
            continue
        config = ", ".join(f"{c[len(CONFIG_PREFIX):]}={v}" for c, v in zip(cfg, key[1 + len(host):], strict=True)
                           if not (isinstance(v, float) and np.isnan(v)))
        for big in per.index:
            for small in per.index:
                same = per.loc[big, "threads"] == per.loc[small, "threads"]  # unknown (NaN): not the same
                margin = MARGIN if same else MARGIN_OTHER_THREADS
                if cores[big] > cores[small] and per.loc[big, "max"] * (1 + margin) < per.loc[small, "min"]:
                    out.append(Inconsistency(str(key[0]), big, config, small, float(per.loc[big, "max"]),
                                             float(per.loc[small, "min"])))
                    break
    return out


def _config_text(rows: pd.DataFrame, cfg: list[str]) -> pd.Series:
    if not cfg:
        return pd.Series("", index=rows.index)
    return rows[cfg].apply(lambda r: ", ".join(f"{c[len(CONFIG_PREFIX):]}={v}" for c, v in r.items()
                                               if not (v is None or (isinstance(v, float) and np.isnan(v)))), axis=1)


def inconsistent_rows(rows: pd.DataFrame, found: list[Inconsistency]) -> pd.Series:
    """Which rows belong to an inconsistent (asset, hardware, configuration)."""
    if not found or rows.empty:
        return pd.Series(False, index=rows.index)
    cfg = sorted(c for c in rows.columns if str(c).startswith(CONFIG_PREFIX) and rows[c].notna().any())
    key = rows["asset"].astype(str) + "|" + rows["hardware"].astype(str) + "|" + _config_text(rows, cfg)
    bad = {f"{i.asset}|{i.hardware}|{i.config}" for i in found}
    return key.isin(bad)


def pair_trials(rows: pd.DataFrame, found: list[Inconsistency]) -> set[str]:
    """The trial ids of both sides of each inconsistent pair: what to measure again, together, so
    that the two profiles are compared under the same conditions."""
    if not found or rows.empty or "trial_id" not in rows.columns:
        return set()
    sides = list(found) + [Inconsistency(i.asset, i.than, i.config, i.hardware, i.other_worst, i.best) for i in found]
    return set(rows.loc[inconsistent_rows(rows, sides), "trial_id"].astype(str))
