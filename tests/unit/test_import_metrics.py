"""One source row holding latency, throughput, power and quality becomes the result rows of the right
scenarios in one import (issue #16, item 3), and a lower-is-better quality score is stored with its
direction (item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from results.convert import convert_file
from results.importer import import_file
from results.mapping import MappingError
from results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
CATALOG = {
    "jetson-nano": HardwareSpec("jetson-nano", "cpu", cpu_cores=4, price_per_hour_usd=0.02, price_source="t"),
    "rpi-4": HardwareSpec("rpi-4", "cpu", cpu_cores=4, price_per_hour_usd=0.01, price_source="t"),
}
WIDE = """device,model,precision,batch,mean_ms,p99_ms,fps,power_w,top1_pct,mae,params_m,gflops
jetson-nano,yolo,fp16,1,12.5,15.0,80,9.5,71.2,0.31,5.3,8.7
jetson-nano,yolo,int8,1,8.0,9.9,120,8.0,70.1,0.35,5.3,8.7
rpi-4,yolo,fp32,1,140.0,180.0,7,4.1,71.4,0.30,5.3,8.7
"""
MAP = {
    "columns": {
        "device": "hardware", "model": "asset",
        "mean_ms": {"target": "latency_mean_ms", "scenario": "SingleStream"},
        "p99_ms": {"target": "latency_p99_ms", "scenario": "SingleStream"},
        "fps": {"target": "throughput_samples_per_s", "unit": "samples/s", "scenario": "Offline"},
        "power_w": {"target": "avg_power_w", "unit": "W", "scenario": "Offline"},
        "top1_pct": {"target": "accuracy", "unit": "percent"},
        "mae": {"target": "quality_mae", "direction": "lower"},
        "params_m": {"target": "parameters", "scale": "M"},
        "gflops": {"target": "flops_per_sample", "unit": "GFLOP"},
    },
    "config": ["precision", "batch"],
    "constants": {"task": "infer"},
}


def test_one_row_becomes_the_rows_of_its_scenarios_with_every_metric(tmp_path):
    src = tmp_path / "edge.csv"
    src.write_text(WIDE)
    report = import_file(src, MAP, results_uri=tmp_path / "store", catalog=CATALOG)
    assert report.ok and report.imported == 3 and report.added == 6 and len(report.files) == 1
    rows = ResultsStore(tmp_path / "store").read()
    first = rows[rows["import_source"] == "edge.csv: line 2"].set_index("scenario")
    assert sorted(first.index) == ["Offline", "SingleStream"]
    ss, off = first.loc["SingleStream"], first.loc["Offline"]
    assert (ss["latency_mean_ms"], ss["latency_p99_ms"]) == (12.5, 15.0)
    assert (off["throughput_samples_per_s"], off["avg_power_w"]) == (80.0, 9.5)
    assert pd_isnan(ss["throughput_samples_per_s"]) and pd_isnan(off["latency_p99_ms"])
    for r in (ss, off):  # the scenario-free metrics go to every row of the record
        assert r["accuracy"] == pytest.approx(0.712) and r["quality_mae"] == pytest.approx(0.31)
        assert r["quality_mae_direction"] == "lower"
        assert r["parameters"] == 5_300_000 and r["flops_per_sample"] == pytest.approx(8.7e9)
    # The matcher reads latency and throughput of each configuration from this one import.
    cands = candidates_from_results(rows, CATALOG).set_index(["hardware", "cfg_precision"])
    assert cands.loc[("jetson-nano", "int8"), "throughput_qps"] == 120
    assert cands.loc[("jetson-nano", "int8"), "latency_p99_ms"] == 9.9
    assert cands.loc[("rpi-4", "fp32"), "power_w"] == pytest.approx(4.1)


def pd_isnan(v) -> bool:
    return v != v


def test_metrics_without_a_scenario_join_the_records_own_scenario(tmp_path):
    src = tmp_path / "m.csv"
    src.write_text("device,model,scenario,p99_ms,fps\njetson-nano,yolo,Offline,15.0,80\n")
    doc = {"columns": {"device": "hardware", "model": "asset", "scenario": "scenario",
                       "p99_ms": {"target": "latency_p99_ms", "scenario": "MultiStream"},
                       "fps": "throughput_samples_per_s"}}
    rows, rejected, labels = convert_file(src, doc, CATALOG)
    assert rejected == [] and labels == [["line 2"], ["line 2"]]
    by = {r["scenario"]: r for r in rows}
    assert by["Offline"]["throughput_samples_per_s"] == 80 and "latency_p99_ms" not in by["Offline"]
    assert by["MultiStream"]["latency_p99_ms"] == 15.0
    src.write_text("device,model,scenario,p99_ms,fps\njetson-nano,yolo,,15.0,80\n")
    _, rejected, _ = convert_file(src, doc, CATALOG)
    assert "column 'fps' gives 'throughput_samples_per_s' without a scenario" in rejected[0].reason


def test_a_record_with_no_metric_value_is_rejected(tmp_path):
    src = tmp_path / "m.csv"
    src.write_text("device,model,precision,batch,mean_ms,p99_ms,fps,power_w,top1_pct,mae,params_m,gflops\n"
                   "rpi-4,yolo,fp32,1,,,,,,,,\n")
    _, rejected, _ = convert_file(src, MAP, CATALOG)
    assert "no metric value" in rejected[0].reason


def test_quality_direction_must_agree_with_the_store(tmp_path):
    src = tmp_path / "edge.csv"
    src.write_text(WIDE)
    import_file(src, MAP, results_uri=tmp_path / "store", catalog=CATALOG)
    flipped = {**MAP, "columns": {**MAP["columns"], "mae": {"target": "quality_mae", "direction": "higher"}}}
    with pytest.raises(MappingError, match="quality score 'mae' of asset 'yolo' is higher-is-better in this mapping "
                                           "but lower-is-better in the store"):
        import_file(src, flipped, results_uri=tmp_path / "store", catalog=CATALOG, sweep_id="other")


def test_quality_scores_may_be_negative_but_not_text(tmp_path):
    src = tmp_path / "q.csv"
    src.write_text("device,model,r2,mae\nrpi-4,m,-0.2,0.5\nrpi-4,m,0.4,abc\n")
    doc = {"columns": {"device": "hardware", "model": "asset", "r2": {"target": "quality_r2", "direction": "higher"},
                       "mae": {"target": "quality_mae", "direction": "lower"}},
           "constants": {"scenario": "Offline"}}
    rows, rejected, _ = convert_file(src, doc, CATALOG)
    assert rows[0]["quality_r2"] == -0.2 and rows[0]["quality_r2_direction"] == "higher"
    assert rejected[0].row == "line 3" and "column 'mae' (-> quality_mae) must be a number, got 'abc'" in rejected[0].reason


def test_the_shipped_wide_table_template_reads_its_example(tmp_path):
    src = tmp_path / "jetson-nano_tensorrt.csv"
    src.write_text("model,precision,batch,params_m,gflops,mean_ms,p99_ms,fps,power_w,mae\n"
                   "yolo,fp16,1,5.3,8.7,12.5,15.0,80,9.5,0.31\n")
    report = import_file(src, ROOT / "configs" / "mappings" / "one-row-many-metrics.yaml",
                         results_uri=tmp_path / "s", catalog=CATALOG, constants={"hardware": "jetson-nano"})
    assert report.ok and report.added == 2
    rows = ResultsStore(tmp_path / "s").read()
    assert set(rows["cfg_engine"]) == {"tensorrt"} and set(rows["hardware"]) == {"jetson-nano"}


def test_a_lower_is_better_score_is_bounded_as_a_cap(tmp_path):
    """Item 6, matcher side: `constraints.quality.mae` keeps replicas whose MAE is at most the bound,
    because the import said lower is better; a score the data lacks is an error naming the field."""
    from matcher.errors import RequirementsError
    from matcher.recommend import recommend, recommend_plan

    src = tmp_path / "edge.csv"
    src.write_text(WIDE)
    import_file(src, MAP, results_uri=tmp_path / "store", catalog=CATALOG)
    cands = candidates_from_results(ResultsStore(tmp_path / "store").read(), CATALOG)
    req = {"constraints": {"latency_mean_ms": 200, "quality": {"mae": 0.32}}, "top_k": 5}
    ans = recommend(req, cands).model_dump()
    used = {(hw, o["config"]["precision"]) for o in ans["options"] for hw in o["hardware"]}
    assert used == {("jetson-nano", "fp16"), ("rpi-4", "fp32")}  # int8's MAE 0.35 is over the cap
    assert all(o["predicted"]["quality_mae"] <= 0.32 for o in ans["options"])
    tight = recommend({"constraints": {"quality": {"mae": 0.1}}}, cands).model_dump()
    fix = tight["diagnosis"]["relaxations"][0]
    assert not tight["feasible"] and fix["field"] == "constraints.quality.mae" and fix["to"] == pytest.approx(0.30)
    with pytest.raises(RequirementsError, match=r"constraints\.quality\.bleu: no candidate has the quality score 'bleu'.*mae"):
        recommend({"constraints": {"quality": {"bleu": 30}}}, cands)
    with pytest.raises(RequirementsError, match=r"workloads\.0\.constraints\.quality\.bleu"):
        recommend_plan({"workloads": [{"constraints": {"quality": {"bleu": 30}}}]}, [cands])
