"""The `benchmatch` command as people expect it: every option has a help line and shows its default,
`--catalog` goes before or after the subcommand, each subcommand describes itself, and only the
project's own errors become one-line messages (a bug keeps its traceback)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from benchmatch import cli
from cluster.errors import BenchmatchError

ROOT = Path(__file__).resolve().parents[2]


def _parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


ALL = list(_parsers(cli.build_parser()))


def test_every_subcommand_is_listed():
    names = {" ".join(path) for path, _ in ALL}
    assert {"quickstart", "cluster up", "cluster status", "cluster down", "sweep", "train", "recommend", "plan",
            "suggest", "import", "report", "serve"} <= names


@pytest.mark.parametrize("path,parser", ALL, ids=[" ".join(p) or "benchmatch" for p, _ in ALL])
def test_every_option_has_help_and_shows_its_default(path, parser):
    assert parser.description, f"`benchmatch {' '.join(path)} --help` does not describe itself"
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"benchmatch {' '.join(path)}: {name} has no help line"
        shown_default = action.default not in (None, False, argparse.SUPPRESS)
        if shown_default:
            assert f"(default: {action.default})" in " ".join(text.split()), f"{name}: default not shown"


def test_cluster_actions_each_describe_themselves():
    helps = {}
    for action in ("up", "status", "down"):
        out = subprocess.run([sys.executable, "-m", "benchmatch", "cluster", action, "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        helps[action] = " ".join(out.stdout.split())
    assert "Start a loopback-only" in helps["up"] and "--prometheus" in helps["up"]
    assert "List the live nodes" in helps["status"] and "--json" in helps["status"]
    assert "Never signals a process it did not start" in helps["down"]


def test_catalog_is_accepted_before_and_after_the_subcommand():
    p = cli.build_parser()
    assert p.parse_args(["--catalog", "a.yaml", "recommend", "r.yaml"]).catalog == "a.yaml"
    assert p.parse_args(["recommend", "r.yaml", "--catalog", "b.yaml"]).catalog == "b.yaml"
    assert p.parse_args(["cluster", "up", "--catalog", "c.yaml"]).catalog == "c.yaml"
    assert p.parse_args(["recommend", "r.yaml"]).catalog is None


def test_a_project_error_is_one_line_and_a_bug_is_not_swallowed(monkeypatch, capsys):
    def user_mistake(a):
        raise BenchmatchError("requirements.yaml: field 'x' is unknown; remove it")

    def bug(a):
        raise KeyError("an internal bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["train"].set_defaults(fn=user_mistake)
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err.strip() == "benchmatch train: error: requirements.yaml: field 'x' is unknown; remove it"
    parser._subparsers._group_actions[0].choices["train"].set_defaults(fn=bug)
    with pytest.raises(KeyError):
        cli.main(["train"])


def test_a_missing_requirements_file_is_named(tmp_path, capsys):
    assert cli.main(["recommend", str(tmp_path / "nope.yaml"), "--results", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_an_asset_that_cannot_be_imported_fails_once_before_any_cluster(tmp_path):
    (tmp_path / "broken.py").write_text("import this_module_does_not_exist\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nasset: broken.py:Model\nhardware: [local-1c]\n")
    out = subprocess.run([sys.executable, "-m", "benchmatch", "sweep", str(sweep), "--results", str(tmp_path / "r")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.py" in lines[0] and "this_module_does_not_exist" in lines[0], out.stderr
    assert "starting an embedded" not in out.stdout and not (tmp_path / "r").exists()


def test_train_and_report_skip_a_poisoned_results_file_and_name_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from results.store import ResultsStore
    from tests.fixtures.instances import synthetic_result_rows

    rows = synthetic_result_rows(hardware=("local-1c", "local-2c"), batches=(1, 2), threads=(1,), repeats=2, seed=0)
    store = ResultsStore(tmp_path / "store")
    for _, g in rows.groupby(["sweep_id", "trial_id", "repeat"]):
        store.write(g.to_dict("records"))
    bad = rows.iloc[:2].to_dict("records")
    bad[1]["latency_p99_ms"] = -1.0
    pq.write_table(pa.Table.from_pylist([{**r, "trial_id": "poison"} for r in bad]),
                   tmp_path / "store" / str(rows["sweep_id"].iloc[0]) / "poison-r0.parquet")
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    for args in (["train", "--results", str(tmp_path / "store")],
                 ["report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "r.html")]):
        out = subprocess.run([sys.executable, "-m", "benchmatch", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "poison-r0.parquet holds values no measurement has" in out.stderr
        assert "Traceback" not in out.stderr
