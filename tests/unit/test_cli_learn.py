"""`benchmatch import | plan | suggest` through their command functions (argparse Namespaces, as
`benchmatch` builds them), and once through `main` with its error handling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.spec import load_sweep
from benchmatch.cli import build_parser, main
from benchmatch.commands.learn import cmd_import
from benchmatch.commands.match import cmd_plan, cmd_suggest
from matcher.candidates import config_keys
from matcher.errors import ModelError, NoDataError, RequirementsError
from matcher.requirements import parse_plan
from results.store import ResultsStore
from tests.fixtures.instances import synthetic_result_rows

ROOT = Path(__file__).resolve().parents[2]


def ns(**kw) -> argparse.Namespace:
    return argparse.Namespace(catalog=None, json=False, **kw)


def write_store(rows: pd.DataFrame, uri: Path) -> Path:
    store = ResultsStore(uri)
    for _, group in rows.groupby(["sweep_id", "trial_id", "repeat"]):
        store.write(group.to_dict("records"))
    return uri


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A store of local-1c / local-2c rows (the real catalog's hardware) with one pair left out."""
    rows = synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 2, 4, 8), threads=(1, 2),
                                 repeats=2, seed=2)
    keep = (rows["hardware"] + "|" + config_keys(rows)) != "local-2c|batch_size=1,threads=2"
    return write_store(rows[keep], tmp_path_factory.mktemp("store") / "results")


def test_the_parser_wires_the_three_subcommands():
    p = build_parser()
    a = p.parse_args(["import", "f.csv", "--mapping", "m.yaml", "--dry-run"])
    assert a.fn is cmd_import and a.results == "results-store" and a.dry_run and a.sweep is None
    a = p.parse_args(["plan", "plan.yaml", "--json"])
    assert a.fn is cmd_plan and a.json and a.candidates is None
    a = p.parse_args(["suggest", "req.yaml", "--out", "s.yaml", "--max-trials", "3", "--local-only"])
    assert a.fn is cmd_suggest and a.max_trials == 3 and a.local_only and a.space_from is None


def test_import_prints_counts_and_rejections_and_exits_1_when_some_are_rejected(tmp_path, capsys):
    src = tmp_path / "r.csv"
    src.write_text("model,machine,batch_size,dtype,scenario,samples_per_s\n"
                   "mlp,local-1c,8,fp32,Offline,100\nmlp,local-1c,8,fp32,Offline,-1\nmlp,H200,8,fp32,Offline,5\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump({"columns": {"model": "asset", "machine": "hardware", "scenario": "scenario",
                                                   "samples_per_s": "throughput_samples_per_s"},
                                       "config": ["batch_size", "dtype"]}))
    a = ns(file=str(src), mapping=str(mapping), results=str(tmp_path / "s"), sweep=None, dry_run=True)
    assert cmd_import(a) == 1
    out = capsys.readouterr().out
    assert out.startswith("1 rows imported, 2 rejected") and "dry run: nothing was written" in out
    assert f"{src}: line 3: column 'samples_per_s' (-> throughput_samples_per_s) must be >= 0" in out
    assert "line 4: hardware 'H200' is not in the hardware catalog (known: " in out
    assert not (tmp_path / "s").exists()
    a.dry_run, a.json = False, True
    assert cmd_import(a) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == 1 and [r["row"] for r in report["rejected"]] == ["line 3", "line 4"]
    assert len(ResultsStore(tmp_path / "s").read()) == 1


def test_import_of_the_shipped_example_exits_0(tmp_path, capsys):
    a = ns(file=str(ROOT / "configs/examples/generic-results.csv"),
           mapping=str(ROOT / "configs/mappings/generic-csv.yaml"), results=str(tmp_path / "s"), sweep="ex",
           dry_run=False)
    assert cmd_import(a) == 0
    assert capsys.readouterr().out.startswith("24 rows imported, 0 rejected (sweep 'ex', 8 trials, 1 file")


