"""What a measured window costs: energy (NVML, RAPL), CPU and GPU utilisation, peak memory, other load.

`MeasurementWindow` is a context manager around the code being measured. On exit its `stats`
(a `WindowStats`) hold what the sensors of this machine could tell; a quantity without a sensor is
None (energy then says `energy_source="none"`), never 0 and never estimated from a TDP.

Sources, in order of preference:
- energy: NVML total-energy counter (mJ since driver load) of the GPUs the trial uses; else the sum
  of RAPL package zones (`/sys/class/powercap/intel-rapl:N/energy_uj`, wraparound handled);
- process CPU: os.times() (all threads of this process), divided by wall time;
- other processes' CPU: per-process CPU times from /proc (psutil elsewhere), this process excluded;
- peak memory: the kernel's RSS high-water mark (VmHWM) reset at the start of the window through
  /proc/self/clear_refs; where that is not allowed, RSS sampled by a background thread;
- GPU utilisation: NVML utilisation rates sampled by the same background thread.
Nothing here imports torch; NVML use is import-safe and silent without a GPU.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cluster.probe import nvml

RAPL_ROOT = "/sys/class/powercap"
BACKGROUND_CORES = 0.5  # other processes using more than this many cores flag the window
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------- energy


class NvmlEnergy:
    """Sum of NVML total-energy counters (Volta and newer) of the given GPUs, in joules."""

    source = "nvml"

    def __init__(self, handles: Sequence[Any]):
        self._nv = nvml()
        self._handles = list(handles)

    def read_j(self) -> float:
        return sum(self._nv.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles) / 1000.0

    def poll(self) -> None:  # a 64-bit mJ counter does not wrap within a benchmark
        pass


class RaplEnergy:
    """Sum of RAPL package zones in joules, with wraparound of each 32/64-bit µJ counter handled.

    `poll()` is called by the window's sampler thread so that even a counter that wraps more than
    once during a long window is accumulated correctly.
    """

    source = "rapl"

    def __init__(self, zones: Sequence[Path]):
        self._zones = list(zones)
        self._range = [_read_int(z / "max_energy_range_uj") for z in self._zones]
        self._last = [_read_int(z / "energy_uj") for z in self._zones]
        self._total_uj = 0
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            for i, zone in enumerate(self._zones):
                now = _read_int(zone / "energy_uj")
                delta = now - self._last[i]
                if delta < 0:  # the counter wrapped at max_energy_range_uj
                    delta += self._range[i] or 0
                self._total_uj += max(delta, 0)
                self._last[i] = now

    def read_j(self) -> float:
        self.poll()
        return self._total_uj / 1e6


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_zones(root: str = RAPL_ROOT) -> list[Path]:
    """Readable top-level RAPL package zones (`intel-rapl:N`; sub-zones would double count)."""
    zones = []
    for name in sorted(glob.glob(os.path.join(root, "intel-rapl:*"))):
        zone = Path(name)
        if zone.name.count(":") != 1:
            continue
        try:
            _read_int(zone / "energy_uj")
            _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):  # unreadable since the 2020 RAPL side-channel fix, unless root
            continue
        zones.append(zone)
    return zones


def nvml_handles(gpu_indices: Sequence[int]) -> list[Any]:
    nv = nvml()
    if nv is None or not gpu_indices:
        return []
    try:
        return [nv.nvmlDeviceGetHandleByIndex(i) for i in gpu_indices]
    except Exception:
        return []


def visible_gpu_indices(count: int) -> list[int]:
    """NVML indices of the first `count` GPUs this process sees (honours CUDA_VISIBLE_DEVICES)."""
    if count <= 0:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    entries = [e.strip() for e in visible.split(",") if e.strip()][:count]
    out = []
    nv = nvml()
    for entry in entries:
        if entry.isdigit():
            out.append(int(entry))
        elif nv is not None:  # a UUID (GPU-...) or MIG id: find its NVML index
            try:
                out.append(nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetHandleByUUID(entry)))
            except Exception:
                continue
    return out


def energy_counter(gpu_indices: Sequence[int]) -> NvmlEnergy | RaplEnergy | None:
    """The best energy sensor for a window: NVML for GPU trials, RAPL for CPU trials, else None."""
    if gpu_indices:
        handles = nvml_handles(gpu_indices)
        if handles:
            meter = NvmlEnergy(handles)
            try:
                meter.read_j()
                return meter
            except Exception:  # pre-Volta GPUs have no energy counter
                return None
        return None
    zones = rapl_zones()
    return RaplEnergy(zones) if zones else None


# ------------------------------------------------------------------------------------- CPU and memory


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class ProcessCpu:
    """CPU seconds of the other visible processes at one instant (this process excluded).

    `own` is each process's user+system time, `reaped` the CPU of its children that already exited
    (cutime+cstime), `started` its start time in seconds since boot; `uptime` is the instant itself.
    """

    own: dict[int, float]
    reaped: dict[int, float]
    started: dict[int, float]
    uptime: float


def other_processes_cpu() -> ProcessCpu | None:
    """A snapshot of other processes' CPU times from /proc (psutil elsewhere); None if unknowable.

    The measuring process and its direct children (workers it started belong to the trial) are left out.
    """
    me = os.getpid()
    if os.path.isdir("/proc/self"):
        own: dict[int, float] = {}
        reaped: dict[int, float] = {}
        started: dict[int, float] = {}
        try:
            with open("/proc/uptime") as fh:
                uptime = float(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    f = fh.read().rsplit(b")", 1)[1].split()
                # after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14) ... starttime(19)
                if int(f[1]) == me:
                    continue
                pid = int(entry.name)
                own[pid] = (int(f[11]) + int(f[12])) / _CLK_TCK
                reaped[pid] = (int(f[13]) + int(f[14])) / _CLK_TCK
                started[pid] = int(f[19]) / _CLK_TCK
            except (OSError, IndexError, ValueError):
                continue
        return ProcessCpu(own, reaped, started, uptime)
    try:
        import psutil

        own, reaped, started = {}, {}, {}
        boot = psutil.boot_time()
        for proc in psutil.process_iter(["pid", "ppid", "cpu_times", "create_time"]):
            info = proc.info
            if info["pid"] == me or info["ppid"] == me or info["cpu_times"] is None:
                continue
            own[info["pid"]] = info["cpu_times"].user + info["cpu_times"].system
            reaped[info["pid"]] = info["cpu_times"].children_user + info["cpu_times"].children_system
            started[info["pid"]] = (info["create_time"] or boot) - boot
        return ProcessCpu(own, reaped, started, time.time() - boot)
    except Exception:
        return None


def other_cpu_between(before: ProcessCpu, after: ProcessCpu) -> float:
    """CPU seconds other processes used between two snapshots.

    Processes alive at both ends count their difference; those started in between count in full;
    those that exited in between count through their parent's reaped-children time once waited for.
    The reaped time of an exited process includes what it used before the window, which the first
    snapshot holds and is taken off again. A process that started and exited in between, and whose
    parent has not reaped it yet, is missed.
    """
    used = 0.0
    for pid, cpu in after.own.items():
        if pid in before.own and after.started.get(pid) == before.started.get(pid):
            used += max(cpu - before.own[pid], 0.0)
            used += max(after.reaped[pid] - before.reaped.get(pid, 0.0), 0.0)
        elif after.started.get(pid, 0.0) >= before.uptime - 1.0 / _CLK_TCK:
            used += cpu + after.reaped.get(pid, 0.0)
    for pid, cpu in before.own.items():
        if pid not in after.own or after.started.get(pid) != before.started.get(pid):
            used -= cpu + before.reaped.get(pid, 0.0)  # exited: its earlier CPU came back via its parent
    return max(used, 0.0)


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark for this process (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """VmHWM of this process in MiB (the peak since the last reset, or since start)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def loadavg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------------------------- window


