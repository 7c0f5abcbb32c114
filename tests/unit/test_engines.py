"""Engines (eager, compile, onnxruntime) x precisions (float32, bfloat16, dynamic int8): each
combination measures or is skipped with its reason; skipped rows are settled, never failed."""

from __future__ import annotations

import tempfile

import pytest
import torch

from benchmarks import engines as eng
from benchmarks.assets import get_asset
from benchmarks.core import model_input, repeat_status, run_trial
from benchmarks.local_runner import run_sweep_locally
from benchmarks.spec import LoadGenSettings, SweepSpec, TrialSpec
from benchmarks.stats import flags
from cluster.hardware import HardwareSpec
from results.store import ResultsStore

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.1, price_source="test")
FAST = LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=30, min_query_count=8, offline_samples=32)
CPU_DEV, GPU_DEV = torch.device("cpu"), torch.device("cuda")
F32, BF16 = torch.float32, torch.bfloat16


def make_spec(tmp_path, config: dict, asset: str = "digits-mlp", trial_id: str = "t1", task: str = "infer") -> TrialSpec:
    return TrialSpec(sweep_id="unit", trial_id=trial_id, repeat=0, asset=asset, task=task, hardware=CPU,
                     config=config, seed=3, loadgen=FAST, log_dir=str(tmp_path / "logs"))


# ------------------------------------------------------------------------------ which combinations run


@pytest.mark.parametrize(("engine", "quant", "dtype", "device", "task", "why"), [
    ("eager", "none", F32, CPU_DEV, "infer", None),
    ("eager", "none", BF16, CPU_DEV, "infer", None),
    ("eager", "dynamic-int8", F32, CPU_DEV, "infer", None),
    ("eager", "dynamic-int8", BF16, CPU_DEV, "infer", "does not combine with dtype bfloat16"),
    ("eager", "dynamic-int8", F32, GPU_DEV, "infer", "run on CPU only"),
    ("compile", "none", BF16, CPU_DEV, "infer", None),
    ("compile", "dynamic-int8", F32, CPU_DEV, "infer", None),
    ("onnxruntime", "none", F32, CPU_DEV, "infer", None),
    ("onnxruntime", "dynamic-int8", F32, CPU_DEV, "infer", None),
    ("onnxruntime", "none", BF16, CPU_DEV, "infer", "no bfloat16 kernels"),
    ("onnxruntime", "dynamic-int8", BF16, CPU_DEV, "infer", "no bfloat16 kernels"),
    ("onnxruntime", "none", F32, GPU_DEV, "infer", "CPUExecutionProvider only"),
    ("eager", "none", F32, CPU_DEV, "train", None),
    ("compile", "none", F32, CPU_DEV, "train", "inference settings"),
    ("eager", "dynamic-int8", F32, CPU_DEV, "train", "inference settings"),
])
def test_support_matrix(engine, quant, dtype, device, task, why):
    reason = eng.unsupported(engine, quant, dtype, device, task)
    assert (reason is None) if why is None else (why in reason)


def test_compile_without_a_compiler_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(eng, "_cxx_compiler", lambda: (None, "g++, c++"))
    rows = run_trial(make_spec(tmp_path, {"batch_size": 4, "threads": 1, "engine": "compile"}))
    assert [r["status"] for r in rows] == ["skipped", "skipped"] and repeat_status(rows) == "skipped"
    assert all("needs a C++ compiler" in r["error"] and r["cfg_engine"] == "compile" for r in rows)
    assert rows[0]["throughput_samples_per_s"] is None and rows[0]["flags"] == ""
    assert not (tmp_path / "logs" / "unit" / "t1-r0" / "error.txt").exists()  # not an error


def test_unknown_engine_or_quantization_fails_with_the_choices(tmp_path):
    rows = run_trial(make_spec(tmp_path, {"batch_size": 4, "engine": "tensorrt"}))
    assert repeat_status(rows) == "failed" and "'engine' must be one of ['eager', 'compile', 'onnxruntime']" in rows[0]["error"]
    rows = run_trial(make_spec(tmp_path, {"batch_size": 4, "quantization": "int4"}))
    assert "'quantization' must be one of ['none', 'dynamic-int8']" in rows[0]["error"]


def test_torch_int8_refuses_a_convnet():
    # torch's dynamic int8 quantizes Linear only: a convnet would be a float model under an int8 label.
    asset = get_asset("mobilenet-v2")
    model = asset.build({"image_size": 32}).eval()
    x = asset.load_data({"image_size": 32}, 0).x_test[:2]
    with pytest.raises(eng.Unsupported, match=r"do \d+\.\d% of this model's FLOPs"):
        eng.build_engine(asset, model, x, "eager", "dynamic-int8", 1, flops_per_sample=6.6e7)


