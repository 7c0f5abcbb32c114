"""mobilenet-v3: MobileNetV3-Large (width 1.0, ImageNet head) with random weights, on generated images.

Neither transformers nor a torchvision that imports beside the CPU torch wheel has it, so it is
built here from the architecture table of Howard et al., "Searching for MobileNetV3" (ICCV 2019),
Table 1, with the usual implementation choices (BatchNorm eps 1e-3, squeeze-excite to a quarter of
the expanded channels rounded to 8, hard-sigmoid gate, 1280-wide head, dropout 0.2): 5,483,032
parameters and 0.22 GMACs (0.44 GFLOPs) per 224 x 224 image, the figures torchvision publishes for
its `mobilenet_v3_large` (tests/unit/test_deployed_assets.py checks both). Nothing is downloaded;
rows carry no accuracy. Config keys: batch_size, threads, dtype, engine, quantization, image_size
(default 224; at least 32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks.assets.hf import IMAGENET_CLASSES, ImageClassifier

# (kernel, expanded channels, output channels, squeeze-excite, activation, stride): Table 1, bneck rows
LARGE = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)
STEM, LAST_CONV, HEAD = 16, 960, 1280


def _divisible(v: float, by: int = 8) -> int:
    out = max(by, int(v + by / 2) // by * by)
    return out + by if out < 0.9 * v else out  # never round down by more than 10%


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, act: str | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    if act is not None:
        layers.append(nn.Hardswish() if act == "HS" else nn.ReLU())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        squeezed = _divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))


class Bneck(nn.Module):
    """Inverted residual: 1x1 expand (when it widens), depthwise, squeeze-excite, 1x1 project."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn(cin, expanded, 1, 1, 1, act))
        layers.append(_conv_bn(expanded, expanded, kernel, stride, expanded, act))
        if se:
            layers.append(SqueezeExcite(expanded))
        layers.append(_conv_bn(expanded, cout, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v3_large(classes: int = IMAGENET_CLASSES) -> nn.Module:
    layers: list[nn.Module] = [_conv_bn(3, STEM, 3, 2, 1, "HS")]
    cin = STEM
    for kernel, expanded, cout, se, act, stride in LARGE:
        layers.append(Bneck(cin, kernel, expanded, cout, se, act, stride))
        cin = cout
    layers.append(_conv_bn(cin, LAST_CONV, 1, 1, 1, "HS"))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(LAST_CONV, HEAD), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(HEAD, classes))


class MobileNetV3(ImageClassifier):
    name = "mobilenet-v3"
    description = ("MobileNetV3-Large 1.0 (1000 classes, built from the paper's table), random weights, on generated "
                   "3 x image_size^2 images (default 224); no labels")

    def build(self, config: dict[str, Any]) -> nn.Module:
        self.image_size(config)
        return mobilenet_v3_large()
