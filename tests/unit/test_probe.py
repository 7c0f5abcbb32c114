"""The local hardware probe: works, and says 'no GPU' quietly where there is none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster import probe
from cluster.hardware import HardwareSpec, load_catalog

ROOT = Path(__file__).resolve().parent.parent.parent


def test_probe_local_describes_this_machine():
    spec = probe.probe_local()
    assert isinstance(spec, HardwareSpec)
    assert spec.cpu_cores >= 1 and spec.memory_gb and spec.memory_gb > 0
    assert spec.extra["cpu_model"] and spec.local
    assert spec.price_per_hour_usd is None and spec.peak_tflops is None  # unknown here, never guessed
    if not probe.gpu_info():
        assert spec.accelerator_type == "cpu" and spec.device_count == 0 and spec.tdp_w is None
        assert spec.name == f"local-cpu-{spec.cpu_cores}c"


def test_no_gpu_is_silent(capsys):
    if probe.nvml() is not None:
        pytest.skip("NVML present")
    assert probe.gpu_info() == []
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("name, ray_type", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA A100-SXM4-40GB", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("Tesla T4", "T4"),
    ("NVIDIA L4", "L4"),
    ("Tesla V100-SXM2-16GB", "V100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000"),
    ("NVIDIA GeForce RTX 4090", "GeForce-RTX-4090"),
])
def test_gpu_names_map_to_ray_types(name, ray_type):
    assert probe.accelerator_type_from_name(name) == ray_type


def test_yaml_round_trips_through_the_catalog_loader(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text(probe.to_yaml(probe.probe_local(name="this-box")))
    assert load_catalog(path)["this-box"].cpu_cores >= 1


def test_module_prints_yaml():
    out = subprocess.run([sys.executable, "-m", "cluster.probe"], cwd=ROOT, capture_output=True, text=True, check=True)
    doc = yaml.safe_load(out.stdout)
    assert doc["hardware"][0]["accelerator_type"]
