"""The shipped mappings read public result files of other versions and layouts than the examples
they were written with, one `benchmatch import` each: MLPerf Inference summaries from v0.7 to v6.1
(with and without `Units`, `results_summary.csv`, the `Interactive` scenario, multi-node systems,
seconds), vLLM `benchmark_serving.py` files of older versions and `--append-result` files, GuideLLM
v0.3 reports. The excerpts are in tests/fixtures/public_formats/ (its README names each file's
repository, path and commit); the generic parts (`aliases`, several JSON documents in one file,
case-forgiving `when`) are tested on small files written here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmatch.cli import main
from cluster.hardware import HardwareSpec
from results.convert import convert_file
from results.importer import import_file
from results.mapping import MappingError, load_mapping
from results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ROOT / "tests" / "fixtures" / "public_formats"
MAPS = ROOT / "configs" / "mappings"
MLPERF_MAP, VLLM_MAP, GUIDELLM_MAP = (MAPS / f"{n}.yaml" for n in ("mlperf-inference-results", "vllm-bench-serve",
                                                                     "guidellm-report"))
HW = "H100-SXM"
CATALOG = {HW: HardwareSpec(HW, "H100", device_count=1, price_per_hour_usd=6.88, price_source="test")}


def _import(path, mapping, tmp_path, catalog=None, constants=None):
    store = tmp_path / "store"
    report = import_file(path, mapping, results_uri=store, catalog=catalog if catalog is not None else {},
                         constants=constants)
    rows = ResultsStore(store).read() if report.files else pd.DataFrame()
    return report, rows


def _empty(rows: pd.DataFrame, i, col: str) -> bool:
    return col not in rows.columns or pd.isna(rows.loc[i, col])


# ----------------------------------------------------------------------------------------------
# MLPerf Inference summaries of other rounds
# ----------------------------------------------------------------------------------------------


def test_mlperf_v61_summary_reads_every_row_right(tmp_path):
    report, rows = _import(FORMATS / "mlperf-inference-v6.1-summary-excerpt.csv", MLPERF_MAP, tmp_path)
    assert report.ok and (report.imported, report.added) == (7, 7), report.lines()
    by = rows.set_index(["asset", "hardware", "scenario", rows["cfg_mlperf_scenario"].fillna("")])
    # DLRM lists NE (lower is better) first: the AUC is the accuracy kept.
    dlrm = by.loc[("dlrm-v3", "8xMI350X_2xEPYC_9575F", "Offline", "")]
    assert dlrm["quality_mlperf_accuracy"] == pytest.approx(0.7862871466027813)
    assert dlrm["throughput_samples_per_s"] == pytest.approx(10891.1) and dlrm["device_count"] == 8
    # "Latency (s)": seconds, stored as ms
    wan = by.loc[("wan-2.2-t2v-a14b", "Quanta Grand Teton 1.5 MI350", "SingleStream", "")]
    assert wan["latency_p90_ms"] == pytest.approx(20603.024726)
    # ROUGE1 first: read, not rejected; Interactive is a Server run under tighter limits, its own trial
    server = by.loc[("llama2-70b-99.9", "smci355-ccs-aus-m13-13 (AS -4126GS-NMR-LCC)", "Server", "")]
    inter = by.loc[("llama2-70b-99.9", "smci355-ccs-aus-m13-13 (AS -4126GS-NMR-LCC)", "Server", "Interactive")]
    assert server["throughput_samples_per_s"] == pytest.approx(103275.0)
    assert inter["throughput_samples_per_s"] == pytest.approx(73191.5)
    assert server["sample_unit"] == inter["sample_unit"] == "token"
    assert inter["quality_mlperf_accuracy"] == pytest.approx(44.5125) and server["trial_id"] != inter["trial_id"]
    # 9 nodes x 8 accelerators: 72 devices (total_accelerators says the same)
    assert by.loc[("gpt-oss-120b", "9x8xMI355X_2xEPYC_9575F", "Offline", ""), "device_count"] == 72
    # lower-case scenarios of an open submission
    hpe = "HPE ProLiant Compute DL380 Gen12 (1x NVIDIA RTX PRO 4500 Blackwell-PCIe-32GB)"
    assert by.loc[("resnet50", hpe, "MultiStream", ""), "latency_p99_ms"] == pytest.approx(5.030642)
    assert by.loc[("resnet50", hpe, "SingleStream", ""), "latency_p90_ms"] == pytest.approx(1.480867)
    assert by.loc[("resnet50", hpe, "SingleStream", ""), "accuracy"] == pytest.approx(0.77536)
    assert set(rows["accelerator_type"]) >= {"RTX PRO 4500 Blackwell-PCIe-32GB", "AMD Instinct MI355X 288GB HBM3e"}


def test_mlperf_llm_results_labelled_samples_are_tokens(tmp_path):
    """The v4.0/v4.1 checkers wrote Samples/s and Queries/s on the LLM benchmarks' tokens/s (v4.1:
    llama2-70b 31,264 "Samples/s" on 8x H200), v5.1 Queries/s on llama3.1-8b Interactive; v3.1's
    GPT-J results were samples/s (103 on 8x H100) and stay so."""
    report, rows = _import(FORMATS / "mlperf-inference-v4.1-GigaComputing-summary-excerpt.csv", MLPERF_MAP,
                           tmp_path / "41")
    assert report.ok
    by = rows.set_index(["asset", "scenario"])
    assert by.loc[("llama2-70b-99", "Offline"), "throughput_samples_per_s"] == 31263.8
    assert by.loc[("llama2-70b-99", "Offline"), "sample_unit"] == by.loc[("mixtral-8x7b", "Server"), "sample_unit"] \
        == "token"
    assert pd.isna(by.loc[("resnet50", "Offline"), "sample_unit"]) or by.loc[("resnet50", "Offline"), "sample_unit"] == ""
    report, rows = _import(FORMATS / "mlperf-inference-v3.1-GigaComputing-summary-excerpt.csv", MLPERF_MAP,
                           tmp_path / "31")
    assert report.ok and sorted(rows["throughput_samples_per_s"]) == [82.2623, 103.446]
    assert "sample_unit" not in rows.columns or rows["sample_unit"].fillna("").eq("").all()
    report, rows = _import(FORMATS / "mlperf-inference-v5.1-GigaComputing-summary-excerpt.csv", MLPERF_MAP,
                           tmp_path / "51")
    assert report.ok and report.imported == 3
    inter = rows[rows["cfg_mlperf_scenario"] == "Interactive"].iloc[0]
    assert (inter["scenario"], inter["throughput_samples_per_s"], inter["sample_unit"]) == ("Server", 102829.0, "token")
    assert rows.set_index("asset").loc["rgat", "quality_mlperf_accuracy"] == 72.871


def test_mlperf_multistream_energy_is_per_sample(tmp_path):
    """MLPerf's MultiStream power result is millijoules per query of 8 samples."""
    src = FORMATS / "mlperf-inference-v6.1-summary-excerpt.csv"
    head, *lines = src.read_text().splitlines()
    row = next(line for line in lines if '"multistream"' in line)
    power = row.replace('"5.030642"', '"120.0"').replace('"Latency (ms)"', '"millijoules"').replace('"False"', '"True"')
    f = tmp_path / "power.csv"
    f.write_text("\n".join([head, row, power]) + "\n")
    report, rows = _import(f, MLPERF_MAP, tmp_path)
    assert report.ok and len(rows) == 1  # the power row merged into its performance row
    assert rows.loc[0, "energy_per_sample_j"] == pytest.approx(0.120 / 8)
    assert rows.loc[0, "latency_p99_ms"] == pytest.approx(5.030642)


