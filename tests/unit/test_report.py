"""benchmarks.report and `benchmatch report`: one self-contained HTML page from result rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import report
from benchmatch.cli import main
from cluster.hardware import HardwareSpec
from results.store import ResultsStore

CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.0446, price_source="t", local=True),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, price_per_hour_usd=0.08925, price_source="t", local=True),
}
PCTS = ((50.0, 1.0), (90.0, 1.5), (95.0, 1.8), (97.0, 2.0), (99.0, 3.0), (99.9, 5.0))


def _detail_log(folder: Path, scale_ms: float) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    recs = [("result_validity", "VALID"), ("result_min_latency_ns", int(0.8 * scale_ms * 1e6)),
            ("result_max_latency_ns", int(6 * scale_ms * 1e6))]
    recs += [(f"result_{p:.2f}_percentile_latency_ns", int(m * scale_ms * 1e6)) for p, m in PCTS]
    lines = [":::MLLOG " + json.dumps({"key": k, "value": v, "time_ms": 1.0}) for k, v in recs]
    (folder / "mlperf_log_detail.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


def qs_rows(tmp_path: Path | None, repeats: int = 3, dtypes: tuple[str, ...] = ("float32", "bfloat16"),
            hardware: tuple[str, ...] = ("local-1c", "local-2c")) -> pd.DataFrame:
    """Rows shaped like a quickstart sweep's: hardware × batch × dtype × (SingleStream, MultiStream, Offline)."""
    rng = np.random.default_rng(0)
    rows = []
    for hw in hardware:
        threads = int(hw.split("-")[1][0])
        for bs in (1, 16):
            for dtype in dtypes:
                tid = f"{hw}-{bs}-{dtype}"[:40]
                for rep in range(repeats):
                    for scen in ("SingleStream", "MultiStream", "Offline"):
                        lat = 0.07 * (1 + 0.5 * (bs > 1 and scen == "MultiStream")) * rng.uniform(0.95, 1.05)
                        tput = 10_000 * (bs if scen != "SingleStream" else 1) ** 0.7 * threads ** 0.5
                        log_dir = ""
                        if tmp_path is not None and scen != "Offline":
                            log_dir = _detail_log(tmp_path / "logs" / f"{tid}-r{rep}" / scen, lat)
                        has_lat = scen != "Offline"
                        rows.append({
                            "sweep_id": "quickstart", "trial_id": tid, "repeat": rep, "scenario": scen,
                            "asset": "digits-mlp", "task": "infer", "status": "ok", "error": "", "hardware": hw,
                            "accelerator_type": "cpu", "device_count": 0, "num_threads": threads,
                            "latency_p50_ms": lat if has_lat else np.nan,
                            "latency_p90_ms": 1.5 * lat if has_lat else np.nan,
                            "latency_p95_ms": 1.8 * lat if has_lat else np.nan,
                            "latency_p99_ms": 3 * lat if has_lat else np.nan,
                            "latency_p999_ms": 5 * lat if has_lat else np.nan,
                            "throughput_samples_per_s": tput * rng.uniform(0.9, 1.1), "accuracy": 0.9638,
                            "peak_memory_mb": 540.0, "energy_j": np.nan, "energy_source": "none",
                            "price_per_hour_usd": CATALOG[hw].price_per_hour_usd if hw in CATALOG else np.nan,
                            "loadgen_result": "INVALID" if (scen == "Offline" and bs == 1 and rep == 0) else "VALID",
                            "loadgen_log_dir": log_dir, "env_cpu_model": "AMD EPYC", "env_torch_version": "2.13.0",
                            "env_python_version": "3.11.7", "env_loadavg_before": 6.2, "env_loadavg_after": 6.3,
                            "env_background_load": rep == 1, "seed": rep,
                            "start_time": f"2026-11-23T06:55:{10 + rep:02d}.000+00:00", "duration_s": 5.0,
                            "cfg_batch_size": bs, "cfg_dtype": dtype,
                        })
    return pd.DataFrame(rows)


