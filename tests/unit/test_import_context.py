"""What the command line, the file name or a second file knows: `--set` constants, values taken from
the file name by pattern, and a join with a scores file by key, so no pandas step is needed
(issue #16, item 7)."""

from __future__ import annotations

import pytest

from benchmatch.cli import build_parser
from cluster.hardware import HardwareSpec
from results.convert import convert_file
from results.importer import import_file
from results.mapping import MappingError, parse_set
from results.store import ResultsStore

CATALOG = {
    "jetson-nano": HardwareSpec("jetson-nano", "cpu", cpu_cores=4, price_per_hour_usd=0.02, price_source="t"),
    "rpi-4": HardwareSpec("rpi-4", "cpu", cpu_cores=4, price_per_hour_usd=0.01, price_source="t"),
}
BENCH = "model,batch,fps\nyolo,1,80\nyolo,4,150\nssd,1,60\n"
BASE = {"columns": {"model": "asset", "fps": "throughput_samples_per_s"}, "config": ["batch"],
        "constants": {"scenario": "Offline"}}


def test_set_gives_every_row_a_constant_and_is_checked(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text(BENCH)
    rows, rejected, _ = convert_file(src, BASE, CATALOG, constants={"hardware": "jetson-nano", "cfg_engine": "trt"})
    assert rejected == [] and {r["hardware"] for r in rows} == {"jetson-nano"}
    assert {r["cfg_engine"] for r in rows} == {"trt"}
    with pytest.raises(MappingError, match="--set hardwre=...: 'hardwre' is not a result-row column"):
        convert_file(src, BASE, CATALOG, constants={"hardwre": "x"})
    mapped = {**BASE, "columns": {**BASE["columns"], "batch": "hardware"}, "config": []}
    with pytest.raises(MappingError, match="--set hardware=...: the mapping reads 'hardware' from column 'batch'"):
        convert_file(src, mapped, CATALOG, constants={"hardware": "rpi-4"})
    # --set overrides a constant of the mapping
    rows, _, _ = convert_file(src, BASE, CATALOG, constants={"hardware": "rpi-4", "scenario": "SingleStream"})
    assert {r["scenario"] for r in rows} == {"SingleStream"}


def test_set_arguments_parse_as_yaml_scalars():
    assert parse_set(["hardware=jetson-nano", "cfg_batch=8", "cfg_tag=v1.0=rc", "device_count=2"]) == {
        "hardware": "jetson-nano", "cfg_batch": 8, "cfg_tag": "v1.0=rc", "device_count": 2}
    for bad in ("hardware", "=x"):
        with pytest.raises(MappingError, match="expected TARGET=VALUE"):
            parse_set([bad])
    a = build_parser().parse_args(["import", "f.csv", "--mapping", "m.yaml", "--set", "hardware=rpi-4",
                                   "--set", "cfg_engine=tflite", "--replace"])
    assert a.set == ["hardware=rpi-4", "cfg_engine=tflite"] and a.replace


def test_values_from_the_file_name_by_pattern(tmp_path):
    src = tmp_path / "rpi-4_tflite_int8.csv"
    src.write_text(BENCH)
    doc = {**BASE, "filename": r"^(?P<device>[a-z0-9-]+)_(?P<engine>[a-z]+)_(?P<precision>\w+)\.csv$",
           "columns": {**BASE["columns"], "device": "hardware"}, "config": ["batch", "engine", "precision"]}
    rows, rejected, _ = convert_file(src, doc, CATALOG)
    assert rejected == [] and {(r["hardware"], r["cfg_engine"], r["cfg_precision"]) for r in rows} == {
        ("rpi-4", "tflite", "int8")}
    other = tmp_path / "notes.csv"
    other.write_text(BENCH)
    with pytest.raises(MappingError, match=r"the file name 'notes.csv' does not match the mapping's filename pattern"):
        convert_file(other, doc, CATALOG)


def test_a_bad_value_from_the_file_name_is_named_with_its_origin(tmp_path):
    src = tmp_path / "rpi-4_x.csv"
    src.write_text(BENCH)
    doc = {**BASE, "filename": r"^(?P<device>[a-z0-9-]+)_(?P<power>\w+)\.csv$",
           "columns": {**BASE["columns"], "device": "hardware", "power": "avg_power_w"}}
    _, rejected, _ = convert_file(src, doc, CATALOG)
    assert "column 'power' (file name 'rpi-4_x.csv') (-> avg_power_w) must be a number, got 'x'" in rejected[0].reason
    assert rejected[0].field is None  # not a column of the file's lines


SCORES = "model,top1,mae\nyolo,71.2,0.31\nssd,68.0,0.40\n"


def test_a_join_brings_scores_per_model(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text(BENCH)
    (tmp_path / "scores.csv").write_text(SCORES)
    doc = {**BASE, "join": [{"file": "scores.csv", "on": "model", "prefix": "s_"}],
           "columns": {**BASE["columns"], "s_top1": {"target": "accuracy", "unit": "percent"},
                       "s_mae": {"target": "quality_mae", "direction": "lower"}}}
    report = import_file(src, doc, results_uri=tmp_path / "store", catalog=CATALOG, constants={"hardware": "rpi-4"})
    assert report.ok and report.added == 3
    rows = ResultsStore(tmp_path / "store").read().set_index(["asset", "cfg_batch"])
    assert rows.loc[("yolo", 4), "accuracy"] == pytest.approx(0.712)
    assert rows.loc[("ssd", 1), "quality_mae"] == pytest.approx(0.40)


def test_a_record_without_a_join_match_is_named_and_optional_joins_leave_it_empty(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text(BENCH + "mobilenet,1,200\n")
    (tmp_path / "scores.csv").write_text(SCORES)
    doc = {**BASE, "join": [{"file": "scores.csv", "on": {"model": "model"}, "columns": ["top1"]}],
           "columns": {**BASE["columns"], "top1": {"target": "accuracy", "unit": "percent"}}}
    rows, rejected, _ = convert_file(src, doc, CATALOG, constants={"hardware": "rpi-4"})
    assert len(rows) == 3 and rejected[0].row == "line 5"
    assert "no row of scores.csv has the join key (model = 'mobilenet')" in rejected[0].reason
    doc["join"][0]["required"] = False
    rows, rejected, _ = convert_file(src, doc, CATALOG, constants={"hardware": "rpi-4"})
    assert rejected == [] and len(rows) == 4 and "accuracy" not in rows[-1]


def test_a_bad_score_is_named_in_the_join_file(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text(BENCH)
    (tmp_path / "scores.csv").write_text("model,top1\nyolo,high\nssd,68\n")
    doc = {**BASE, "join": [{"file": "scores.csv", "on": "model"}],
           "columns": {**BASE["columns"], "top1": {"target": "accuracy", "unit": "percent"}}}
    _, rejected, _ = convert_file(src, doc, CATALOG, constants={"hardware": "rpi-4"})
    assert [r.row for r in rejected] == ["line 2", "line 3"]
    assert "column 'top1' (scores.csv line 2, column 'top1') (-> accuracy) must be a number, got 'high'" \
        in rejected[0].reason


@pytest.mark.parametrize(("scores", "join", "says"), [
    (SCORES + "yolo,70,0.3\n", {"on": "model"}, r"scores.csv: line 4 repeats the key \{'model': 'yolo'\} of line 2"),
    (SCORES, {"on": "name"}, r"join key column\(s\) \['name'\] not in the file"),
    (SCORES, {"on": "model", "columns": ["top5"]}, r"join.columns \['top5'\] not in the file"),
    ("model,fps\nyolo,1\n", {"on": "model"}, r"joined column\(s\) \['fps'\] from scores.csv are also columns here"),
    (SCORES, {"on": "model", "file": "nope.csv"}, "join file 'nope.csv' not found"),
])
def test_join_mistakes_fail_the_whole_file(tmp_path, scores, join, says):
    src = tmp_path / "bench.csv"
    src.write_text(BENCH)
    (tmp_path / "scores.csv").write_text(scores)
    doc = {**BASE, "join": [{"file": "scores.csv", **join}]}
    with pytest.raises(MappingError, match=says):
        import_file(src, doc, results_uri=tmp_path / "s", catalog=CATALOG, constants={"hardware": "rpi-4"})
    assert not (tmp_path / "s").exists()
