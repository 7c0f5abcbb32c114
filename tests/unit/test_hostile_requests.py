"""Hostile requests: bodies and files built to crash, stall or mislead the service and the CLI.
Each was a 500, a traceback, a hang or a silently wrong answer; each is now a 4xx (or a CLI error)
that names what is wrong and how to fix it. The HTTP layer runs in-process (TestClient, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from benchmatch.cli import main as cli_main
from matcher.errors import RequirementsError
from matcher.requirements import MAX_DEVICES, load_plan, load_requirements, loads_json
from serve.app import create_app
from serve.core import ServiceCore, ServiceSettings
from tests.fixtures.service_data import write_synthetic_store

JSON = {"content-type": "application/json"}
MLP = "synthetic-mlp"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    store = tmp_path_factory.mktemp("hostile") / "results"
    write_synthetic_store(store, assets=(MLP,), batch_sizes=(1, 8), repeats=1)
    app = create_app()
    app.state.core = ServiceCore(ServiceSettings(results_uri=str(store)))  # 1 MiB body limit
    return TestClient(app, raise_server_exceptions=False)


def post(client: TestClient, path: str, body: bytes | dict[str, Any]) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers=JSON)


def field_error(r: Any, field: str, words: str) -> None:
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["kind"] == "RequirementsError" and field in [e["field"] for e in out["errors"]], out
    assert words in out["detail"], out["detail"]


# ----------------------------------------------------------------------------------------------
# Numbers beyond what the solver holds: were 500s
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [10**30, 2**64, int("9" * 4000)], ids=["1e30", "2^64", "4000-digits"])
def test_inventory_beyond_any_count_is_a_422(client: TestClient, count: int) -> None:
    # A 4,000-digit count crashed the screen (int too large to convert to float).
    body = b'{"asset": "synthetic-mlp", "inventory": {"local-1c": ' + str(count).encode() + b"}}"
    r = post(client, "/recommend", body)
    field_error(r, "inventory.local-1c", "at most 1e+12 devices; leave the hardware out of inventory")
    assert len(r.content) < 4000
    r = post(client, "/plan", b'{"workloads": [{"asset": "synthetic-mlp"}], "inventory": {"local-1c": '
             + str(count).encode() + b"}}")
    field_error(r, "inventory.local-1c", "at most 1e+12")


def test_the_largest_inventory_is_answered(client: TestClient) -> None:
    r = post(client, "/recommend", {"asset": MLP, "inventory": {"local-1c": MAX_DEVICES},
                                    "constraints": {"throughput_qps": 1000}})
    assert r.status_code == 200 and r.json()["feasible"], r.text


@pytest.mark.parametrize("util", [1e-300, 5e-324, 1e-9, 0.009])
def test_a_vanishing_max_utilization_is_a_422(client: TestClient, util: float) -> None:
    # 1e-300 with a large demand crashed the enumeration (negative dimensions); 1e-9 answered 10^11 replicas.
    r = post(client, "/recommend", {"asset": MLP, "max_utilization": util, "constraints": {"throughput_qps": 1e12}})
    field_error(r, "max_utilization", "at least 0.01")
    r = post(client, "/plan", {"workloads": [{"asset": MLP, "max_utilization": util,
                                              "constraints": {"throughput_qps": 1e12}}]})
    field_error(r, "workloads.0.max_utilization", "at least 0.01")


def test_the_smallest_max_utilization_is_answered(client: TestClient) -> None:
    r = post(client, "/recommend", {"asset": MLP, "max_utilization": 0.01, "constraints": {"throughput_qps": 1e12}})
    # Accepted (0.01 is the bound), and answered: 1e12 samples/s at 1% load needs over 1e9 replicas
    # of every candidate, which no answer offers.
    assert r.status_code == 200 and not r.json()["feasible"], r.text
    assert "lower the demand or raise max_utilization" in r.json()["diagnosis"]["message"]


# ----------------------------------------------------------------------------------------------
# Repeated keys: the last value won silently
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "key", "second"),
    [
        ("/recommend", b'{"asset": "synthetic-mlp", "top_k": 1, "top_k": 50}', "top_k", b'"top_k": 50'),
        # A second "constraints" dropped every constraint of the first: a feasible answer to a different question.
        ("/recommend", b'{"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 0.01}, "constraints": {}}',
         "constraints", b'"constraints": {}'),
        ("/pareto", b'{"asset": "synthetic-mlp", "constraints": {"throughput_qps": 1, "throughput_qps": 9}}',
         "throughput_qps", b'"throughput_qps": 9'),
        ("/recommend", b'{"asset": "synthetic-mlp", "top_k": 1, "top\\u005fk": 50}', "top_k", b'"top\\u005fk"'),
        ("/plan", b'{"workloads": [{"asset": "synthetic-mlp"}, {"asset": "synthetic-mlp", "asset": "x"}]}',
         "asset", b'"asset": "x"'),
    ],
    ids=["top-level", "constraints-twice", "nested", "escaped", "plan-workload"],
)
def test_a_repeated_key_is_invalid_json_at_its_character(client: TestClient, path: str, body: bytes,
                                                         key: str, second: bytes) -> None:
    at = body.index(second)
    r = post(client, path, body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["kind"] == "InvalidJSON", out
    assert f"at character {at}: duplicate key '{key}'" in out["detail"] and "give each field once" in out["detail"], out


def test_the_same_key_in_different_objects_is_fine(client: TestClient) -> None:
    r = post(client, "/plan", {"workloads": [{"asset": MLP, "top_k": 1}, {"asset": MLP, "top_k": 1}]})
    assert r.status_code == 200, r.text


def test_a_repeated_key_in_a_form_body_is_still_a_415(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"top_k": 1, "top_k": 2}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415, r.text


def test_other_json_failures_keep_their_answers(client: TestClient) -> None:
    deep = post(client, "/recommend", b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    assert deep.status_code == 400 and "nested more than 100" in deep.json()["detail"]
    digits = post(client, "/recommend", b'{"top_k": ' + b"9" * 4400 + b"}")
    assert digits.status_code == 400 and "an integer of more than" in digits.json()["detail"]
    truncated = post(client, "/recommend", b'{"objective": ')
    assert truncated.status_code == 400 and "at character 14" in truncated.json()["detail"]


@pytest.mark.parametrize(
    ("workload", "field", "words"),
    [({"objective": "latency"}, "workloads.1.objective",
      "this workload asks objective 'latency', but a plan has one objective, the plan's 'cost'"),
     ({"top_k": 5}, "workloads.1.top_k", "this workload asks top_k 5, but a plan answers one option per workload")],
)
def test_a_plan_refuses_what_it_would_ignore(client: TestClient, workload: dict[str, Any], field: str,
                                             words: str) -> None:
    # The plan's objective and one option per workload were used, the workload's own silently dropped.
    r = post(client, "/plan", {"workloads": [{"asset": MLP}, {"asset": MLP, **workload}]})
    field_error(r, field, words)
    same = post(client, "/plan", {"objective": "latency", "workloads": [{"asset": MLP, "objective": "latency",
                                                                         "top_k": 1}]})
    assert same.status_code == 200, same.text


def test_loads_json() -> None:
    assert loads_json(b'{"a": {"b": 1}, "b": [{"a": 1}, {"a": 2}]}') == {"a": {"b": 1}, "b": [{"a": 1}, {"a": 2}]}
    with pytest.raises(json.JSONDecodeError, match=r"duplicate key 'x' \(first at character 1\)") as exc:
        loads_json('{"x": "a\\"b", "x": 1}')
    assert exc.value.pos == 14


# ----------------------------------------------------------------------------------------------
# Files for the CLI: were tracebacks, a hang, or a silently different document
# ----------------------------------------------------------------------------------------------


def _bomb(levels: int, fan: int) -> str:
    text = "asset:\n  - &l0 [" + ", ".join(["lol"] * fan) + "]\n"
    for i in range(1, levels + 1):
        text += f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]\n"
    return text


@pytest.mark.parametrize(("levels", "fan"), [(32, 2), (7, 8)], ids=["2^32", "8^8"])
def test_an_alias_bomb_within_the_alias_budget_is_refused_at_once(tmp_path: Path, levels: int, fan: int) -> None:
    # 64 aliases, 700 bytes: pydantic's error built a repr of 2^32 values (a hang, 2.5 GB and growing).
    # Refused while composing, before anything is built (no wall-clock assertion: a regression hangs).
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(levels, fan))
    with pytest.raises(RequirementsError, match="more than 100000 values once its aliases are expanded"):
        load_requirements(bomb)


def test_every_yaml_file_we_read_refuses_the_alias_bomb(tmp_path: Path) -> None:
    """Sweeps, catalogs and mappings go through cluster/yamlfile.py, which holds the same budget."""
    from benchmarks.spec import load_sweep
    from cluster.hardware import load_catalog
    from cluster.yamlfile import YamlError

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(32, 2))
    for load in (load_sweep, load_catalog):
        with pytest.raises((YamlError, ValueError), match="more than 100000 values once its aliases are expanded"):
            load(bomb)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("deep.json", '{"asset": ' + "[" * 50_000 + "]" * 50_000 + "}", "not valid JSON: nested too deeply"),
        ("deep.yaml", "asset: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper than 64 levels"),
        ("latin.yaml", b'asset: "\xff"\n', "not UTF-8 text (invalid start byte at byte 8); save it as UTF-8"),
        ("latin.json", b'{"asset": "\xff"}', "not UTF-8 text"),
        ("digits.json", '{"top_k": ' + "9" * 5000 + "}", "an integer of more than 4300 digits"),
        ("digits.yaml", "top_k: " + "9" * 5000 + "\n", "an integer of more than 4300 digits"),
        ("inventory.yaml", "inventory: {local-1c: " + "9" * 4000 + "}\n", "inventory.local-1c: must be at most 1e+12"),
        ("dup.yaml", "asset: a\ntop_k: 1\ntop_k: 5\n", "not valid YAML: line 3, column 1: duplicate key 'top_k' "
         "(first on line 2)"),
        ("dup.json", '{"constraints": {"latency_p99_ms": 1}, "constraints": {}}', "duplicate key 'constraints'"),
        ("big.yaml", " " * (1 << 20) + "\nasset: a\n", "larger than 1024 KiB"),
        ("util.yaml", "max_utilization: 1.0e-300\n", "max_utilization: must be at least 0.01"),
    ],
)
def test_requirement_files_that_broke_the_reader(tmp_path: Path, name: str, content: str | bytes, words: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(RequirementsError) as exc:
        load_requirements(path)
    assert words in str(exc.value) and name in str(exc.value), str(exc.value)


def test_yaml_reads_exponents_as_numbers(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) read 1e6 as text: "throughput_qps: must be a valid number (got '1e6')".
    path = tmp_path / "req.yaml"
    path.write_text("constraints: {throughput_qps: 1e6, latency_p99_ms: 2.5E+1, accuracy: 5e-1}\nasset: '1e6'\n")
    req = load_requirements(path)
    assert (req.constraints.throughput_qps, req.constraints.latency_p99_ms, req.constraints.accuracy) == (1e6, 25, 0.5)
    assert req.asset == "1e6"
    path.write_text("constraints: {latency_p99_ms: 1e400}\n")
    with pytest.raises(RequirementsError, match="must be a finite number"):
        load_requirements(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("base: &b {asset: a, top_k: 2}\n")  # an unknown field, but read without a duplicate error
    with pytest.raises(RequirementsError, match="base: unknown field"):
        load_requirements(path)
    path.write_text("workloads:\n  - &w {asset: a, max_utilization: 0.5}\n  - {<<: *w, max_utilization: 0.7}\n")
    assert [w.max_utilization for w in load_plan(path).workloads] == [0.5, 0.7]


def test_a_folder_or_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError, match="is a folder"):
        load_requirements(tmp_path)
    with pytest.raises(RequirementsError, match="plan file not found"):
        load_plan(tmp_path / "nope.yaml")


def test_cli_plan_refuses_a_repeated_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("workloads:\n  - {asset: a, top_k: 1, top_k: 2}\n")
    assert cli_main(["plan", str(plan), "--results", str(tmp_path / "results")]) == 2
    assert "duplicate key 'top_k'" in capsys.readouterr().err
    deep = tmp_path / "plan.json"
    deep.write_text('{"workloads": ' + "[" * 50_000 + "]" * 50_000 + "}")
    assert cli_main(["plan", str(deep), "--results", str(tmp_path / "results")]) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_a_demand_no_fleet_carries_is_screened_not_overflowed() -> None:
    """A candidate slower than 1e-5 samples/s under a demand of 1e12 at 1% utilization needs ~1e19
    replicas: it is screened out with the reason, instead of an integer overflow (a 500)."""
    import pandas as pd

    from matcher.recommend import recommend

    cands = pd.DataFrame([{"hardware": "slow", "price_per_hour_usd": 1.0, "latency_p99_ms": 5.0,
                           "throughput_qps": 1e-6, "accuracy": 0.9}])
    ans = recommend({"constraints": {"throughput_qps": 1e12}, "max_utilization": 0.01}, cands)
    assert not ans.feasible
    assert "more than 1e+09 replicas" in ans.diagnosis.message, ans.diagnosis.message


def test_a_plans_asset_errors_name_the_workload(client: TestClient) -> None:
    # Were `asset`, whichever workload it was (hostile probe, 2026-12-02).
    for workloads, field in (([{"asset": MLP}, {"asset": "nope"}], "workloads.1.asset"),
                             ([{"asset": "nope"}], "workloads.0.asset")):
        r = post(client, "/plan", {"workloads": workloads})
        assert r.status_code == 404, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field]
    r = post(client, "/recommend", {"asset": "nope"})
    assert r.status_code == 404 and [e["field"] for e in r.json()["errors"]] == ["asset"]
