import pytest

from benchmarks.spec import SpecError, SweepSpec, expand_trials, load_sweep
from cluster.hardware import CatalogError, load_catalog
from results.ids import trial_id


def test_quickstart_sweep_expands_to_hardware_times_grid():
    spec = load_sweep("configs/quickstart.yaml")
    trials = expand_trials(spec, load_catalog())
    assert len(trials) == len(spec.hardware) * len(spec.configs()) * spec.repeats
    assert {t.hardware.name for t in trials} == set(spec.hardware)


def test_trial_id_is_stable_and_config_order_free():
    assert trial_id("a", "infer", "h", {"x": 1, "y": 2}) == trial_id("a", "infer", "h", {"y": 2, "x": 1})
    assert trial_id("a", "infer", "h", {"x": 1}) != trial_id("a", "infer", "h", {"x": 2})


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nasset: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+"):
        load_sweep(p)


@pytest.mark.parametrize("body, field", [
    ("name: x\nasset: a\nhardware: []\n", "hardware"),
    ("name: x\nasset: a\nhardware: [local-1c]\nrepeats: 0\n", "repeats"),
    ("name: x\nasset: a\nhardware: [local-1c]\nspace: {batch_size: []}\n", "space"),
    ("name: x\nasset: a\nhardware: [local-1c]\ntypo_field: 1\n", "typo_field"),
    ("name: 'bad name!'\nasset: a\nhardware: [local-1c]\n", "name"),
])
def test_invalid_sweep_fields_are_named(tmp_path, body, field):
    p = tmp_path / "s.yaml"
    p.write_text(body)
    with pytest.raises(SpecError, match=field):
        load_sweep(p)


def test_unknown_hardware_is_named_with_the_known_ones():
    spec = SweepSpec(name="x", asset="a", hardware=["local-1c", "TPU-v9"])
    with pytest.raises(SpecError, match="TPU-v9"):
        expand_trials(spec, load_catalog())


def test_catalog_has_local_profiles_differing_in_cpus_and_priced_cloud_types():
    cat = load_catalog()
    local = [h for h in cat.values() if h.local]
    assert len(local) >= 2 and len({h.cpu_cores for h in local}) >= 2
    cloud = [h for h in cat.values() if not h.local]
    assert any(h.device_count > 0 for h in cloud) and any(h.device_count == 0 for h in cloud)
    for h in cat.values():
        assert h.price_per_hour_usd and h.price_source and h.price_date


def test_catalog_errors_name_entry_and_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("hardware:\n  - name: x\n    accelerator_type: cpu\n    price_per_hour_usd: -3\n    price_source: s\n")
    with pytest.raises(CatalogError, match=r"hardware\[0\] \(x\).*price_per_hour_usd"):
        load_catalog(p)
    p.write_text("hardware:\n  - name: x\n    accelerator_type: cpu\n    price_per_hour_usd: 1\n")
    with pytest.raises(CatalogError, match="price_source"):
        load_catalog(p)
