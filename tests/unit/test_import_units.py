"""Units and scales: a scale per column (counts in millions, GFLOP), tokens, requests, samples, J, W,
ms/µs/s, and an unknown unit refused by name (issue #16, item 4)."""

from __future__ import annotations

import pytest

from cluster.hardware import HardwareSpec
from results.convert import convert_file
from results.importer import import_file
from results.mapping import MappingError, load_mapping
from results.store import ResultsStore
from results.units import UnitError, conversion, hinted_unit, parse_scale

CATALOG = {"gpu-1": HardwareSpec("gpu-1", "A10G", device_count=1, price_per_hour_usd=1.0, price_source="t")}


@pytest.mark.parametrize(("unit", "target_unit", "factor", "item"), [
    ("us", "ms", 1e-3, None), ("µs", "ms", 1e-3, None), ("μs", "ms", 1e-3, None), ("s", "ms", 1e3, None),
    ("ms", "s", 1e-3, None), ("seconds", "ms", 1e3, None), ("ns", "ms", 1e-6, None), ("min", "s", 60.0, None),
    ("samples/s", "samples/s", 1.0, None), ("queries/s", "samples/s", 1.0, None), ("qps", "samples/s", 1.0, None),
    ("images/s", "samples/s", 1.0, None), ("samples/min", "samples/s", 1 / 60, None),
    ("tokens/s", "samples/s", 1.0, "token"), ("ktokens/s", "samples/s", 1e3, "token"),
    ("tokens per second", "samples/s", 1.0, "token"), ("requests/s", "samples/s", 1.0, "request"),
    ("req/s", "samples/s", 1.0, "request"), ("rps", "samples/s", 1.0, "request"),
    ("J", "J", 1.0, None), ("mJ", "J", 1e-3, None), ("kWh", "J", 3.6e6, None), ("Wh", "J", 3600.0, None),
    ("J/sample", "J/sample", 1.0, None), ("mJ/token", "J/sample", 1e-3, "token"),
    ("J/request", "J/sample", 1.0, "request"), ("mJ", "J/sample", 1e-3, None),
    ("W", "W", 1.0, None), ("mW", "W", 1e-3, None), ("kW", "W", 1e3, None),
    ("GiB", "MiB", 1024.0, None), ("GB", "MiB", 1e9 / 2**20, None),
    ("M", "count", 1e6, None), ("million", "count", 1e6, None), ("billion", "count", 1e9, None),
    ("k", "count", 1e3, None), ("GFLOP", "FLOP", 1e9, None), ("GFLOPs", "FLOP", 1e9, None),
    ("MFLOP", "FLOP", 1e6, None), ("TFLOP", "FLOP", 1e12, None),
    ("percent", "fraction", 0.01, None), ("%", "fraction", 0.01, None),
])
def test_known_units_convert(unit, target_unit, factor, item):
    conv = conversion(unit, target_unit, target="x", where="m")
    assert conv.factor == pytest.approx(factor) and conv.item == item


@pytest.mark.parametrize(("unit", "target_unit", "says"), [
    ("fortnights", "ms", "unknown unit 'fortnights' for 'x' (ms); known time units: "),
    ("tokens", "samples/s", "unknown unit 'tokens' for 'x' (samples/s); known rate units: samples/s"),
    ("ms", "samples/s", "unknown unit 'ms'"),
    ("parsecs/s", "samples/s", "unknown unit 'parsecs/s'"),
    ("W", "J", "unknown unit 'W' for 'x' (J); known energy units"),
    ("GB/s", "FLOP", "unknown unit 'GB/s'"),
    ("ms", "USD", "takes no unit conversion (its unit is USD)"),
])
def test_unknown_units_are_refused_by_name(unit, target_unit, says):
    with pytest.raises(UnitError, match=None) as exc:
        conversion(unit, target_unit, target="x", where="m")
    assert says in str(exc.value)


def test_scales_are_numbers_or_words():
    assert parse_scale("M", "m") == 1e6 and parse_scale(1e-3, "m") == 1e-3 and parse_scale("1000", "m") == 1000
    assert parse_scale("billion", "m") == 1e9 and parse_scale(None, "m") == 1.0
    for bad in ("lots", 0, -2, True, "nan"):
        with pytest.raises(UnitError):
            parse_scale(bad, "m")


def test_a_columns_name_that_says_its_unit_warns_when_the_mapping_gives_none():
    assert hinted_unit("p99_us", "ms") == "us" and hinted_unit("GFLOPs", "FLOP") == "GFLOP"
    assert hinted_unit("params_M", "count") == "M" and hinted_unit("acc_pct", "fraction") == "percent"
    assert hinted_unit("p99_ms", "ms") is None and hinted_unit("latency", "ms") is None
    assert hinted_unit("tokens_per_s", "samples/s") == "tokens/s"