def test_mlperf_v11_summary_without_units(tmp_path):
    report, rows = _import(FORMATS / "mlperf-inference-v1.1-Alibaba-summary.csv", MLPERF_MAP, tmp_path)
    assert report.ok and report.imported == 4 and report.trials == 2
    by = rows.set_index(["hardware", "scenario"])
    assert by.loc[("Alibaba Cloud Sinian Platform T4 (1x T4)", "SingleStream"), "latency_p90_ms"] == 0.508841
    assert by.loc[("Alibaba Cloud Sinian Platform A10 (1x A10)", "Offline"), "throughput_samples_per_s"] == 20866.1
    assert set(rows["device_count"]) == {1} and set(rows["accelerator_type"]) == {"Nvidia Tesla T4", "A10"}
    assert by.loc[("Alibaba Cloud Sinian Platform T4 (1x T4)", "Offline"), "quality_mlperf_accuracy"] == 22.976


def test_mlperf_v11_multistream_without_units_is_samples_per_query(tmp_path):
    """Before v2.0 MultiStream's result was the number of streams held, never a latency."""
    src = FORMATS / "mlperf-inference-v1.1-Alibaba-summary.csv"
    head, first, *_ = src.read_text().splitlines()
    f = tmp_path / "ms.csv"
    f.write_text(head + "\n" + first.replace("SingleStream,0.508841", "MultiStream,48") + "\n")
    report, rows = _import(f, MLPERF_MAP, tmp_path)
    assert report.ok and rows.loc[0, "samples_per_query"] == 48 and _empty(rows, 0, "latency_p99_ms")


