"""Values that cannot be measurements are refused at import, named by the file's own line and column,
and the rest of the file lands; recommend then works on what landed (issue #16, item 2)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from matcher.recommend import recommend
from results.convert import convert_file
from results.importer import import_file
from results.store import ResultsStore

CATALOG = {"local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.05, price_source="t",
                                    local=True)}
MAP = {"columns": {"model": "asset", "machine": "hardware", "batch": "cfg_batch_size",
                   "lat_ms": {"target": "latency_p99_ms", "scenario": "MultiStream"},
                   "qps": {"target": "throughput_samples_per_s", "scenario": "Offline"}},
       "constants": {"task": "infer"}}

CSV = """model,machine,batch,lat_ms,qps
mlp,local-1c,1,2.0,500
mlp,local-1c,2,2.5,0
mlp,local-1c,4,3.0,-40
mlp,local-1c,8,NaN,1500
mlp,local-1c,16,fast,1800
mlp,local-1c,32,0,2000
mlp,local-1c,64,9.0,inf
mlp,local-1c,128,12.0,2600
"""


def test_each_bad_value_is_named_by_line_and_column_and_the_rest_lands(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text(CSV)
    report = import_file(src, MAP, results_uri=tmp_path / "store", catalog=CATALOG)
    got = {r.row: (r.column, r.field, r.reason) for r in report.rejected}
    assert set(got) == {"line 3", "line 4", "line 5", "line 6", "line 7", "line 8"}
    assert got["line 3"][:2] == ("qps", 5) and "column 'qps' (-> throughput_samples_per_s) must be > 0, got '0'" \
        in got["line 3"][2]
    assert "never 0; leave the cell empty" in got["line 3"][2]
    assert got["line 4"][:2] == ("qps", 5) and "must be >= 0, got '-40'" in got["line 4"][2]
    assert got["line 5"][:2] == ("lat_ms", 4) and "must be a finite number, got 'NaN'" in got["line 5"][2]
    assert got["line 6"][:2] == ("lat_ms", 4) and "must be a number, got 'fast'" in got["line 6"][2]
    assert got["line 7"][:2] == ("lat_ms", 4) and "(-> latency_p99_ms) must be > 0, got '0'" in got["line 7"][2]
    assert got["line 8"][:2] == ("qps", 5) and "must be a finite number, got 'inf'" in got["line 8"][2]
    text = "\n".join(report.lines())
    assert f"{src}: line 3: column 'qps' (-> throughput_samples_per_s) must be > 0, got '0'" in text
    assert "(field 5)" in text
    assert report.imported == 2 and report.added == 4  # two good records, two scenarios each
    doc = report.to_dict()
    assert doc["rejected"][0] == {"row": "line 3", "column": "qps", "field": 5, "reason": got["line 3"][2]}
    # What landed answers: no record of the file can break `recommend` later.
    cands = candidates_from_results(ResultsStore(tmp_path / "store").read(), CATALOG)
    assert sorted(cands["cfg_batch_size"]) == [1, 128]
    assert recommend({"constraints": {"throughput_qps": 1000, "latency_p99_ms": 20}}, cands).options


def test_a_zero_that_means_not_measured_can_be_mapped_to_empty(tmp_path):
    src = tmp_path / "bench.csv"
    src.write_text("model,machine,batch,lat_ms,qps\nmlp,local-1c,1,2.0,0\n")
    doc = {**MAP, "values": {"qps": {0: None}}}  # YAML's `{0: null}`: the key is matched as text
    rows, rejected, _ = convert_file(src, doc, CATALOG)
    assert rejected == [] and [r["scenario"] for r in rows] == ["MultiStream"]


def test_json_and_parquet_name_the_key_and_the_record(tmp_path):
    js = tmp_path / "b.json"
    js.write_text(json.dumps([{"model": "mlp", "machine": "local-1c", "batch": 1, "lat_ms": 2.0, "qps": 10},
                              {"model": "mlp", "machine": "local-1c", "batch": 2, "lat_ms": 2.0, "qps": 0}]))
    _, rejected, _ = convert_file(js, MAP, CATALOG)
    (r,) = rejected
    assert (r.row, r.column, r.field) == ("record 2", "qps", None) and "must be > 0" in r.reason
    pq_path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"model": ["mlp"], "machine": ["local-1c"], "batch": [1], "lat_ms": [-1.0],
                             "qps": [3.0]}), pq_path)
    _, rejected, _ = convert_file(pq_path, MAP, CATALOG)
    (r,) = rejected
    assert (r.row, r.column, r.field) == ("row 1", "lat_ms", 4)


@pytest.mark.parametrize(("value", "says"), [("0", "must be > 0"), ("-1", "must be >= 0"), ("x", "must be a number")])
def test_constants_are_checked_like_values(tmp_path, value, says):
    from results.mapping import MappingError

    src = tmp_path / "b.csv"
    src.write_text("model,machine,batch,lat_ms,qps\nmlp,local-1c,1,2.0,10\n")
    with pytest.raises(MappingError, match=f"--set avg_power_w={value}: the value {says}"):
        convert_file(src, MAP, CATALOG, constants={"avg_power_w": value})
