"""Failed trials return rows (status failed, error said); bad specs raise a clear ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.core import resolve_threads, run_trial
from benchmarks.spec import LoadGenSettings, TrialSpec
from cluster.hardware import HardwareSpec

CPU = HardwareSpec(name="test-cpu", accelerator_type="cpu", cpu_cores=2)
GPU = HardwareSpec(name="test-a10g", accelerator_type="A10G", device_count=1, cpu_cores=4)
FIXTURE = str(Path(__file__).resolve().parent.parent / "fixtures" / "user_asset.py")
FAST = LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=30, min_query_count=8, offline_samples=32)


def spec(tmp_path, asset="digits-mlp", hardware=CPU, config=None, task="infer"):
    return TrialSpec(sweep_id="unit", trial_id="f", repeat=0, asset=asset, task=task, hardware=hardware,
                     config=config if config is not None else {"batch_size": 4, "threads": 1}, seed=0,
                     loadgen=FAST, log_dir=str(tmp_path / "logs"))


def test_unknown_asset_raises_naming_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown asset 'nope'.*digits-mlp.*tiny-cnn"):
        run_trial(spec(tmp_path, asset="nope"))


def test_task_the_asset_lacks_raises(tmp_path):
    with pytest.raises(ValueError, match="tiny-cnn.*supports tasks"):
        run_trial(spec(tmp_path, asset="tiny-cnn", task="train"))


def test_model_error_gives_failed_rows(tmp_path):
    rows = run_trial(spec(tmp_path, asset=f"{FIXTURE}:Broken"))
    assert [r["scenario"] for r in rows] == ["SingleStream", "Offline"]
    for r in rows:
        assert r["status"] == "failed" and "broken on purpose" in r["error"]
        assert r["throughput_samples_per_s"] is None and r["latency_p50_ms"] is None and r["accuracy"] is None
        assert r["hardware"] == "test-cpu" and r["cfg_batch_size"] == 4 and r["duration_s"] > 0
    assert (tmp_path / "logs" / "unit" / "f-r0" / "error.txt").exists()


def test_error_during_one_scenario_fails_only_that_row(tmp_path):
    s = spec(tmp_path, asset=f"{FIXTURE}:FailsInWorker")
    s.loadgen = LoadGenSettings(scenarios=["SingleStream", "Server", "Offline"], min_duration_ms=30,
                                min_query_count=8, offline_samples=32, server_target_qps=200)
    ss, server, off = run_trial(s)
    assert ss["status"] == "ok" and off["status"] == "ok"
    assert server["status"] == "failed" and "model failed in a worker thread" in server["error"]
    assert (tmp_path / "logs" / "unit" / "f-r0" / "error-Server.txt").exists()


def test_gpu_hardware_without_gpu_fails_clearly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rows = run_trial(spec(tmp_path, hardware=GPU))
    assert all(r["status"] == "failed" for r in rows)
    assert "asks for 1 x A10G GPU" in rows[0]["error"] and "torch.cuda.is_available() is False" in rows[0]["error"]
    assert rows[0]["accelerator_type"] == "A10G" and rows[0]["device_count"] == 0


def test_float16_on_cpu_fails_with_reason(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "dtype": "float16"}))
    assert all(r["status"] == "failed" and "float16 is not benchmarked on CPU" in r["error"] for r in rows)


def test_bad_dtype_is_a_failed_row_naming_the_field(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "dtype": "int3"}))
    assert "config 'dtype' must be one of" in rows[0]["error"]


def test_progress_callback_errors_do_not_fail_the_trial(tmp_path):
    def bad(_event):
        raise RuntimeError("dashboard down")

    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "threads": 1}), progress=bad)
    assert all(r["status"] == "ok" for r in rows)


def test_threads_resolution():
    import os

    s = TrialSpec(sweep_id="s", trial_id="t", repeat=0, asset="digits-mlp", task="infer", hardware=CPU,
                  config={"threads": 3}, seed=0)
    assert resolve_threads(s) == 3
    s.config = {}
    s.num_cpus = 1
    assert resolve_threads(s) == 1
    s.num_cpus = None
    assert resolve_threads(s) == min(2, len(os.sched_getaffinity(0)))


def test_bad_threads_value_is_a_failed_row(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "threads": 0}))
    assert all(r["status"] == "failed" and "'threads' must be a positive integer" in r["error"] for r in rows)
    assert rows[0]["num_threads"] is None


def test_a_file_asset_absent_on_the_worker_loads_from_its_shipped_source(tmp_path, monkeypatch):
    """A trial runs in its own working dir, maybe on another node: the file travels as text."""
    monkeypatch.setenv("BENCHMATCH_HOME", str(tmp_path / "home"))
    source = Path(FIXTURE).read_text()
    s = spec(tmp_path, asset="blobs-logreg")
    s.asset_ref, s.asset_source = "/nowhere/on/this/node/user_asset.py:Blobs", source
    rows = run_trial(s)
    assert all(r["status"] == "ok" for r in rows), rows[0]["error"]
    assert {r["asset"] for r in rows} == {"blobs-logreg"}
    assert {r["asset_ref"] for r in rows} == {"/nowhere/on/this/node/user_asset.py:Blobs"}
    cached = list((tmp_path / "home" / "assets").glob("*/user_asset.py"))
    assert len(cached) == 1 and cached[0].read_text() == source


def test_a_sweep_resolves_a_relative_asset_where_it_is_run_and_names_it_by_its_name(tmp_path, monkeypatch):
    from benchmarks.spec import SpecError, SweepSpec, expand_trials, load_sweep

    (tmp_path / "my_models").mkdir()
    (tmp_path / "my_models" / "encoder.py").write_text(Path(FIXTURE).read_text().replace(
        'name = "blobs-logreg"', 'name = "tiny-encoder"', 1))
    sweep = tmp_path / "sweeps" / "s.yaml"
    sweep.parent.mkdir()
    sweep.write_text("name: s\nasset: my_models/encoder.py:Blobs\nhardware: [test-cpu]\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_sweep(sweep)
    assert loaded.asset == f"{tmp_path / 'my_models' / 'encoder.py'}:Blobs"
    trials = expand_trials(loaded, {"test-cpu": CPU})
    assert {t.asset for t in trials} == {"tiny-encoder"} and trials[0].asset_source.startswith('"""A user')
    monkeypatch.chdir(sweep.parent)  # found beside the sweep file too? no: only where run, then the file's folder
    with pytest.raises(SpecError, match=r"my_models/encoder.py' not found \(looked in .*sweeps/my_models"):
        load_sweep(sweep)
    with pytest.raises(SpecError, match="supports tasks"):
        expand_trials(SweepSpec(name="t", asset="tiny-cnn", task="train", hardware=["test-cpu"]), {"test-cpu": CPU})


