"""The HTTP service on a real Ray Serve endpoint: one local Ray + Serve for the whole module,
bound to loopback on free ports, two replicas, a synthetic results store in a temp folder.

Covers the routes, the status codes of client mistakes, the answer being identical to the CLI's
(`Workspace.open(Sources(...)).recommend(...)`), no server paths in any answer, pick-up of new
results and models without a restart, readiness while the models cannot be read, the request
metrics on Ray's metrics endpoint, a hypothesis fuzz of /recommend bodies (no 5xx), a replica
killed under load, and slow clients. The proxy runs serve/proxy_guard.py, as `benchmatch serve`'s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis

ray = pytest.importorskip("ray")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from ray import serve  # noqa: E402

from cluster.hardware import load_catalog  # noqa: E402
from matcher.workspace import Sources, Workspace  # noqa: E402
from serve import direct_ingress  # noqa: E402
from serve.app import APP_NAME, DEPLOYMENT_NAME, build_app  # noqa: E402
from serve.balancer import Balancer, BalancerSettings  # noqa: E402
from serve.jsonable import jsonable  # noqa: E402
from serve.proxy_guard import enable as enable_proxy_guard  # noqa: E402
from tests.fixtures.service_data import ASSETS, HARDWARE, write_synthetic_store  # noqa: E402
from tests.fixtures.slow_clients import SlowClients  # noqa: E402

pytestmark = pytest.mark.ray

REPLICAS = 2
TIMEOUT = 30  # per HTTP request: generous on a 2-core machine, never unbounded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(check: Any, timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # the service is still starting; keep the last reason
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Service:
    def __init__(self, url: str, store: Path, models: Path, metrics_port: int):
        self.url = url
        self.store = store
        self.models = models
        self.metrics_port = metrics_port
        self.http = requests.Session()

    def workspace(self) -> Workspace:
        """What `benchmatch recommend --results STORE --models MODELS` answers from."""
        return Workspace.open(Sources(results_uri=str(self.store), models_dir=str(self.models)))

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url + path, timeout=TIMEOUT)

    def post(self, path: str, body: Any = None, *, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        if data is None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        return self.http.post(self.url + path, data=data, headers=headers, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's listeners on 127.0.0.1 only
    enable_proxy_guard()  # read by the proxy that the Ray started below runs
    direct_ingress.enable()  # each replica answers on its own loopback port too, as `benchmatch serve`'s
    tmp = tmp_path_factory.mktemp("serve")
    store, models = tmp / "results", tmp / "models"  # no models yet: test_new_models_... adds them
    write_synthetic_store(store)
    port, metrics_port = _free_port(), _free_port()
    ray.init(address="local", include_dashboard=False, num_cpus=4, namespace="benchmatch-test",
             _metrics_export_port=metrics_port, _system_config={"metrics_report_interval_ms": 1000},
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app({"results_uri": str(store), "models_dir": str(models), "reload_interval_s": 1,
                         "min_replicas": REPLICAS,
                         "max_replicas": REPLICAS, "num_cpus": 0.5})
        serve.run(app, name=APP_NAME, route_prefix="/")
        svc = Service(f"http://127.0.0.1:{port}", store, models, metrics_port)
        _wait_until(lambda: svc.get("/healthz").status_code == 200, 60, "/healthz")
        yield svc
    finally:
        serve.shutdown()
        ray.shutdown()


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------


def test_healthz_says_what_is_loaded(service: Service) -> None:
    r = service.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["ready"] is True, body["problems"]
    assert body["data"]["assets"] == sorted(ASSETS)
    assert body["data"]["result_files"] == len(ASSETS) * len(HARDWARE) * 2 * 2
    assert body["data"]["results"] == "results/" and body["data"]["models"] == "models/"


def test_hardware_is_the_catalog(service: Service) -> None:
    body = service.get("/hardware").json()
    assert [h["name"] for h in body["hardware"]] == list(load_catalog())
    assert body["count"] == len(load_catalog())


def test_assets_lists_rows_and_hardware(service: Service) -> None:
    assets = {a["asset"]: a for a in service.get("/assets").json()["assets"]}
    assert set(ASSETS) <= set(assets)
    mlp = assets["synthetic-mlp"]
    assert mlp["rows"] == len(HARDWARE) * 2 * 2 * 2  # hardware x batch sizes x repeats x scenarios
    assert mlp["hardware"] == sorted(HARDWARE) and mlp["config_columns"] == ["batch_size"]


REQUESTS = [
    {"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 20, "throughput_qps": 2000}},
    {"asset": "synthetic-cnn", "objective": "latency", "constraints": {"throughput_qps": 500}, "top_k": 2},
    {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 3000, "budget_per_hour_usd": 1.0},
     "inventory": {"local-2c": 2}},
    {"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 0.01}},  # infeasible
]


def _without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "solve_time_s"}


@pytest.mark.parametrize("req", REQUESTS, ids=["feasible", "latency-objective", "inventory", "infeasible"])
def test_recommend_is_the_clis_answer(service: Service, req: dict[str, Any]) -> None:
    r = service.post("/recommend", req)
    assert r.status_code == 200, r.text
    direct = service.workspace().recommend(req)
    expected = json.loads(json.dumps(jsonable(direct)))  # JSON: NaN -> null, tuples -> lists
    assert _without_timing(r.json()) == _without_timing(expected)
    assert r.json()["status"] == ("optimal" if r.json()["feasible"] else "infeasible")


def test_pareto_is_the_clis_front(service: Service) -> None:
    req = {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 1000}}
    r = service.post("/pareto", req)
    assert r.status_code == 200, r.text
    assert r.json() == json.loads(json.dumps(jsonable(service.workspace().pareto(req))))
    r = service.post("/pareto", {**req, "inventory": {"H100-SXM": 1}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "inventory.H100-SXM"


def test_infeasible_answer_has_diagnosis(service: Service) -> None:
    body = service.post("/recommend", REQUESTS[-1]).json()
    assert body["feasible"] is False and body["options"] == []
    assert body["diagnosis"]["blocking"] == ["latency_p99_ms"]
    assert "unreachable" in body["diagnosis"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": -1}}, 422, "constraints.latency_p99_ms"),
        ({"asset": "synthetic-mlp", "constraints": {"latency_p99": 5}}, 422, "constraints.latency_p99"),
        ({"asset": "synthetic-mlp", "colour": "red"}, 422, "colour"),
        ({"constraints": {"throughput_qps": 10}}, 422, "asset"),  # two assets: say which
        ({"asset": "no-such-asset"}, 404, "asset"),
        ({"asset": "synthetic-mlp", "inventory": {"H100-SXM": 1}}, 422, "inventory.H100-SXM"),
    ],
    ids=["negative-latency", "misspelt-constraint", "unknown-field", "asset-ambiguous", "unknown-asset",
         "unknown-inventory"],
)
def test_client_mistakes_are_4xx_naming_the_field(service: Service, body: dict[str, Any], status: int,
                                                  field: str) -> None:
    r = service.post("/recommend", body)
    assert r.status_code == status, r.text
    out = r.json()
    assert out["detail"] and out["status"] == status
    assert field in [e["field"] for e in out.get("errors", [])], out


def test_no_rows_for_task_is_409(service: Service) -> None:
    r = service.post("/recommend", {"asset": "synthetic-mlp", "task": "train"})
    assert r.status_code == 409 and "train" in r.json()["detail"]


def test_no_server_paths_in_any_answer(service: Service) -> None:
    answers = [service.get("/healthz"), service.get("/assets"), service.get("/hardware"),
               service.post("/recommend", {"asset": "no-such-asset"}),
               service.post("/recommend", {"asset": "synthetic-mlp", "task": "train"}),
               service.post("/recommend", {"constraints": {"throughput_qps": 10}})]
    root = Path(__file__).resolve().parents[2]
    for r in answers:
        for path in (service.store.parent, root):
            assert str(path) not in r.text, r.text


def test_strict_types_and_unparsable_bodies_are_4xx(service: Service) -> None:
    for body in ({"top_k": True}, {"top_k": "3"}, {"constraints": {"accuracy": False}},
                 {"constraints": {"throughput_qps": 1e308}}):
        r = service.post("/recommend", {"asset": "synthetic-mlp", **body})
        assert r.status_code == 422, (body, r.text)
    r = service.post("/recommend", data=b'{"asset": "\\ud800"}')
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "asset"
    for data in (b"[" * 5000, b'{"top_k": ' + b"9" * 5000 + b"}"):
        r = service.post("/recommend", data=data)
        assert r.status_code == 400 and r.json()["kind"] == "InvalidJSON" and "at character" in r.json()["detail"]


def test_malformed_and_oversized_bodies(service: Service) -> None:
    r = service.post("/recommend", data=b'{"asset": "synthetic-mlp", ')
    assert r.status_code == 400 and r.json()["kind"] == "InvalidJSON"
    r = service.post("/recommend", data=b'{"asset": "' + b"x" * (2 << 20) + b'"}')
    assert r.status_code == 413 and r.json()["kind"] == "RequestTooLarge"
    r = service.post("/recommend", data=b"asset=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


PLAN = {"workloads": [{"asset": "synthetic-mlp", "constraints": {"throughput_qps": 500}},
                      {"asset": "synthetic-cnn", "constraints": {"throughput_qps": 500, "latency_p99_ms": 30}}],
        "inventory": {"local-2c": 4}}


def test_plan_is_the_clis_answer(service: Service) -> None:
    r = service.post("/plan", PLAN)
    assert r.status_code == 200, r.text
    direct = service.workspace().plan(PLAN)
    assert _without_timing(r.json()) == _without_timing(json.loads(json.dumps(jsonable(direct))))
    assert r.json()["feasible"] and len(r.json()["workloads"]) == 2


def test_plan_mistakes_are_4xx(service: Service) -> None:
    r = service.post("/plan", {"workloads": []})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "workloads"
    r = service.post("/plan", {"workloads": [{"asset": "synthetic-mlp", "constraints": {"accuracy": 2}}]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "workloads.0.constraints.accuracy"
    r = service.post("/plan", {"workloads": [{"asset": "synthetic-mlp"}, {"asset": "nope"}]})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "workloads.1.asset"
    r = service.post("/plan", {**PLAN, "inventory": {"H100-SXM": 2}})
    assert r.status_code == 422 and "inventory" in r.json()["detail"], r.text


def test_openapi_lists_the_routes(service: Service) -> None:
    spec = service.get("/openapi.json").json()
    assert {"/recommend", "/pareto", "/plan", "/hardware", "/assets", "/healthz"} <= set(spec["paths"])
    body_schema = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["$ref"].endswith("/Requirements")
    answer = spec["paths"]["/recommend"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Recommendation")
    assert service.get("/docs").status_code == 200


# ----------------------------------------------------------------------------------------------
# New results without a restart; metrics
# ----------------------------------------------------------------------------------------------


def test_new_results_are_picked_up_without_restart(service: Service) -> None:
    from results.store import ResultsStore

    write_synthetic_store(service.store, assets=("synthetic-late",), repeats=1)
    files = len(ResultsStore(str(service.store)).files())
    fresh: set[int] = set()  # pids of replicas that answered from the whole new store

    def all_replicas_see_it() -> bool:
        # Requests are spread over the replicas, not evenly: "n answers in a row" can all come from
        # one replica (a CI run once passed that way while the other still had no new asset). A
        # replica may also have reloaded half-way through the write, so it must hold every file.
        body = service.get("/healthz").json()
        if "synthetic-late" in body["data"]["assets"] and body["data"]["result_files"] == files:
            fresh.add(body["pid"])
        return len(fresh) >= REPLICAS

    _wait_until(all_replicas_see_it, 30, "the whole new store on every replica", every=0.1)
    r = service.post("/recommend", {"asset": "synthetic-late", "constraints": {"throughput_qps": 100}})
    assert r.status_code == 200 and r.json()["feasible"], r.text


def test_new_models_are_picked_up_without_restart(service: Service) -> None:
    from matcher.models import train_models
    from results.store import ResultsStore

    req = {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 2000}}
    before = service.post("/recommend", req).json()
    assert before["candidates_considered"] == 6  # measured only
    # Fit and save beside the folder, then rename it into place: the service never sees half a set.
    staging = service.models.with_name("models.tmp")
    train_models(ResultsStore(service.store).read(), load_catalog(), assets=["synthetic-mlp"]).save(staging)
    os.replace(staging, service.models)

    def uses_models(a: dict[str, Any]) -> bool:
        # Predictions either join the candidates, or the model abstains and the answer says so.
        return a["candidates_considered"] > 6 or any("not predicted" in n for n in a.get("notes", []))

    def answered_with_the_models() -> dict[str, Any] | None:
        answers = [service.post("/recommend", req).json() for _ in range(4)]  # both replicas
        return answers[-1] if all(uses_models(a) for a in answers) else None

    after = _wait_until(answered_with_the_models, 40, "answers using the new models")
    direct = service.workspace().recommend(req)
    assert _without_timing(after) == _without_timing(json.loads(json.dumps(jsonable(direct))))
    assert service.get("/healthz").json()["data"]["models_loaded"] >= 1


def test_unreadable_models_make_replicas_not_ready_then_heal(service: Service) -> None:
    index = service.models / "modelset.json"
    good = index.read_bytes()
    broken = service.models.with_name("modelset.broken")
    broken.write_text("{not json")
    os.replace(broken, index)
    try:
        def not_ready_everywhere() -> bool:
            return all(service.get("/healthz").status_code == 503 for _ in range(6))  # both replicas

        _wait_until(not_ready_everywhere, 30, "/healthz 503 on every replica")
        # A replica whose reload is in flight on another thread (Serve's own health check) answers
        # from the snapshot it has until the reload lands (serve/snapshot.py): wait for the 503,
        # then read what it says.
        # (A response is falsy when it is an error: each is wrapped in a tuple.)
        (h,) = _wait_until(lambda: (r := service.get("/healthz")).status_code == 503 and (r,), 10, "/healthz 503")
        h = h.json()
        assert h["status"] == "not ready" and any("models/modelset.json" in p for p in h["problems"]), h
        (r,) = _wait_until(lambda: (a := service.post("/recommend", {"asset": "synthetic-mlp"})).status_code == 503
                           and (a,), 10, "/recommend 503")
        assert r.json()["kind"] == "NotReady", r.text
        assert "models/modelset.json" in r.json()["detail"] and str(service.models) not in r.text
    finally:
        fixed = service.models.with_name("modelset.fixed")
        fixed.write_bytes(good)
        os.replace(fixed, index)
    _wait_until(lambda: all(service.get("/healthz").status_code == 200 for _ in range(6)), 30,
                "every replica ready again")
    assert service.post("/recommend", {"asset": "synthetic-mlp"}).status_code == 200


def _scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def test_request_metrics_are_exported(service: Service) -> None:
    for _ in range(3):
        service.post("/recommend", REQUESTS[0])
        service.post("/recommend", {"constraints": {"latency_p99_ms": -1}})

    def exported() -> str | None:
        text = _scrape(service.metrics_port)
        ok = [line for line in text.splitlines() if line.startswith("ray_benchmatch_serve_requests_total")
              and 'route="/recommend"' in line and 'status="200"' in line]
        bad = [line for line in text.splitlines() if line.startswith("ray_benchmatch_serve_requests_total")
               and 'status="422"' in line]
        hist = "ray_benchmatch_serve_request_duration_seconds_bucket" in text
        return text if ok and bad and hist else None

    text = _wait_until(exported, 30, "ray_benchmatch_serve_* on the metrics endpoint", every=1.0)
    assert 'route="/recommend"' in text and 'method="POST"' in text


# ----------------------------------------------------------------------------------------------
# Fuzzing: no body makes the service answer 5xx
# ----------------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_number = st.one_of(st.floats(min_value=-10, max_value=1e6, allow_nan=False), st.integers(-3, 10**6),
                    st.floats(min_value=1e-9, max_value=1e300), _json)
_constraints = st.fixed_dictionaries({}, optional={
    **{k: _number for k in ("latency_p99_ms", "throughput_qps", "budget_per_hour_usd", "budget_total_usd",
                            "duration_h", "energy_per_sample_j", "max_power_w")},
    "accuracy": st.one_of(st.floats(min_value=-0.5, max_value=1.5), _json),
    "latency": _json,
})
_requirements = st.fixed_dictionaries({}, optional={
    "asset": st.one_of(st.sampled_from([*ASSETS, "nope", ""]), _json),
    "task": st.sampled_from(["infer", "train", "INFER", ""]),
    "objective": st.sampled_from(["cost", "energy", "latency", "speed"]),
    "constraints": st.one_of(_constraints, _json),
    "top_k": st.one_of(st.integers(-2, 8), st.just(51), _json),
    "inventory": st.one_of(st.dictionaries(st.sampled_from([*HARDWARE, "H100-SXM", ""]), st.integers(-2, 50),
                                           max_size=3), _json),
    "extra": _json,
})
# Schema-valid requirements with extreme values: these reach the candidate table and the MILP.
_positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
_valid = st.fixed_dictionaries(
    {"asset": st.sampled_from(sorted(ASSETS))},
    optional={
        "objective": st.sampled_from(["cost", "energy", "latency"]),
        "constraints": st.fixed_dictionaries({}, optional={
            **{k: _positive for k in ("latency_p99_ms", "throughput_qps", "budget_per_hour_usd",
                                      "energy_per_sample_j", "max_power_w")},
            "accuracy": st.floats(min_value=0, max_value=1),
        }),
        "top_k": st.integers(1, 5),
        "inventory": st.dictionaries(st.sampled_from(sorted(HARDWARE)), st.integers(0, 10**6), max_size=3),
    },
)
_bodies = st.one_of(
    _valid.map(lambda d: json.dumps(d).encode()),
    _valid.map(lambda d: json.dumps(d).encode()),
    _requirements.map(lambda d: json.dumps(d).encode()),  # json.dumps writes NaN/Infinity as JSON does not
    _json.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=100, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_bodies)
def test_fuzz_recommend_never_5xx(service: Service, body: bytes) -> None:
    r = service.post("/recommend", data=body)
    assert r.status_code < 500, f"{r.status_code} for body {body[:200]!r}: {r.text[:500]}"
    if r.status_code >= 400:
        out = r.json()
        assert out["detail"] and out["status"] == r.status_code


# ----------------------------------------------------------------------------------------------
# schemathesis over every operation of the OpenAPI schema the service publishes (issue #11)
# ----------------------------------------------------------------------------------------------

FUZZ_EXAMPLES = 20  # per operation and generation mode: bounded, so the suite stays within its time
HANG_S = 10  # an answer later than this counts as a hang


def test_schemathesis_every_operation_never_5xx_nor_hangs(service: Service) -> None:
    """schemathesis generates requests from the OpenAPI schema the service publishes, for every
    operation, both valid (positive) and schema-violating (negative) ones: none gets a 5xx, none
    hangs (a call's timeout turns a hang into a count). Prints the tally (docs/performance.md)."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    tally = {"requests": 0, "5xx": [], "hangs": []}
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 6, [f"{op.method} {op.path}" for op in operations]
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(mode))
            def run(case: Any) -> None:
                tally["requests"] += 1
                try:
                    r = case.call(base_url=service.url, timeout=HANG_S)
                except requests.Timeout:
                    tally["hangs"].append(f"{case.method} {case.formatted_path}")
                    return
                if r.status_code >= 500:
                    tally["5xx"].append(f"{case.method} {case.formatted_path}: {r.status_code} {r.text[:200]}")

            try:
                run()
            except Unsatisfiable:
                assert mode == schemathesis.GenerationMode.NEGATIVE, f"{op.method} {op.path}"  # nothing to negate
    print(f"\nschemathesis fuzz tally: {tally['requests']} requests over {len(operations)} operations, "
          f"{len(tally['5xx'])} x 5xx, {len(tally['hangs'])} hangs > {HANG_S} s")
    assert not tally["5xx"] and not tally["hangs"], tally


