"""Which sweep batches a node's measuring process takes (benchmarks/measure_workers.py): the Ray
side is tested on a real cluster in tests/integration/test_cluster_sweep.py."""

from __future__ import annotations

from benchmarks.spec import LoadGenSettings, SweepSpec, expand_trials
from benchmarks.sweep import _units, uses_workers
from cluster.hardware import load_catalog


def _spec(**kw) -> SweepSpec:
    return SweepSpec(name="w", asset="digits-mlp", task="infer", space={"batch_size": [1, 8]},
                     hardware=["local-1c", "aws-g5.xlarge"], loadgen=LoadGenSettings(scenarios=["SingleStream"]),
                     **kw)


def test_cpu_hardware_batches_go_to_the_nodes_worker_and_gpu_ones_stay_in_the_trial():
    catalog = load_catalog()
    spec = _spec()
    batches = _units(spec, catalog, expand_trials(spec, catalog), "store", 4)
    by_hw = {b["hardware"]["name"]: b["workers"] for b in batches}
    assert by_hw == {"local-1c": True, "aws-g5.xlarge": False}
    assert catalog["aws-g5.xlarge"].device_count and not uses_workers(spec, catalog["aws-g5.xlarge"])


def test_measure_workers_false_keeps_every_batch_in_its_trial():
    catalog = load_catalog()
    spec = _spec(measure_workers=False)
    batches = _units(spec, catalog, expand_trials(spec, catalog), "store", 4)
    assert batches and not any(b["workers"] for b in batches)