def test_mlperf_v07_open_summary_names_only_the_platform(tmp_path):
    report, rows = _import(FORMATS / "mlperf-inference-v0.7-DellEMC-open-summary.csv", MLPERF_MAP, tmp_path)
    assert report.ok and report.imported == 3
    by = rows.set_index(["hardware", "scenario"])
    assert by.loc[("R740xd_vck5000", "Server"), "throughput_samples_per_s"] == 5802.01
    assert by.loc[("R740xd_u280_v3me", "SingleStream"), "latency_p90_ms"] == 1.284188
    assert by.loc[("R740xd_vck5000", "Offline"), "accuracy"] == pytest.approx(0.75768)


@pytest.mark.parametrize(("name", "n", "checks"), [
    ("mlperf-inference-v0.7-NVIDIA-results_summary-excerpt.csv", 4, {
        ("A100-PCIex1_TRT", "3d-unet-99", "SingleStream", "latency_p90_ms"): 35.284801,  # ns -> ms
        ("A100-PCIex1_TRT", "resnet50", "MultiStream", "samples_per_query"): 1344,
        ("A100-PCIex2_TRT", "bert-99", "Server", "throughput_samples_per_s"): 5199.74}),
    ("mlperf-inference-v1.0-Alibaba-results_summary.csv", 8, {
        ("A10x1_TRT", "resnet50", "SingleStream", "latency_p90_ms"): 0.427415,
        ("DGX-A100_A100-SXM4-40GBx8_TRT", "resnet50", "Server", "throughput_samples_per_s"): 244992.0,
        ("A10x2_TRT", "resnet50", "Offline", "throughput_samples_per_s"): 27489.7}),
])
def test_mlperf_results_summary_layout(tmp_path, name, n, checks):
    report, rows = _import(FORMATS / name, MLPERF_MAP, tmp_path)
    assert report.ok and report.imported == n, report.lines()
    by = rows.set_index(["hardware", "asset", "scenario"])
    for (*key, col), value in checks.items():
        assert by.loc[tuple(key), col] == pytest.approx(value)


def test_mlperf_one_system_name_for_two_platforms_is_named_not_merged(tmp_path):
    """Known limit: hardware is SystemName, and this open submission gives two platforms one name;
    the second result is rejected with a reason saying what to map, never averaged in."""
    report, rows = _import(FORMATS / "mlperf-inference-v2.1-Alibaba-open-excerpt.csv", MLPERF_MAP, tmp_path)
    assert report.imported == 1 and len(rows) == 1 and rows.loc[0, "throughput_samples_per_s"] == 20002.4
    (rej,) = report.rejected
    assert rej.row == "line 3" and "repeats column(s)" in rej.reason
    assert "map the column that tells them apart to hardware or to a config column" in rej.reason


