"""`benchmatch import` reads the LLM serving benchmarks people already run (vLLM `bench serve`
JSON, GuideLLM reports, AIPerf `profile_export_aiperf.json`) through the shipped mappings: each
example of configs/examples/llm/ lands with its metrics in the `llm serving` columns and the right
units, Server or Offline by how the tool offered its requests, counting requests; a missing or
garbled metric is named, never crashes the import."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from benchmatch.cli import main
from cluster.hardware import HardwareSpec
from results.convert import convert_file
from results.importer import import_file
from results.mapping import MappingError, check_mapping, load_mapping
from results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
MAPS = ROOT / "configs" / "mappings"
EXAMPLES = ROOT / "configs" / "examples" / "llm"
VLLM_MAP, GUIDELLM_MAP, AIPERF_MAP = (MAPS / f"{n}.yaml" for n in ("vllm-bench-serve", "guidellm-report",
                                                                     "aiperf-export"))
VLLM_4QPS, VLLM_INF = EXAMPLES / "vllm-bench-serve-4qps.json", EXAMPLES / "vllm-bench-serve-inf.json"
GUIDELLM = EXAMPLES / "guidellm-sweep.json"
AIPERF = EXAMPLES / "aiperf-profile_export_aiperf.json"
HW = "H100-SXM"
CATALOG = {HW: HardwareSpec(HW, "H100", device_count=1, price_per_hour_usd=6.88, price_source="test")}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _import(path, mapping, tmp_path, **kw):
    store = tmp_path / "store"
    report = import_file(path, mapping, results_uri=store, catalog=CATALOG, constants={"hardware": HW}, **kw)
    rows = ResultsStore(store).read() if report.files else pd.DataFrame()
    return report, rows


def _missing(v) -> bool:
    return v is None or pd.isna(v)


def _empty(rows: pd.DataFrame, i: int, col: str) -> bool:
    """Row i has no value in col (the store leaves out a column no row of the part has)."""
    return col not in rows.columns or _missing(rows.iloc[i][col])


def _write(tmp_path, name, doc) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


# ----------------------------------------------------------------------------------------------
# vLLM bench serve
# ----------------------------------------------------------------------------------------------


def test_vllm_run_at_a_request_rate_is_a_server_row_in_the_llm_columns(tmp_path):
    doc = json.loads(VLLM_4QPS.read_text())
    report, rows = _import(VLLM_4QPS, VLLM_MAP, tmp_path)
    assert report.ok and report.warnings == [] and (report.imported, report.added) == (1, 1)
    assert len(rows) == 1
    r = rows.iloc[0]
    assert (r["asset"], r["hardware"], r["task"], r["scenario"]) == (MODEL, HW, "infer", "Server")
    assert r["target_qps"] == 4.0 and r["cfg_request_rate"] == 4 and r["cfg_backend"] == "vllm"
    assert r["cfg_burstiness"] == 1 and "cfg_max_concurrency" not in rows.columns  # null: no cap
    for stat, col in (("mean", "mean"), ("p50", "median"), ("p90", "p90"), ("p99", "p99")):
        assert r[f"ttft_{stat}_ms"] == doc[f"{col}_ttft_ms"]
        assert r[f"tpot_{stat}_ms"] == doc[f"{col}_tpot_ms"]
        assert r[f"latency_{stat}_ms"] == doc[f"{col}_e2el_ms"]  # end-to-end request latency
    assert (r["itl_mean_ms"], r["itl_p50_ms"], r["itl_p99_ms"]) == (doc["mean_itl_ms"], doc["median_itl_ms"],
                                                                     doc["p99_itl_ms"])
    # requests/s counted as requests; token rates in tokens/s
    assert r["throughput_samples_per_s"] == r["requests_per_s"] == doc["request_throughput"]
    assert r["sample_unit"] == "request"
    assert r["output_tokens_per_s"] == doc["output_throughput"]
    assert r["total_tokens_per_s"] == doc["total_token_throughput"]
    assert r["goodput_requests_per_s"] == doc["request_goodput"]
    assert (r["completed_requests"], r["failed_requests"]) == (200, 0)
    assert r["input_tokens_mean"] == pytest.approx(doc["total_input_tokens"] / doc["completed"]) == 1024
    assert r["output_tokens_mean"] == pytest.approx(128)
    assert r["import_source"] == "vllm-bench-serve-4qps.json: $"


def test_vllm_run_with_everything_sent_at_once_is_offline(tmp_path):
    doc = json.loads(VLLM_INF.read_text())
    assert doc["request_rate"] == "inf" and doc["max_concurrency"] is None
    report, rows = _import(VLLM_INF, VLLM_MAP, tmp_path)
    assert report.ok and report.warnings == []
    r = rows.iloc[0]
    assert r["scenario"] == "Offline" and r["sample_unit"] == "request"
    assert "target_qps" not in rows.columns and "cfg_request_rate" not in rows.columns
    assert r["ttft_p99_ms"] == doc["p99_ttft_ms"] and r["tpot_p50_ms"] == doc["median_tpot_ms"]
    assert r["throughput_samples_per_s"] == doc["request_throughput"]
    # this run wrote neither goodput, nor p90s, nor end-to-end latency: left empty, never 0
    for col in ("goodput_requests_per_s", "ttft_p90_ms", "latency_p99_ms"):
        assert _empty(rows, 0, col)


def test_vllm_run_capped_or_ramped_up_is_server(tmp_path):
    doc = json.loads(VLLM_INF.read_text()) | {"max_concurrency": 64}
    report, rows = _import(_write(tmp_path, "capped.json", doc), VLLM_MAP, tmp_path)
    assert report.ok
    r = rows.iloc[0]
    assert r["scenario"] == "Server" and r["cfg_max_concurrency"] == 64
    assert "target_qps" not in rows.columns  # no rate was offered
    ramp = json.loads(VLLM_INF.read_text()) | {"ramp_up_strategy": "linear", "ramp_up_start_rps": 1,
                                               "ramp_up_end_rps": 20}
    report, rows = _import(_write(tmp_path, "ramp.json", ramp), VLLM_MAP, tmp_path / "ramp")
    r = rows.iloc[0]
    assert report.ok and r["scenario"] == "Server" and "target_qps" not in rows.columns
    assert (r["cfg_ramp_up_strategy"], r["cfg_ramp_up_start_rps"], r["cfg_ramp_up_end_rps"]) == ("linear", 1, 20)


def test_the_same_model_at_two_rates_is_two_trials(tmp_path):
    doc = json.loads(VLLM_4QPS.read_text())
    a = _write(tmp_path, "a.json", doc)
    b = _write(tmp_path, "b.json", doc | {"request_rate": 8.0, "request_throughput": 7.9})
    store = tmp_path / "store"
    for p in (a, b):
        assert import_file(p, VLLM_MAP, results_uri=store, catalog=CATALOG, sweep_id="rates",
                           constants={"hardware": HW}).ok
    rows = ResultsStore(store).read("rates")
    assert sorted(rows["target_qps"]) == [4.0, 8.0] and rows["trial_id"].nunique() == 2


def test_a_garbled_vllm_metric_rejects_the_run_naming_the_column(tmp_path):
    doc = json.loads(VLLM_4QPS.read_text()) | {"p99_ttft_ms": "n/a"}
    report, rows = _import(_write(tmp_path, "garbled.json", doc), VLLM_MAP, tmp_path)
    assert not report.ok and report.imported == 0 and rows.empty
    (rej,) = report.rejected
    assert rej.row == "$" and rej.column == "p99_ttft_ms"
    assert "column 'p99_ttft_ms' (-> ttft_p99_ms) must be a number, got 'n/a'" in rej.reason
    doc = json.loads(VLLM_4QPS.read_text()) | {"completed": 0}  # totals / 0 completed: no mean length
    report, _ = _import(_write(tmp_path, "none.json", doc), VLLM_MAP, tmp_path)
    assert "divide_by" in report.rejected[0].reason and report.rejected[0].column == "completed"


def test_a_vllm_file_without_a_needed_metric_fails_naming_it(tmp_path):
    doc = json.loads(VLLM_4QPS.read_text())
    del doc["p99_ttft_ms"]
    with pytest.raises(MappingError, match=r"reads column\(s\) \['p99_ttft_ms'\] that the file does not have"):
        _import(_write(tmp_path, "short.json", doc), VLLM_MAP, tmp_path)
    with pytest.raises(MappingError, match=r"json.single: expected an object at \$, got list"):
        _import(_write(tmp_path, "list.json", [doc]), VLLM_MAP, tmp_path)


# ----------------------------------------------------------------------------------------------
# GuideLLM
# ----------------------------------------------------------------------------------------------


def test_a_guidellm_sweep_is_one_row_per_benchmark_by_strategy(tmp_path):
    doc = json.loads(GUIDELLM.read_text())
    report, rows = _import(GUIDELLM, GUIDELLM_MAP, tmp_path)
    assert report.ok and report.warnings == [] and report.imported == 4 and report.trials == 4
    rows = rows.sort_values("import_source").reset_index(drop=True)
    assert list(rows["cfg_strategy"]) == ["synchronous", "throughput", "constant", "constant"]
    assert list(rows["scenario"]) == ["Server", "Offline", "Server", "Server"]
    assert rows.loc[0, "cfg_max_concurrency"] == 1  # synchronous: one request at a time
    assert _missing(rows.loc[1, "target_qps"]) and _missing(rows.loc[1, "cfg_max_concurrency"])
    assert list(rows.loc[2:, "target_qps"]) == [16.4, 31.6] == list(rows.loc[2:, "cfg_request_rate"])
    assert set(rows["sample_unit"]) == {"request"} and set(rows["asset"]) == {MODEL}
    assert set(rows["cfg_input_len"]) == {512} and set(rows["cfg_output_len"]) == {128}
    for i, bench in enumerate(doc["benchmarks"]):
        m, r = bench["metrics"], rows.loc[i]
        ttft, itl = m["time_to_first_token_ms"]["successful"], m["inter_token_latency_ms"]["successful"]
        lat = m["request_latency"]["successful"]
        assert (r["ttft_mean_ms"], r["ttft_p50_ms"]) == (ttft["mean"], ttft["median"])
        assert (r["ttft_p90_ms"], r["ttft_p99_ms"]) == (ttft["percentiles"]["p90"], ttft["percentiles"]["p99"])
        # GuideLLM's inter-token latency is vLLM's TPOT (first token excluded)
        assert (r["tpot_p50_ms"], r["tpot_p99_ms"]) == (itl["median"], itl["percentiles"]["p99"])
        assert _empty(rows, i, "itl_p99_ms")  # GuideLLM has no inter-chunk gaps
        # request latency is in seconds there, ms here
        assert r["latency_p99_ms"] == pytest.approx(1000 * lat["percentiles"]["p99"])
        assert r["latency_mean_ms"] == pytest.approx(1000 * lat["mean"])
        assert r["throughput_samples_per_s"] == r["requests_per_s"] == m["requests_per_second"]["successful"]["mean"]
        assert r["output_tokens_per_s"] == m["output_tokens_per_second"]["successful"]["mean"]
        assert r["total_tokens_per_s"] == m["tokens_per_second"]["successful"]["mean"]
        assert r["completed_requests"] == m["request_totals"]["successful"]
        assert r["failed_requests"] == m["request_totals"]["errored"]  # incomplete ones are not failures
        assert r["input_tokens_mean"] == 512 and r["output_tokens_mean"] == 128
    assert rows.loc[1, "ttft_p99_ms"] > 10 * rows.loc[2, "ttft_p99_ms"]  # Offline queues: sanity of the file


def test_guidellm_concurrent_and_poisson_strategies(tmp_path):
    doc = json.loads(GUIDELLM.read_text())
    doc["benchmarks"][0]["config"]["strategy"] = {"type_": "concurrent", "streams": 16}
    doc["benchmarks"][2]["config"]["strategy"] = {"type_": "poisson", "rate": 16.4, "random_seed": 42}
    report, rows = _import(_write(tmp_path, "mixed.json", doc), GUIDELLM_MAP, tmp_path)
    assert report.ok
    rows = rows.sort_values("import_source").reset_index(drop=True)
    assert list(rows["scenario"]) == ["Server", "Offline", "Server", "Server"]
    assert rows.loc[0, "cfg_max_concurrency"] == 16 and _missing(rows.loc[0, "target_qps"])
    assert rows.loc[2, "cfg_strategy"] == "poisson" and rows.loc[2, "target_qps"] == 16.4


def test_a_garbled_guidellm_benchmark_is_rejected_and_the_others_land(tmp_path):
    doc = json.loads(GUIDELLM.read_text())
    doc["benchmarks"][2]["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"]["p99"] = "NaN ms"
    doc["benchmarks"][3]["config"]["strategy"]["rate"] = 0
    report, rows = _import(_write(tmp_path, "bad.json", doc), GUIDELLM_MAP, tmp_path)
    assert report.imported == 2 and len(rows) == 2 and not report.ok
    r3, r4 = report.rejected
    assert r3.row == "record 3" and r3.column == "metrics.time_to_first_token_ms.successful.percentiles.p99"
    assert "must be a number, got 'NaN ms'" in r3.reason
    assert r4.row == "record 4" and r4.column == "config.strategy.rate" and "must be > 0" in r4.reason


# ----------------------------------------------------------------------------------------------
# AIPerf
# ----------------------------------------------------------------------------------------------


def test_an_aiperf_export_is_a_server_row_at_its_concurrency(tmp_path):
    doc = json.loads(AIPERF.read_text())
    report, rows = _import(AIPERF, AIPERF_MAP, tmp_path)
    assert report.ok and report.warnings == [] and report.imported == 1
    r = rows.iloc[0]
    assert (r["asset"], r["scenario"], r["sample_unit"]) == (MODEL, "Server", "request")  # model_names: [one]
    assert r["cfg_max_concurrency"] == 32 and r["cfg_endpoint_type"] == "chat"
    assert (r["cfg_input_len"], r["cfg_output_len"]) == (512, 128)
    ttft, itl, icl = doc["time_to_first_token"], doc["inter_token_latency"], doc["inter_chunk_latency"]
    for stat in ("p50", "p90", "p99"):
        assert r[f"ttft_{stat}_ms"] == ttft[stat] and r[f"tpot_{stat}_ms"] == itl[stat]
        assert r[f"latency_{stat}_ms"] == doc["request_latency"][stat]
    assert (r["ttft_mean_ms"], r["tpot_mean_ms"], r["latency_mean_ms"]) == (
        ttft["avg"], itl["avg"], doc["request_latency"]["avg"])
    assert (r["itl_mean_ms"], r["itl_p50_ms"], r["itl_p99_ms"]) == (icl["avg"], icl["p50"], icl["p99"])
    assert r["throughput_samples_per_s"] == r["requests_per_s"] == doc["request_throughput"]["avg"]
    assert r["output_tokens_per_s"] == doc["output_token_throughput"]["avg"]
    assert r["total_tokens_per_s"] == doc["total_token_throughput"]["avg"]
    assert (r["completed_requests"], r["failed_requests"]) == (638, 2)
    assert (r["input_tokens_mean"], r["output_tokens_mean"]) == (512.0, 128.0)
    assert "target_qps" not in rows.columns  # paced by concurrency, not by a rate


def test_an_aiperf_export_at_a_request_rate(tmp_path):
    doc = json.loads(AIPERF.read_text())
    doc["input_config"]["loadgen"] = {"request_rate": 40.0, "arrival_pattern": "poisson", "request_count": 640}
    report, rows = _import(_write(tmp_path, "rate.json", doc), AIPERF_MAP, tmp_path)
    assert report.ok
    r = rows.iloc[0]
    assert (r["scenario"], r["target_qps"], r["cfg_request_rate"], r["cfg_arrival_pattern"]) == (
        "Server", 40.0, 40, "poisson")


def test_an_aiperf_metric_in_another_unit_or_garbled_is_named(tmp_path):
    doc = json.loads(AIPERF.read_text())
    doc["time_to_first_token"]["unit"] = "s"
    report, rows = _import(_write(tmp_path, "unit.json", doc), AIPERF_MAP, tmp_path)
    assert rows.empty and report.imported == 0
    rej = report.rejected[0]
    assert rej.row == "$" and rej.column.startswith("time_to_first_token.")
    assert "matches no rule of the mapping (time_to_first_token.unit='s')" in rej.reason
    doc = json.loads(AIPERF.read_text())
    doc["request_throughput"]["avg"] = None  # AIPerf writes null for a metric it could not compute
    doc["time_to_first_token"]["p99"] = "oops"
    report, _ = _import(_write(tmp_path, "garbled.json", doc), AIPERF_MAP, tmp_path)
    assert report.rejected[0].column == "time_to_first_token.p99"
    doc = json.loads(AIPERF.read_text())
    doc["input_config"]["endpoint"]["model_names"] = ["a", "b"]
    report, _ = _import(_write(tmp_path, "two.json", doc), AIPERF_MAP, tmp_path)
    assert "holds a nested value (list of 2)" in report.rejected[0].reason


def test_aiperf_csv_is_refused_with_a_reason_not_a_crash(tmp_path):
    csv = tmp_path / "profile_export_aiperf.csv"
    csv.write_text("Metric,avg,min,max,p1,p5,p25,p50,p75,p90,p95,p99,std\n"
                   "Time to First Token (ms),46.73,22.90,118.60,26.7,30.6,32.9,42.15,33.0,63.88,79.5,97.41,16.4\n"
                   "\nMetric,Value\nRequest Throughput (requests/sec),42.91\n")
    with pytest.raises(MappingError, match="the mapping reads column"):
        _import(csv, AIPERF_MAP, tmp_path)


# ----------------------------------------------------------------------------------------------
# The mappings themselves
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", [VLLM_MAP, GUIDELLM_MAP, AIPERF_MAP], ids=lambda p: p.stem)
def test_each_mapping_header_gives_the_command_and_it_runs(mapping, tmp_path, monkeypatch, capsys):
    header = "\n".join(line[1:] for line in mapping.read_text().splitlines() if line.startswith("#"))
    cmd = re.search(r"benchmatch import .+?--set hardware=\S+", header.replace("\\\n", " "), re.S)
    assert cmd, f"{mapping.name}: the header gives no `benchmatch import ... --set hardware=...` command"
    args = shlex.split(cmd.group(0))[1:]
    assert args[args.index("--mapping") + 1] == f"configs/mappings/{mapping.name}"
    monkeypatch.chdir(ROOT)
    assert main([*args, "--results", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.split(" rows imported, 0 rejected")[0].isdigit()
    rows = ResultsStore(tmp_path / "store").read()
    assert set(rows["hardware"]) == {"H100-SXM"} and set(rows["sample_unit"]) == {"request"}
    assert check_mapping(load_mapping(mapping)) == []  # no unit its column names suggest is left unsaid
    _, rejected, _ = convert_file(ROOT / args[1], mapping, CATALOG, constants={"hardware": HW})
    assert rejected == []


def test_every_llm_example_is_listed_in_the_examples_readme():
    readme = (ROOT / "configs" / "examples" / "README.md").read_text()
    for p in EXAMPLES.iterdir():
        assert f"llm/{p.name}" in readme
    assert "illustrative" in readme and "2026-12-01" in readme


# ----------------------------------------------------------------------------------------------
# The mapping keys these needed, on their own
# ----------------------------------------------------------------------------------------------


def test_when_null_unless_value_and_divide_by(tmp_path):
    src = tmp_path / "runs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (
        {"m": "x", "rate": "inf", "cap": None, "rps": 2.0, "tok": 300, "n": 3},
        {"m": "x", "rate": "inf", "cap": 8, "rps": 2.5, "tok": 300, "n": 3},
        {"m": "x", "rate": 1.5, "cap": None, "rps": 1.4, "tok": 300, "n": 3},
    )))
    mapping = {
        "columns": {"m": "asset", "rps": {"target": "throughput_samples_per_s", "unit": "requests/s"},
                    "tok": {"target": "output_tokens_mean", "divide_by": "n"}},
        "rules": [
            {"source": "rate", "target": "scenario", "value": "Offline", "when": {"rate": "inf", "cap": None}},
            {"source": "rate", "target": "scenario", "value": "Server", "unless": {"rate": "inf", "cap": None}},
            {"source": "rate", "target": "target_qps", "unless": {"rate": "inf"}},
        ],
        "config": ["cap"],
        "constants": {"task": "infer", "hardware": HW},
    }
    rows, rejected, _ = convert_file(src, mapping, CATALOG)
    assert rejected == []
    assert [r["scenario"] for r in rows] == ["Offline", "Server", "Server"]
    assert [r.get("target_qps") for r in rows] == [None, None, 1.5]
    assert [r.get("cfg_cap") for r in rows] == [None, 8, None]
    assert {r["output_tokens_mean"] for r in rows} == {100.0}
    bad = {**mapping, "rules": [{"source": "rate", "target": "scenario", "value": "Batch"}]}
    with pytest.raises(MappingError, match="value 'Batch' is not one of"):
        load_mapping(bad)
    with pytest.raises(MappingError, match="`single`.*`levels`.*exclude each other"):
        load_mapping({**mapping, "json": {"single": True, "levels": ["a"]}})