def test_a_file_in_millions_gflop_tokens_and_microseconds(tmp_path):
    src = tmp_path / "llm.csv"
    src.write_text("model,machine,scenario,params_m,gflops,tok_s,mj_per_tok,ttft_us,power_kw\n"
                   "llama,gpu-1,Offline,5.3,8.7,1234.5,250,,0.35\n"
                   "llama,gpu-1,SingleStream,5.3,8.7,,,98000,\n")
    doc = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario",
                       "params_m": {"target": "parameters", "scale": "M"},
                       "gflops": {"target": "flops_per_sample", "unit": "GFLOP"},
                       "tok_s": {"target": "throughput_samples_per_s", "unit": "tokens/s"},
                       "mj_per_tok": {"target": "energy_per_sample_j", "unit": "mJ/token"},
                       "ttft_us": {"target": "latency_p50_ms", "unit": "µs"},
                       "power_kw": {"target": "avg_power_w", "unit": "kW"}}}
    rows, rejected, _ = convert_file(src, doc, CATALOG)
    assert rejected == []
    off, ss = rows
    assert off["parameters"] == 5_300_000 and isinstance(off["parameters"], int)
    assert off["flops_per_sample"] == pytest.approx(8.7e9)
    assert off["throughput_samples_per_s"] == 1234.5 and off["sample_unit"] == "token"
    assert off["energy_per_sample_j"] == pytest.approx(0.25) and off["avg_power_w"] == pytest.approx(350.0)
    assert ss["latency_p50_ms"] == pytest.approx(98.0) and "sample_unit" not in ss


def test_without_a_scale_a_count_in_millions_says_how_to_fix_it(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("model,machine,scenario,params,qps\nm,gpu-1,Offline,5.3,10\n")
    doc = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario", "params": "parameters",
                       "qps": "throughput_samples_per_s"}}
    _, rejected, _ = convert_file(src, doc, CATALOG)
    assert "column 'params' (-> parameters) must be a whole number, got '5.3'" in rejected[0].reason
    assert "give the column `scale: M`" in rejected[0].reason


def test_mixed_sample_kinds_in_one_row_are_refused(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("model,machine,tok_s,j_req\nm,gpu-1,10,2\n")
    doc = {"columns": {"model": "asset", "machine": "hardware",
                       "tok_s": {"target": "throughput_samples_per_s", "unit": "tokens/s"},
                       "j_req": {"target": "energy_per_sample_j", "unit": "J/request"}},
           "constants": {"scenario": "Offline"}}
    _, rejected, _ = convert_file(src, doc, CATALOG)
    assert "counts requests where column 'tok_s' counts tokens" in rejected[0].reason


def test_a_mapping_warns_about_a_unit_its_column_name_states(tmp_path):
    src = tmp_path / "g.csv"
    src.write_text("model,machine,scenario,GFLOPs,qps\nm,gpu-1,Offline,8.7,10\n")
    doc = {"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario", "GFLOPs": "flops_per_sample",
                       "qps": "throughput_samples_per_s"}}
    report = import_file(src, doc, results_uri=tmp_path / "s", catalog=CATALOG)
    assert any("column 'GFLOPs' -> flops_per_sample: its name suggests GFLOP" in w for w in report.warnings)
    assert any(line.startswith("warning: ") for line in report.lines())


def test_a_units_block_and_a_scales_block_apply_to_plain_columns(tmp_path):
    m = load_mapping({"columns": {"p": "parameters", "t": "latency_p99_ms"}, "scales": {"p": "k"},
                      "units": {"t": "s"}})
    by = {r.source: r for r in m.all_rules()}
    assert by["p"].scale == "k" and by["t"].unit == "s"
    with pytest.raises(MappingError, match="scale 'lots' is not a number"):
        load_mapping({"columns": {"p": "parameters"}, "scales": {"p": "lots"}})


def test_tokens_and_samples_of_one_asset_are_flagged_across_imports(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("model,machine,qps\nllm,gpu-1,10\n")
    b.write_text("model,machine,qps\nllm,gpu-1,900\n")
    base = {"columns": {"model": "asset", "machine": "hardware", "qps": "throughput_samples_per_s"},
            "constants": {"scenario": "Offline"}}
    import_file(a, base, results_uri=tmp_path / "s", catalog=CATALOG)
    tokens = {**base, "units": {"qps": "tokens/s"}}
    report = import_file(b, tokens, results_uri=tmp_path / "s", catalog=CATALOG)
    assert any("asset 'llm': a throughput here counts tokens, the store's count samples" in w for w in report.warnings)
    assert set(ResultsStore(tmp_path / "s").read()["sample_unit"].fillna("")) == {"", "token"}