def _section(page: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert m, f"section {key} missing"
    return m.group(1)


def _text(page: str) -> str:
    """The page without its inline images (base64 may contain any letters)."""
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', page)


@pytest.fixture(scope="module")
def qs_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("qs")
    out = report.write_report(qs_rows(tmp), tmp / "out" / "report.html", catalog=CATALOG, title="quickstart")
    assert out.is_file() and out.stat().st_size > 10_000
    return out.read_text()


def test_every_section_and_plot(qs_page: str):
    for key, title in report.TITLES.items():
        assert f'<section id="{key}">' in qs_page
        assert title in qs_page
    for key in ("cdf", "batch", "pareto", "scaling"):
        assert len(re.findall(r"<img |<svg", _section(qs_page, key))) == 1, key
    # Self-contained: no external resources of any kind.
    assert not re.search(r'(src|href)="(https?:|//|file:)', qs_page)


def test_cdf_reads_detail_logs(qs_page: str):
    cdf = _section(qs_page, "cdf")
    assert "LoadGen detail logs (min, p50" in cdf
    assert "missing" not in cdf


def test_tables_spread_baseline_and_flags(qs_page: str):
    text = _text(qs_page)
    tables = _section(text, "tables")
    assert "reference (1×): local-1c batch_size=1 dtype=float32" in tables
    assert "1× ref" in tables and "CV " in tables and "CI [" in tables
    assert "median CI coverage: 75.0 %" in tables  # n=3: [min, max] covers 75 %, said so
    flags = _section(text, "flags")
    assert "LoadGen INVALID runs: 4" in flags  # Offline, batch 1, repeat 0: 2 hardware × 2 dtypes
    assert "Rows measured under background load: 24" in flags
    assert "Failed trials: 0" in flags
    assert ">nan<" not in text.lower() and "None" not in tables
    pareto = _section(text, "pareto")
    assert "Pareto-optimal configurations" in pareto


def test_missing_logs_fall_back_to_columns_and_say_so(tmp_path: Path):
    df = qs_rows(None, repeats=1, dtypes=("float32",), hardware=("local-1c",))
    page = report.build_report(df, CATALOG)
    cdf = _section(page, "cdf")
    assert "<img " in cdf and "LoadGen detail logs missing" in cdf
    # One hardware, one thread count: no scaling dimension, a note and no empty plot.
    scaling = _section(page, "scaling")
    assert "<img " not in scaling and "No scaling dimension" in scaling
    # n = 1: the spread is missing, shown as a dash, never 0.
    tables = _section(_text(page), "tables")
    assert "IQR —" in tables and "CV —" in tables and "IQR 0 " not in tables
    assert "single repeat" in _section(page, "flags")


def test_malicious_strings_are_escaped(tmp_path: Path):
    df = qs_rows(None, repeats=2, dtypes=("float32",), hardware=("local-1c",))
    df["cfg_dtype"] = "<script>alert(1)</script>"
    df.loc[df["repeat"] == 0, "status"] = "failed"
    df.loc[df["repeat"] == 0, "error"] = '<img src=x onerror="alert(2)">'
    df["sweep_id"] = "q&<b>"
    page = report.build_report(df, CATALOG, title="<i>title</i>")
    assert "<script>alert" not in page and "<img src=x" not in page and "<i>title" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "q&amp;&lt;b&gt;" in page


def test_cli_report_writes_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    store = ResultsStore(tmp_path / "results")
    df = qs_rows(None, repeats=2, dtypes=("float32",))
    for _, grp in df.groupby(["trial_id", "repeat"]):
        store.write(grp.to_dict("records"))
    out = tmp_path / "r.html"
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out), "--json"]) == 0
    ans = json.loads(capsys.readouterr().out)
    assert Path(ans["report"]) == out.resolve() and out.is_file()
    assert ans["rows"] == len(df)
    row = next(r for r in ans["summary"] if r["metric"] == "throughput_samples_per_s"
               and r["hardware"] == "local-1c" and r["cfg_batch_size"] == 1 and r["scenario"] == "Offline")
    assert row["vs_ref"] == 1.0 and row["n"] == 2
    assert main(["report", "--results", str(tmp_path / "results"), "--sweep", "nope", "--out", str(out)]) == 2


def test_pareto_mask():
    assert report.pareto_mask([1, 2, 3, 1], [3, 2, 1, 4]) == [True, True, True, False]
    assert report.pareto_mask([1, 1], [1, 1]) == [True, True]  # ties do not dominate


def test_report_shows_the_decision_for_one_asset(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """#10 item 7: `--asset` keeps one asset; `--requirements` adds the recommendation, the Server
    curves of its pairs with the bound and each replica's load, and predicted-vs-measured."""
    df = qs_rows(None, repeats=2, dtypes=("float32",))
    server = []
    for _, grp in df.groupby(["trial_id", "repeat"]):
        first = grp.iloc[0].to_dict()
        cap = float(grp.loc[grp["scenario"] == "Offline", "throughput_samples_per_s"].iloc[0])
        curve = [{"offered_qps": f * cap, "completed_qps": f * cap, "latency_p99_ms": 0.2 / (1.05 - f),
                  "latency_p50_ms": 0.1 / (1.05 - f), "valid": True} for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
        server.append({**first, "scenario": "Server", "server_curve": json.dumps(curve)})
    rows = pd.concat([df, pd.DataFrame(server)], ignore_index=True)
    other = rows.assign(asset="other-net", trial_id=rows["trial_id"] + "-o")
    store = ResultsStore(tmp_path / "results")
    store.write_part(pd.concat([rows, other], ignore_index=True).to_dict("records"))
    req = tmp_path / "req.yaml"
    req.write_text("constraints: {latency_p99_ms: 1.0, throughput_qps: 20000}\n")
    out = tmp_path / "r.html"
    args = ["report", "--results", str(tmp_path / "results"), "--out", str(out), "--asset", "digits-mlp"]
    assert main([*args, "--requirements", str(req)]) == 0
    page = out.read_text()
    text = _text(page)
    assert "other-net" not in text  # one asset
    decision = _section(page, "decision")
    assert "Decision: digits-mlp" in text and "latency_p99_ms" in decision and "measured" in decision
    assert "×local-" in decision  # an option's mix
    load = _section(page, "load")
    assert "data:image/png" in load and "Each replica is sized" in load
    models = _section(page, "models")
    assert "data:image/png" in models and "band coverage" in models
    capsys.readouterr()
    assert main([*args[:-1], "nope"]) == 2
    assert "assets present: digits-mlp, other-net" in capsys.readouterr().err
