"""resnet50: ResNet-50 (v1.5, ImageNet head) with random weights, on generated images (inference only).

Built by transformers' `ResNetForImageClassification` from `ResNetConfig()`, whose defaults are
ResNet-50: bottleneck blocks of depths 3-4-6-3, stride in the 3x3 conv (v1.5, as torchvision's
`resnet50`), 25.6 M parameters, 4.1 GMACs = 8.2 GFLOPs per 224x224 image. Nothing is downloaded;
rows carry no accuracy (random weights, no labels). Config keys: batch_size, threads, dtype, engine,
quantization, image_size (default 224; at least 32; FLOPs scale with its square).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from benchmarks.assets.hf import IMAGENET_CLASSES, ImageClassifier, Logits, transformers_class


class ResNet50(ImageClassifier):
    name = "resnet50"
    description = ("ResNet-50 v1.5 (transformers ResNetConfig defaults, 1000 classes), random weights, on generated "
                   "3 x image_size^2 images (default 224); no labels")

    def build(self, config: dict[str, Any]) -> nn.Module:
        self.image_size(config)  # checked here too: the convnet itself takes any size (adaptive pooling)
        cfg = transformers_class("ResNetConfig")(num_labels=IMAGENET_CLASSES)
        return Logits(transformers_class("ResNetForImageClassification")(cfg), "pixel_values")
