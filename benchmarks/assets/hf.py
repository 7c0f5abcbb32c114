"""What the deployed-model assets share (resnet50, mobilenet-v2, vit-b16, bert-base).

Each is a published architecture built by Hugging Face transformers from its configuration class,
with random weights: never `from_pretrained`, so nothing is downloaded or read from disk, and no
hub is contacted. Random weights mean generated inputs without labels (`AssetData.generated`), so a
row's accuracy is missing, never invented. transformers is imported when a model is built (the
import takes seconds), not when the asset list is read. Why transformers and not torchvision:
docs/decisions.md.

Shape knobs keep tests fast on small machines; a knob that changes the architecture itself
(`layers`) says so in the asset's description: the model is then not the published one.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset, config_int, generated_data

IMAGENET_CLASSES = 1000


def transformers_class(name: str) -> Any:
    """A class of the transformers package, with an install hint when it is missing."""
    try:
        module = importlib.import_module("transformers")
    except ImportError as exc:
        raise RuntimeError(f"this asset is built by Hugging Face transformers, which is not installed "
                           f"({exc}); pip install 'transformers>=4.45'") from exc
    return getattr(module, name)


class Logits(nn.Module):
    """A transformers model called with one tensor (as `input_kw`), returning only its logits: what
    `postprocess` turns into a class, and a plain tensor-to-tensor module for compile and ONNX export."""

    def __init__(self, model: nn.Module, input_kw: str):
        super().__init__()
        self.model = model
        self.input_kw = input_kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_kw: x}).logits


class ImageClassifier(TorchAsset):
    """An ImageNet classifier on generated 3 x image_size x image_size inputs (normal noise)."""

    tasks = ("infer",)
    default_image_size = 224
    min_image_size = 32

    def image_size(self, config: dict[str, Any]) -> int:
        size = config_int(config, "image_size", self.default_image_size)
        if size < self.min_image_size:
            raise ValueError(f"asset {self.name!r}: config 'image_size' must be at least {self.min_image_size}, got {size}")
        return size

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        size = self.image_size(config)
        return generated_data((3, size, size), self.generated_samples, seed)
