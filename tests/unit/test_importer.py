"""Import of other tools' results: the matcher works on imported rows as on its own (round trips
through an MLPerf summary and a generic CSV), bad rows are rejected with their row number as in the
file, units convert, and mapping mistakes are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.hardware import HardwareSpec, load_catalog
from matcher.candidates import candidates_from_results
from matcher.recommend import recommend
from results.convert import convert_file
from results.exporter import export_generic, export_mlperf_summary
from results.ids import trial_id
from results.importer import import_file
from results.mapping import MappingError, load_mapping
from results.store import ResultsStore
from tests.fixtures.instances import synthetic_result_rows

ROOT = Path(__file__).resolve().parents[2]
MLPERF_MAP = ROOT / "configs" / "mappings" / "mlperf-inference-summary.yaml"
GENERIC_MAP = ROOT / "configs" / "mappings" / "generic-csv.yaml"
MLPERF_EXAMPLE = ROOT / "configs" / "examples" / "mlperf-inference-summary.csv"
GENERIC_EXAMPLE = ROOT / "configs" / "examples" / "generic-results.csv"

CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.0446, price_source="t", local=True),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, price_per_hour_usd=0.08925, price_source="t", local=True),
    "gpu-1": HardwareSpec("gpu-1", "A10G", device_count=1, price_per_hour_usd=1.0, price_source="t"),
}
CAND_COLS = ["hardware", "price_per_hour_usd", "latency_p99_ms", "throughput_qps", "accuracy", "devices", "repeats",
             "latency_source"]
REQ = {"constraints": {"throughput_qps": 3000, "latency_p99_ms": 30}, "top_k": 3}


def _mapping_with_config(path: Path, config: list[str]) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["config"] = config
    doc["optional"] = [*config, "repeat"]
    return doc


def _same_candidates(a: pd.DataFrame, b: pd.DataFrame, cfg: list[str]) -> None:
    cols = CAND_COLS + cfg
    a = a[cols].sort_values(["hardware", *cfg]).reset_index(drop=True)
    b = b[cols].sort_values(["hardware", *cfg]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False, rtol=1e-9)


def _options(ans) -> list[tuple]:
    return [(o.hardware, o.config, round(o.cost_per_hour_usd, 9)) for o in ans.options]


@pytest.fixture(scope="module")
def original() -> pd.DataFrame:
    # Three scenarios, three repeats, two hyperparameters: what a sweep writes.
    return synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 4, 16), threads=(1, 2),
                                 repeats=3, seed=5)


@pytest.mark.parametrize("layout", ["mlperf", "generic"])
def test_round_trip_gives_the_same_candidates_and_recommendation(tmp_path, original, layout):
    cfg = ["batch_size", "threads"]
    if layout == "mlperf":
        table, mapping = export_mlperf_summary(original, CATALOG), _mapping_with_config(MLPERF_MAP, cfg)
    else:
        table, mapping = export_generic(original), _mapping_with_config(GENERIC_MAP, cfg)
    src = tmp_path / f"{layout}.csv"
    table.to_csv(src, index=False)
    report = import_file(src, mapping, results_uri=tmp_path / "store", catalog=CATALOG)
    assert report.rejected == [] and report.imported == len(table)
    assert report.trials == 12 and len(report.files) == 1  # one part file per import
    imported = ResultsStore(tmp_path / "store").read()
    assert report.added == len(imported) and report.merged == report.unchanged == 0
    a, b = candidates_from_results(original, CATALOG), candidates_from_results(imported, CATALOG)
    _same_candidates(a, b, ["cfg_batch_size", "cfg_threads"])
    assert _options(recommend(REQ, a)) == _options(recommend(REQ, b))
    assert _options(recommend(REQ, a))  # a real answer, not two empty ones


@pytest.mark.parametrize(("example", "mapping"), [(MLPERF_EXAMPLE, MLPERF_MAP), (GENERIC_EXAMPLE, GENERIC_MAP)])
def test_real_results_exported_and_imported_recommend_the_same(tmp_path, example, mapping):
    catalog = load_catalog()
    # The shipped generic example holds the real quickstart rows (configs/examples/README.md).
    import_file(GENERIC_EXAMPLE, GENERIC_MAP, results_uri=tmp_path / "real", catalog=catalog)
    real = ResultsStore(tmp_path / "real").read()
    fresh = tmp_path / example.name
    (export_mlperf_summary(real, catalog) if example == MLPERF_EXAMPLE else export_generic(real)).to_csv(fresh, index=False)
    report = import_file(fresh, mapping, results_uri=tmp_path / "store", catalog=catalog)
    assert report.rejected == []
    imported = ResultsStore(tmp_path / "store").read()
    a, b = candidates_from_results(real, catalog), candidates_from_results(imported, catalog)
    _same_candidates(a, b, ["cfg_batch_size", "cfg_dtype"])
    req = {"constraints": {"throughput_qps": 200000, "latency_p99_ms": 5, "accuracy": 0.9}}
    assert _options(recommend(req, a)) == _options(recommend(req, b))


def test_shipped_examples_import_cleanly_and_agree(tmp_path):
    """Both examples are the same real quickstart rows in two layouts: same candidates."""
    catalog = load_catalog()
    stores = []
    for example, mapping in ((MLPERF_EXAMPLE, MLPERF_MAP), (GENERIC_EXAMPLE, GENERIC_MAP)):
        store = tmp_path / example.stem
        report = import_file(example, mapping, results_uri=store, catalog=catalog)
        assert report.rejected == [] and report.imported == 24 and report.trials == 8
        assert report.sweep_id == f"import-{example.stem}"
        stores.append(candidates_from_results(ResultsStore(store).read(), catalog))
    _same_candidates(*stores, ["cfg_batch_size", "cfg_dtype"])


BAD_CSV = """\
model,machine,batch_size,scenario,p99_us,samples_per_s,accuracy_pct
mlp,local-1c,1,Offline,,1000,90
mlp,local-1c,1,MultiStream,abc,,90
mlp,local-9x,1,Offline,,1000,90