def test_the_v40_public_summaries_import_as_before(tmp_path):
    """The rules added for other rounds change nothing for the committed v4.0 files."""
    pub = ROOT / "configs" / "public" / "mlperf-inference-v4.0"
    w = import_file(pub / "Wiwynn-summary.csv", MLPERF_MAP, results_uri=tmp_path / "s", catalog={})
    assert (w.ok, w.imported, w.trials) == (True, 16, 7)
    rows = ResultsStore(tmp_path / "s").read()
    assert "cfg_mlperf_scenario" not in rows.columns and set(rows["device_count"]) == {2}


# ----------------------------------------------------------------------------------------------
# vLLM benchmark_serving.py / vllm bench serve of other versions
# ----------------------------------------------------------------------------------------------


def test_vllm_append_result_file_is_one_row_per_run(tmp_path, capsys):
    src = FORMATS / "vllm-benchmark_serving-append-result.json"
    assert main(["import", str(src), "--mapping", str(VLLM_MAP), "--set", f"hardware={HW}",
                 "--results", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.startswith("3 rows imported, 0 rejected")
    rows = ResultsStore(tmp_path / "store").read().sort_values("import_source").reset_index(drop=True)
    docs = [json.loads(line) for line in src.read_text().splitlines()]
    assert list(rows["import_source"]) == [f"{src.name}: line {i}" for i in (1, 2, 3)]
    assert list(rows["scenario"]) == ["Server", "Server", "Offline"]
    assert list(rows["target_qps"].fillna(-1)) == [10.0, 30.0, -1]
    for i, doc in enumerate(docs):
        assert rows.loc[i, "throughput_samples_per_s"] == doc["request_throughput"]
        assert rows.loc[i, "itl_p99_ms"] == doc["p99_itl_ms"]
        assert rows.loc[i, "input_tokens_mean"] == pytest.approx(doc["total_input_tokens"] / doc["completed"])
        assert _empty(rows, i, "goodput_requests_per_s")  # "request_goodput:" is null there


def test_vllm_goodput_under_its_old_key_is_read(tmp_path):
    doc = json.loads((FORMATS / "vllm-benchmark_serving-append-result.json").read_text().splitlines()[0])
    assert "request_goodput" not in doc
    doc["request_goodput:"] = 7.5  # what a --goodput run of that version writes
    f = tmp_path / "goodput.json"
    f.write_text(json.dumps(doc))
    report, rows = _import(f, VLLM_MAP, tmp_path, CATALOG, {"hardware": HW})
    assert report.ok and rows.loc[0, "goodput_requests_per_s"] == 7.5


def test_vllm_v04_result_without_itl_and_with_request_inthroughput(tmp_path):
    """vLLM v0.4.0's benchmark_serving.py wrote `request_inthroughput` (sic) and `input_throughput`,
    no ITL, no total token throughput, no burstiness, no max_concurrency."""
    new = json.loads((FORMATS / "vllm-benchmark_serving-append-result.json").read_text().splitlines()[0])
    keep = ("date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "duration", "completed",
            "total_input_tokens", "total_output_tokens", "output_throughput", "mean_ttft_ms", "median_ttft_ms",
            "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms")
    old = {k: new[k] for k in keep} | {"best_of": 1, "use_beam_search": False,
                                       "request_inthroughput": new["request_throughput"], "input_throughput": 8317.0}
    f = tmp_path / "vllm-0.4.json"
    f.write_text(json.dumps(old))
    report, rows = _import(f, VLLM_MAP, tmp_path, CATALOG, {"hardware": HW})
    assert report.ok, report.lines()
    r = rows.iloc[0]
    assert r["throughput_samples_per_s"] == r["requests_per_s"] == new["request_throughput"]
    assert r["ttft_p99_ms"] == new["p99_ttft_ms"] and r["scenario"] == "Server"
    assert _empty(rows, 0, "itl_p99_ms") and _empty(rows, 0, "total_tokens_per_s")


def test_vllm_file_without_throughput_under_any_name_fails_naming_both(tmp_path):
    doc = json.loads((FORMATS / "vllm-benchmark_serving-append-result.json").read_text().splitlines()[0])
    del doc["request_throughput"]
    f = tmp_path / "no-rate.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(MappingError) as exc:
        _import(f, VLLM_MAP, tmp_path, CATALOG, {"hardware": HW})
    msg = str(exc.value)
    assert "reads column(s) ['request_throughput'] that the file does not have" in msg
    assert "'request_throughput': nor 'request_inthroughput' either" in msg and "`aliases`" in msg


# ----------------------------------------------------------------------------------------------
# GuideLLM v0.3
# ----------------------------------------------------------------------------------------------


def test_guidellm_v03_report(tmp_path):
    src = FORMATS / "guidellm-v0.3-benchmarks-excerpt.json"
    m = json.loads(src.read_text())["benchmarks"][0]["metrics"]
    report, rows = _import(src, GUIDELLM_MAP, tmp_path, CATALOG, {"hardware": HW})
    assert report.ok and report.imported == 1, report.lines()
    r = rows.iloc[0]
    assert (r["asset"], r["scenario"], r["cfg_strategy"], r["cfg_max_concurrency"]) == (
        "example_model", "Server", "synchronous", 1)
    assert (r["cfg_backend"], r["cfg_input_len"], r["cfg_output_len"]) == ("openai_http", 256, 128)
    assert (r["completed_requests"], r["failed_requests"]) == (46, 0)
    assert r["ttft_p99_ms"] == m["time_to_first_token_ms"]["successful"]["percentiles"]["p99"]
    assert r["tpot_p50_ms"] == m["inter_token_latency_ms"]["successful"]["median"]
    assert r["latency_p90_ms"] == pytest.approx(1000 * m["request_latency"]["successful"]["percentiles"]["p90"])
    assert r["throughput_samples_per_s"] == m["requests_per_second"]["successful"]["mean"]


def test_guidellm_v03_constant_rate_and_json_data_text(tmp_path):
    doc = json.loads((FORMATS / "guidellm-v0.3-benchmarks-excerpt.json").read_text())
    bench = doc["benchmarks"][0]
    bench["args"]["strategy"] = {"type_": "constant", "rate": 4.5, "initial_burst": True}
    bench["request_loader"]["data"] = '{"prompt_tokens": 512, "output_tokens": 64}'  # GuideLLM 0.2's JSON text
    f = tmp_path / "constant.json"
    f.write_text(json.dumps(doc))
    report, rows = _import(f, GUIDELLM_MAP, tmp_path, CATALOG, {"hardware": HW})
    assert report.ok
    r = rows.iloc[0]
    assert (r["target_qps"], r["cfg_request_rate"], r["cfg_input_len"], r["cfg_output_len"]) == (4.5, 4.5, 512, 64)
    assert _empty(rows, 0, "cfg_max_concurrency")


# ----------------------------------------------------------------------------------------------
# The generic parts
# ----------------------------------------------------------------------------------------------

ALIASED = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario",
                       "qps": {"target": "throughput_samples_per_s", "unit": "queries/s"}},
           "aliases": {"model": ["benchmark", "net"], "qps": "throughput"}}


