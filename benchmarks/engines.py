"""Engines and precisions: how an `infer` trial runs its model (cfg `engine`, `quantization`, `dtype`).

An engine turns the built model into `forward(batch) -> outputs`, the same thing the asset's own
`run_batch(model, batch)` returns, so LoadGen's System Under Test, accuracy and model metrics do not
care which engine runs:

- `eager` (default): `asset.run_batch(model, batch)` in PyTorch.
- `compile`: `torch.compile` (Inductor) of a module whose forward is `asset.run_batch`; compiled in
  set-up for one sample and for a batch, so compilation is never inside a measurement window.
- `onnxruntime`: the same module exported once per trial repeat with `torch.onnx.export` (the
  TorchScript exporter, `dynamo=False`: the dynamo exporter needs onnxscript, which benchmatch does
  not depend on) with a dynamic batch axis, into a private temp dir (mode 0700) that is removed as
  soon as ONNX Runtime has read the file: we write the model and only we read it. It runs in an
  `InferenceSession` on `CPUExecutionProvider` with `intra_op_num_threads` = the trial's threads.

`quantization` is `none` (default) or `dynamic-int8`: weights stored as int8, activations quantized
per batch at run time. In PyTorch (eager, compile) that is `torch.ao.quantization.quantize_dynamic`
on `nn.Linear` (CPU kernels only); in ONNX Runtime `onnxruntime.quantization.quantize_dynamic`
(MatMul, Gemm, Conv, ...). A combination an engine cannot run here raises `Unsupported`; the core
writes the trial's rows with status `skipped` and the reason in `error` (`SUPPORT` lists them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cluster.errors import BenchmatchError

ENGINES = ("eager", "compile", "onnxruntime")
QUANTIZATIONS = ("none", "dynamic-int8")
# torch's dynamic int8 quantizes nn.Linear only: a model whose Linear layers do less than this share
# of its FLOPs (a convnet) would be measured in float32 under an int8 label.
INT8_MIN_LINEAR_SHARE = 0.5
ONNX_OPSET = 17

# The row's `error` for each combination that is skipped, and when (see `unsupported`).
SUPPORT = {
    "train": "engine and quantization are inference settings; training runs in torch eager with float32 weights",
    "onnxruntime+cuda": "the onnxruntime engine runs on ONNX Runtime's CPUExecutionProvider only; use engine eager "
                        "or compile on a GPU",
    "onnxruntime+lowp": "ONNX Runtime's CPUExecutionProvider has no {dtype} kernels for MatMul, Gemm or Conv; "
                        "use dtype float32 with onnxruntime",
    "int8+lowp": "dynamic int8 quantization stores int8 weights and runs float32 activations; it does not combine "
                 "with dtype {dtype} (use dtype float32)",
    "int8+cuda": "torch's dynamic int8 kernels (fbgemm/x86/qnnpack) run on CPU only",
    "int8+no-engine": "this torch build has no quantized CPU engine (torch.backends.quantized.supported_engines "
                      "is {engines})",
    "int8+no-api": "torch {version} has no torch.ao.quantization.quantize_dynamic",
    "int8+few-linear": "torch's dynamic int8 quantizes nn.Linear layers only, and they do {share:.1%} of this "
                       "model's FLOPs (under {min:.0%}): the row would measure a float model under an int8 "
                       "label; use engine onnxruntime (it also quantizes Conv)",
    "compile+no-cxx": "torch.compile's Inductor CPU backend needs a C++ compiler, and none was found ({looked})",
    "compile+no-triton": "torch.compile on a GPU needs triton, which is not installed",
    "onnxruntime+missing": "the onnxruntime engine needs the onnxruntime and onnx packages ({missing} missing)",
    "onnxruntime+output": "the onnxruntime engine needs the asset's run_batch to return one tensor, not {kind}",
}


class Unsupported(BenchmatchError, RuntimeError):
    """A configuration this machine or engine cannot run: the trial's rows are `skipped`, with this reason."""


def config_engine(config: dict[str, Any]) -> str:
    value = config.get("engine", "eager")
    if value not in ENGINES:
        raise ValueError(f"config 'engine' must be one of {list(ENGINES)}, got {value!r}")
    return value


def config_quantization(config: dict[str, Any]) -> str:
    value = config.get("quantization", "none")
    if value not in QUANTIZATIONS:
        raise ValueError(f"config 'quantization' must be one of {list(QUANTIZATIONS)}, got {value!r}")
    return value


