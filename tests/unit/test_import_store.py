"""A second import never deletes or replaces what an earlier one stored unless asked (`--replace`),
and says what it added, merged, left alone or skipped (issue #16, item 1)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from benchmatch.commands.learn import cmd_import
from cluster.hardware import HardwareSpec
from matcher.candidates import candidates_from_results
from matcher.recommend import recommend
from results.importer import import_file
from results.store import ResultsStore

CATALOG = {
    "local-1c": HardwareSpec("local-1c", "cpu", cpu_cores=1, price_per_hour_usd=0.05, price_source="t", local=True),
    "local-2c": HardwareSpec("local-2c", "cpu", cpu_cores=2, price_per_hour_usd=0.09, price_source="t", local=True),
}
MAP = {"columns": {"model": "asset", "machine": "hardware", "batch": "cfg_batch_size", "scenario": "scenario",
                   "p99_ms": "latency_p99_ms", "qps": "throughput_samples_per_s"},
       "optional": ["p99_ms", "qps"], "constants": {"task": "infer"}}

LATENCY = """model,machine,batch,scenario,p99_ms
mlp,local-1c,1,MultiStream,2.0
mlp,local-1c,8,MultiStream,6.0
mlp,local-2c,1,MultiStream,1.5
mlp,local-2c,8,MultiStream,4.0
"""
THROUGHPUT = """model,machine,batch,scenario,qps
mlp,local-1c,1,Offline,500
mlp,local-1c,8,Offline,1400
mlp,local-2c,1,Offline,900
mlp,local-2c,8,Offline,2600
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_latency_then_throughput_under_one_sweep_both_stay_and_recommend_answers(tmp_path):
    """The issue's case: the second import used to replace the first's files, and recommend then
    screened out every candidate for lack of a latency."""
    store = tmp_path / "store"
    first = import_file(_write(tmp_path, "a.csv", LATENCY), MAP, results_uri=store, catalog=CATALOG, sweep_id="edge")
    first_files = set(ResultsStore(store).files())
    second = import_file(_write(tmp_path, "b.csv", THROUGHPUT), MAP, results_uri=store, catalog=CATALOG,
                         sweep_id="edge")
    assert (first.added, second.added, second.merged, second.unchanged) == (4, 4, 0, 0)
    assert first_files <= set(ResultsStore(store).files())  # nothing of the first import was removed
    rows = ResultsStore(store).read()
    assert len(rows) == 8 and rows["latency_p99_ms"].notna().sum() == 4 and rows["throughput_samples_per_s"].notna().sum() == 4
    cands = candidates_from_results(rows, CATALOG)
    assert cands["latency_p99_ms"].notna().all() and cands["throughput_qps"].notna().all()
    ans = recommend({"constraints": {"throughput_qps": 2000, "latency_p99_ms": 5}}, cands)
    assert ans.options and ans.options[0].hardware


def test_a_second_file_that_fills_missing_values_is_merged_into_the_stored_rows(tmp_path):
    store = tmp_path / "store"
    lat = LATENCY.replace("MultiStream", "Offline")  # the same rows: latency first, throughput later
    import_file(_write(tmp_path, "lat.csv", lat), MAP, results_uri=store, catalog=CATALOG, sweep_id="edge")
    report = import_file(_write(tmp_path, "tput.csv", THROUGHPUT), MAP, results_uri=store, catalog=CATALOG,
                         sweep_id="edge")
    assert (report.added, report.merged, report.unchanged, report.imported, report.ok) == (0, 4, 0, 4, True)
    assert "0 added, 4 merged into stored rows" in report.lines()[1]
    rows = ResultsStore(store).read()
    assert len(rows) == 4 and rows[["latency_p99_ms", "throughput_samples_per_s"]].notna().all().all()
    assert set(rows["import_source"]) >= {"lat.csv: line 2; tput.csv: line 2"}


