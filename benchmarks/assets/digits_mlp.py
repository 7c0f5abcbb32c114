"""digits-mlp: a small MLP classifier on scikit-learn's bundled 8x8 digits (no download needed).

Config keys: batch_size, threads, dtype, hidden (default 64), and for training lr (default 1e-2),
epochs, optimizer (adam | sgd). For `infer` the model is first trained briefly with a fixed seed,
so the measured model has a real accuracy (about 0.95-0.98) that is the same for every repeat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset, config_int

N_FEATURES = 64
N_CLASSES = 10
TEST_FRACTION = 0.2
PREPARE_SEED = 0  # fixed: the inference model is the same whatever the repeat's seed
PREPARE_EPOCHS = 20


class DigitsMLP(TorchAsset):
    name = "digits-mlp"
    tasks = ("train", "infer")
    sample_shape = (N_FEATURES,)
    default_lr = 1e-2
    description = "MLP classifier on scikit-learn's 8x8 digits (1797 images, 10 classes)."

    def __init__(self) -> None:
        # Prepared weights per (hidden, split seed): a sweep's repeats reuse them instead of retraining.
        self._prepared: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def build(self, config: dict[str, Any]) -> nn.Module:
        hidden = config_int(config, "hidden", 64)
        return nn.Sequential(
            nn.Linear(N_FEATURES, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, N_CLASSES),
        )

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        # The split is fixed (PREPARE_SEED) so that accuracy compares across repeats and configs;
        # the repeat's seed drives initialisation and shuffling, not which images are held out.
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        order = np.random.default_rng(PREPARE_SEED).permutation(len(x))
        n_test = int(round(len(x) * TEST_FRACTION))
        test, train = order[:n_test], order[n_test:]
        return AssetData(
            x_test=torch.from_numpy(x[test]), y_test=torch.from_numpy(y[test]).long(),
            x_train=torch.from_numpy(x[train]), y_train=torch.from_numpy(y[train]).long(),
        )

    def prepare_for_inference(self, model: nn.Module, data: AssetData, config: dict[str, Any]) -> nn.Module:
        key = (config_int(config, "hidden", 64), PREPARE_SEED)
        if key not in self._prepared:
            self._prepared[key] = _quick_train(self, model, data)
        model.load_state_dict(self._prepared[key])
        return model


def _quick_train(asset: DigitsMLP, model: nn.Module, data: AssetData) -> dict[str, torch.Tensor]:
    """Full-precision CPU training with a fixed seed; a copy of the weights is returned."""
    assert data.x_train is not None and data.y_train is not None
    gen = torch.Generator().manual_seed(PREPARE_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PREPARE_SEED)
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide MLP gains nothing from more, and loses much on a busy machine
    try:
        for _ in range(PREPARE_EPOCHS):
            perm = torch.randperm(len(data.x_train), generator=gen)
            for i in range(0, len(perm), 64):
                idx = perm[i : i + 64]
                opt.zero_grad(set_to_none=True)
                asset.loss(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