def test_aliases_read_an_older_name_and_name_it_in_errors(tmp_path):
    f = tmp_path / "old.csv"
    f.write_text("benchmark,machine,scenario,throughput\nmlp,H100-SXM,Offline,100\nmlp,H100-SXM,Server,abc\n")
    rows, rejected, _ = convert_file(f, ALIASED, CATALOG)
    assert [(r["asset"], r["throughput_samples_per_s"]) for r in rows] == [("mlp", 100.0)]
    (rej,) = rejected
    assert rej.row == "line 3" and rej.column == "qps" and rej.field == 4  # the file's own column
    assert "column 'qps' (named 'throughput' in this file) (-> throughput_samples_per_s) must be a number" in rej.reason


def test_aliases_fill_an_empty_value_record_by_record(tmp_path):
    f = tmp_path / "mixed.csv"
    f.write_text("model,net,machine,scenario,qps\nmlp,,H100-SXM,Offline,100\n,cnn,H100-SXM,Offline,50\n")
    rows, rejected, _ = convert_file(f, ALIASED, CATALOG)
    assert rejected == [] and [r["asset"] for r in rows] == ["mlp", "cnn"]


def test_a_column_missing_under_every_name_fails_with_the_names_and_the_closest(tmp_path):
    f = tmp_path / "new.csv"
    f.write_text("models,machine,scenario,throughput\nmlp,H100-SXM,Offline,100\n")
    with pytest.raises(MappingError) as exc:
        convert_file(f, ALIASED, CATALOG)
    msg = str(exc.value)
    assert "reads column(s) ['model'] that the file does not have" in msg
    assert "'model': nor 'benchmark', 'net' either, closest column 'models'" in msg