def test_a_contradicting_row_is_skipped_and_named_unless_replace(tmp_path):
    store = tmp_path / "store"
    both = "model,machine,batch,scenario,p99_ms,qps\nmlp,local-1c,1,Offline,2.0,500\nmlp,local-1c,8,Offline,6.0,1400\n"
    import_file(_write(tmp_path, "a.csv", both), MAP, results_uri=store, catalog=CATALOG, sweep_id="s")
    changed = "model,machine,batch,scenario,qps\nmlp,local-1c,1,Offline,650\nmlp,local-1c,8,Offline,1400\n"
    src = _write(tmp_path, "b.csv", changed)
    report = import_file(src, MAP, results_uri=store, catalog=CATALOG, sweep_id="s")
    assert (report.added, report.merged, report.unchanged, report.files, report.ok) == (0, 0, 1, [], False)
    (conflict,) = report.conflicts
    assert conflict.row == "line 2"
    assert "kept the stored row: it holds throughput_samples_per_s = 500.0 where this file has 650.0" in conflict.reason
    assert "from a.csv: line 2" in conflict.reason and "pass --replace" in conflict.reason
    assert f"  {src}: line 2: kept the stored row" in "\n".join(report.lines())
    got = ResultsStore(store).read().set_index("cfg_batch_size")
    assert got.loc[1, "throughput_samples_per_s"] == 500.0  # untouched

    report = import_file(src, MAP, results_uri=store, catalog=CATALOG, sweep_id="s", replace=True)
    assert (report.replaced, report.unchanged, report.ok) == (1, 1, True)
    got = ResultsStore(store).read().set_index("cfg_batch_size")
    assert got.loc[1, "throughput_samples_per_s"] == 650.0 and got.loc[1, "latency_p99_ms"] == 2.0  # the rest stays
    assert len(got) == 2


def test_imports_under_their_default_sweep_ids_never_touch_each_other(tmp_path):
    store = tmp_path / "store"
    import_file(_write(tmp_path, "a.csv", LATENCY), MAP, results_uri=store, catalog=CATALOG)
    (tmp_path / "other").mkdir()
    b = import_file(_write(tmp_path / "other", "a.csv", THROUGHPUT), MAP, results_uri=store, catalog=CATALOG)
    assert b.sweep_id == "import-a" and b.added == 4  # the same file name: the same sweep, rows of other scenarios
    assert len(ResultsStore(store).read()) == 8


def test_dry_run_says_what_would_happen_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    src = _write(tmp_path, "a.csv", LATENCY)
    import_file(src, MAP, results_uri=store, catalog=CATALOG)
    files = ResultsStore(store).files()
    report = import_file(_write(tmp_path, "a.csv", LATENCY + "mlp,local-1c,16,MultiStream,9.0\n"), MAP,
                         results_uri=store, catalog=CATALOG, dry_run=True)
    assert (report.added, report.unchanged, report.files) == (1, 4, [])
    assert report.lines()[1].startswith("would be result rows: 1 added")
    assert ResultsStore(store).files() == files


def _ns(**kw) -> argparse.Namespace:
    base = {"catalog": None, "json": False, "results": None, "sweep": None, "dry_run": False, "replace": False,
            "set": None}
    return argparse.Namespace(**(base | kw))


def test_the_command_exits_1_on_a_conflict_and_0_with_replace(tmp_path, capsys, monkeypatch):
    import cluster.hardware

    monkeypatch.setattr(cluster.hardware, "load_catalog", lambda path=None: CATALOG)
    monkeypatch.setattr("results.importer.load_catalog", lambda path=None: CATALOG)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump(MAP))
    a = _ns(file=str(_write(tmp_path, "x.csv", THROUGHPUT)), mapping=str(mapping), results=str(tmp_path / "s"))
    assert cmd_import(a) == 0
    assert "result rows: 4 added" in capsys.readouterr().out
    _write(tmp_path, "x.csv", THROUGHPUT.replace("2600", "2700"))
    assert cmd_import(a) == 1
    out = capsys.readouterr().out
    assert "3 already stored, 1 skipped: they contradict stored rows" in out and "line 5: kept the stored row" in out
    a.replace, a.json = True, True
    assert cmd_import(a) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == {"added": 0, "merged": 0, "replaced": 1, "unchanged": 3, "conflicting": 0}


@pytest.mark.parametrize("replace", [False, True])
def test_nothing_stored_is_ever_deleted(tmp_path, replace):
    store = tmp_path / "store"
    import_file(_write(tmp_path, "a.csv", LATENCY), MAP, results_uri=store, catalog=CATALOG, sweep_id="s")
    before = set(ResultsStore(store).files())
    import_file(_write(tmp_path, "a.csv", LATENCY.replace("2.0", "3.0")), MAP, results_uri=store, catalog=CATALOG,
                sweep_id="s", replace=replace)
    assert before <= set(ResultsStore(store).files())