_plans = st.fixed_dictionaries(
    {"workloads": st.lists(st.one_of(_valid, _valid, _requirements), min_size=0, max_size=3)},
    optional={
        "inventory": st.dictionaries(st.sampled_from([*sorted(HARDWARE), "H100-SXM"]), st.integers(-1, 20), max_size=3),
        "budget_per_hour_usd": st.one_of(_positive, st.floats(-1, 1), _json),
        "objective": st.sampled_from(["cost", "energy", "latency", "speed"]),
    },
)


@settings(max_examples=50, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(_plans.map(lambda d: json.dumps(d).encode()), _bodies))
def test_fuzz_plan_never_5xx(service: Service, body: bytes) -> None:
    r = service.post("/plan", data=body)
    assert r.status_code < 500, f"{r.status_code} for body {body[:200]!r}: {r.text[:500]}"


# ----------------------------------------------------------------------------------------------
# A replica killed under load
# ----------------------------------------------------------------------------------------------


def _replica_actor_names() -> list[str]:
    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(prefix))


def _running_replicas() -> int:
    status = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME]
    return int(status.replica_states.get("RUNNING", 0))


def _sigkill_and_wait(pid: int) -> None:
    """Kill a process as a crash would, and return once it is gone."""
    import psutil

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} still alive 30 s after SIGKILL")