# ------------------------------------------------------------------------------ every combination, measured


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """digits-mlp (labelled, so accuracy checks each engine's predictions) in every engine x precision."""
    tmp = tmp_path_factory.mktemp("matrix")
    out = {}
    for i, (engine, dtype, quant) in enumerate((e, d, q) for e in eng.ENGINES for d in ("float32", "bfloat16")
                                               for q in eng.QUANTIZATIONS):
        config = {"batch_size": 8, "threads": 1, "engine": engine, "dtype": dtype, "quantization": quant}
        out[engine, dtype, quant] = run_trial(make_spec(tmp, config, trial_id=f"m{i}"))
    return out


def test_each_engine_and_precision_measures_or_is_skipped(matrix):
    skipped = {("eager", "bfloat16", "dynamic-int8"), ("compile", "bfloat16", "dynamic-int8"),
               ("onnxruntime", "bfloat16", "none"), ("onnxruntime", "bfloat16", "dynamic-int8")}
    reference = matrix["eager", "float32", "none"][0]["accuracy"]
    assert reference > 0.9
    for key, rows in matrix.items():
        status = repeat_status(rows)
        if key in skipped:
            assert status == "skipped" and all(r["error"] for r in rows), key
            continue
        assert status == "ok", (key, rows[0]["error"])
        for r in rows:
            assert r["throughput_samples_per_s"] > 0 and (r["cfg_engine"], r["cfg_dtype"], r["cfg_quantization"]) == key
            assert r["accuracy"] == pytest.approx(reference, abs=0.03), key  # the engine's own predictions
            assert r["f1_macro"] == pytest.approx(r["accuracy"], abs=0.05)
            assert r["flops_per_sample"] == matrix["eager", "float32", "none"][0]["flops_per_sample"]


def test_bytes_per_sample_follows_the_precision(matrix):
    # digits-mlp (hidden 64): 64x64 + 64x64 + 64x10 weights, 64 + 64 + 10 biases; 64 float inputs, 10 logits.
    weights, biases = 64 * 64 + 64 * 64 + 64 * 10, 64 + 64 + 10
    per_sample = {key: rows[0]["bytes_per_sample"] for key, rows in matrix.items() if repeat_status(rows) == "ok"}
    assert per_sample["eager", "float32", "none"] == (weights + biases) * 4 / 8 + 64 * 4 + 10 * 4
    assert per_sample["compile", "float32", "none"] == per_sample["eager", "float32", "none"]
    assert per_sample["eager", "bfloat16", "none"] == (weights + biases) * 2 / 8 + 64 * 2 + 10 * 2
    assert per_sample["eager", "float32", "dynamic-int8"] == (weights + biases * 4) / 8 + 64 * 4 + 10 * 4
    # ONNX Runtime: the initializers of the exported (then quantized) graph, scales and zero points included.
    assert per_sample["onnxruntime", "float32", "none"] == pytest.approx(per_sample["eager", "float32", "none"])
    assert per_sample["onnxruntime", "float32", "dynamic-int8"] < 0.5 * per_sample["onnxruntime", "float32", "none"]


# ------------------------------------------------------------------------------ ONNX Runtime


@pytest.mark.parametrize(("name", "config"), [
    ("bert-base", {"seq_len": 8, "layers": 1}),
    ("vit-b16", {"image_size": 32, "layers": 1}),
    ("mobilenet-v2", {"image_size": 32}),
])
def test_onnxruntime_matches_eager_at_any_batch_size(name, config, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the export goes: it must not stay
    asset = get_asset(name)
    model = asset.build(config).eval()
    x = model_input(asset.load_data(config, 0).x_test[:5], torch.float32)
    engine = eng.build_engine(asset, model, x[:2], "onnxruntime", "none", threads=1)
    assert list(tmp_path.iterdir()) == []  # the ONNX file was ours, read once, and removed
    with torch.inference_mode():
        for batch in (x[:1], x[:3], x):  # the batch axis is dynamic
            want, got = asset.run_batch(model, batch), engine.forward(batch)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
            assert torch.equal(asset.postprocess(got), asset.postprocess(want))


# ------------------------------------------------------------------------------ skipped rows downstream


def test_skipped_repeats_are_settled_not_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(eng, "_cxx_compiler", lambda: (None, "g++"))
    spec = SweepSpec(name="eng", asset="digits-mlp", task="infer",
                     space={"batch_size": [4], "threads": [1], "engine": ["compile"]}, hardware=["x"], repeats=1,
                     loadgen=FAST, results_uri=str(tmp_path / "results"))
    store = ResultsStore(spec.results_uri)
    lines: list[str] = []
    assert run_sweep_locally(spec, CPU, store, progress=lines.append) == 1
    assert any("skipped: torch.compile's Inductor CPU backend needs a C++ compiler" in line for line in lines)
    df = store.read("eng")
    assert set(df["status"]) == {"skipped"}
    (trial,) = set(df["trial_id"])
    assert store.done("eng", ok_only=True) == {(trial, 0)} and store.repeat_ok("eng", trial, 0) is True
    assert run_sweep_locally(spec, CPU, store, progress=lines.append) == 0  # resume does not run it again
    assert set(flags(df)["flag"]) == {"skipped"}
