"""Unit tests of the HTTP layer (serve/app.py, serve/core.py) without Ray: the FastAPI app runs
in-process through Starlette's TestClient. The matcher is replaced by a small fake module where a
test needs a particular error; tests/integration/test_serve.py runs the real one behind Serve."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from matcher.errors import CandidateError, NoDataError, RequirementsError
from serve import core as core_mod
from serve.app import AppArgs, build_app, create_app
from serve.core import ServiceCore, ServiceSettings, jsonable
from serve.metrics import OTHER, route_label
from serve.testing import write_synthetic_candidates, write_synthetic_store


class FakeApi(types.SimpleNamespace):
    """matcher.api stand-in: answers with numpy/NaN values, or raises per asset name."""

    def __init__(self, with_plan: bool = False):
        super().__init__()
        self.calls = 0
        if with_plan:
            self.plan_from_sources = self._plan

    def recommend_from_sources(self, req: Any, *, solver: str = "cbc", time_limit_s: float | None = None,
                               **sources: Any) -> dict[str, Any]:
        self.calls += 1
        errors = {
            "bad-req": RequirementsError("asset: say which one", [("asset", "required")]),
            "no-data": NoDataError("results: no successful 'infer' rows for asset 'no-data'"),
            "bad-cands": CandidateError("candidates.csv: line 3: column 'latency_p99_ms' is empty"),
            "value": ValueError("something about the input"),
        }
        if req.asset in errors:
            raise errors[req.asset]
        if req.asset == "boom":
            raise RuntimeError("a bug")
        return {"feasible": True, "objective": req.objective, "solve_time_s": np.float64(0.01),
                "options": [{"rank": np.int64(1), "hardware": {"local-2c": np.int64(2)}, "config": {"batch_size": 8},
                             "cost_per_hour_usd": 0.1785, "predicted": {"energy_per_sample_j": math.nan},
                             "basis": "measured", "binding": ("throughput_qps",), "band": {}}],
                "diagnosis": None, "solver": "cbc", "candidates_considered": 6, "sources": sorted(sources)}

    def _plan(self, plan: Any, *, solver: str = "cbc", time_limit_s: float | None = None,
              **sources: Any) -> dict[str, Any]:
        return {"feasible": True, "workloads": len(plan.workloads)}


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    write_synthetic_store(tmp_path / "results", assets=("synthetic-mlp",), repeats=1)
    return tmp_path / "results"


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()
    monkeypatch.setattr(core_mod, "_matcher_api", lambda: api)
    return api


def client_for(settings: ServiceSettings) -> tuple[TestClient, ServiceCore]:
    app = create_app()
    app.state.core = ServiceCore(settings)
    return TestClient(app, raise_server_exceptions=False), app.state.core


@pytest.fixture()
def client(store: Path, fake: FakeApi) -> TestClient:
    return client_for(ServiceSettings(results_uri=str(store), max_body_bytes=4096))[0]


def test_healthz_hardware_assets(client: TestClient) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok", body["problems"]
    assert body["data"]["assets"] == ["synthetic-mlp"] and body["data"]["result_files"] == 6
    hw = client.get("/hardware").json()
    assert hw["count"] == len(hw["hardware"]) and "local-2c" in {s["name"] for s in hw["hardware"]}
    assets = client.get("/assets").json()["assets"]
    assert assets[0]["asset"] == "synthetic-mlp" and assets[0]["rows"] == 12
    assert assets[0]["hardware"] == ["aws-g4dn.xlarge", "local-1c", "local-2c"]


def test_recommend_returns_matcher_dict_as_json(client: TestClient, fake: FakeApi) -> None:
    r = client.post("/recommend", json={"asset": "synthetic-mlp", "constraints": {"throughput_qps": 100}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["options"][0]["hardware"] == {"local-2c": 2}
    assert body["options"][0]["predicted"]["energy_per_sample_j"] is None  # NaN -> null, never 0
    assert body["options"][0]["binding"] == ["throughput_qps"]
    assert body["sources"] == ["candidates_csv", "catalog_path", "models_dir", "results_uri"]
    # Same question, same data: answered from the cache without calling the matcher again.
    again = client.post("/recommend", json={"constraints": {"throughput_qps": 100}, "asset": "synthetic-mlp"})
    assert again.json() == body and fake.calls == 1


@pytest.mark.parametrize(
    ("asset", "status", "kind"),
    [("bad-req", 422, "RequirementsError"), ("no-data", 404, "NoDataError"), ("bad-cands", 409, "CandidateError"),
     ("value", 400, "ValueError"), ("boom", 500, None)],
)
def test_matcher_errors_map_to_statuses(client: TestClient, asset: str, status: int, kind: str | None) -> None:
    r = client.post("/recommend", json={"asset": asset})
    assert r.status_code == status, r.text
    if kind:
        body = r.json()
        assert body["kind"] == kind and body["detail"] and body["status"] == status
    if asset == "no-data":
        assert "synthetic-mlp" in r.json()["detail"]  # says which assets do have data


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
        ([1, 2], "(body)", "valid dictionary"),
    ],
)
def test_invalid_requirements_name_the_field(client: TestClient, body: Any, field: str, words: str) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["kind"] == "RequirementsError"
    assert field in [e["field"] for e in out["errors"]], out
    assert words in out["detail"], out["detail"]


def test_nan_in_body_is_rejected(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"constraints": {"latency_p99_ms": NaN}}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "constraints.latency_p99_ms"


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"objective": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["kind"] == "InvalidJSON" and "not valid JSON" in r.json()["detail"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    r = client.post("/recommend", content=b'{"asset": "x"}',
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_body_limit_by_length_and_by_stream(client: TestClient) -> None:
    big = b'{"asset": "' + b"x" * 5000 + b'"}'
    r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["kind"] == "RequestTooLarge"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000
        yield b"{}"

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and "/docs" in r.json()["detail"]
    assert client.get("/recommend").status_code == 405


def test_plan_501_without_planner_and_validated_with_one(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    monkeypatch.setattr(core_mod, "_matcher_api", lambda: api)
    client, _ = client_for(ServiceSettings(results_uri=str(store)))
    body = {"workloads": [{"asset": "synthetic-mlp"}], "budget_per_hour_usd": 5}
    r = client.post("/plan", json=body)
    assert r.status_code == 501 and "recommend" in r.json()["detail"]
    api.plan_from_sources = api._plan
    assert client.post("/plan", json=body).json() == {"feasible": True, "workloads": 1}
    r = client.post("/plan", json={"workloads": [{"constraints": {"accuracy": 2}}]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "workloads.0.constraints.accuracy"
    r = client.post("/plan", json={"workloads": [], "budget_per_hour": 1})
    fields = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert "did you mean 'budget_per_hour_usd'" in fields["budget_per_hour"] and "workloads" in fields


def test_new_results_are_picked_up(store: Path, fake: FakeApi) -> None:
    now = [0.0]
    core = ServiceCore(ServiceSettings(results_uri=str(store), reload_interval_s=5), clock=lambda: now[0])
    assert [a["asset"] for a in core.assets()["assets"]] == ["synthetic-mlp"]
    first = core.recommend(core_mod.Requirements(asset="synthetic-mlp"))
    write_synthetic_store(store, assets=("synthetic-cnn",), repeats=1)
    now[0] = 1.0  # inside the interval: no listing yet
    assert len(core.assets()["assets"]) == 1
    now[0] = 6.0
    assert [a["asset"] for a in core.assets()["assets"]] == ["synthetic-cnn", "synthetic-mlp"]
    assert core.reloads == 1
    # The answer cache belonged to the old data: the matcher is asked again.
    assert core.recommend(core_mod.Requirements(asset="synthetic-mlp")) == first and fake.calls == 2


def test_unlistable_sources_degrade_not_fail(store: Path, fake: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    core = ServiceCore(ServiceSettings(results_uri=str(store), reload_interval_s=0))

    def broken(uri: str | None) -> tuple:
        raise OSError("object store unreachable")

    monkeypatch.setattr(core_mod, "_store_files", broken)
    health = core.health()  # the freshness check runs and fails: reported, not raised
    assert health["status"] == "degraded" and "unreachable" in " ".join(health["problems"])
    assert health["data"]["result_rows"] == 12  # the data already loaded is kept
    assert core.recommend(core_mod.Requirements(asset="synthetic-mlp"))
    monkeypatch.undo()
    assert core.health()["status"] == "ok"


def test_candidates_csv_source(tmp_path: Path, fake: FakeApi) -> None:
    csv = write_synthetic_candidates(tmp_path / "cands.csv")
    client, _ = client_for(ServiceSettings(candidates_csv=str(csv)))
    h = client.get("/healthz").json()
    assert h["data"]["candidate_rows"] == 6 and h["status"] == "ok"
    assert client.get("/assets").json()["assets"][0]["hardware"] == ["aws-g4dn.xlarge", "local-1c", "local-2c"]


def test_broken_sources_degrade_not_crash(tmp_path: Path, fake: FakeApi) -> None:
    (tmp_path / "bad.csv").write_text("hardware,price_per_hour_usd\nx,1\n")
    client, _ = client_for(ServiceSettings(candidates_csv=str(tmp_path / "bad.csv"),
                                           catalog_path=str(tmp_path / "missing.yaml")))
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "degraded"
    assert any("candidates" in p for p in h.json()["problems"])
    r = client.get("/hardware")
    assert r.status_code == 503 and "catalog" in r.json()["detail"]


def test_openapi_lists_routes_and_request_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/recommend", "/plan", "/hardware", "/assets", "/healthz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert "latency_p99_ms" in schemas["Constraints"]["properties"]
    assert "422" in spec["paths"]["/recommend"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_jsonable() -> None:
    out = jsonable({"a": np.float32(1.5), "b": (1, np.int64(2)), "c": math.inf, "d": {np.str_("k"): None}})
    assert json.dumps(out) == '{"a": 1.5, "b": [1, 2], "c": null, "d": {"k": null}}'


def test_route_label_is_bounded() -> None:
    assert route_label("/recommend") == "/recommend"
    assert route_label("/wp-admin/x") == OTHER


def test_build_app_args() -> None:
    with pytest.raises(ValueError, match="results_urii: unknown field; did you mean 'results_uri'"):
        build_app({"results_urii": "x"})
    with pytest.raises(ValueError, match="min_replicas"):
        build_app({"min_replicas": -1})
    app = build_app({"results_uri": "relative/results", "num_replicas": 2, "num_cpus": 0.5})
    assert app is not None
    assert set(AppArgs.model_fields) >= {"results_uri", "models_dir", "candidates_csv", "catalog_path", "slo_ms"}


def test_pareto_route_answers_the_cli_front_with_the_real_matcher(store: Path) -> None:
    from matcher.api import build_candidates
    from matcher.pareto import pareto_answer
    from matcher.requirements import parse_requirements

    client, _ = client_for(ServiceSettings(results_uri=str(store)))
    body = {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 100}}
    r = client.post("/pareto", json=body)
    assert r.status_code == 200, r.text
    ans = r.json()
    req = parse_requirements(body)
    direct = pareto_answer(req, build_candidates(req, results_uri=str(store)))
    assert ans["feasible"] and [p["cost_per_hour_usd"] for p in ans["points"]] == \
        [p["cost_per_hour_usd"] for p in direct["points"]]
    lat = [p["latency_p99_ms"] for p in ans["points"]]
    assert lat == sorted(lat, reverse=True)
    bad = client.post("/pareto", json={"constraints": {"latency_p99_ms": -1}})
    assert bad.status_code == 422 and "constraints.latency_p99_ms" in bad.text
