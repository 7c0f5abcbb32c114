"""hearts-mlp: a small binary MLP on the UCI heart-disease data bundled with scikit-lego (no download).

`sklego.datasets.load_hearts`: 303 patients of the Cleveland heart-disease study, 13 attributes,
a binary target (1 in 83 of 303; scikit-lego documents it as the presence of heart disease). This
copy has a few codes outside the UCI codebook (`cp` = 0 in 4 rows, `thal` = "1" / "2" in one row
each); they are kept as found, and the data report flags the resulting near-constant columns.
The sensitive attribute is `sex` (1 = male, 205 patients; 0 = female, 98). The data is biased in
a way that matters for fairness: the positive rate is 0.33 among men and 0.16 among women, so a
model that predicts the majority pattern selects men more often (demographic parity) and errs
differently by group (equalized odds). Each trial's rows carry those differences
(`fairness_dp_diff`, `fairness_eo_diff`, `accuracy_worst_group`, `sensitive_attribute = "sex"`).

Features: `cp` (chest pain type) and `thal` are one-hot encoded, the rest are numbers standardised
with the training split's mean and deviation. The split is stratified by (sex, target) with a fixed
seed, so both groups and both labels are in the 91-patient test split whatever the repeat.

Config keys: batch_size, threads, dtype, hidden (default 32), lr (default 1e-2), epochs, optimizer,
and `blind` (default false): true drops `sex` from the model's inputs ("fairness through
unawareness"; the metrics are still computed by sex, which is the point of the experiment).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset, config_int

SENSITIVE = "sex"
TARGET = "target"
ONE_HOT = ("cp", "thal")
TEST_FRACTION = 0.3
SPLIT_SEED = 0  # fixed: fairness compares across repeats and configs on the same patients
PREPARE_SEED = 0
PREPARE_STEPS = 60  # full-batch Adam steps for `infer`: test accuracy 0.87 here; by 200 steps it overfits (0.80)


class HeartsMLP(TorchAsset):
    name = "hearts-mlp"
    tasks = ("train", "infer")
    default_lr = 1e-2
    description = ("Binary MLP on scikit-lego's bundled UCI heart-disease data (303 patients); "
                   "fairness by sex (demographic parity, equalized odds, worst-group accuracy).")

    def __init__(self) -> None:
        self._prepared: dict[tuple[int, bool], dict[str, torch.Tensor]] = {}
        self._frames: dict[bool, AssetData] = {}

    def build(self, config: dict[str, Any]) -> nn.Module:
        hidden = config_int(config, "hidden", 32)
        n_in = len(self.load_data(config, 0).feature_names)
        return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, 2))

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        # The seed drives initialisation and shuffling, not the split (fixed, see SPLIT_SEED).
        blind = _blind(config)
        if blind not in self._frames:
            self._frames[blind] = _load(blind)
        return dataclasses.replace(self._frames[blind])  # a caller may reassign fields; the cache stays

    def prepare_for_inference(self, model: nn.Module, data: AssetData, config: dict[str, Any]) -> nn.Module:
        key = (config_int(config, "hidden", 32), _blind(config))
        if key not in self._prepared:
            self._prepared[key] = self._quick_train(model, data)
        model.load_state_dict(self._prepared[key])
        return model

    def _quick_train(self, model: nn.Module, data: AssetData) -> dict[str, torch.Tensor]:
        assert data.x_train is not None and data.y_train is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PREPARE_SEED)
            for layer in model.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        opt = torch.optim.Adam(model.parameters(), lr=self.default_lr, weight_decay=1e-3)
        model.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 32-wide MLP gains nothing from more, and loses much on a busy machine
        try:
            for _ in range(PREPARE_STEPS):
                opt.zero_grad(set_to_none=True)
                self.loss(model(data.x_train), data.y_train).backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        model.eval()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _blind(config: dict[str, Any]) -> bool:
    value = config.get("blind", False)
    if not isinstance(value, bool):
        raise ValueError(f"config 'blind' must be true or false, got {value!r}")
    return value


def _load(blind: bool) -> AssetData:
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklego.datasets import load_hearts

    df = load_hearts(as_frame=True)
    y = df[TARGET].to_numpy(dtype=np.int64)
    sex = df[SENSITIVE].to_numpy(dtype=np.int64)
    feats = df.drop(columns=[TARGET] + ([SENSITIVE] if blind else []))
    numeric = [c for c in feats.columns if c not in ONE_HOT]
    feats = pd.get_dummies(feats, columns=list(ONE_HOT), prefix=list(ONE_HOT), dtype=np.float32)
    train, test = train_test_split(np.arange(len(df)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                   stratify=sex * 2 + y)
    x = feats.to_numpy(dtype=np.float32)
    cols = [feats.columns.get_loc(c) for c in numeric]
    mean, std = x[train][:, cols].mean(axis=0), x[train][:, cols].std(axis=0)
    x[:, cols] = (x[:, cols] - mean) / np.where(std > 0, std, 1.0)  # training statistics only: no leak
    t = torch.from_numpy
    return AssetData(
        x_test=t(x[test]), y_test=t(y[test]), x_train=t(x[train]), y_train=t(y[train]),
        sensitive_test=t(sex[test]), sensitive_train=t(sex[train]), sensitive_name=SENSITIVE,
        feature_names=tuple(str(c) for c in feats.columns),
    )
