"""tiny-cnn: a small convolutional network on generated 3x32x32 inputs (inference only).

It has no dataset, so its rows carry no accuracy (missing, not 0). Config keys: batch_size, threads,
dtype, width (channels of the first conv layer, default 16; later layers double it).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from benchmarks.assets.base import TorchAsset, config_int


class TinyCNN(TorchAsset):
    name = "tiny-cnn"
    tasks = ("infer",)
    sample_shape = (3, 32, 32)
    generated_samples = 256
    description = "Three conv layers + linear head on generated 3x32x32 inputs (no labels)."

    def build(self, config: dict[str, Any]) -> nn.Module:
        w = config_int(config, "width", 16)
        return nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, 10),
        )
