"""GPUs through NVML (``nvidia-ml-py``: every GPU, the driver and CUDA versions), and whether
llama-cpp-python was built with GPU offload. Absent GPU or CPU-only build: a ``skip`` with the
reason on the cpu profile, a ``fail`` when the gpu profile asks for them.

``read_gpus`` / ``gpu_processes`` are the one place NVML is called (the post-bring-up offload gate
and the load runbook's GPU-memory watch use them too); tests fake NVML there and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.result import CheckResult, Stage, Status, timed


class GpuUnavailable(RuntimeError):
    """NVML cannot be used: no library, no driver, or no GPU."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_used_mib: float
    memory_total_mib: float
    utilization_pct: float | None

    @property
    def memory_pct(self) -> float:
        return 100.0 * self.memory_used_mib / self.memory_total_mib if self.memory_total_mib else 0.0

    def describe(self) -> str:
        util = "-" if self.utilization_pct is None else f"{self.utilization_pct:.0f} %"
        return (f"GPU {self.index} {self.name}: memory {self.memory_pct:.0f} % "
                f"({self.memory_used_mib:.0f}/{self.memory_total_mib:.0f} MiB), util {util}")


@dataclass(frozen=True)
class GpuInventory:
    driver: str
    cuda: str  # the CUDA version the driver supports, e.g. "12.4"
    gpus: list[Gpu]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml():
    import pynvml  # nvidia-ml-py: imports without a GPU, fails at nvmlInit

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise GpuUnavailable(f"NVML: {exc}") from None
    return pynvml


def read_gpus() -> GpuInventory:
    """Every GPU NVML sees, with the driver and CUDA versions; ``GpuUnavailable`` when none."""
    nv = _nvml()
    try:
        cuda = nv.nvmlSystemGetCudaDriverVersion_v2()
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nv.NVMLError:
                util = None
            gpus.append(Gpu(i, _text(nv.nvmlDeviceGetName(handle)), mem.used / 2**20, mem.total / 2**20, util))
        inventory = GpuInventory(_text(nv.nvmlSystemGetDriverVersion()), f"{cuda // 1000}.{cuda % 1000 // 10}", gpus)
    except nv.NVMLError as exc:
        raise GpuUnavailable(f"NVML: {exc}") from None
    finally:
        nv.nvmlShutdown()
    if not inventory.gpus:
        raise GpuUnavailable("NVML sees no GPU")
    return inventory


def gpu_processes() -> dict[int, float]:
    """MiB of GPU memory held by each process (pid) on any GPU, as NVML reports compute processes."""
    nv = _nvml()
    held: dict[int, float] = {}
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            for proc in nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(i)):
                used = proc.usedGpuMemory or 0  # None where the driver does not say
                held[proc.pid] = held.get(proc.pid, 0.0) + used / 2**20
    except nv.NVMLError as exc:
        raise GpuUnavailable(f"NVML: {exc}") from None
    finally:
        nv.nvmlShutdown()
    return held


def check_gpu(required: bool, max_memory_pct: float = 90.0) -> CheckResult:
    """Every GPU present, its memory below ``max_memory_pct``; driver and CUDA versions."""
    target = f"every GPU memory < {max_memory_pct:g} %"
    with timed() as t:
        try:
            inv = read_gpus()
        except GpuUnavailable as exc:
            return CheckResult("env.gpu", "GPUs, driver and CUDA (NVML)", Stage.ENVIRONMENT,
                               Status.FAIL if required else Status.SKIP, target="NVML sees a GPU",
                               measured="no GPU", detail=f"{exc}; " + (
                                   "the gpu profile needs one" if required else "cpu profile"), **t.fields())
    full = [g for g in inv.gpus if g.memory_pct >= max_memory_pct]
    return CheckResult("env.gpu", "GPUs, driver and CUDA (NVML)", Stage.ENVIRONMENT,
                       Status.FAIL if full else Status.PASS, target=target,
                       measured=f"{len(inv.gpus)} GPU(s), driver {inv.driver}, CUDA {inv.cuda}",
                       detail="\n".join(g.describe() for g in inv.gpus), **t.fields())


def check_gpu_offload(required: bool) -> CheckResult:
    """llama-cpp-python was built with a GPU backend (``llama_supports_gpu_offload()``): a CPU-only
    build silently runs every layer on the CPU whatever ``n_gpu_layers`` says."""
    with timed() as t:
        try:
            import llama_cpp

            supported = bool(llama_cpp.llama_supports_gpu_offload())
            version = getattr(llama_cpp, "__version__", "?")
        except (ImportError, OSError, AttributeError) as exc:
            supported, version = False, f"not loadable ({type(exc).__name__}: {exc})"
    status = Status.PASS if supported else (Status.FAIL if required else Status.SKIP)
    return CheckResult("env.gpu.offload", "llama-cpp-python built with GPU offload", Stage.ENVIRONMENT, status,
                       target="llama_supports_gpu_offload() is true" + (" (gpu profile)" if required else ""),
                       measured=f"llama-cpp-python {version}: " + ("GPU offload" if supported else "CPU only"),
                       detail="" if supported else ("rebuild with SUITE_LLAMA_BUILD=cuda bash scripts/install.sh"
                                                    if required else "cpu profile: layers stay on the CPU"),
                       **t.fields())
