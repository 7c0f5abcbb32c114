"""run_sweep_locally: every (config, repeat) on this machine, written to the store, resumable."""

from __future__ import annotations

from benchmarks.local_runner import local_trials, run_sweep_locally
from benchmarks.spec import SweepSpec, expand_trials
from cluster.hardware import HardwareSpec
from results.store import ResultsStore

HW = HardwareSpec(name="this-box", accelerator_type="cpu", cpu_cores=1)


def sweep(tmp_path) -> SweepSpec:
    return SweepSpec(
        name="local", asset="digits-mlp", task="train", space={"batch_size": [64, 128], "threads": [1]},
        hardware=["elsewhere"], repeats=2, train={"epochs": 1, "quality_target": 0.5},
        results_uri=str(tmp_path / "results"),
    )


def test_ids_match_the_ray_sweep(tmp_path):
    spec = sweep(tmp_path)
    ours = [(t.trial_id, t.repeat, t.seed, t.log_dir) for t in local_trials(spec, HW)]
    ray_side = [(t.trial_id, t.repeat, t.seed, t.log_dir)
                for t in expand_trials(spec.model_copy(update={"hardware": ["this-box"]}), {"this-box": HW})]
    assert ours == ray_side and len(ours) == 4


def test_runs_writes_and_resumes(tmp_path):
    spec = sweep(tmp_path)
    store = ResultsStore(spec.results_uri)
    lines = []
    assert run_sweep_locally(spec, HW, store, progress=lines.append) == 4
    df = store.read("local")
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["hardware"]) == {"this-box"}
    assert sorted(df["cfg_batch_size"].unique()) == [64, 128]
    assert any("epoch 1/1" in line for line in lines)
    assert run_sweep_locally(spec, HW, store, progress=lines.append) == 0
    assert "already in" in lines[-1]
    assert run_sweep_locally(spec, HW, store, resume=False, progress=None) == 4
