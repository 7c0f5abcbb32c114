"""benchmarks.stats: median/spread per group, the noisy flag, the median's CI, flags and baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import stats


def _rows(values: dict[tuple[str, int, str], list[float]], metric: str = "throughput_samples_per_s") -> pd.DataFrame:
    """Rows shaped like the store's: one per repeat of each (hardware, batch size, dtype)."""
    out = []
    for (hw, bs, dtype), vals in values.items():
        for rep, v in enumerate(vals):
            out.append({"sweep_id": "s", "trial_id": f"{hw}-{bs}-{dtype}", "repeat": rep, "scenario": "Offline",
                        "asset": "a", "task": "infer", "status": "ok", "hardware": hw, "cfg_batch_size": bs,
                        "cfg_dtype": dtype, metric: v})
    return pd.DataFrame(out)


def test_summarize_known_median_iqr_cv():
    vals = [10.0, 11.0, 12.0, 13.0, 14.0]
    s = stats.summarize(_rows({("hw", 1, "float32"): vals}), metrics=["throughput_samples_per_s"])
    assert len(s) == 1
    r = s.iloc[0]
    assert r["n"] == 5
    assert r["median"] == 12.0
    assert r["q25"] == 11.0 and r["q75"] == 13.0 and r["iqr"] == 2.0
    assert r["cv"] == pytest.approx(np.std(vals, ddof=1) / 12.0)
    assert r["rel_iqr"] == pytest.approx(2.0 / 12.0)
    assert r["hardware"] == "hw" and r["cfg_batch_size"] == 1 and r["cfg_dtype"] == "float32"


def test_groups_by_config_and_hardware():
    df = _rows({("a", 1, "float32"): [1, 2, 3], ("a", 16, "float32"): [4, 5, 6], ("b", 1, "float32"): [7, 8, 9]})
    s = stats.summarize(df, metrics=["throughput_samples_per_s"])
    assert sorted(s["median"]) == [2.0, 5.0, 8.0]
    assert (s["n"] == 3).all()


@pytest.mark.parametrize(("spread", "noisy"), [(0.09, False), (0.10, False), (0.11, True), (0.5, True)])
def test_noisy_flag_threshold(spread: float, noisy: bool):
    # Values 100 ± spread*100 at q25/q75 exactly: IQR/median = spread.
    m = 100.0
    vals = [m - spread * m, m - spread * m / 2, m, m + spread * m / 2, m + spread * m]
    s = stats.summarize(_rows({("hw", 1, "float32"): vals}), metrics=["throughput_samples_per_s"])
    assert s.iloc[0]["rel_iqr"] == pytest.approx(spread)
    assert bool(s.iloc[0]["noisy"]) is noisy


def test_ci_contains_the_median():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 6, 10, 30):
        vals = rng.lognormal(0.0, 0.3, size=n)
        r = stats.describe(vals)
        assert r["ci_low"] <= r["median"] <= r["ci_high"]
        assert 0 < r["ci_level"] <= 1


def test_ci_coverage_is_reported_honestly():
    lo, hi, level = stats.median_ci([5, 1, 4, 2, 3])
    assert (lo, hi) == (1.0, 5.0)
    assert level == pytest.approx(1 - 2 / 32)  # n=5 cannot reach 95 %: [min, max] covers 93.75 %
    lo, hi, level = stats.median_ci(list(range(1, 21)))
    assert level >= 0.95 and (lo, hi) == (6.0, 15.0)  # 1-based order statistics 6 and 15 for n=20
    assert all(math.isnan(v) for v in stats.median_ci([3.0]))


def test_single_repeat_has_no_spread_and_missing_values_are_skipped():
    df = _rows({("hw", 1, "float32"): [5.0], ("hw", 16, "float32"): [float("nan"), float("nan")]})
    s = stats.summarize(df, metrics=["throughput_samples_per_s"])
    assert len(s) == 1  # the all-missing group has no row, not a row of zeros
    r = s.iloc[0]
    assert r["n"] == 1 and r["median"] == 5.0
    assert math.isnan(r["iqr"]) and math.isnan(r["cv"]) and pd.isna(r["noisy"])


