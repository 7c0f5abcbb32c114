"""Unit tests of the HTTP layer (serve/app.py, serve/core.py, serve/snapshot.py) without Ray: the
FastAPI app runs in-process through Starlette's TestClient, over real Workspaces on small
synthetic stores and candidate files. tests/integration/test_serve.py runs the same app behind a
real Serve endpoint."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import matcher.workspace as workspace_mod
import serve.snapshot as snapshot_mod
from cluster.hardware import CatalogError
from matcher.errors import CandidateError, MatcherError, ModelError, NoDataError
from matcher.requirements import Requirements
from matcher.workspace import Sources, Workspace
from serve.app import AppArgs, build_app, create_app
from serve.core import MAX_FIELD_ERRORS, ServiceCore, ServiceSettings, http_error
from serve.jsonable import jsonable
from serve.metrics import OTHER, route_label
from serve.snapshot import SourceNames
from tests.fixtures.service_data import write_synthetic_candidates, write_synthetic_store
from tests.fixtures.slow_clients import SlowClients

ROOT = Path(__file__).resolve().parents[2]
JSON = {"content-type": "application/json"}
MLP = "synthetic-mlp"


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    write_synthetic_store(tmp_path / "results", assets=(MLP,), repeats=1)
    return tmp_path / "results"


def client_for(settings: ServiceSettings) -> tuple[TestClient, ServiceCore]:
    app = create_app()
    app.state.core = ServiceCore(settings)
    return TestClient(app, raise_server_exceptions=False), app.state.core


@pytest.fixture()
def client(store: Path) -> TestClient:
    return client_for(ServiceSettings(results_uri=str(store), models_dir=str(store / "models"),
                                      max_body_bytes=4096))[0]


def post(client: TestClient, path: str, body: bytes) -> Any:
    return client.post(path, content=body, headers=JSON)


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "solve_time_s"}


def cli_json(answer: Any) -> Any:
    """What a client parses from the CLI's answer: JSON, NaN -> null, tuples -> lists."""
    return json.loads(json.dumps(jsonable(answer)))


def assert_no_server_paths(text: str, *paths: Path) -> None:
    for p in (*paths, ROOT):
        assert str(p) not in text, f"server path {p} in {text[:300]}"


# ----------------------------------------------------------------------------------------------
# Routes answer what the workspace answers
# ----------------------------------------------------------------------------------------------


def test_healthz_hardware_assets_show_names_not_paths(client: TestClient, store: Path) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok" and body["ready"] is True, body["problems"]
    assert body["data"]["assets"] == [MLP] and body["data"]["result_files"] == 6
    assert body["data"]["results"] == "results/" and body["data"]["models"] == "results/models/"
    assert body["data"]["catalog"] == "hardware.yaml"
    hw = client.get("/hardware").json()
    assert hw["catalog"] == "hardware.yaml"
    assert hw["count"] == len(hw["hardware"]) and "local-2c" in {s["name"] for s in hw["hardware"]}
    assets = client.get("/assets")
    assert assets.json()["results"] == "results/"
    first = assets.json()["assets"][0]
    assert first["asset"] == MLP and first["rows"] == 12
    assert first["hardware"] == ["aws-g4dn.xlarge", "local-1c", "local-2c"]
    for r in (h, assets, client.get("/hardware")):
        assert_no_server_paths(r.text, store)


