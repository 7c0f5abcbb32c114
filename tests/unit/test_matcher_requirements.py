"""Requirements validation: every rejection names the field (and the file) and says why."""

from __future__ import annotations

import json

import pytest

from matcher.errors import RequirementsError
from matcher.requirements import Requirements, load_requirements, parse_requirements


def test_defaults():
    req = parse_requirements({})
    assert req.task == "infer" and req.objective == "cost" and req.top_k == 3
    assert req.inventory is None and req.asset is None
    assert req.constraints.latency_p99_ms is None


def test_full_document_is_accepted():
    req = parse_requirements({
        "asset": "resnet18", "task": "infer", "objective": "energy", "top_k": 5,
        "inventory": {"local-2c": 4},
        "constraints": {"latency_p99_ms": 25, "throughput_qps": 300, "budget_per_hour_usd": 2.5,
                        "budget_total_usd": 100, "duration_h": 24, "accuracy": 0.7,
                        "energy_per_sample_j": 0.5, "max_power_w": 600},
    })
    assert req.constraints.duration_h == 24 and req.inventory == {"local-2c": 4}


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"constraints": {"latency_p99_ms": 0}}, "constraints.latency_p99_ms", "greater than 0"),
        ({"constraints": {"latency_p99_ms": -3}}, "constraints.latency_p99_ms", "greater than 0"),
        ({"constraints": {"throughput_qps": "lots"}}, "constraints.throughput_qps", "number"),
        ({"constraints": {"accuracy": 1.5}}, "constraints.accuracy", "less than or equal to 1"),
        ({"constraints": {"budget_per_hour_usd": float("nan")}}, "constraints.budget_per_hour_usd", "finite"),
        ({"constraints": {"budget_total_usd": 10}}, "constraints.duration_h", "required"),
        ({"constraints": {"max_power_w": 0}}, "constraints.max_power_w", "greater than 0"),
        ({"objective": "speed"}, "objective", "'cost', 'energy' or 'latency'"),
        ({"task": "serve"}, "task", "'infer' or 'train'"),
        ({"top_k": 0}, "top_k", "greater than or equal to 1"),
        ({"top_k": 51}, "top_k", "less than or equal to 50"),
        ({"inventory": {"local-2c": -1}}, "inventory.local-2c", "greater than or equal to 0"),
    ],
)
def test_rejection_names_the_field(data, field, says):
    with pytest.raises(RequirementsError) as exc:
        parse_requirements(data)
    msg = str(exc.value)
    assert f"{field}: " in msg and says in msg
    assert any(f == field for f, _ in exc.value.errors)


def test_typo_is_rejected_with_a_suggestion():
    with pytest.raises(RequirementsError) as exc:
        parse_requirements({"constraints": {"latency_p99": 5}})
    msg = str(exc.value)
    assert "constraints.latency_p99: unknown field" in msg and "did you mean 'latency_p99_ms'" in msg
    with pytest.raises(RequirementsError, match=r"objectiv: unknown field; did you mean 'objective'"):
        parse_requirements({"objectiv": "cost"})


def test_several_errors_are_all_reported():
    with pytest.raises(RequirementsError) as exc:
        parse_requirements({"top_k": 0, "constraints": {"accuracy": 2}})
    fields = {f for f, _ in exc.value.errors}
    assert fields == {"top_k", "constraints.accuracy"}


def test_is_a_value_error_and_not_a_mapping():
    with pytest.raises(ValueError, match="expected a mapping"):
        parse_requirements([1, 2])


def test_load_yaml_and_json(tmp_path):
    y = tmp_path / "req.yaml"
    y.write_text("asset: mlp\nconstraints:\n  latency_p99_ms: 10\n  throughput_qps: 100\n")
    assert load_requirements(y).constraints.latency_p99_ms == 10
    j = tmp_path / "req.json"
    j.write_text(json.dumps({"objective": "latency", "constraints": {"throughput_qps": 5}}))
    assert load_requirements(j).objective == "latency"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert isinstance(load_requirements(empty), Requirements)


def test_file_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("constraints:\n  latency_p99_ms: -1\n")
    with pytest.raises(RequirementsError) as exc:
        load_requirements(bad)
    assert str(bad) in str(exc.value) and "constraints.latency_p99_ms: must be greater than 0" in str(exc.value)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(RequirementsError, match=r"broken\.json: not valid JSON"):
        load_requirements(broken)
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("constraints: [unclosed\n")
    with pytest.raises(RequirementsError, match=r"broken\.yaml: not valid YAML"):
        load_requirements(broken_yaml)
    with pytest.raises(RequirementsError, match="not found"):
        load_requirements(tmp_path / "missing.yaml")


def test_every_shipped_requirements_file_is_valid():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "configs"
    files = [root / "requirements-quickstart.yaml", root / "examples" / "requirements-fresh-run.yaml"]
    parsed = [parse_requirements(yaml.safe_load(f.read_text()), source=str(f)) for f in files]
    assert parsed[1].slo_confidence == 0.9
    assert parsed[1].constraints == parsed[0].constraints  # the same request, sized for a fresh run
