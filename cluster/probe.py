"""Describe the machine this process runs on as a HardwareSpec: CPU, memory and NVIDIA GPUs (NVML).

Everything here is import-safe and silent without a GPU: NVML is initialised lazily, once, and any
NVML failure means "no GPUs", never an exception. Numbers the machine cannot tell (price, peak
FLOP/s) stay None. `python -m cluster.probe` prints the spec as YAML.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import threading
from typing import Any

import yaml

from cluster.hardware import HardwareSpec

_NVML_LOCK = threading.Lock()
_NVML_STATE: dict[str, Any] = {}

# Ray's own rule (ray/_private/accelerators/nvidia_gpu.py): the first upper-case/numeric model token
# after the vendor word, e.g. "NVIDIA H100 80GB HBM3" -> "H100", "Tesla V100-SXM2-16GB" -> "V100",
# "NVIDIA RTX PRO 6000 ..." -> "RTX-PRO-6000"; consumer cards fall back to the hyphenated name.
_RAY_GPU_NAME = re.compile(r"\w+\s+((?:[A-Z]+\s+)*[A-Z0-9]*\d[A-Z0-9]*)")


def nvml() -> Any | None:
    """The initialised `pynvml` module, or None where there is no NVIDIA driver (cached, silent)."""
    with _NVML_LOCK:
        if "module" not in _NVML_STATE:
            module = None
            try:
                import pynvml

                pynvml.nvmlInit()
                module = pynvml
            except Exception:  # no library, no driver, no permission: all mean "no NVML here"
                module = None
            _NVML_STATE["module"] = module
        return _NVML_STATE["module"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def accelerator_type_from_name(gpu_name: str) -> str:
    """Ray's accelerator type for an NVML GPU name ("NVIDIA A10G" -> "A10G")."""
    match = _RAY_GPU_NAME.match(gpu_name)
    result = match.group(1).replace(" ", "-") if match else None
    if result and len(result) > 1:
        return result
    cleaned = re.sub(r"^NVIDIA\s+", "", gpu_name).strip()
    return cleaned.replace(" ", "-") if cleaned else "unknown-gpu"


def gpu_info() -> list[dict[str, Any]]:
    """One dict per NVIDIA GPU on the machine (NVML order); an empty list without NVML."""
    nv = nvml()
    if nv is None:
        return []
    count = _try(nv.nvmlDeviceGetCount) or 0
    driver = _text(_try(nv.nvmlSystemGetDriverVersion) or "")
    out = []
    for i in range(count):
        h = _try(nv.nvmlDeviceGetHandleByIndex, i)
        if h is None:
            continue
        name = _text(_try(nv.nvmlDeviceGetName, h) or "")
        mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
        limit_mw = _try(nv.nvmlDeviceGetPowerManagementDefaultLimit, h)
        out.append({
            "index": i,
            "name": name,
            "uuid": _text(_try(nv.nvmlDeviceGetUUID, h) or ""),
            "accelerator_type": accelerator_type_from_name(name) if name else "unknown-gpu",
            "memory_total_mb": mem.total / 2**20 if mem is not None else None,
            "driver": driver,
            "default_power_limit_w": limit_mw / 1000 if limit_mw else None,
            "max_sm_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        })
    return out


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        return None


def probe_local(name: str | None = None) -> HardwareSpec:
    """A HardwareSpec for this machine. Price and peak FLOP/s are unknown here and stay None."""
    gpus = gpu_info()
    cores = cpu_count()
    cpu = cpu_model()
    if gpus:
        accel = gpus[0]["accelerator_type"]
        default_name = f"local-{len(gpus)}x{accel}"
        limits = [g["default_power_limit_w"] for g in gpus]
        # The board's default power limit as NVML reports it (a device property, not a guess).
        tdp = sum(limits) if all(v is not None for v in limits) else None
    else:
        accel, default_name, tdp = "cpu", f"local-cpu-{cores}c", None
    return HardwareSpec(
        name=name or default_name,
        accelerator_type=accel,
        device_count=len(gpus),
        cpu_cores=cores,
        memory_gb=memory_gb(),
        tdp_w=tdp,
        local=True,
        notes=f"Probed on {socket.gethostname()}: {cpu}" + (f"; {len(gpus)} x {gpus[0]['name']}" if gpus else ""),
        extra={
            "cpu_model": cpu,
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "gpus": gpus,
        },
    )


def to_yaml(spec: HardwareSpec) -> str:
    """The spec as a catalog entry (`hardware: [ ... ]`), loadable by cluster.hardware.load_catalog."""
    return yaml.safe_dump({"hardware": [spec.to_dict()]}, sort_keys=False)


def main() -> None:
    print(to_yaml(probe_local()), end="")


if __name__ == "__main__":
    main()
