"""serve/runner.py helpers and serve/config.yaml, without starting Ray (the integration test and a
manual `serve run serve/config.yaml` cover the running service)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import yaml

from serve.runner import _curl_example, _local_runtime_env, _serve_url

ROOT = Path(__file__).resolve().parents[2]


def test_curl_example_is_valid_json_naming_the_asset() -> None:
    cmd = shlex.split(_curl_example("http://127.0.0.1:8000", "synthetic-mlp"))
    body = json.loads(cmd[cmd.index("-d") + 1])
    assert body["asset"] == "synthetic-mlp" and body["constraints"]["latency_p99_ms"] == 50
    assert "http://127.0.0.1:8000/recommend" in cmd
    assert "asset" not in json.loads(shlex.split(_curl_example("http://x"))[-1])


def test_replicas_can_import_this_checkout() -> None:
    paths = _local_runtime_env()["env_vars"]["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(ROOT) and (ROOT / "serve" / "app.py").exists()


def test_url_never_advertises_all_interfaces() -> None:
    assert _serve_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"  # no Serve running: what was asked
    assert _serve_url("::1", 8001) == "http://[::1]:8001"


def test_config_yaml_is_a_valid_serve_config_on_loopback() -> None:
    from ray.serve.schema import ServeDeploySchema

    from serve.app import DEPLOYMENT_NAME, AppArgs

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve" / "config.yaml").read_text()))
    assert config.http_options.host == "127.0.0.1"
    (app,) = config.applications
    assert app.import_path == "serve.app:build_app" and app.route_prefix == "/"
    AppArgs.model_validate(app.args)  # every arg is one build_app accepts
    (dep,) = app.deployments
    assert dep.name == DEPLOYMENT_NAME
    auto = dep.autoscaling_config
    auto = auto if isinstance(auto, dict) else auto.model_dump()
    assert auto["min_replicas"] == 1 and auto["max_replicas"] > 1
