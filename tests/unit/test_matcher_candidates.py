"""The candidate table: CSV validation (row numbers as in the file) and the mapping from result rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import (
    candidates_from_csv,
    candidates_from_results,
    merge_candidates,
    validate_candidates,
)
from matcher.errors import CandidateError, NoDataError, RequirementsError
from tests.fixtures.instances import synthetic_result_rows

HEADER = "hardware,price_per_hour_usd,latency_p99_ms,throughput_qps,accuracy,inventory,batch_size,dtype\n"

CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.0446, price_source="test"),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, price_per_hour_usd=0.08925, price_source="test"),
    "gpu-x": HardwareSpec("gpu-x", "A10G", device_count=4, price_per_hour_usd=4.0, price_source="test"),
}


def write(tmp_path, body: str, header: str = HEADER):
    p = tmp_path / "cands.csv"
    p.write_text(header + body)
    return p


def test_csv_reads_config_columns_and_inventory(tmp_path):
    p = write(tmp_path, "local-1c,0.0446,12.5,80,0.91,2,8,fp32\nlocal-2c,0.089,7,150,,,8,bf16\n")
    df = candidates_from_csv(p)
    assert list(df["hardware"]) == ["local-1c", "local-2c"]
    assert {"cfg_batch_size", "cfg_dtype"} <= set(df.columns)
    assert df["cfg_batch_size"].tolist() == [8, 8]  # numeric config stays numeric
    assert df["cfg_dtype"].tolist() == ["fp32", "bf16"]
    assert df["inventory"].iloc[0] == 2 and math.isnan(df["inventory"].iloc[1])  # empty = unlimited
    assert math.isnan(df["accuracy"].iloc[1])  # empty accuracy = unknown, not 0
    assert (df["basis"] == "measured").all() and (df["devices"] == 1).all()


def test_csv_missing_required_column(tmp_path):
    p = write(tmp_path, "local-1c,0.1,5,10\n", header="hardware,price_per_hour_usd,latency_p99_ms,throughput_qps\n")
    with pytest.raises(CandidateError, match=r"missing required column\(s\) \['accuracy'\]"):
        candidates_from_csv(p)


@pytest.mark.parametrize(
    ("bad_line", "column", "says"),
    [
        ("local-2c,abc,7,150,0.9,,8,fp32", "price_per_hour_usd", "must be a number"),
        ("local-2c,-0.5,7,150,0.9,,8,fp32", "price_per_hour_usd", "must be >= 0"),
        ("local-2c,,7,150,0.9,,8,fp32", "price_per_hour_usd", "is empty"),
        ("local-2c,nan,7,150,0.9,,8,fp32", "price_per_hour_usd", "must be a number"),
        ("local-2c,0.1,0,150,0.9,,8,fp32", "latency_p99_ms", "must be > 0"),
        ("local-2c,0.1,7,,0.9,,8,fp32", "throughput_qps", "is empty"),
        ("local-2c,0.1,7,150,1.7,,8,fp32", "accuracy", "must be <= 1"),
        ("local-2c,0.1,7,150,0.9,2.5,8,fp32", "inventory", "whole number"),
        (",0.1,7,150,0.9,,8,fp32", "hardware", "is empty"),
    ],
)
def test_csv_errors_name_line_and_column(tmp_path, bad_line, column, says):
    # header is line 1, the good row line 2, the bad row line 3
    p = write(tmp_path, "local-1c,0.0446,12.5,80,0.91,2,8,fp32\n" + bad_line + "\n")
    with pytest.raises(CandidateError) as exc:
        candidates_from_csv(p)
    msg = str(exc.value)
    assert str(p) in msg and "line 3" in msg and f"'{column}'" in msg and says in msg


def test_csv_duplicate_rows_are_named(tmp_path):
    p = write(tmp_path, "local-1c,0.0446,12.5,80,0.91,2,8,fp32\nlocal-2c,0.1,5,90,0.9,,8,fp32\n"
                        "local-1c,0.0446,11,85,0.91,2,8,fp32\n")
    with pytest.raises(CandidateError, match="line 4 repeats the hardware and configuration of line 2"):
        candidates_from_csv(p)


def test_csv_empty_and_missing_file(tmp_path):
    with pytest.raises(CandidateError, match="no candidate rows"):
        candidates_from_csv(write(tmp_path, ""))
    with pytest.raises(CandidateError, match="not found"):
        candidates_from_csv(tmp_path / "nope.csv")


def test_validate_programmatic_frame_names_index():
    df = pd.DataFrame({"hardware": ["a", "b"], "price_per_hour_usd": [1.0, -1.0], "latency_p99_ms": [1, 2],
                       "throughput_qps": [1, 2], "accuracy": [np.nan, np.nan]}, index=[10, 11])
    with pytest.raises(CandidateError, match=r"row 11: column 'price_per_hour_usd' must be >= 0"):
        validate_candidates(df)


# ----------------------------------------------------------------------------------------------
# From result rows
# ----------------------------------------------------------------------------------------------


def _rows() -> pd.DataFrame:
    return synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 8), threads=(1, 2), repeats=3,
                                 seed=1, with_energy=True)


def test_results_mapping_uses_the_right_scenarios_median_as_point_and_worst_repeat_as_bound():
    rows = _rows()
    cands = candidates_from_results(rows, CATALOG)
    assert len(cands) == 2 * 2 * 2  # hardware x batch x threads
    assert {"cfg_batch_size", "cfg_threads"} <= set(cands.columns)
    for _, c in cands.iterrows():
        g = rows[(rows.hardware == c.hardware) & (rows.cfg_batch_size == c.cfg_batch_size)
                 & (rows.cfg_threads == c.cfg_threads)]
        ms = g[g.scenario == "MultiStream"]["latency_p99_ms"]
        off = g[g.scenario == "Offline"]
        # The MILP sizes with the worst repeat; the median is the point estimate the answer shows.
        assert c.latency_p99_ms_point == pytest.approx(ms.median()) and c.latency_p99_ms == pytest.approx(ms.max())
        assert c.latency_source == "MultiStream"
        assert c.throughput_qps_point == pytest.approx(off["throughput_samples_per_s"].median())
        assert c.throughput_qps == pytest.approx(off["throughput_samples_per_s"].min())
        assert c.band_method == "measured: worst of 3 repeats"
        assert c.energy_per_sample_j == pytest.approx(off["energy_per_sample_j"].median())
        assert c.power_w == pytest.approx(off["avg_power_w"].median())
        assert c.accuracy == pytest.approx(0.9)
        assert c.price_per_hour_usd == CATALOG[c.hardware].price_per_hour_usd  # catalog, not the row's 0.1
        assert c.repeats == 3 and c.basis == "measured" and c.devices == 1
        assert c.latency_p99_ms_iqr >= 0


def test_results_falls_back_to_singlestream_latency():
    rows = _rows()
    rows = rows[rows.scenario != "MultiStream"]
    cands = candidates_from_results(rows, CATALOG)
    g = rows[(rows.hardware == "local-1c") & (rows.cfg_batch_size == 8) & (rows.cfg_threads == 1)
             & (rows.scenario == "SingleStream")]
    c = cands[(cands.hardware == "local-1c") & (cands.cfg_batch_size == 8) & (cands.cfg_threads == 1)].iloc[0]
    assert c.latency_p99_ms_point == pytest.approx(g["latency_p99_ms"].median())
    assert c.latency_p99_ms == pytest.approx(g["latency_p99_ms"].max())
    assert c.latency_source == "SingleStream"


def test_results_ignores_failed_rows_other_assets_and_uses_row_price_off_catalog():
    rows = _rows()
    bad = rows.iloc[:3].copy()
    bad["status"], bad["throughput_samples_per_s"], bad["latency_p99_ms"] = "failed", 1e9, 1e9
    other = rows.copy()
    other["asset"], other["cfg_width"] = "other", 64
    off_catalog = rows[rows.hardware == "local-2c"].copy()
    off_catalog["hardware"] = "mystery-box"
    df = pd.concat([rows, bad, other, off_catalog], ignore_index=True)
    cands = candidates_from_results(df, CATALOG, asset="mlp")
    assert cands["throughput_qps"].max() < 1e6 and cands["latency_p99_ms"].max() < 1e6
    assert "cfg_width" not in cands.columns  # another asset's hyperparameter
    mystery = cands[cands.hardware == "mystery-box"]
    assert len(mystery) == 4 and (mystery.price_per_hour_usd == 0.1).all()


def test_results_devices_come_from_catalog():
    rows = _rows()
    rows["hardware"] = rows["hardware"].replace({"local-2c": "gpu-x"})
    cands = candidates_from_results(rows, CATALOG)
    assert set(cands[cands.hardware == "gpu-x"]["devices"]) == {4.0}


def test_results_asset_selection_errors():
    rows = _rows()
    other = rows.copy()
    other["asset"] = "other"
    both = pd.concat([rows, other], ignore_index=True)
    with pytest.raises(RequirementsError, match="several assets"):
        candidates_from_results(both, CATALOG)
    with pytest.raises(NoDataError, match="no successful 'infer' rows for asset 'nope'"):
        candidates_from_results(rows, CATALOG, asset="nope")
    with pytest.raises(NoDataError, match="run a sweep"):
        candidates_from_results(pd.DataFrame(columns=["sweep_id"]), CATALOG)


def test_merge_prefers_measured():
    measured = candidates_from_results(_rows(), CATALOG)
    predicted = measured.copy()
    predicted["basis"], predicted["throughput_qps"] = "predicted", 1.0
    extra = predicted.iloc[:1].copy()
    extra["cfg_batch_size"] = 64
    merged = merge_candidates(measured, pd.concat([predicted, extra], ignore_index=True))
    assert len(merged) == len(measured) + 1
    assert (merged[merged.basis == "measured"]["throughput_qps"] > 1.0).all()
    assert merged[merged.basis == "predicted"]["cfg_batch_size"].tolist() == [64]


def test_a_value_past_the_matchers_range_is_refused_naming_the_line(tmp_path):
    """1e100 samples/s is a unit mistake; in the MILP it overflowed into a wrong "infeasible"."""
    from matcher.candidates import candidates_from_csv
    from matcher.errors import CandidateError

    p = tmp_path / "c.csv"
    p.write_text("hardware,price_per_hour_usd,latency_p99_ms,throughput_qps,accuracy\n"
                 "a,0.04,1.5,1e100,0.9\nb,0.09,1.0,1800,0.9\n")
    with pytest.raises(CandidateError, match=r"c.csv: line 2: column 'throughput_qps' must be <= 1e\+12, got '1e100'"):
        candidates_from_csv(p)


def test_a_candidate_table_carries_quality_scores_with_their_direction(tmp_path):
    from matcher.recommend import recommend

    p = tmp_path / "q.csv"
    p.write_text("hardware,price_per_hour_usd,latency_p99_ms,throughput_qps,accuracy,quality_bleu,quality_bleu_direction\n"
                 "cheap,0.1,5,100,,28.5,higher\ndear,1.0,5,100,,31.0,higher\n")
    cands = candidates_from_csv(p)
    assert "cfg_quality_bleu" not in cands.columns  # a score, not a configuration
    ans = recommend({"constraints": {"quality": {"bleu": 30}}}, cands).model_dump()
    assert ans["options"][0]["hardware"] == {"dear": 1} and ans["options"][0]["predicted"]["quality_bleu"] == 31.0
    # A score without its direction answers (no "worst" is shown for it) and cannot be bounded.
    q = tmp_path / "nodir.csv"
    q.write_text("hardware,price_per_hour_usd,latency_p99_ms,throughput_qps,accuracy,quality_bleu\ncheap,0.1,5,100,,28.5\n")
    plain = recommend({}, candidates_from_csv(q)).model_dump()
    assert plain["feasible"] and "quality_bleu" not in plain["options"][0]["predicted"]
    with pytest.raises(RequirementsError, match="direction of 'bleu' is unknown"):
        recommend({"constraints": {"quality": {"bleu": 30}}}, candidates_from_csv(q))
    p.write_text(p.read_text().replace("higher\ndear", "better\ndear"))
    with pytest.raises(CandidateError, match="line 2: column 'quality_bleu_direction' must be 'lower' or 'higher'"):
        candidates_from_csv(p)


def _table(**cols):
    base = {"hardware": ["a", "b", "c", "d"], "price_per_hour_usd": [1.0, 2.0, 3.0, 4.0],
            "latency_p99_ms": [5.0] * 4, "throughput_qps": [100.0, 200.0, 300.0, 400.0], "accuracy": [0.9] * 4}
    return pd.DataFrame({**base, **cols})


def test_pandas_missing_values_in_nullable_columns_are_blanks_like_nan():
    t = _table(throughput_qps=pd.array([100, 200, None, 400], dtype="Int64"),
               inventory=pd.array([None, None, 4, 4], dtype="Int64"))
    out = validate_candidates(t)
    assert math.isnan(out["throughput_qps"].iloc[2]) and out["throughput_qps"].iloc[3] == 400
    assert out["inventory"].isna().tolist() == [True, True, False, False]


def test_a_repeated_row_under_a_repeated_index_label_is_named_by_position():
    t = _table()
    with pytest.raises(CandidateError, match="row at position 4 repeats .* row at position 0"):
        validate_candidates(pd.concat([t, t.iloc[[0]]]))


def test_booleans_are_not_numbers_in_a_candidate_table():
    with pytest.raises(CandidateError, match=r"row 1: column 'inventory' must be a number, got True"):
        validate_candidates(_table(inventory=[None, True, 2, 2]))
    with pytest.raises(CandidateError, match=r"column 'throughput_qps' must be a number, got np.True_|got True"):
        validate_candidates(_table(throughput_qps=[True, False, True, True]))


def test_two_inventories_for_one_hardware_are_refused_naming_both_lines(tmp_path):
    p = write(tmp_path, "local-1c,0.0446,12.5,80,0.91,2,8,fp32\nlocal-1c,0.0446,7,150,,5,16,fp32\n"
                        "local-1c,0.0446,7,150,,,32,fp32\n")
    with pytest.raises(CandidateError, match=r"'inventory' is 2 for hardware 'local-1c' at line 2 but 5 at line 3"):
        candidates_from_csv(p)
    p = write(tmp_path, "local-1c,0.0446,12.5,80,0.91,2,8,fp32\nlocal-1c,0.0446,7,150,,,16,fp32\n"
                        "local-2c,0.089,7,150,,3,8,fp32\n")
    assert candidates_from_csv(p)["inventory"].tolist()[::2] == [2, 3]  # a blank row takes its hardware's number