@dataclass
class WindowStats:
    """What the sensors saw during one measured window. None: no sensor for it on this machine."""

    start_time: str = ""
    wall_s: float = 0.0
    cpu_util_pct: float | None = None
    other_cpu_cores: float | None = None
    background_load: bool | None = None
    peak_memory_mb: float | None = None
    gpu_util_pct: float | None = None
    energy_j: float | None = None
    energy_source: str = "none"
    avg_power_w: float | None = None
    loadavg_before: float | None = None
    loadavg_after: float | None = None
    samples: int = 0  # background sampler ticks (for debugging a sparse GPU-utilisation mean)
    extra: dict[str, Any] = field(default_factory=dict)


class MeasurementWindow:
    """`with MeasurementWindow(gpu_indices=[0], sync=torch.cuda.synchronize) as w: ...; w.stats`.

    `sync` is called before the clocks and counters are read at both ends, so queued GPU work is
    inside the window. A background thread runs only when some sensor needs sampling (RAPL, GPU
    utilisation, or RSS where the high-water mark cannot be reset).
    """

    def __init__(
        self,
        gpu_indices: Sequence[int] = (),
        sync: Callable[[], None] | None = None,
        interval_s: float = 0.1,
    ):
        self.gpu_indices = list(gpu_indices)
        self.sync = sync
        self.interval_s = interval_s
        self.stats = WindowStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._util: list[float] = []
        self._rss_max: float | None = None

    def __enter__(self) -> MeasurementWindow:
        s = self.stats
        s.loadavg_before = loadavg_1m()
        self._energy = energy_counter(self.gpu_indices)
        self._gpu_handles = nvml_handles(self.gpu_indices)
        self._hwm_reset = reset_peak_rss()
        self._others0 = other_processes_cpu()
        if self.sync:
            self.sync()
        self._e0 = self._energy.read_j() if self._energy else None
        if self._energy is not None or self._gpu_handles or not self._hwm_reset:
            self._rss_max = current_rss_mb()
            self._thread = threading.Thread(target=self._sample, name="benchmatch-sensors", daemon=True)
            self._thread.start()
        s.start_time = utc_now_iso()
        self._cpu0 = process_cpu_s()
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sync:
            self.sync()
        t1 = time.perf_counter_ns()
        cpu1 = process_cpu_s()
        e1 = self._energy.read_j() if self._energy else None
        self._sample_gpu_util()  # the last NVML period, so even a short window has one reading
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        others1 = other_processes_cpu()
        s = self.stats
        s.wall_s = (t1 - self._t0) / 1e9
        if s.wall_s > 0:
            s.cpu_util_pct = 100.0 * (cpu1 - self._cpu0) / s.wall_s
        if self._others0 is not None and others1 is not None and s.wall_s > 0:
            s.other_cpu_cores = other_cpu_between(self._others0, others1) / s.wall_s
            s.background_load = s.other_cpu_cores > BACKGROUND_CORES
        if self._hwm_reset:
            s.peak_memory_mb = peak_rss_mb()
        else:
            s.peak_memory_mb = self._rss_max
        if self._util:
            s.gpu_util_pct = sum(self._util) / len(self._util)
        if self._energy is not None and e1 is not None and self._e0 is not None:
            s.energy_j = max(e1 - self._e0, 0.0)
            s.energy_source = self._energy.source
            s.avg_power_w = s.energy_j / s.wall_s if s.wall_s > 0 else None
        s.loadavg_after = loadavg_1m()

    def _sample_gpu_util(self) -> None:
        nv = nvml() if self._gpu_handles else None
        if nv is None:
            return
        try:
            rates = [nv.nvmlDeviceGetUtilizationRates(h).gpu for h in self._gpu_handles]
            self._util.append(sum(rates) / len(rates))
        except Exception:
            pass

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.stats.samples += 1
            if self._energy is not None:
                try:
                    self._energy.poll()
                except OSError:
                    pass
            self._sample_gpu_util()
            if not self._hwm_reset:
                rss = current_rss_mb()
                if rss is not None:
                    self._rss_max = max(self._rss_max or 0.0, rss)
