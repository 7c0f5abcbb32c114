"""The asset protocol: what the measurement core needs from a model to benchmark it.

An asset is a small object with a `name`, the `tasks` it supports, and five methods: `build` makes
the torch module from a configuration, `load_data` returns its data (real or generated),
`run_batch` runs one forward pass, `postprocess` turns outputs into one integer prediction per
sample (what the System Under Test hands back to LoadGen), and `evaluate` scores a model on held-out
data. `TorchAsset` gives sensible defaults for classifiers, so a user's own asset is usually a
`build` and a `load_data` (see docs/measurement.md and tests/fixtures/user_asset.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class AssetData:
    """Tensors an asset benchmarks on. Labels are None where the inputs are generated."""

    x_test: torch.Tensor
    y_test: torch.Tensor | None = None
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    generated: bool = False  # True: random inputs of the asset's sample shape; accuracy is missing
    # Optional, for fairness and data metrics: one sensitive value per sample (e.g. sex) and names.
    sensitive_test: torch.Tensor | None = None
    sensitive_train: torch.Tensor | None = None
    sensitive_name: str = ""
    feature_names: tuple[str, ...] = ()

    @property
    def has_labels(self) -> bool:
        return self.y_test is not None and not self.generated

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])


@runtime_checkable
class Asset(Protocol):
    """What the core calls. Any object with these attributes is an asset (no base class needed)."""

    name: str
    tasks: tuple[str, ...]

    def build(self, config: dict[str, Any]) -> nn.Module: ...

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData: ...

    def run_batch(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor: ...

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module, data: AssetData) -> dict[str, float]: ...


class TorchAsset:
    """Defaults for a classifier: forward pass, argmax predictions, top-1 accuracy, cross-entropy.

    Subclasses set `name`, `tasks`, `sample_shape` and implement `build`; `load_data` defaults to
    generated inputs of `sample_shape` (no labels, so accuracy is missing rather than invented).
    """

    name: str = "unnamed"
    tasks: tuple[str, ...] = ("infer",)
    sample_shape: tuple[int, ...] = ()
    generated_samples: int = 256
    description: str = ""

    def build(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError(f"asset {self.name!r} must implement build(config)")

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        return generated_data(self.sample_shape, self.generated_samples, seed)

    def prepare_for_inference(self, model: nn.Module, data: AssetData, config: dict[str, Any]) -> nn.Module:
        """Hook run before an `infer` trial measures (e.g. load or quickly train weights)."""
        return model

    def run_batch(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(batch)

    def postprocess(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=-1) if outputs.dim() > 1 else outputs

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs.float(), targets)

    def evaluate(self, model: nn.Module, data: AssetData, batch_size: int = 512) -> dict[str, float]:
        if not data.has_labels:
            return {}
        return {"accuracy": top1_accuracy(self, model, data.x_test, data.y_test, batch_size)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": list(self.tasks), "description": self.description}


def generated_data(sample_shape: tuple[int, ...], count: int, seed: int) -> AssetData:
    """Random normal inputs, seeded; used where an asset has no dataset of its own."""
    gen = torch.Generator().manual_seed(seed)
    return AssetData(x_test=torch.randn((count, *sample_shape), generator=gen), generated=True)


@torch.inference_mode()
def top1_accuracy(asset: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of samples whose prediction equals the label, in the model's own device and dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        xb = xb.to(device=device, dtype=dtype) if xb.is_floating_point() else xb.to(device)  # token ids stay ids
        pred = asset.postprocess(asset.run_batch(model, xb)).cpu()
        correct += int((pred == y[i : i + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / len(x)


def config_int(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config '{key}' must be a positive integer, got {value!r}")
    return value


def config_dtype(config: dict[str, Any]) -> torch.dtype:
    name = config.get("dtype", "float32")
    if name not in DTYPES:
        raise ValueError(f"config 'dtype' must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]