mlp,local-2c,1,Offline,,-5,90
mlp,local-2c,1,Offline,,inf,90
,local-2c,2,Offline,,1000,90
"mlp","local-2c",4,"MultiStream","1
2",,90
mlp,local-2c,8,Warmup,,1000,90
mlp,local-2c,8,MultiStream,1200,,
mlp,local-2c,8
mlp,local-1c,2,Offline,,,
"""


def _generic_mapping(**extra) -> dict:
    doc = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario", "p99_us": "latency_p99_ms",
                       "samples_per_s": "throughput_samples_per_s", "accuracy_pct": "accuracy"},
           "units": {"p99_us": "us", "accuracy_pct": "percent"}, "config": ["batch_size"],
           "constants": {"task": "infer"}}
    doc.update(extra)
    return doc


def test_bad_rows_are_rejected_with_their_line_numbers_and_good_rows_written(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text(BAD_CSV)
    report = import_file(src, _generic_mapping(), results_uri=tmp_path / "store", catalog=CATALOG)
    reasons = {r.row: r.reason for r in report.rejected}
    assert set(reasons) == {"line 3", "line 4", "line 6", "line 7", "line 8", "line 9", "line 11", "line 13",
                            "line 14"}
    assert "column 'p99_us' (-> latency_p99_ms) must be a number, got 'abc'" in reasons["line 3"]
    assert "hardware 'local-9x' is not in the hardware catalog (known: gpu-1, local-1c, local-2c)" in reasons["line 4"]
    assert "must be >= 0, got '-5'" in reasons["line 6"]
    assert "must be a finite number, got 'inf'" in reasons["line 7"]
    assert "'asset' is empty" in reasons["line 8"]
    assert "must be a number, got '1\\n2'" in reasons["line 9"]  # a quoted field spanning lines 9-10
    assert "scenario 'Warmup'" in reasons["line 11"]
    assert "has 3 fields, the header has 7" in reasons["line 13"]
    assert "no metric value" in reasons["line 14"]
    assert report.imported == 2 and report.lines()[0].startswith("2 rows imported, 9 rejected")
    rows = ResultsStore(tmp_path / "store").read()
    assert sorted(rows["import_source"]) == ["bad.csv: line 12", "bad.csv: line 2"]
    ms = rows[rows["scenario"] == "MultiStream"].iloc[0]
    assert ms["latency_p99_ms"] == pytest.approx(1.2) and math.isnan(ms["accuracy"])  # us -> ms; empty = missing
    off = rows[rows["scenario"] == "Offline"].iloc[0]
    assert off["accuracy"] == pytest.approx(0.9) and off["throughput_samples_per_s"] == 1000


def test_unknown_hardware_can_be_allowed_and_device_counts_must_match(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("model,machine,scenario,samples_per_s,gpus\nmlp,my-box,Offline,10,\nmlp,gpu-1,Offline,10,8\n"
                   "mlp,gpu-1,Offline,12,1\n")
    mapping = _generic_mapping(config=[], units={}, allow_unknown_hardware=True,
                               columns={"model": "asset", "machine": "hardware", "scenario": "scenario",
                                        "samples_per_s": "throughput_samples_per_s", "gpus": "device_count"})
    rows, rejected, _ = convert_file(src, mapping, CATALOG)
    assert [r["hardware"] for r in rows] == ["my-box", "gpu-1"]
    assert [(r.row, r.reason.split(";")[0]) for r in rejected] == [
        ("line 3", "device_count 8 differs from the catalog's 'gpu-1' (1)")]
    assert rows[1]["accelerator_type"] == "A10G"  # a fact of the catalog entry, filled in


def test_units_convert_to_the_schema_units(tmp_path):
    src = tmp_path / "u.json"
    src.write_text(json.dumps([
        {"a": "mlp", "h": "local-1c", "s": "single-stream", "lat": 0.002, "e": 3.0, "p": 50, "mem": 1},
        {"a": "mlp", "h": "local-1c", "s": "offline", "lat": None, "e": None, "p": 50, "mem": 2},
    ]))
    mapping = {"columns": {"a": "asset", "h": "hardware", "s": "scenario", "lat": "latency_p99_ms",
                           "e": "energy_per_sample_j", "p": "accuracy", "mem": "peak_memory_mb"},
               "units": {"lat": "s", "e": "mJ", "p": "%", "mem": "GiB"}}
    rows, rejected, _ = convert_file(src, mapping, CATALOG)
    assert rejected == []
    single, offline = rows
    assert single["scenario"] == "SingleStream" and offline["scenario"] == "Offline" and single["task"] == "infer"
    assert single["latency_p99_ms"] == pytest.approx(2.0) and single["energy_per_sample_j"] == pytest.approx(0.003)
    assert single["accuracy"] == pytest.approx(0.5) and offline["peak_memory_mb"] == pytest.approx(2048)
    assert "latency_p99_ms" not in offline  # JSON null = missing, never 0


def test_json_lines_and_parquet_name_rows_as_in_the_file(tmp_path):
    jl = tmp_path / "r.jsonl"
    jl.write_text('{"a": "mlp", "h": "local-1c", "t": 5}\n\n[1]\n{"a": "mlp", "h": "local-1c", "t": -1}\n')
    mapping = {"columns": {"a": "asset", "h": "hardware", "t": "throughput_samples_per_s"},
               "constants": {"scenario": "Offline"}}
    rows, rejected, _ = convert_file(jl, mapping, CATALOG)
    assert len(rows) == 1 and [(r.row, r.reason[:20]) for r in rejected] == [
        ("line 3", "expected an object, "), ("line 4", "column 't' (-> throu")]
    pq_path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"a": ["mlp", "mlp"], "h": ["local-1c", "nope"], "t": [5.0, 6.0]}), pq_path)
    rows, rejected, _ = convert_file(pq_path, mapping, CATALOG)
    assert len(rows) == 1 and [r.row for r in rejected] == ["row 2"]


def test_trial_ids_are_stable_and_a_reimport_adds_nothing(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("model,machine,batch_size,scenario,samples_per_s\nmlp,local-1c,8,Offline,100\n"
                   "mlp,local-1c,8,Offline,110\n")
    mapping = _generic_mapping(units={}, columns={"model": "asset", "machine": "hardware", "scenario": "scenario",
                                                  "samples_per_s": "throughput_samples_per_s"})
    first = import_file(src, mapping, results_uri=tmp_path / "s", catalog=CATALOG, sweep_id="mine")
    again = import_file(src, mapping, results_uri=tmp_path / "s", catalog=CATALOG, sweep_id="mine")
    rows = ResultsStore(tmp_path / "s").read()
    assert len(rows) == 2 and sorted(rows["repeat"]) == [0, 1]  # same (trial, scenario) twice = repeats
    assert set(rows["trial_id"]) == {trial_id("mlp", "infer", "local-1c", {"batch_size": 8})}
    assert first.trials == 1 and first.added == 2 and set(rows["sweep_id"]) == {"mine"}
    assert (again.added, again.unchanged, again.files, again.imported, again.ok) == (0, 2, [], 0, True)
    assert "0 added, 0 merged into stored rows, 0 replaced, 2 already stored" in again.lines()[1]


def test_merge_joins_mlperf_power_rows_and_rejects_conflicts(tmp_path):
    head = "SystemName,Model,Scenario,Result,Units,Accuracy,accelerators_per_node\n"
    src = tmp_path / "s.csv"
    src.write_text(head + "local-1c,mlp,Offline,500,Samples/s,acc: 91.5,N/A\n"
                          "local-1c,mlp,Offline,12.5,Watts,acc: 91.5,N/A\n"
                          "local-1c,mlp,Offline,700,Samples/s,acc: 91.5,N/A\n"
                          "local-1c,mlp,Offline,90,Tokens/s,acc: 91.5,N/A\n")
    report = import_file(src, MLPERF_MAP, results_uri=tmp_path / "st", catalog=CATALOG)
    assert report.imported == 2
    assert [r.row for r in report.rejected] == ["line 4", "line 5"]
    assert "repeats column(s) ['throughput_samples_per_s'] of line 2" in report.rejected[0].reason
    # Tokens/s matches no rule: rejected, not read as samples/s nor silently dropped
    assert "column 'Result' = '90' matches no rule of the mapping (Scenario='Offline', Units='Tokens/s')" \
        in report.rejected[1].reason
    row = ResultsStore(tmp_path / "st").read().iloc[0]
    assert (row["throughput_samples_per_s"], row["avg_power_w"]) == (500, 12.5)
    assert row["accuracy"] == pytest.approx(0.915) and row["import_source"] == "s.csv: line 2, line 3"


@pytest.mark.parametrize(("doc", "says"), [
    ({"columns": {"x": "latency_p99"}}, "unknown target column 'latency_p99'; did you mean 'latency_p99_ms'?"),
    ({"colums": {}}, "colums: unknown field; did you mean 'columns'?"),
    ({"columns": {"x": "trial_id"}}, "'trial_id' is derived by the importer"),
    ({"columns": {"x": "throughput_samples_per_s"}, "units": {"x": "ms"}},
     "unknown unit 'ms' for 'throughput_samples_per_s' (samples/s); known rate units: samples/s"),
    ({"columns": {"x": "latency_p99_ms"}, "units": {"x": "fortnights"}}, "unknown unit 'fortnights'"),
    ({"columns": {"x": "latency_p99_ms"}, "units": {"x": "fortnights"}}, "known time units: h, hour"),
    ({"columns": {"x": {"target": "quality_mae"}}}, "needs its direction"),
    ({"columns": {"x": {"target": "accuracy", "direction": "lower"}}}, "`direction` is for quality_<name>"),
    ({"columns": {"x": {"target": "accuracy", "scenario": "Offline"}}}, "goes to every row of the record"),
    ({"columns": {"x": {"target": "latency_p99_ms", "scenario": "Warmup"}}}, "scenario 'Warmup' is not one of"),
    ({"columns": {"x": {"target": "parameters", "scale": "zillion"}}}, "scale 'zillion' is not a number"),
    ({"columns": {"x": {"target": "asset", "scale": 1000}}}, "`scale` and `multiply_by` apply to numeric"),
    ({"filename": "no-groups"}, "needs named groups"),
    ({"filter": {"x": "("}}, "filter.x: not a valid regex"),
    ({"columns": {"x": "asset"}, "constants": {"asset": "y"}}, "constants.asset is also mapped from column 'x'"),
    ({"extract": {"x": "no group"}}, "needs one group"),
])
def test_mapping_mistakes_are_named(doc, says):
    with pytest.raises(MappingError) as exc:
        load_mapping(doc)
    assert says in str(exc.value)


def test_a_column_the_file_lacks_fails_the_whole_file(tmp_path):
    src = tmp_path / "f.csv"
    src.write_text("model,machine\nmlp,local-1c\n")
    with pytest.raises(MappingError, match=r"reads column\(s\) \['scenario'\] that the file does not have"):
        import_file(src, {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario"}},
                    results_uri=tmp_path / "s", catalog=CATALOG)
    assert not (tmp_path / "s").exists()


def test_shipped_mappings_load():
    for path in sorted((ROOT / "configs" / "mappings").glob("*.yaml")):
        assert load_mapping(path).all_rules()