def test_bad_aliases_are_refused():
    with pytest.raises(MappingError, match=r"aliases.model: give the other names"):
        load_mapping({"columns": {"model": "asset"}, "aliases": {"model": ["model"]}})
    assert load_mapping({"columns": {"model": "asset"}, "aliases": {"model": "net"}}).aliases == {"model": ["net"]}


def test_when_takes_a_list_of_values(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("model,machine,scenario,value,unit\nmlp,H100-SXM,Offline,5,qps\nmlp,H100-SXM,Server,6,QUERIES/S\n"
                 "mlp,H100-SXM,Offline,7,tok/s\n")
    mapping = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario"},
               "rules": [{"source": "value", "target": "throughput_samples_per_s", "when": {"unit": ["qps", "queries/s"]}},
                         {"source": "value", "target": "throughput_samples_per_s", "unit": "tokens/s",
                          "unless": {"unit": ["qps", "queries/s"]}}]}
    rows, rejected, _ = convert_file(f, mapping, CATALOG)
    assert rejected == [] and [(r["throughput_samples_per_s"], r.get("sample_unit")) for r in rows] == [
        (5.0, None), (6.0, None), (7.0, "token")]


def test_when_forgives_case(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("model,machine,scenario,value,unit\nmlp,H100-SXM,Offline,5,SAMPLES/S\nmlp,H100-SXM,Offline,6,x\n")
    mapping = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario"},
               "rules": [{"source": "value", "target": "throughput_samples_per_s", "when": {"unit": "samples/s"}}]}
    rows, rejected, _ = convert_file(f, mapping, CATALOG)
    assert [r["throughput_samples_per_s"] for r in rows] == [5.0]
    assert "matches no rule" in rejected[0].reason  # a value no rule names is still rejected


def test_several_json_objects_in_one_file_are_records(tmp_path):
    f = tmp_path / "runs.json"
    f.write_text('{"model": "mlp", "machine": "H100-SXM", "scenario": "Offline", "qps": 10}\n'
                 '{"model": "mlp", "machine": "H100-SXM", "scenario": "Offline", "qps": "x"}\n\n'
                 '{"model": "mlp", "machine": "H100-SXM", "scenario": "Server", "qps": 8}\n')
    rows, rejected, labels = convert_file(f, {k: v for k, v in ALIASED.items() if k != "aliases"}, CATALOG)
    assert labels == [["line 1"], ["line 4"]] and [r["throughput_samples_per_s"] for r in rows] == [10.0, 8.0]
    assert rejected[0].row == "line 2"
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": "mlp"}\n{"model": \n')
    with pytest.raises(MappingError, match="not valid JSON: Extra data"):
        convert_file(broken, {"columns": {"model": "asset"}}, CATALOG)


def test_the_wrong_mapping_for_a_file_is_named_as_such():
    with pytest.raises(MappingError, match=r"Most of what the mapping reads is missing: is this the mapping"):
        convert_file(FORMATS / "mlperf-inference-v1.1-Alibaba-summary.csv", VLLM_MAP, CATALOG,
                     constants={"hardware": HW})