def plan_file(tmp_path: Path, doc: dict) -> str:
    p = tmp_path / "plan.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_plan_places_workloads_on_shared_inventory(results, tmp_path, capsys):
    doc = {"objective": "cost", "inventory": {"local-2c": 3}, "budget_per_hour_usd": 2.0,
           "workloads": [{"asset": "mlp", "constraints": {"throughput_qps": 1500, "latency_p99_ms": 30}},
                         {"asset": "mlp", "constraints": {"throughput_qps": 1500, "latency_p99_ms": 30}}]}
    a = ns(plan=plan_file(tmp_path, doc), results=str(results), models=None, candidates=None)
    assert cmd_plan(a) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan (objective: cost,") and "workload 0 (mlp):" in out and "workload 1 (mlp):" in out
    a.json = True
    assert cmd_plan(a) == 0
    ans = json.loads(capsys.readouterr().out)
    used = sum(w["option"]["hardware"].get("local-2c", 0) for w in ans["workloads"])
    assert ans["feasible"] and used <= 3  # the shared inventory holds


def test_plan_without_a_feasible_placement_exits_3_and_says_why(results, tmp_path, capsys):
    doc = {"inventory": {"local-1c": 1, "local-2c": 1},
           "workloads": [{"constraints": {"throughput_qps": 100000}}]}
    a = ns(plan=plan_file(tmp_path, doc), results=str(results), models=None, candidates=None)
    assert cmd_plan(a) == 3
    assert "no feasible plan:" in capsys.readouterr().out


def test_plan_file_errors_name_the_file_and_field(results, tmp_path):
    a = ns(plan=plan_file(tmp_path, {"workloads": [{"constraints": {"latency_p99": 5}}]}), results=str(results),
           models=None, candidates=None)
    with pytest.raises(RequirementsError, match=r"plan.yaml: workloads.0.constraints.latency_p99: unknown field"):
        cmd_plan(a)


def test_shipped_plan_example_is_valid():
    plan = parse_plan(yaml.safe_load((ROOT / "configs/examples/plan.yaml").read_text()))
    assert len(plan.workloads) == 2 and plan.budget_per_hour_usd and plan.inventory


def test_shipped_plan_example_is_feasible_on_the_real_quickstart_results(tmp_path, capsys):
    # The shipped generic example holds the real quickstart rows (configs/examples/README.md).
    from results.importer import import_file

    real = tmp_path / "real"
    import_file(ROOT / "configs/examples/generic-results.csv", ROOT / "configs/mappings/generic-csv.yaml",
                results_uri=real)
    # Measured candidates only: loading the saved model set takes seconds and adds nothing here.
    a = ns(plan=str(ROOT / "configs/examples/plan.yaml"), results=str(real), models=str(tmp_path / "none"),
           candidates=None)
    assert cmd_plan(a) == 0


def req_file(tmp_path: Path) -> str:
    p = tmp_path / "req.yaml"
    # The lowest latency pair (local-2c, batch 1, 2 threads) is the one left out of the store.
    p.write_text(yaml.safe_dump({"asset": "mlp", "objective": "latency", "constraints": {"throughput_qps": 500}}))
    return str(p)


def test_suggest_writes_sweep_files_that_benchmatch_sweep_reads(results, tmp_path, capsys):
    out = tmp_path / "next" / "sweep.yaml"
    a = ns(requirements=req_file(tmp_path), results=str(results), models=None, out=str(out), max_trials=4,
           space_from=None, local_only=True)
    assert cmd_suggest(a) == 0
    text = capsys.readouterr().out
    assert "of 16 (hardware, configuration) pairs measured" in text and "1. local-2c [batch_size=1, threads=2]" in text
    files = sorted(out.parent.glob("*.yaml"))
    assert files and f"wrote {out}" in text
    spec = load_sweep(files[0])
    assert spec.asset == "mlp" and "local-2c" in spec.hardware and spec.results_uri == str(results)
    a.json = True
    assert cmd_suggest(a) == 0
    ans = json.loads(capsys.readouterr().out)
    first = ans["suggestion"]["trials"][0]
    assert (first["hardware"], first["config"]) == ("local-2c", {"batch_size": 1, "threads": 2})
    assert ans["files"] and len(ans["sweeps"]) == len(ans["files"])


def test_suggest_takes_the_space_and_settings_from_a_sweep_file(results, tmp_path, capsys):
    sweep = tmp_path / "space.yaml"
    sweep.write_text("name: base\nasset: mlp\nspace: {batch_size: [1], threads: [2]}\nhardware: [local-2c]\n"
                     "repeats: 3\n")
    a = ns(requirements=req_file(tmp_path), results=str(results), models=None, out=None, max_trials=10,
           space_from=str(sweep), local_only=True)
    a.json = True
    assert cmd_suggest(a) == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["suggestion"]["grid_size"] == 2  # local-1c and local-2c x the one configuration
    assert all(doc["repeats"] == 3 for doc in ans["sweeps"]) and ans["files"] == []


def test_suggest_errors_are_plain(tmp_path):
    a = ns(requirements=req_file(tmp_path), results=str(tmp_path / "empty"), models=None, out=None,
           max_trials=3, space_from=None, local_only=False)
    with pytest.raises(NoDataError, match="the results store is empty"):
        cmd_suggest(a)


def test_suggest_with_a_models_folder_that_holds_none(results, tmp_path):
    a = ns(requirements=req_file(tmp_path), results=str(results), models=str(tmp_path), out=None,
           max_trials=3, space_from=None, local_only=False)
    with pytest.raises(ModelError, match="no model set here"):
        cmd_suggest(a)


def test_through_benchmatch_main(tmp_path, capsys):
    """`benchmatch import` runs through main() and its error handling."""
    rc = main(["import", str(ROOT / "configs/examples/generic-results.csv"), "--mapping",
               str(ROOT / "configs/mappings/generic-csv.yaml"), "--results", str(tmp_path / "s")])
    assert rc == 0 and capsys.readouterr().out.startswith("24 rows imported, 0 rejected")
    assert main(["import", str(ROOT / "configs/examples/generic-results.csv"), "--mapping",
                 str(tmp_path / "missing.yaml")]) == 2
    assert "mapping file not found" in capsys.readouterr().err


def test_suggest_works_for_a_users_file_asset_and_its_sweep_files_load_it(tmp_path, capsys):
    """Rows name the asset by its own name; the sweep files suggest writes load it by its reference."""
    ref = f"{ROOT / 'tests' / 'fixtures' / 'user_asset.py'}:Blobs"
    # The pair left out is the fastest (two threads on two cores, batch 1): worth measuring.
    rows = synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 2, 4, 8), threads=(1, 2),
                                 repeats=1, seed=3)
    rows["asset"], rows["asset_ref"] = "blobs-logreg", ref
    keep = (rows["hardware"] + "|" + config_keys(rows)) != "local-2c|batch_size=1,threads=2"
    store = write_store(rows[keep], tmp_path / "results")
    req = tmp_path / "req.yaml"
    req.write_text(yaml.safe_dump({"asset": "blobs-logreg", "objective": "latency",
                                   "constraints": {"throughput_qps": 500}}))
    out = tmp_path / "next.yaml"
    a = ns(requirements=str(req), results=str(store), models=None, out=str(out), max_trials=3, space_from=None,
           local_only=True)
    assert cmd_suggest(a) == 0
    assert "wrote" in capsys.readouterr().out
    spec = load_sweep(out)
    assert spec.asset == ref and spec.name.startswith("suggest-Blobs-")
