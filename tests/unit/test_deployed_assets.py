"""The deployed architectures (resnet50, mobilenet-v2, mobilenet-v3, vit-b16, bert-base): built from
transformers' configs (MobileNetV3 from the paper's table) with random weights (nothing fetched), run through the core, FLOPs and parameters against
the published figures, bytes_per_sample by its formula."""

from __future__ import annotations

import socket

import pytest
import torch

from benchmarks.assets import BUILTIN, get_asset, list_assets
from benchmarks.core import bytes_per_sample, count_flops_per_sample, model_input, run_trial
from benchmarks.spec import LoadGenSettings, TrialSpec
from cluster.hardware import HardwareSpec

pytest.importorskip("transformers")

CPU = HardwareSpec(name="test-cpu-2c", accelerator_type="cpu", cpu_cores=2, price_per_hour_usd=0.1, price_source="test")
DEPLOYED = ("resnet50", "mobilenet-v2", "mobilenet-v3", "vit-b16", "bert-base")
ONE_QUERY = LoadGenSettings(scenarios=["SingleStream"], min_duration_ms=20, min_query_count=4)
# Small shapes: the same code on 2 cores in about a second each (layers != 12 is not the published model).
SMALL = {
    "resnet50": {"image_size": 32},
    "mobilenet-v2": {"image_size": 32},
    "mobilenet-v3": {"image_size": 32},
    "vit-b16": {"image_size": 32, "layers": 1},
    "bert-base": {"seq_len": 8, "layers": 1},
}
# Published figures. torchvision's model cards and the papers give multiply-accumulates (GMACs, often
# written "GFLOPs"); FlopCounterMode counts 2 FLOPs per multiply-add. BERT-base: 2 x 85 M encoder
# weights x 128 tokens + attention (4 x 128^2 x 768 per layer).
PUBLISHED_FLOPS = {
    "resnet50": 2 * 4.089e9,
    "mobilenet-v2": 2 * 0.300e9,
    "mobilenet-v3": 2 * 0.217e9,  # torchvision's mobilenet_v3_large card: 0.22 GFLOPS (MACs)
    "vit-b16": 2 * 17.564e9,
    "bert-base": 2 * 85.0e6 * 128 + 12 * 4 * 128**2 * 768,
}
PUBLISHED_PARAMETERS = {"resnet50": 25_557_032, "mobilenet-v2": 3_504_872, "mobilenet-v3": 5_483_032, "vit-b16": 86_567_656,
                        "bert-base": 109_483_778}  # BERT: 109.48 M encoder + pooler, plus a 2-class head


def make_spec(tmp_path, asset: str, config: dict, loadgen: LoadGenSettings = ONE_QUERY) -> TrialSpec:
    return TrialSpec(sweep_id="unit", trial_id="t1", repeat=0, asset=asset, task="infer", hardware=CPU,
                     config=config, seed=3, loadgen=loadgen, log_dir=str(tmp_path / "logs"))


def test_registered_and_described():
    assert set(DEPLOYED) <= set(BUILTIN)
    listed = {a["name"]: a for a in list_assets()}
    for name in DEPLOYED:
        assert listed[name]["tasks"] == ["infer"] and "random weights" in listed[name]["description"]


@pytest.fixture(scope="module")
def full_size_on_meta():
    """Each model at its published size, built on the meta device (no memory, no init time) with
    every network connection refused: construction from the config class fetches nothing."""

    def refuse(*args, **kwargs):
        raise AssertionError("an asset tried to open a network connection")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    try:
        out = {}
        for name in DEPLOYED:
            asset = get_asset(name)
            with torch.device("meta"):
                out[name] = (asset, asset.build({}))
        return out
    finally:
        mp.undo()


@pytest.mark.parametrize("name", DEPLOYED)
def test_full_size_flops_and_parameters_match_published(full_size_on_meta, name):
    asset, model = full_size_on_meta[name]
    one = asset.load_data({}, 0).x_test[:1]
    flops = count_flops_per_sample(asset, model, one, torch.device("meta"), torch.float32)
    assert flops == pytest.approx(PUBLISHED_FLOPS[name], rel=0.03), f"{name}: {flops / 1e9:.2f} GFLOPs"
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def _transformer_flops(tokens: int, layers: int, hidden: int = 768, inner: int = 3072) -> int:
    """Encoder FLOPs: q, k, v, out projections, the MLP, and attention (q k^T and scores v)."""
    linear = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner)
    return layers * (linear + 4 * tokens * tokens * hidden)


