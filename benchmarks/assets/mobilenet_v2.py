"""mobilenet-v2: MobileNetV2 (width 1.0, ImageNet head) with random weights, on generated images (inference only).

Built by transformers' `MobileNetV2ForImageClassification` from `MobileNetV2Config` (depth multiplier
1.0, symmetric padding as torchvision's `mobilenet_v2`, 1000 classes): 3.5 M parameters, 300 MMACs =
0.6 GFLOPs per 224x224 image. MobileNetV3 is not in transformers; mobilenet-v3 (mobilenet_v3.py) builds it from
its paper. Nothing is downloaded; rows carry no accuracy. Config keys: batch_size, threads, dtype,
engine, quantization, image_size (default 224; at least 32).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from benchmarks.assets.hf import IMAGENET_CLASSES, ImageClassifier, Logits, transformers_class


class MobileNetV2(ImageClassifier):
    name = "mobilenet-v2"
    description = ("MobileNetV2 1.0 (transformers, 1000 classes), random weights, on generated 3 x image_size^2 "
                   "images (default 224); no labels. MobileNetV3 is not in transformers")

    def build(self, config: dict[str, Any]) -> nn.Module:
        size = self.image_size(config)
        # tf_padding=False: torchvision's symmetric padding (the Google checkpoints' TF "SAME" padding adds pad ops).
        cfg = transformers_class("MobileNetV2Config")(num_labels=IMAGENET_CLASSES, image_size=size, tf_padding=False)
        return Logits(transformers_class("MobileNetV2ForImageClassification")(cfg), "pixel_values")