LOCAL_1C = HardwareSpec(name="local-1c", accelerator_type="cpu", cpu_cores=1, local=True)


def test_an_emulated_profile_is_pinned_to_its_own_cpus_and_restored_after(tmp_path):
    import os

    before = os.sched_getaffinity(0)
    rows = run_trial(spec(tmp_path, hardware=LOCAL_1C, config={"batch_size": 4}))
    assert all(r["status"] == "ok" for r in rows), rows[0]["error"]
    assert {r["cpu_set"] for r in rows} == {str(max(before))} and {r["num_threads"] for r in rows} == {1}
    assert os.sched_getaffinity(0) == before  # a reused worker gets its whole mask back
    real = run_trial(spec(tmp_path, config={"batch_size": 4, "threads": 1}))
    assert {r["cpu_set"] for r in real} == {""}


def test_more_threads_than_an_emulated_profile_has_cores_is_refused(tmp_path):
    rows = run_trial(spec(tmp_path, hardware=LOCAL_1C, config={"batch_size": 4, "threads": 2}))
    assert all(r["status"] == "failed" for r in rows)
    assert "threads=2 exceeds the 1 core that profile 'local-1c' emulates" in rows[0]["error"]


def test_flagged_rows_are_measured_again_longer_and_keep_their_flags(tmp_path, monkeypatch):
    """A repeat whose rows say INVALID or disturbed is measured again (bounded), each time twice as long."""
    from benchmarks import core

    calls = []

    def fake_run(s, progress=None):
        calls.append((s.attempt, s.loadgen.min_duration_ms))
        verdict = "VALID" if s.attempt == 2 else "INVALID"
        return [{"scenario": "SingleStream", "status": "ok", "loadgen_result": verdict, "throughput_samples_per_s": 100.0},
                {"scenario": "Offline", "status": "ok", "loadgen_result": "VALID", "throughput_samples_per_s": 400.0}]

    monkeypatch.setattr(core, "run_trial", fake_run)
    monkeypatch.setattr(core.time, "sleep", lambda s: None)
    s = spec(tmp_path)
    s.remeasure = 2
    rows = core.measure(s)
    assert calls == [(0, 30), (1, 60), (2, 120)]
    assert [r["flags"] for r in rows] == ["", ""] and {r["remeasured"] for r in rows} == {2}
    s.remeasure = 1
    calls.clear()
    rows = core.measure(s)
    assert len(calls) == 2 and rows[0]["flags"] == "loadgen_invalid" and rows[0]["remeasured"] == 1


def test_row_flags_name_what_is_wrong():
    from benchmarks.core import row_flags

    rows = [{"scenario": "SingleStream", "status": "ok", "loadgen_result": "VALID", "throughput_samples_per_s": 14792.0},
            {"scenario": "Offline", "status": "ok", "loadgen_result": "VALID", "throughput_samples_per_s": 559.0,
             "env_background_load": True},
            {"scenario": "MultiStream", "status": "failed", "loadgen_result": ""}]
    assert row_flags(rows) == [[], ["background_load", "offline_below_singlestream"], []]


def test_a_server_curve_measures_latency_at_fractions_of_offline_throughput(tmp_path):
    import json

    from benchmarks.spec import LoadGenSettings

    s = spec(tmp_path, config={"batch_size": 4, "threads": 1})
    s.loadgen = LoadGenSettings(scenarios=["SingleStream", "Server", "Offline"], min_duration_ms=50, min_query_count=8,
                                offline_samples=64, server_curve=[0.001, 0.002, 5.0 / 4.0], server_curve_min_queries=12)
    rows = run_trial(s)
    assert [r["scenario"] for r in rows] == ["SingleStream", "Offline", "Server"]  # Offline first: it sets the loads
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    offline = rows[1]["throughput_samples_per_s"]
    curve = json.loads(rows[2]["server_curve"])
    # The loads asked for, lightest first, up to the first one the replica could not keep up with
    # (125% of Offline never can be kept up with); every point before it kept up.
    fractions = [p["fraction"] for p in curve]
    assert fractions == [0.001, 0.002, 1.25][:len(fractions)] and rows[2]["server_probes"] == len(curve)
    assert [p["offered_qps"] for p in curve] == pytest.approx([f * offline for f in fractions])
    assert not any(p["saturated"] for p in curve[:-1])
    assert curve[-1]["saturated"]  # it stopped at a saturated load, 125% of Offline at the latest
    assert all(p["latency_p99_ms"] > 0 and p["capacity_source"] == "Offline" for p in curve)
    # Each point runs server_curve_min_queries queries at least, more than the scenarios' 8
    assert all(p["queries"] >= 12 for p in curve[:-1]), [p["queries"] for p in curve]