def _cxx_compiler() -> tuple[str | None, str]:
    """The C++ compiler Inductor would use (its own lookup when available), and where we looked."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        found = get_cpp_compiler()
        path = shutil.which(found) or (found if os.path.isfile(found) else None)
        return path, found
    except Exception:  # a private API that moved, or its lookup failed: look ourselves
        names = [n for n in (os.environ.get("CXX"), "g++", "c++", "clang++") if n]
        return next((p for p in map(shutil.which, names) if p), None), ", ".join(names)


def unsupported(engine: str, quantization: str, dtype: torch.dtype, device: torch.device, task: str) -> str | None:
    """Why this combination cannot run here (the skipped row's `error`), or None when it can.

    Checked before any model is built, so a skipped trial costs milliseconds; what needs the model
    (how much of it torch's int8 would quantize, the shape of run_batch's output) is checked in
    `build_engine`."""
    if task != "infer":
        return SUPPORT["train"] if (engine, quantization) != ("eager", "none") else None
    dtype_name = str(dtype).removeprefix("torch.")
    if engine == "onnxruntime":
        missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            return SUPPORT["onnxruntime+missing"].format(missing=", ".join(missing))
        if device.type != "cpu":
            return SUPPORT["onnxruntime+cuda"]
        if dtype != torch.float32:
            return SUPPORT["onnxruntime+lowp"].format(dtype=dtype_name)
    if quantization == "dynamic-int8":
        if dtype != torch.float32:
            return SUPPORT["int8+lowp"].format(dtype=dtype_name)
        if engine != "onnxruntime":
            if device.type != "cpu":
                return SUPPORT["int8+cuda"]
            engines = list(torch.backends.quantized.supported_engines)
            if not [e for e in engines if e != "none"]:
                return SUPPORT["int8+no-engine"].format(engines=engines)
            if not hasattr(getattr(torch, "ao", None), "quantization") or not hasattr(
                    torch.ao.quantization, "quantize_dynamic"):
                return SUPPORT["int8+no-api"].format(version=torch.__version__)
    if engine == "compile":
        if device.type == "cpu":
            path, looked = _cxx_compiler()
            if path is None:
                return SUPPORT["compile+no-cxx"].format(looked=looked)
        elif importlib.util.find_spec("triton") is None:
            return SUPPORT["compile+no-triton"]
    return None


class AssetForward(nn.Module):
    """`asset.run_batch(model, batch)` as a module: what torch.compile compiles and ONNX exports, so
    whatever the asset does around the model (masks, `.logits`) is part of the graph too."""

    def __init__(self, asset: Any, model: nn.Module):
        super().__init__()
        self.asset = asset
        self.model = model

    def forward(self, batch: torch.Tensor) -> Any:
        return self.asset.run_batch(self.model, batch)


@dataclass
class Engine:
    """A model ready to measure: `forward(batch)` returns what `asset.run_batch` would."""

    name: str
    quantization: str
    forward: Callable[[torch.Tensor], Any]
    weight_bytes: int  # bytes of the weights the engine reads per batch, at its precision
    model: nn.Module  # the module the engine runs (quantized for torch int8); FLOPs come from the float one


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of a torch model's weights as stored: parameters, plus the packed int8 weights (and
    float biases) of dynamically quantized Linear layers, which are not parameters."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and callable(getattr(module, "weight", None)):
            weight, bias = module.weight(), module.bias()
            total += weight.numel() * weight.element_size()
            total += bias.numel() * bias.element_size() if bias is not None else 0
    return total


def linear_flop_share(asset: Any, model: nn.Module, one: torch.Tensor, flops_per_sample: float | None) -> float:
    """The share of one sample's forward FLOPs done in nn.Linear layers (2 x in x out per row, read by
    forward hooks). Without a FLOP count, the share of the parameters they hold stands in."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not flops_per_sample:
        total = sum(p.numel() for p in model.parameters())
        return sum(m.weight.numel() for m in linears) / total if total else 0.0
    done = 0

    def count(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal done
        done += 2 * inputs[0].numel() * module.out_features

    handles = [m.register_forward_hook(count) for m in linears]
    try:
        with torch.inference_mode():
            asset.run_batch(model, one)
    finally:
        for h in handles:
            h.remove()
    return min(done / flops_per_sample, 1.0)


def quantize_linear_int8(model: nn.Module, linear_share: float = 1.0) -> nn.Module:
    """torch's dynamic int8 of every nn.Linear (a copy); Unsupported when Linear layers do a minority
    of the work (`linear_share`, from `linear_flop_share`)."""
    share = linear_share
    if share < INT8_MIN_LINEAR_SHARE:
        raise Unsupported(SUPPORT["int8+few-linear"].format(share=share, min=INT8_MIN_LINEAR_SHARE))
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def build_engine(asset: Any, model: nn.Module, example: torch.Tensor, engine: str, quantization: str,
                 threads: int, flops_per_sample: float | None = None) -> Engine:
    """The engine for a built, eval-mode model on its device and dtype; `example` is a batch of at
    least two samples as the model takes them (compilation and export are traced on it);
    `flops_per_sample` (the core's count) judges whether torch's int8 would quantize the model."""
    if engine == "onnxruntime":
        return _onnxruntime(asset, model, example, quantization, threads)
    if quantization == "dynamic-int8":
        model = quantize_linear_int8(model, linear_flop_share(asset, model, example[:1], flops_per_sample))
    if engine == "compile":
        return _compiled(asset, model, example, quantization)

    def forward(batch: torch.Tensor) -> Any:
        return asset.run_batch(model, batch)

    return Engine("eager", quantization, forward, parameter_bytes(model), model)


def _compiled(asset: Any, model: nn.Module, example: torch.Tensor, quantization: str) -> Engine:
    # A fresh start per trial: dynamo keeps its graphs per code object, so every trial's model would
    # add guards to the same AssetForward.forward until its recompile limit (8) sends later trials
    # silently back to eager under the label `compile` (seen in a sweep of several configurations).
    torch.compiler.reset()
    compiled = torch.compile(AssetForward(asset, model))
    # Compile now, not in LoadGen's windows: one sample, then a batch (the second shape makes the
    # batch dimension dynamic, so Server's odd batch sizes reuse the graph). Under inference_mode,
    # as the predictor runs (the compiled graph is guarded on the grad mode).
    with torch.inference_mode():
        compiled(example[:1])
        compiled(example)
    return Engine("compile", quantization, compiled, parameter_bytes(model), model)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and the quantizer's advice (deprecation, tracer and pre-processing notes)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def onnx_weight_bytes(onnx_model: Any) -> int:
    """Bytes of an ONNX model's initializers (its weights, int8 ones after quantization)."""
    from onnx import helper

    total = 0
    for init in onnx_model.graph.initializer:
        itemsize = helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        total += math.prod(init.dims) * itemsize
    return total


def _onnxruntime(asset: Any, model: nn.Module, example: torch.Tensor, quantization: str, threads: int) -> Engine:
    import onnx
    import onnxruntime as ort

    wrapper = AssetForward(asset, model).eval()
    with torch.no_grad():
        out = wrapper(example)
    if not isinstance(out, torch.Tensor):
        raise Unsupported(SUPPORT["onnxruntime+output"].format(kind=type(out).__name__))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Private: mkdtemp makes the folder 0700. The file is ours, read once by ONNX Runtime, then removed.
    with tempfile.TemporaryDirectory(prefix="benchmatch-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        # The TorchScript exporter: `dynamo=False` where torch has the switch (2.5+; it is the default before).
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        with _quiet(), torch.no_grad():
            torch.onnx.export(wrapper, (example,), str(path), opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=["output"], do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **legacy)
        if quantization == "dynamic-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(tmp) / "model.int8.onnx"
            with _quiet():
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            path = quantized
        weight_bytes = onnx_weight_bytes(onnx.load(str(path)))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    run = session.run

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run(None, {input_name: batch.numpy()})[0])

    with torch.inference_mode():  # the first runs allocate ONNX Runtime's arenas: not in a window
        forward(example[:1])
        forward(example)
    return Engine("onnxruntime", quantization, forward, weight_bytes, model)


__all__ = ["ENGINES", "QUANTIZATIONS", "SUPPORT", "AssetForward", "Engine", "Unsupported", "build_engine",
           "config_engine", "config_quantization", "linear_flop_share", "onnx_weight_bytes", "parameter_bytes",
           "quantize_linear_int8", "unsupported"]
