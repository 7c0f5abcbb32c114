"""The env_* columns: what machine and software measured a row, and in what state it was.

`static_environment()` is read once per trial (CPU model, GPU name and driver, versions);
`gpu_state()` at the end of each window (SM clock, temperature, throttle reasons); the load average
and background-load flag come from the window itself (benchmarks.sensors.WindowStats).
Ray's version is read from package metadata so that this module never imports Ray.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import socket
from collections.abc import Sequence
from typing import Any

from benchmarks.sensors import WindowStats
from cluster.probe import cpu_count, cpu_model, nvml

# NVML clock-event ("throttle") reason bits and the names written to env_gpu_throttle_reasons.
_THROTTLE_BITS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


def ray_version() -> str:
    """Ray's version when it is installed, else empty; Ray itself is not imported."""
    if importlib.util.find_spec("ray") is None:
        return ""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return ""


def torch_version() -> str:
    try:
        import torch

        return str(torch.__version__)
    except ImportError:
        return ""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def static_environment(gpu_indices: Sequence[int] = ()) -> dict[str, Any]:
    """Columns that do not change during a trial."""
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "env_cpu_model": cpu_model(),
        "env_cpu_count": cpu_count(),
        "env_gpu_name": "",
        "env_gpu_driver": "",
        "env_torch_version": torch_version(),
        "env_ray_version": ray_version(),
        "env_python_version": platform.python_version(),
    }
    nv = nvml()
    if nv is not None and gpu_indices:
        try:
            names = [_text(nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(i))) for i in gpu_indices]
            env["env_gpu_name"] = ",".join(sorted(set(names)))
            env["env_gpu_driver"] = _text(nv.nvmlSystemGetDriverVersion())
        except Exception:
            pass
    return env


def decode_throttle_reasons(mask: int) -> str:
    names = [name for bit, name in _THROTTLE_BITS if mask & bit]
    unknown = mask & ~sum(bit for bit, _ in _THROTTLE_BITS)
    if unknown:
        names.append(f"other_0x{unknown:x}")
    return ",".join(names) if names else "none"


def gpu_state(gpu_indices: Sequence[int]) -> dict[str, Any]:
    """SM clock, temperature and throttle reasons of the trial's first GPU, now (end of a window)."""
    out: dict[str, Any] = {"env_gpu_sm_clock_mhz": None, "env_gpu_temperature_c": None, "env_gpu_throttle_reasons": ""}
    nv = nvml()
    if nv is None or not gpu_indices:
        return out
    try:
        h = nv.nvmlDeviceGetHandleByIndex(gpu_indices[0])
    except Exception:
        return out
    try:
        out["env_gpu_sm_clock_mhz"] = float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
    except Exception:
        pass
    try:
        out["env_gpu_temperature_c"] = float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
    except Exception:
        pass
    for fn in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        if hasattr(nv, fn):
            try:
                out["env_gpu_throttle_reasons"] = decode_throttle_reasons(int(getattr(nv, fn)(h)))
                break
            except Exception:
                continue
    return out


def window_environment(stats: WindowStats, gpu_indices: Sequence[int]) -> dict[str, Any]:
    """The env_* columns that belong to one measured window."""
    return {
        "env_loadavg_before": stats.loadavg_before,
        "env_loadavg_after": stats.loadavg_after,
        "env_background_load": stats.background_load,
        **gpu_state(gpu_indices),
    }