def test_failed_rows_do_not_count():
    df = _rows({("hw", 1, "float32"): [10.0, 10.0, 10.0]})
    df.loc[2, "status"] = "failed"
    df.loc[2, "throughput_samples_per_s"] = np.nan
    assert stats.summarize(df, metrics=["throughput_samples_per_s"]).iloc[0]["n"] == 2


def test_flags_lists_invalid_background_and_failed():
    df = _rows({("hw", 1, "float32"): [1.0, 2.0, 3.0]})
    df["loadgen_result"] = ["VALID", "INVALID", "VALID"]
    df["env_background_load"] = pd.array([False, None, True], dtype="boolean")
    df["env_loadavg_before"] = [0.1, 0.2, 1.5]
    df["env_loadavg_after"] = [0.1, 0.2, 2.5]
    df["error"] = ["", "", ""]
    df.loc[0, "status"], df.loc[0, "error"] = "failed", "boom"
    f = stats.flags(df)
    assert sorted(f["flag"]) == ["background load", "failed", "loadgen INVALID"]
    assert f.set_index("flag").loc["failed", "detail"] == "boom"
    assert "1.50 → 2.50" in f.set_index("flag").loc["background load", "detail"]
    assert f.set_index("flag").loc["loadgen INVALID", "repeat"] == 1


def test_baseline_default_reference_and_ratios():
    df = _rows({("local-1c", 1, "float32"): [100, 100, 100], ("local-1c", 1, "bfloat16"): [50, 50, 50],
                ("local-1c", 16, "float32"): [400, 400, 400], ("local-2c", 1, "float32"): [200, 200, 200]})
    s = stats.baseline_ratios(stats.summarize(df, metrics=["throughput_samples_per_s"]))
    by = {(r["hardware"], r["cfg_batch_size"], r["cfg_dtype"]): r for _, r in s.iterrows()}
    assert by[("local-1c", 1, "float32")]["vs_ref"] == 1.0
    assert by[("local-1c", 16, "float32")]["vs_ref"] == 4.0
    assert by[("local-2c", 1, "float32")]["vs_ref"] == 2.0
    assert by[("local-1c", 1, "bfloat16")]["vs_ref"] == 0.5
    assert set(s["ref_config"]) == {"batch_size=1 dtype=float32"}


def test_baseline_configurable_and_missing_reference():
    df = _rows({("gpu", 8, "bfloat16"): [10, 10], ("gpu", 32, "bfloat16"): [30, 30]})
    df["price_per_hour_usd"] = 1.0
    s = stats.baseline_ratios(stats.summarize(df, metrics=["throughput_samples_per_s"]))
    # local-1c not measured: the cheapest measured hardware at its smallest batch (no float32 → smallest dtype).
    assert sorted(s["vs_ref"]) == [1.0, 3.0]
    ref = stats.Reference(hardware="gpu", config={"batch_size": 32})
    s = stats.baseline_ratios(stats.summarize(df, metrics=["throughput_samples_per_s"]), ref)
    assert sorted(s["vs_ref"]) == pytest.approx([1 / 3, 1.0])
    s = stats.baseline_ratios(stats.summarize(df, metrics=["throughput_samples_per_s"]),
                              stats.Reference(hardware="absent"))
    assert s["vs_ref"].isna().all() and s["ref_median"].isna().all()


def test_metric_missing_at_the_reference_has_no_ratio():
    df = _rows({("local-1c", 1, "float32"): [100.0, 100.0], ("local-1c", 16, "float32"): [800.0, 800.0]})
    df["latency_p99_ms"] = [np.nan, np.nan, 2.0, 2.0]  # measured at batch 16 only
    s = stats.baseline_ratios(stats.summarize(df, metrics=["throughput_samples_per_s", "latency_p99_ms"]))
    lat = s[s["metric"] == "latency_p99_ms"]
    assert len(lat) == 1 and pd.isna(lat.iloc[0]["vs_ref"])  # the reference is batch 1, which has no p99
    assert s[s["metric"] == "throughput_samples_per_s"]["vs_ref"].tolist() == [1.0, 8.0]