def test_attention_is_counted_on_cpu():
    # On CPU, SDPA runs an op torch's FlopCounterMode lacks; the core counts it (exactly, here).
    vit, bert = get_asset("vit-b16"), get_asset("bert-base")
    cfg = {"image_size": 64, "layers": 2}
    x = vit.load_data(cfg, 0).x_test[:1]
    flops = count_flops_per_sample(vit, vit.build(cfg).eval(), x, torch.device("cpu"), torch.float32)
    patches = (64 // 16) ** 2
    expected = 2 * patches * 768 * 3 * 16 * 16 + _transformer_flops(patches + 1, 2) + 2 * 768 * 1000
    assert flops == expected
    cfg = {"seq_len": 16, "layers": 2}
    ids = bert.load_data(cfg, 0).x_test[:1]
    flops = count_flops_per_sample(bert, bert.build(cfg).eval(), ids, torch.device("cpu"), torch.float32)
    assert flops == _transformer_flops(16, 2) + 2 * 768 * 768 + 2 * 768 * 2  # + pooler + 2-class head


def test_inputs_are_generated_with_realistic_shapes():
    images = get_asset("resnet50").load_data({}, 1)
    assert images.generated and not images.has_labels and images.sample_shape == (3, 224, 224)
    assert images.x_test.dtype == torch.float32
    tokens = get_asset("bert-base").load_data({"seq_len": 32}, 1)
    assert tokens.generated and tokens.sample_shape == (32,) and tokens.x_test.dtype == torch.int64
    assert 0 <= int(tokens.x_test.min()) and int(tokens.x_test.max()) < 30522
    assert torch.equal(tokens.x_test, get_asset("bert-base").load_data({"seq_len": 32}, 1).x_test)
    with pytest.raises(ValueError, match="multiple of 16"):
        get_asset("vit-b16").load_data({"image_size": 100}, 0)
    with pytest.raises(ValueError, match="at most 512"):
        get_asset("bert-base").load_data({"seq_len": 1024}, 0)


def test_token_ids_stay_integers_in_low_precision():
    ids = torch.tensor([[30000, 257, 101]])
    assert torch.equal(model_input(ids, torch.bfloat16), ids)  # bfloat16 would turn 30000 into 29952
    assert model_input(torch.ones(2), torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("name", DEPLOYED)
def test_one_batch_through_the_core(tmp_path, name):
    config = {"batch_size": 2, "threads": 1, **SMALL[name]}
    rows = run_trial(make_spec(tmp_path, name, config))
    (row,) = rows
    assert row["status"] == "ok", row["error"]
    assert row["throughput_samples_per_s"] > 0 and row["flops_per_sample"] > 0
    assert row["accuracy"] is None and row["f1_macro"] is None  # random weights: missing, never invented
    asset = get_asset(name)
    model = asset.build(config)
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    sample = asset.load_data(config, 0).x_test[0]
    outputs = 1000 if name != "bert-base" else 2  # float32 logits of one sample
    expected = row["parameters"] * 4 / 2 + sample.numel() * sample.element_size() + outputs * 4
    assert row["bytes_per_sample"] == pytest.approx(expected)


def test_bytes_per_sample_formula():
    assert bytes_per_sample(4_000, 8, 12, 40) == 4_000 / 8 + 12 + 40
    assert bytes_per_sample(4_000, 1, 12, None) is None


def test_bert_in_bfloat16(tmp_path):
    config = {"batch_size": 2, "threads": 1, "dtype": "bfloat16", **SMALL["bert-base"]}
    (row,) = run_trial(make_spec(tmp_path, "bert-base", config))
    assert row["status"] == "ok", row["error"]
    # bfloat16 weights (2 B), int64 ids, bfloat16 logits
    assert row["bytes_per_sample"] == pytest.approx(row["parameters"] * 2 / 2 + 8 * 8 + 2 * 2)
