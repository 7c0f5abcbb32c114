"""The asset registry and the built-in assets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.assets import BUILTIN, get_asset, list_assets
from benchmarks.assets.base import Asset, config_dtype

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_builtins_follow_the_protocol():
    for name in BUILTIN:
        asset = get_asset(name)
        assert isinstance(asset, Asset) and asset.name == name
    names = {a["name"] for a in list_assets()}
    assert names == set(BUILTIN)
    assert names >= {"digits-mlp", "hearts-mlp", "tiny-cnn", "resnet50", "mobilenet-v2", "vit-b16", "bert-base"}


def test_unknown_asset_message_lists_known():
    with pytest.raises(ValueError, match=r"unknown asset 'resnet'.*\[.*'digits-mlp', .*'hearts-mlp', .*'tiny-cnn'.*\]"):
        get_asset("resnet")


def test_digits_data_split_is_fixed_and_disjoint():
    a = get_asset("digits-mlp")
    d1, d2 = a.load_data({}, 0), a.load_data({}, 7)
    assert d1.x_test.shape == (359, 64) and d1.x_train.shape == (1438, 64)
    assert torch.equal(d1.x_test, d2.x_test) and d1.has_labels
    assert float(d1.x_train.max()) <= 1.0


def test_digits_prepared_model_is_accurate():
    a = get_asset("digits-mlp")
    data = a.load_data({}, 0)
    model = a.prepare_for_inference(a.build({"hidden": 32}), data, {"hidden": 32})
    assert a.evaluate(model, data)["accuracy"] > 0.9


def test_tiny_cnn_shapes_and_generated_inputs():
    a = get_asset("tiny-cnn")
    data = a.load_data({}, 1)
    assert data.generated and not data.has_labels and data.sample_shape == (3, 32, 32)
    out = a.run_batch(a.build({"width": 8}), data.x_test[:5])
    assert out.shape == (5, 10) and a.postprocess(out).shape == (5,)
    assert a.evaluate(a.build({}), data) == {}
    assert torch.equal(data.x_test, a.load_data({}, 1).x_test)


def test_user_asset_from_file_and_module(monkeypatch):
    by_file = get_asset(f"{FIXTURES / 'user_asset.py'}:Blobs")
    assert by_file.name == "blobs-logreg" and "infer" in by_file.tasks
    monkeypatch.syspath_prepend(str(FIXTURES))
    by_module = get_asset("user_asset:blobs")
    assert by_module.name == "blobs-logreg"


@pytest.mark.parametrize("ref, msg", [
    ("no_such_module_xyz:Thing", "cannot import module"),
    ("json:NoSuchThing", "has no attribute"),
    ("json:dumps", "without arguments"),
    ("json:JSONDecoder", "lacks"),
    ("/nonexistent/file.py:X", "not found"),
])
def test_bad_user_asset_refs(ref, msg):
    with pytest.raises(ValueError, match=msg):
        get_asset(ref)


def test_config_validation():
    assert config_dtype({"dtype": "bfloat16"}) is torch.bfloat16
    with pytest.raises(ValueError, match="'dtype' must be one of"):
        config_dtype({"dtype": "fp8"})
    with pytest.raises(ValueError, match="'hidden' must be a positive integer"):
        get_asset("digits-mlp").build({"hidden": 0})