def test_recommend_is_the_workspace_answer_and_is_cached(client: TestClient, store: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    req = {"asset": MLP, "constraints": {"throughput_qps": 1000, "latency_p99_ms": 30}}
    direct = Workspace.open(Sources(results_uri=str(store), models_dir=str(store / "models"))).recommend(req)
    calls = []
    real = Workspace.recommend
    monkeypatch.setattr(Workspace, "recommend", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    r = client.post("/recommend", json=req)
    assert r.status_code == 200, r.text
    assert without_timing(r.json()) == without_timing(cli_json(direct))
    assert r.json()["status"] == "optimal" and r.json()["options"][0]["predicted"]["energy_per_sample_j"] is None
    # Same question, same data: answered from the cache without solving again.
    again = client.post("/recommend", json={"constraints": req["constraints"], "asset": MLP})
    assert again.json() == r.json() and len(calls) == 1


def test_answer_says_when_the_solver_ran_out_of_time(store: Path) -> None:
    # benchmatch/render.py prints "time limit reached, optimality not proven" from `status`.
    client, _ = client_for(ServiceSettings(results_uri=str(store), time_limit_s=0))
    body = client.post("/recommend", json={"asset": MLP, "constraints": {"throughput_qps": 5000}}).json()
    assert body["status"] == "time_limit", body


def test_plan_is_the_workspace_answer(client: TestClient, store: Path) -> None:
    doc = {"workloads": [{"asset": MLP, "constraints": {"throughput_qps": 500}},
                         {"asset": MLP, "constraints": {"throughput_qps": 300}}], "inventory": {"local-2c": 1}}
    r = client.post("/plan", json=doc)
    assert r.status_code == 200, r.text
    direct = Workspace.open(Sources(results_uri=str(store))).plan(doc)
    assert without_timing(r.json()) == without_timing(cli_json(direct))
    assert r.json()["feasible"] and r.json()["status"] == "optimal"


def test_plan_mistakes_name_the_field(client: TestClient) -> None:
    r = client.post("/plan", json={"workloads": [{"constraints": {"accuracy": 2}}]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "workloads.0.constraints.accuracy"
    r = client.post("/plan", json={"workloads": [], "budget_per_hour": 1})
    fields = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert "did you mean 'budget_per_hour_usd'" in fields["budget_per_hour"] and "workloads" in fields
    r = client.post("/plan", json={"workloads": [{"asset": MLP}, {"asset": "nope"}]})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "workloads.1.asset"


def test_pareto_is_the_workspace_front(client: TestClient, store: Path) -> None:
    body = {"asset": MLP, "constraints": {"throughput_qps": 100}}
    r = client.post("/pareto", json=body)
    assert r.status_code == 200, r.text
    direct = Workspace.open(Sources(results_uri=str(store))).pareto(body)
    assert r.json() == cli_json(direct) and r.json()["feasible"]
    lat = [p["latency_p99_ms"] for p in r.json()["points"]]
    assert lat == sorted(lat, reverse=True)
    bad = client.post("/pareto", json={"constraints": {"latency_p99_ms": -1}})
    assert bad.status_code == 422 and "constraints.latency_p99_ms" in bad.text


def test_pareto_checks_inventory_like_recommend(client: TestClient) -> None:
    for route in ("/recommend", "/pareto"):
        r = client.post(route, json={"asset": MLP, "inventory": {"H100-SXM": 1}})
        assert r.status_code == 422, (route, r.text)
        assert r.json()["errors"][0]["field"] == "inventory.H100-SXM"


def test_candidates_csv_source(tmp_path: Path) -> None:
    csv = write_synthetic_candidates(tmp_path / "cands.csv")
    client, _ = client_for(ServiceSettings(candidates_csv=str(csv)))
    h = client.get("/healthz")
    assert h.json()["data"]["candidate_rows"] == 6 and h.json()["status"] == "ok"
    assert h.json()["data"]["candidates_csv"] == "cands.csv"
    assets = client.get("/assets").json()
    assert assets["candidates_csv"] == "cands.csv"
    assert assets["assets"][0]["hardware"] == ["aws-g4dn.xlarge", "local-1c", "local-2c"]
    r = client.post("/recommend", json={"constraints": {"throughput_qps": 100}})
    direct = Workspace.open(Sources(candidates_csv=str(csv))).recommend({"constraints": {"throughput_qps": 100}})
    assert without_timing(r.json()) == without_timing(cli_json(direct))
    assert_no_server_paths(h.text + json.dumps(assets), tmp_path)


# ----------------------------------------------------------------------------------------------
# Errors: the status of each matcher error, and of bugs
# ----------------------------------------------------------------------------------------------


def test_matcher_errors_from_real_data(tmp_path: Path) -> None:
    write_synthetic_store(tmp_path / "results", repeats=1)  # two assets
    client, _ = client_for(ServiceSettings(results_uri=str(tmp_path / "results")))
    r = client.post("/recommend", json={"constraints": {"throughput_qps": 10}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "asset"  # which of the two?
    r = client.post("/recommend", json={"asset": "no-such-asset"})
    assert r.status_code == 404 and MLP in r.json()["detail"]  # says which assets do have data
    r = client.post("/recommend", json={"asset": MLP, "task": "train"})
    assert r.status_code == 409 and "train" in r.json()["detail"]
    for r in (client.post("/recommend", json={"asset": "no-such-asset"}),
              client.post("/recommend", json={"constraints": {}})):
        assert_no_server_paths(r.text, tmp_path)


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [(CandidateError("/srv/data/c.csv: line 3: column 'latency_p99_ms' is empty"), 409, "CandidateError"),
     (ModelError("/srv/data/results/models/m.skops: not a skops file"), 409, "ModelError"),
     (NoDataError("/srv/data/results: the results store is empty"), 409, "NoDataError"),
     (CatalogError("/srv/data/hw.yaml: hardware[0]: name is required"), 503, "CatalogError"),
     (MatcherError("something about the input"), 400, "MatcherError")],
)
def test_http_error_mapping(exc: Exception, status: int, kind: str) -> None:
    names = SourceNames(Sources(results_uri="/srv/data/results", candidates_csv="/srv/data/c.csv",
                                catalog_path="/srv/data/hw.yaml"))
    err = http_error(exc, names, known=[MLP])
    assert (err.status, err.kind) == (status, kind)
    assert "/srv/" not in err.detail, err.detail


def test_a_bug_is_a_500_not_a_client_error(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Workspace, *a: Any, **k: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Workspace, "recommend", boom)
    assert client.post("/recommend", json={"asset": MLP}).status_code == 500


# ----------------------------------------------------------------------------------------------
# Client mistakes (#11 item 7): 4xx naming the field, strict types, capped echoes, JSON positions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"constraints": {"latency_p99_ms": -1}}, "constraints.latency_p99_ms", "greater than 0"),
        ({"constraints": {"latency_p99": 5}}, "constraints.latency_p99", "did you mean 'latency_p99_ms'"),
        ({"objectiv": "cost"}, "objectiv", "did you mean 'objective'"),
        ({"objective": "speed"}, "objective", "'cost', 'energy' or 'latency'"),
        ({"top_k": 0}, "top_k", "greater than or equal to 1"),
        ({"inventory": {"local-2c": -1}}, "inventory.local-2c", "greater than or equal to 0"),
        ({"constraints": {"budget_total_usd": 5}}, "constraints.duration_h", "required"),
        ([1, 2], "(top level)", "valid dictionary"),
        # Strict types: a boolean is not a number, a string is not an integer.
        ({"top_k": True}, "top_k", "valid integer"),
        ({"top_k": "3"}, "top_k", "valid integer"),
        ({"constraints": {"accuracy": False}}, "constraints.accuracy", "valid number"),
        ({"inventory": {"local-2c": True}}, "inventory.local-2c", "valid integer"),
        # Beyond what the solver's numbers hold: rejected, not a wrong "infeasible".
        ({"constraints": {"throughput_qps": 1e308}}, "constraints.throughput_qps", "less than or equal to"),
        ({"constraints": {"budget_total_usd": 1e308, "duration_h": 1e308}}, "constraints.duration_h",
         "less than or equal to"),
    ],
)
def test_invalid_requirements_name_the_field(client: TestClient, body: Any, field: str, words: str) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["kind"] == "RequirementsError"
    assert field in [e["field"] for e in out["errors"]], out
    assert words in out["detail"], out["detail"]


def test_integers_stay_valid_for_number_fields(client: TestClient) -> None:
    r = client.post("/recommend", json={"asset": MLP, "constraints": {"latency_p99_ms": 30, "accuracy": 0}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body", [b'{"asset": "\\ud800"}', b'{"asset": "synthetic-mlp", "inventory": {"\\udfff": 1}}'])
def test_lone_surrogate_is_a_422(client: TestClient, body: bytes) -> None:
    r = post(client, "/recommend", body)
    assert r.status_code == 422, r.text
    assert "Unicode" in r.json()["detail"]


def test_nan_in_body_is_rejected(client: TestClient) -> None:
    r = post(client, "/recommend", b'{"constraints": {"latency_p99_ms": NaN}}')
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "constraints.latency_p99_ms"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"objective": ', "not valid JSON at character 14"),
        (b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}", "not valid JSON at character 105: nested more than 100"),
        (b'{"top_k": ' + b"9" * 4400 + b"}", "not valid JSON at character 10: an integer of more than"),
        (b'{"asset": "\xff"}', "not valid UTF-8 at byte 11"),
    ],
    ids=["truncated", "deep", "huge-integer", "not-utf8"],
)
def test_unparsable_json_is_invalid_json_with_a_position(store: Path, body: bytes, words: str) -> None:
    client, _ = client_for(ServiceSettings(results_uri=str(store)))  # 1 MiB limit
    r = post(client, "/recommend", body)
    assert r.status_code == 400, r.text
    assert r.json()["kind"] == "InvalidJSON" and words in r.json()["detail"], r.json()


def test_error_bodies_cap_what_they_echo(store: Path) -> None:
    client, _ = client_for(ServiceSettings(results_uri=str(store)))  # 1 MiB limit
    many = b"{" + b",".join(b'"field_%06d": 1' % i for i in range(50_000)) + b"}"
    assert 800_000 < len(many) < 1 << 20
    r = post(client, "/recommend", many)
    assert r.status_code == 422 and len(r.content) < 8_000, len(r.content)
    assert len(r.json()["errors"]) == MAX_FIELD_ERRORS and "50000 errors" in r.json()["detail"]
    inventory = b'{"asset": "synthetic-mlp", "inventory": {' + b",".join(b'"hw-%06d": 1' % i for i in range(50_000)) + b"}}"
    r = post(client, "/pareto", inventory)
    assert r.status_code == 422 and len(r.content) < 8_000, len(r.content)
    r = client.post("/recommend", json={"asset": "x" * 900_000})
    assert r.status_code == 404 and len(r.content) < 8_000, len(r.content)


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"asset": "x"}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_body_limit_by_length_and_by_stream(client: TestClient) -> None:
    big = b'{"asset": "' + b"x" * 5000 + b'"}'
    r = post(client, "/recommend", big)
    assert r.status_code == 413 and r.json()["kind"] == "RequestTooLarge"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000
        yield b"{}"

    r = client.post("/recommend", content=chunks(), headers=JSON)
    assert r.status_code == 413, r.text


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and "/docs" in r.json()["detail"]
    assert client.get("/recommend").status_code == 405


# ----------------------------------------------------------------------------------------------
# Readiness and cold start (#11 item 2)
# ----------------------------------------------------------------------------------------------


def test_data_is_loaded_and_tables_built_before_the_first_request(store: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real = workspace_mod.candidates_from_results
    monkeypatch.setattr(workspace_mod, "candidates_from_results",
                        lambda rows, *a, **k: builds.append(k.get("asset")) or real(rows, *a, **k))
    client, _ = client_for(ServiceSettings(results_uri=str(store)))
    assert builds, "the candidate table is built when the replica is constructed"
    built = len(builds)
    answers: list[int] = []
    body = {"asset": MLP, "constraints": {"throughput_qps": 500}}
    threads = [threading.Thread(target=lambda i=i: answers.append(
        client.post("/recommend", json={**body, "top_k": 1 + i % 3}).status_code)) for i in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers == [200] * 14
    assert len(builds) == built, "concurrent first requests each rebuilt the candidate table"


def test_malformed_modelset_is_not_ready_naming_the_file(store: Path) -> None:
    models = store / "models"
    models.mkdir()
    (models / "modelset.json").write_text("{not json")
    now = [0.0]
    app = create_app()
    app.state.core = ServiceCore(ServiceSettings(results_uri=str(store), models_dir=str(models),
                                                 reload_interval_s=5), clock=lambda: now[0])
    client = TestClient(app, raise_server_exceptions=False)
    h = client.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "not ready" and h.json()["ready"] is False
    assert any("results/models/modelset.json" in p for p in h.json()["problems"]), h.json()["problems"]
    for route in ("/recommend", "/pareto"):
        r = client.post(route, json={"asset": MLP})
        assert r.status_code == 503 and r.json()["kind"] == "NotReady", r.text
        assert "results/models/modelset.json" in r.json()["detail"] and r.headers["retry-after"] == "5"
    r = client.post("/plan", json={"workloads": [{"asset": MLP}]})
    assert r.status_code == 503
    assert client.get("/assets").status_code == 200 and client.get("/hardware").status_code == 200
    for r in (h, client.post("/recommend", json={"asset": MLP})):
        assert_no_server_paths(r.text, store)
    # Fixed (here: the broken set removed): ready again at the next check, without a restart.
    (models / "modelset.json").unlink()
    now[0] = 6.0
    assert client.get("/healthz").status_code == 200
    assert client.post("/recommend", json={"asset": MLP}).status_code == 200


def test_unreadable_catalog_and_candidates_are_not_ready(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("hardware,price_per_hour_usd\nx,1\n")
    client, _ = client_for(ServiceSettings(candidates_csv=str(tmp_path / "bad.csv"),
                                           catalog_path=str(tmp_path / "missing.yaml")))
    h = client.get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "not ready"
    problems = " ".join(h.json()["problems"])
    assert "missing.yaml" in problems and "bad.csv" in problems
    r = client.get("/hardware")
    assert r.status_code == 503 and r.json()["kind"] == "CatalogError" and "missing.yaml" in r.json()["detail"]
    r = client.post("/recommend", json={})
    assert r.status_code == 503 and "missing.yaml" in r.json()["detail"]
    for r in (h, client.get("/hardware"), client.post("/recommend", json={})):
        assert_no_server_paths(r.text, tmp_path)


def test_a_load_that_crashes_leaves_a_replica_that_says_so(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(cls: type, sources: Sources, strict: bool = True) -> Workspace:
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(Workspace, "open", classmethod(crash))
    client, _ = client_for(ServiceSettings(results_uri=str(store)))  # the constructor does not raise
    h = client.get("/healthz")
    assert h.status_code == 503 and "could not be loaded" in h.json()["problems"][0]
    assert client.post("/recommend", json={"asset": MLP}).status_code == 503
    assert client.get("/hardware").status_code == 503


# ----------------------------------------------------------------------------------------------
# Fresh data: reload when the sources change, single flight, listing failures
# ----------------------------------------------------------------------------------------------


def test_new_results_are_picked_up(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    core = ServiceCore(ServiceSettings(results_uri=str(store), reload_interval_s=5), clock=lambda: now[0])
    assert [a["asset"] for a in core.assets()["assets"]] == [MLP]
    calls = []
    real = Workspace.recommend
    monkeypatch.setattr(Workspace, "recommend", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    first = core.recommend(Requirements(asset=MLP))
    write_synthetic_store(store, assets=("synthetic-cnn",), repeats=1)
    now[0] = 1.0  # inside the interval: no listing yet
    assert len(core.assets()["assets"]) == 1
    now[0] = 6.0
    assert [a["asset"] for a in core.assets()["assets"]] == ["synthetic-cnn", MLP]
    assert core.reloads == 1
    # The answer cache belonged to the old data: the workspace is asked again.
    again = core.recommend(Requirements(asset=MLP))
    assert without_timing(json.loads(again)) == without_timing(json.loads(first)) and len(calls) == 2


def test_reload_is_single_flight(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    core = ServiceCore(ServiceSettings(results_uri=str(store), reload_interval_s=5), clock=lambda: now[0])
    old = core.snapshot()
    loading, release = threading.Event(), threading.Event()
    loads = []
    real = snapshot_mod.load_snapshot

    def slow_load(*a: Any, **k: Any) -> Any:
        loads.append(1)
        loading.set()
        release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(snapshot_mod, "load_snapshot", slow_load)
    write_synthetic_store(store, assets=("synthetic-cnn",), repeats=1)
    now[0] = 6.0
    reloader = threading.Thread(target=core.snapshot)
    reloader.start()
    assert loading.wait(30)
    t0 = time.monotonic()
    for _ in range(5):  # the other threads keep answering from the old snapshot meanwhile
        assert core.snapshot() is old
    assert core.recommend(Requirements(asset=MLP))
    assert time.monotonic() - t0 < 10 and loads == [1]
    release.set()
    reloader.join(30)
    assert core.snapshot() is not old and loads == [1]
    assert "synthetic-cnn" in core.snapshot().asset_names()


def _same_size_versions(skops_file: Path) -> tuple[bytes, bytes, float]:
    """Two byte-for-byte equally long versions of a saved model (zip members stored, not
    compressed), differing only in the gradient boosting model's initial constant; and the new
    constant."""
    import io
    import zipfile

    with zipfile.ZipFile(skops_file) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    stack: list[Any] = [json.loads(members["schema.json"])]
    while stack:  # the .npy member that holds init_.constant_
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("constant_"), dict) and "file" in node["constant_"]:
                npy = node["constant_"]["file"]
                break
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    constant = np.load(io.BytesIO(members[npy]), allow_pickle=False) + 1.0
    buf = io.BytesIO()
    np.save(buf, constant, allow_pickle=False)

    def zipped(replace: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
                zf.writestr(info, replace.get(name, data))
        return out.getvalue()

    return zipped({}), zipped({npy: buf.getvalue()}), float(constant.ravel()[0])


def test_a_model_file_replaced_by_one_of_the_same_size_and_mtime_is_picked_up(store: Path) -> None:
    """#11 item 9: `cp -p`, `rsync -a` or an unpacked archive keep a file's mtime, and a retrained
    model of the same shape often has the same size. The snapshot keys on the files' content."""
    from cluster.hardware import load_catalog
    from matcher.models import train_models
    from results.store import ResultsStore

    models = store / "models"
    train_models(ResultsStore(store).read(), load_catalog(None), assets=[MLP],
                 metrics=("latency_p99_ms",), select=False).save(models)  # gbr: the test edits its trees
    victim = models / f"{MLP}__latency_p99_ms.skops"
    old, new, new_constant = _same_size_versions(victim)
    assert len(old) == len(new) and old != new
    victim.write_bytes(old)
    core = ServiceCore(ServiceSettings(results_uri=str(store), models_dir=str(models), reload_interval_s=0))
    before = core.snapshot()
    assert core.snapshot() is before  # nothing changed: no reload
    st = victim.stat()
    tmp = models / f".{victim.name}.tmp"
    tmp.write_bytes(new)
    os.replace(tmp, victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = core.snapshot()
    assert after is not before and core.reloads == 1
    model = after.workspace.models.models[(MLP, "latency_p99_ms")]
    assert float(model.estimators_["seen"].init_.constant_.ravel()[0]) == new_constant
    assert core.snapshot() is after


def test_unlistable_sources_degrade_not_fail(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = ServiceCore(ServiceSettings(results_uri=str(store), reload_interval_s=0))

    def broken(self: Sources) -> tuple:
        raise OSError(f"object store unreachable: {store}/x/y")

    monkeypatch.setattr(Sources, "fingerprint", broken)
    status, health = core.health()  # the freshness check runs and fails: reported, not raised
    assert status == 200 and health["status"] == "degraded"
    assert "unreachable" in " ".join(health["problems"]) and str(store) not in json.dumps(health)
    assert health["data"]["result_rows"] == 12  # the data already loaded is kept
    assert core.recommend(Requirements(asset=MLP))
    monkeypatch.undo()
    assert core.health()[1]["status"] == "ok"


# ----------------------------------------------------------------------------------------------
# Names instead of server paths (#11 item 8)
# ----------------------------------------------------------------------------------------------


def test_source_names_rewrite_messages() -> None:
    names = SourceNames(Sources(results_uri="/srv/x/results", models_dir="/srv/x/results/models",
                                candidates_csv="/srv/x/results2.csv", catalog_path="/etc/bm/hw.yaml"))
    assert (names.folder(names.results), names.folder(names.models)) == ("results/", "results/models/")
    assert (names.candidates, names.catalog) == ("results2.csv", "hw.yaml")
    assert names.text("results file /srv/x/results/s1/t-r0.parquet is unreadable") == \
        "results file results/s1/t-r0.parquet is unreadable"
    assert names.text("/srv/x/results/models/modelset.json: not valid JSON") == "results/models/modelset.json: not valid JSON"
    assert names.text("/srv/x/results2.csv: line 3") == "results2.csv: line 3"
    assert names.text("/etc/bm/hw.yaml: hardware[0]") == "hw.yaml: hardware[0]"
    # Paths no source covers are cut to their last part; other slashes are left alone.
    assert names.text("Error while executing /opt/venv/lib/pulp/solverdir/cbc") == "Error while executing cbc"
    assert names.text("0.05 USD/h, 100 samples/s, see http://127.0.0.1:8000/a/b and /docs") == \
        "0.05 USD/h, 100 samples/s, see http://127.0.0.1:8000/a/b and /docs"
    remote = SourceNames(Sources(results_uri="s3://bucket/team/results"))
    assert remote.text("results file bucket/team/results/s/t.parquet is unreadable") == \
        "results file results/s/t.parquet is unreadable"


# ----------------------------------------------------------------------------------------------
# OpenAPI, helpers, application args
# ----------------------------------------------------------------------------------------------


def test_openapi_documents_the_matchers_answers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/recommend", "/pareto", "/plan", "/hardware", "/assets", "/healthz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert "latency_p99_ms" in schemas["Constraints"]["properties"]
    ok = {p: spec["paths"][p]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
          for p in ("/recommend", "/plan")}
    assert ok == {"/recommend": {"$ref": "#/components/schemas/Recommendation"},
                  "/plan": {"$ref": "#/components/schemas/PlanRecommendation"}}
    assert "422" in spec["paths"]["/recommend"]["post"]["responses"]
    assert "503" in spec["paths"]["/healthz"]["get"]["responses"]
    assert client.get("/docs").status_code == 200


def test_answers_validate_against_the_openapi_schemas(client: TestClient) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    spec = client.get("/openapi.json").json()

    def check(path: str, method: str, body: Any) -> None:
        schema = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        doc = {**schema, "components": spec["components"]}
        jsonschema.Draft202012Validator.check_schema(doc)
        jsonschema.Draft202012Validator(doc).validate(body)

    check("/recommend", "post", client.post("/recommend", json={"asset": MLP, "top_k": 2}).json())
    check("/recommend", "post", client.post("/recommend", json={"asset": MLP, "constraints": {"latency_p99_ms": 0.01}}).json())
    check("/plan", "post", client.post("/plan", json={"workloads": [{"asset": MLP}]}).json())
    check("/healthz", "get", client.get("/healthz").json())
    check("/assets", "get", client.get("/assets").json())
    check("/hardware", "get", client.get("/hardware").json())


def test_jsonable() -> None:
    out = jsonable({"a": np.float32(1.5), "b": (1, np.int64(2)), "c": math.inf, "d": {np.str_("k"): None}})
    assert json.dumps(out) == '{"a": 1.5, "b": [1, 2], "c": null, "d": {"k": null}}'


def test_route_label_is_bounded() -> None:
    assert route_label("/recommend") == "/recommend" and route_label("/pareto") == "/pareto"
    assert route_label("/wp-admin/x") == OTHER


def test_build_app_args() -> None:
    with pytest.raises(ValueError, match="results_urii: unknown field; did you mean 'results_uri'"):
        build_app({"results_urii": "x"})
    with pytest.raises(ValueError, match="min_replicas"):
        build_app({"min_replicas": -1})
    app = build_app({"results_uri": "relative/results", "num_replicas": 2, "num_cpus": 0.5})
    assert app is not None
    assert set(AppArgs.model_fields) >= {"results_uri", "models_dir", "candidates_csv", "catalog_path", "slo_ms"}


# ----------------------------------------------------------------------------------------------
# Slow clients (#11 item 4): serve/proxy_guard.py on a real uvicorn server on loopback
# ----------------------------------------------------------------------------------------------


def _slot_limited_app(slots: int) -> Any:
    """Stands in for Serve's replicas: a request holds one of `slots` while its body arrives."""
    import asyncio

    sem = asyncio.Semaphore(slots)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async with sem:
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
            body = json.dumps({"received": size}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})

    return app


class _LoopbackServer:
    """uvicorn in a thread on 127.0.0.1, with the proxy guard's protocol and middleware."""

    def __init__(self, guard: Any, slots: int = 4, inner: Any = None, protocol: str = "auto") -> None:
        import socket

        import uvicorn

        from serve.proxy_guard import ProxyGuard, guarded_protocol

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = ProxyGuard(inner or _slot_limited_app(slots), guard=guard)
        base = None
        if protocol == "h11":
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
        elif protocol == "httptools":
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, http=guarded_protocol(guard, base),
                                lifespan="off", log_level="warning", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def post(self, body: bytes) -> tuple[int, Any]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


SLOW_BODY_HEAD = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 400\r\n\r\n")
GOOD_BODY = json.dumps({"asset": MLP}).encode()


def test_slow_bodies_do_not_hold_the_replicas() -> None:
    """50 connections sending their body a byte at a time, against 4 slots: without the guard they
    would hold every slot for 80 s. Legitimate requests are answered meanwhile, and each slow one
    gets a 408 when its body deadline passes."""
    from serve.proxy_guard import GuardSettings

    guard = GuardSettings(header_timeout_s=3, body_timeout_s=3, grace_s=0.5, max_slow=100)
    with _LoopbackServer(guard, slots=4) as srv:
        slow = SlowClients("127.0.0.1", srv.port, 50, SLOW_BODY_HEAD, b"x" * 400)
        try:
            time.sleep(0.5)  # every slow request has reached the server and waits on its body
            results = [srv.post(GOOD_BODY) for _ in range(20)]
            assert [status for status, _ in results] == [200] * 20
            assert all(body == {"received": len(GOOD_BODY)} for _, body in results)
            answers = slow.answers()
        finally:
            slow.close()
    assert all(a.startswith(b"HTTP/1.1 408") and b'"kind": "RequestTimeout"' in a for a in answers), answers[:3]


@pytest.mark.parametrize("protocol", ["httptools", "h11"])
def test_slow_headers_and_silent_connections_are_closed(protocol: str) -> None:
    """Both of uvicorn's HTTP implementations: Serve's proxy uses httptools when installed."""
    from serve.proxy_guard import GuardSettings

    guard = GuardSettings(header_timeout_s=2, body_timeout_s=2, grace_s=0.5, max_slow=100)
    with _LoopbackServer(guard, protocol=protocol) as srv:
        slow = SlowClients("127.0.0.1", srv.port, 50, b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", b"a" * 500)
        silent = SlowClients("127.0.0.1", srv.port, 5, b"", b"")
        try:
            assert all(srv.post(GOOD_BODY)[0] == 200 for _ in range(10))
            # A kept-alive connection: the deadline starts again with the next request's first byte.
            kept = SlowClients("127.0.0.1", srv.port, 1, b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                              b"POST /recommend HTTP/1.1\r\nX-Pad: ", b"a" * 500)
            for answer in slow.answers() + silent.answers():
                assert answer.startswith(b"HTTP/1.1 408"), answer
            first, _, rest = kept.answers()[0].partition(b"HTTP/1.1 408")
            assert first.startswith(b"HTTP/1.1 200") and b"RequestTimeout" in rest, first + rest
            kept.close()
        finally:
            slow.close()
            silent.close()


def test_a_crowd_of_slow_connections_is_shed_after_the_grace_period() -> None:
    """Past max_slow slow bodies, a new slow one gets its 408 after grace_s, not body_timeout_s;
    fast requests never wait long enough to count as slow."""
    from serve.proxy_guard import GuardSettings

    guard = GuardSettings(header_timeout_s=60, body_timeout_s=60, grace_s=0.3, max_slow=5)
    with _LoopbackServer(guard, slots=4) as srv:
        slow = SlowClients("127.0.0.1", srv.port, 20, SLOW_BODY_HEAD, b"x" * 400, every=1.0)
        try:
            assert all(srv.post(GOOD_BODY)[0] == 200 for _ in range(10))
            import select

            answered: dict[Any, bytes] = {}
            deadline = time.monotonic() + 30  # bounds the test only; the 5 admitted keep their 60 s
            while len(answered) < 15 and time.monotonic() < deadline:
                ready, _, _ = select.select([s for s in slow.socks if s not in answered], [], [], 0.5)
                for s in ready:
                    answered[s] = s.recv(65536)
            ready, _, _ = select.select([s for s in slow.socks if s not in answered], [], [], 0.5)
            assert len(answered) == 15 and not ready
            assert all(a.startswith(b"HTTP/1.1 408") and b"slow requests are being read already" in a
                       for a in answered.values()), list(answered.values())[:2]
        finally:
            slow.close()


def test_guard_limits_body_size_and_reads_settings() -> None:
    from serve.proxy_guard import GuardSettings, settings

    guard = GuardSettings(max_body_bytes=100)
    with _LoopbackServer(guard) as srv:
        status, body = srv.post(b"{" + b" " * 200 + b"}")
        assert status == 413 and body["kind"] == "RequestTooLarge"
        chunked = SlowClients("127.0.0.1", srv.port, 1, b"POST /recommend HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"c8\r\n" + b" " * 200 + b"\r\n", b"")
        try:
            assert chunked.answers()[0].startswith(b"HTTP/1.1 413")
        finally:
            chunked.close()
    assert settings({"BENCHMATCH_PROXY_BODY_TIMEOUT_S": "2.5"}).body_timeout_s == 2.5
    with pytest.raises(ValueError, match="BENCHMATCH_PROXY_MAX_SLOW='-1'"):
        settings({"BENCHMATCH_PROXY_MAX_SLOW": "-1"})


def _flaky_proxy(fail_first: int, how: str = "silent") -> tuple[Any, list[bytes]]:
    """Stands in for Serve's proxy when a replica dies with the request: it reads the request
    and answers nothing (`silent`; uvicorn would send a bare 500) or starts an answer and stops
    (`cut`), `fail_first` times; then answers 200 with the body it got."""
    seen: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        if len(seen) <= fail_first:
            if how == "cut":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"{", "more_body": True})
            elif how == "error":
                raise RuntimeError("ActorDiedError")
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"received": len(message["body"])}).encode()})

    return app, seen


@pytest.mark.parametrize("how", ["silent", "cut", "error"])
def test_a_request_without_an_answer_is_sent_again(how: str) -> None:
    """#11 item 3: the proxy answered nothing because the replica died with the request; the
    client gets the answer of the next attempt, with the same body."""
    from serve.proxy_guard import GuardSettings

    inner, seen = _flaky_proxy(fail_first=2, how=how)
    with _LoopbackServer(GuardSettings(retries=2), inner=inner) as srv:
        status, body = srv.post(GOOD_BODY)
    assert (status, body) == (200, {"received": len(GOOD_BODY)})
    assert seen == [GOOD_BODY] * 3


def test_retries_are_bounded_and_real_answers_are_not_retried() -> None:
    from serve.proxy_guard import GuardSettings

    inner, seen = _flaky_proxy(fail_first=10)
    with _LoopbackServer(GuardSettings(), inner=inner) as srv:
        status, body = srv.post(GOOD_BODY)
    assert status == 503 and body["kind"] == "ServiceUnavailable"
    assert len(seen) == 2  # one retry by default: a request that kills replicas takes two, not more

    calls: list[int] = []

    async def answers_500(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        calls.append(1)
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b'{"detail": "a bug"}'})

    with _LoopbackServer(GuardSettings(retries=2), inner=answers_500) as srv:
        assert srv.post(GOOD_BODY) == (500, {"detail": "a bug"})
    assert calls == [1]  # an answer, even a 500, is the app's: passed on once


# ----------------------------------------------------------------------------------------------
# The default deployment fits the machine (#11 item 9)
# ----------------------------------------------------------------------------------------------


def _shape(app: Any) -> tuple[int, float]:
    """(the most replicas Serve may want, CPUs each) of a built application."""
    d = app._bound_deployment
    auto = d._deployment_config.autoscaling_config
    replicas = auto.max_replicas if auto is not None else d._deployment_config.num_replicas
    return replicas, float(d.ray_actor_options.get("num_cpus", 1))


def _as_deployed(config_path: Path) -> tuple[int, float]:
    """The shape Serve deploys from a config file: the app built from its args, then each field
    its `deployments:` entry sets, as Serve overrides them (only the fields that are set)."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    (app_config,) = config.applications
    replicas, cpus = _shape(build_app(app_config.args))
    for dep in app_config.deployments:
        overrides = dep.model_dump(exclude_unset=True)
        if overrides.get("num_replicas") is not None:
            replicas = overrides["num_replicas"]
        if overrides.get("autoscaling_config"):
            replicas = overrides["autoscaling_config"]["max_replicas"]
        if "num_cpus" in (overrides.get("ray_actor_options") or {}):
            cpus = overrides["ray_actor_options"]["num_cpus"]
    return replicas, cpus


def test_shipped_configs_fit_a_2_cpu_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """serve/config.yaml and the RayService's copy of it, deployed as Serve deploys them, never ask
    for more replicas than 2 CPUs can hold (they asked for 4 replicas of 1 CPU)."""
    import yaml

    monkeypatch.setattr("serve.app.cluster_cpus", lambda: 2.0)
    rayservice = tmp_path / "rayservice-serve.yaml"
    rayservice.write_text(yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"])
    for config in (ROOT / "serve" / "config.yaml", rayservice):
        replicas, per = _as_deployed(config)
        assert replicas > 1 and replicas * per <= 2.0, (config.name, replicas, per)


@pytest.mark.parametrize("cpus", [1.0, 2.0, 3.0, 64.0])
def test_build_app_defaults_fit_the_cluster(monkeypatch: pytest.MonkeyPatch, cpus: float) -> None:
    monkeypatch.setattr("serve.app.cluster_cpus", lambda: cpus)
    replicas, per = _shape(build_app({"results_uri": "r"}))
    assert replicas * per <= cpus and replicas == min(4, int(cpus))
    replicas, per = _shape(build_app({"results_uri": "r", "num_cpus": 0.5, "min_replicas": 3}))
    assert replicas * per <= cpus or replicas == 1


def test_explicit_shapes_are_kept(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("serve.app.cluster_cpus", lambda: 2.0)
    assert _shape(build_app({"results_uri": "r", "num_replicas": 3, "num_cpus": 0.5})) == (3, 0.5)
    assert _shape(build_app({"results_uri": "r", "num_cpus": 0.5})) == (4, 0.5)
    with caplog.at_level("WARNING", logger="benchmatch.serve"):
        assert _shape(build_app({"results_uri": "r", "max_replicas": 4})) == (4, 1.0)
    assert "exceeds the 2 CPUs" in caplog.text