def test_replica_killed_under_load_keeps_answering(service: Service, balancer: Balancer) -> None:
    """20 clients sending back to back, 10 through Serve's proxy and 10 through the HAProxy
    balancer; one of the two replicas' processes SIGKILLed. A request sent after it died must be
    answered by the survivor, and so must those that were in flight on it (the proxy guard and
    HAProxy send them again): no request fails on either path, and the balancer takes the
    replacement replica in."""
    names = _replica_actor_names()
    assert len(names) == REPLICAS, names
    victim = ray.get_actor(names[0], namespace="serve")
    pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()), timeout=TIMEOUT)
    log: list[tuple[float, float, str]] = []  # (sent, done, outcome)
    stop = threading.Event()
    marks: dict[str, float] = {}

    def load(worker: int) -> None:
        http = requests.Session()
        url, path = (service.url, "proxy") if worker % 2 else (balancer.url, "balancer")
        n = 0
        while not stop.is_set():
            n += 1  # vary the body so that some requests solve and some hit the cache
            body = {"asset": "synthetic-mlp", "constraints": {"throughput_qps": 100 + (n % 7) * 100}}
            sent = time.monotonic()
            try:
                r = http.post(url + "/recommend", json=body, timeout=TIMEOUT)
                key = "ok" if r.status_code == 200 else f"{path}: http {r.status_code}"
            except requests.RequestException as exc:
                key = f"{path}: error {type(exc).__name__}"
            log.append((sent, time.monotonic(), key))
            if key == "ok":
                answered[path] += 1

    answered: Counter[str] = Counter()
    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    try:
        _wait_until(lambda: sum(k == "ok" for _, _, k in log) >= 40, 60, "load to reach the replicas")
        marks["kill"] = time.monotonic()
        _sigkill_and_wait(pid)
        marks["dead"] = time.monotonic()
        ok_at_kill = sum(k == "ok" for _, _, k in log)
        # The surviving replica keeps answering while Serve replaces the dead one.
        _wait_until(lambda: sum(k == "ok" for _, _, k in log) >= ok_at_kill + 40, 60, "answers after the kill")

        def replaced() -> bool:
            # A new replica actor (not just the victim gone: dead actors drop out of the list at
            # once, before Serve has even noticed), and Serve counting REPLICAS running again.
            now = set(_replica_actor_names())
            return len(now) == REPLICAS and bool(now - set(names)) and _running_replicas() == REPLICAS

        _wait_until(replaced, 120, "Serve to replace the killed replica", every=0.5)
        _wait_until(lambda: balancer.servers == _direct_urls(), 30, "the balancer to list the new replica's port")
        ok_after_recovery = dict(answered)
        _wait_until(lambda: all(answered[p] >= ok_after_recovery.get(p, 0) + 10 for p in ("proxy", "balancer")), 60,
                    "answers on both paths after recovery")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT + 5)
    failed = [(s, d, k) for s, d, k in log if k != "ok"]
    in_flight = [(s, d, k) for s, d, k in log if s < marks["dead"] and d > marks["kill"]]
    after_death = [f for f in failed if f[0] >= marks["dead"]]
    print(f"\nreplica SIGKILLed under 20 clients: {len(log)} requests ({dict(answered)} answered), "
          f"{len(in_flight)} in flight when it died, {len(failed)} failed {Counter(k for _, _, k in failed)}; "
          f"balancer reloads {balancer.reloads}")
    assert in_flight, "no request was in flight: the kill tested nothing"
    assert not after_death, f"requests sent after the replica died failed: {after_death}"
    assert not failed, f"requests in flight on the dead replica were not answered by the survivor: {failed}"


