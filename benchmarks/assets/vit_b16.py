"""vit-b16: ViT-B/16 (ImageNet head) with random weights, on generated images (inference only).

Built by transformers' `ViTForImageClassification` from `ViTConfig()`, whose defaults are ViT-Base
with 16x16 patches: 12 layers, hidden 768, 12 heads, 86.6 M parameters, 17.6 GMACs = 35.1 GFLOPs
per 224x224 image (attention runs in torch's scaled_dot_product_attention). Nothing is downloaded;
rows carry no accuracy. Config keys: batch_size, threads, dtype, engine, quantization, image_size
(default 224, a multiple of 16), layers (default 12; any other value is not the published model,
for quick tests only).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from benchmarks.assets.base import config_int
from benchmarks.assets.hf import IMAGENET_CLASSES, ImageClassifier, Logits, transformers_class

PATCH = 16


class ViTB16(ImageClassifier):
    name = "vit-b16"
    description = ("ViT-B/16 (transformers ViTConfig defaults, 1000 classes), random weights, on generated "
                   "3 x image_size^2 images (default 224); no labels. cfg layers != 12 is not the published model")
    min_image_size = PATCH

    def image_size(self, config: dict[str, Any]) -> int:
        size = super().image_size(config)
        if size % PATCH:
            raise ValueError(f"asset {self.name!r}: config 'image_size' must be a multiple of {PATCH}, got {size}")
        return size

    def build(self, config: dict[str, Any]) -> nn.Module:
        cfg = transformers_class("ViTConfig")(num_labels=IMAGENET_CLASSES, image_size=self.image_size(config),
                                              patch_size=PATCH, num_hidden_layers=config_int(config, "layers", 12))
        return Logits(transformers_class("ViTForImageClassification")(cfg), "pixel_values")