# ----------------------------------------------------------------------------------------------
# Direct ingress: each replica's own port
# ----------------------------------------------------------------------------------------------


def _direct_urls() -> list[str]:
    return _wait_until(lambda: (u := direct_ingress.replica_urls(APP_NAME)) and len(u) == REPLICAS and u, 60,
                       "both replicas' own ports")


@pytest.fixture(scope="module")
def balancer(service: Service) -> Iterator[Balancer]:
    """`benchmatch serve --balancer-port`'s HAProxy in front of the replicas' own ports."""
    _direct_urls()
    b = Balancer(BalancerSettings(port=_free_port(), request_timeout_s=2.0, check_interval_s=0.5),
                 lambda: direct_ingress.replica_urls(APP_NAME))
    b.start()
    b.watch(0.5)
    yield b
    b.stop()


def test_the_balancer_answers_as_the_proxy_from_every_replica(service: Service, balancer: Balancer) -> None:
    """One loopback address in front of both replicas' own ports: the proxy's answer, from each
    replica in turn, and nothing listening beyond loopback."""
    import psutil

    assert balancer.servers == _direct_urls()
    listening = {c.laddr.ip for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == balancer.settings.port}
    assert listening == {"127.0.0.1"}, listening
    body = {"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 20, "throughput_qps": 2000}}
    via_proxy = service.post("/recommend", body)
    via_balancer = requests.post(balancer.url + "/recommend", json=body, timeout=TIMEOUT)
    assert via_balancer.status_code == 200, via_balancer.text
    assert _without_timing(via_balancer.json()) == _without_timing(via_proxy.json())
    bad = requests.post(balancer.url + "/recommend", json={"asset": "synthetic-mlp", "objective": "fastest?"},
                        timeout=TIMEOUT)
    assert bad.status_code == 422 and bad.json()["kind"] == service.post(
        "/recommend", {"asset": "synthetic-mlp", "objective": "fastest?"}).json()["kind"]
    http = requests.Session()
    pids = {http.get(balancer.url + "/healthz", timeout=TIMEOUT).json()["pid"] for _ in range(20)}
    assert len(pids) == REPLICAS, pids


def test_slow_clients_through_the_balancer_never_reach_a_replica(service: Service, balancer: Balancer) -> None:
    """HAProxy holds a request until all of it is in: slow bodies and headers get its 408 at the
    balancer's deadline, while legitimate requests are answered meanwhile."""
    head = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    bodies = SlowClients("127.0.0.1", balancer.settings.port, 100, head, b" " * 1000)
    headers = SlowClients("127.0.0.1", balancer.settings.port, 20,
                          b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", b"a" * 1000)
    try:
        time.sleep(1.0)
        statuses = [requests.post(balancer.url + "/recommend", json={"asset": "synthetic-mlp"},
                                  timeout=TIMEOUT).status_code for _ in range(20)]
        assert statuses == [200] * 20, Counter(statuses)
        slow_answers = bodies.answers() + headers.answers()
    finally:
        bodies.close()
        headers.close()
    outcomes = Counter(a.split(b"\r\n", 1)[0].decode(errors="replace")[:12] or "closed silently" for a in slow_answers)
    assert outcomes == Counter({"HTTP/1.1 408": 120}), outcomes


def test_each_replica_answers_on_its_own_loopback_port(service: Service) -> None:
    """Every replica serves the same app on a port of its own, bound to loopback only, and its
    answer is the proxy's (but for the solve's own duration)."""
    import psutil

    urls = _direct_urls()
    ports = {int(u.rsplit(":", 1)[1]) for u in urls}
    low = int(os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
    high = int(os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    assert len(ports) == REPLICAS and all(low <= p <= high for p in ports), urls
    listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}
    assert listening == dict.fromkeys(ports, "127.0.0.1"), listening
    body = {"asset": "synthetic-mlp", "constraints": {"latency_p99_ms": 20, "throughput_qps": 2000}}
    via_proxy = service.post("/recommend", body)
    assert via_proxy.status_code == 200, via_proxy.text
    for url in urls:
        direct = requests.post(url + "/recommend", json=body, timeout=TIMEOUT)
        assert direct.status_code == 200, (url, direct.text)
        assert _without_timing(direct.json()) == _without_timing(via_proxy.json()), url
        assert requests.get(url + "/healthz", timeout=TIMEOUT).status_code == 200


def test_slow_clients_on_a_replicas_own_port_are_cut_off(service: Service) -> None:
    """The guard's middlewares run on the replica's own server too: slow bodies and headers sent
    straight to a replica are closed with a 408, a too-large body is a 413 before it is read, and
    legitimate requests to that replica are answered meanwhile."""
    url = _direct_urls()[0]
    host, port = url.removeprefix("http://").split(":")
    head = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    bodies = SlowClients(host, int(port), 40, head, b" " * 1000)
    headers = SlowClients(host, int(port), 10, b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", b"a" * 1000)
    try:
        time.sleep(1.0)
        statuses = [requests.post(url + "/recommend", json={"asset": "synthetic-mlp"}, timeout=TIMEOUT).status_code
                    for _ in range(10)]
        big = requests.post(url + "/recommend", data=b"{" + b" " * (2 << 20) + b"}",
                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        assert statuses == [200] * 10, Counter(statuses)
        assert big.status_code == 413 and big.json()["kind"] == "RequestTooLarge", big.text
        slow_answers = bodies.answers() + headers.answers()
    finally:
        bodies.close()
        headers.close()
    outcomes = Counter(a.split(b"\r\n", 1)[0].decode(errors="replace") or "closed silently" for a in slow_answers)
    assert outcomes == Counter({"HTTP/1.1 408 Request Timeout": 50}), outcomes


# ----------------------------------------------------------------------------------------------
# Slow clients: the proxy guard's deadlines, on the real proxy
# ----------------------------------------------------------------------------------------------


def test_slow_clients_do_not_starve_the_service(service: Service) -> None:
    """200 connections sending their body a byte every half second and 50 sending their headers
    so: without the guard the bodies hold every replica slot (2 x 16) and the queue (32) behind
    them, and every other request gets 503 or waits. With it, legitimate requests are answered
    meanwhile and every slow connection is closed with a 408 at its deadline."""
    head = (b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    host, port = service.url.removeprefix("http://").split(":")
    bodies = SlowClients(host, int(port), 200, head, b" " * 1000)
    headers = SlowClients(host, int(port), 50, b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", b"a" * 1000)
    try:
        time.sleep(1.0)  # every slow request has reached the proxy and waits on its body
        statuses = [service.post("/recommend", {"asset": "synthetic-mlp"}).status_code for _ in range(20)]
        statuses += [service.get("/healthz").status_code for _ in range(5)]
        assert statuses == [200] * 25, Counter(statuses)
        slow_answers = bodies.answers() + headers.answers()
    finally:
        bodies.close()
        headers.close()
    outcomes = Counter(a.split(b"\r\n", 1)[0].decode(errors="replace") or "closed silently" for a in slow_answers)
    assert outcomes == Counter({"HTTP/1.1 408 Request Timeout": 250}), outcomes
