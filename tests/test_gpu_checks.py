"""GPU checks: NVML inventory, the llama-cpp-python build, each inference service's layer placement
and GPU memory, GPU memory under load. On this CPU-only machine the real checks must fail when the
gpu profile is asked for; NVML itself is faked (at its functions, nothing above) for a GPU box."""

import time
from dataclasses import dataclass

import pynvml
import pytest

from harness.envcheck import validate
from harness.envcheck.gpu import GpuUnavailable, check_gpu, check_gpu_offload, gpu_processes, read_gpus
from harness.load.scenarios import SCENARIOS
from harness.load.server_view import MetricsSampler, gpu_memory
from harness.offload import check_gpu_memory, check_layers
from harness.result import Status
from suite.settings import Settings
from suite.testing import serve


def nvml_present() -> bool:
    try:
        read_gpus()
    except GpuUnavailable:
        return False
    return True


cpu_only = pytest.mark.skipif(nvml_present(), reason="this machine has a GPU: the CPU-only checks do not apply")
MIB = 2**20


@dataclass
class FakeGpu:
    name: str
    total_mib: int
    used_mib: list[int]  # one reading per call, the last one repeats
    procs: dict[int, int]  # pid -> MiB


class FakeNvml:
    """NVML's functions as pynvml exposes them, over a list of fake GPUs."""

    def __init__(self, gpus, driver="550.54.15", cuda=12040):
        self.gpus, self.driver, self.cuda, self.reads = gpus, driver, cuda, 0

    def install(self, monkeypatch):
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                     "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates",
                     "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion_v2",
                     "nvmlDeviceGetComputeRunningProcesses"):
            monkeypatch.setattr(pynvml, name, getattr(self, name))
        return self

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetName(self, gpu):
        return gpu.name

    def nvmlDeviceGetMemoryInfo(self, gpu):
        used = gpu.used_mib[min(self.reads, len(gpu.used_mib) - 1)]
        if gpu is self.gpus[-1]:
            self.reads += 1
        return type("Mem", (), {"used": used * MIB, "total": gpu.total_mib * MIB,
                                "free": (gpu.total_mib - used) * MIB})()

    def nvmlDeviceGetUtilizationRates(self, gpu):
        return type("Util", (), {"gpu": 87, "memory": 40})()

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return self.cuda

    def nvmlDeviceGetComputeRunningProcesses(self, gpu):
        return [type("Proc", (), {"pid": p, "usedGpuMemory": m * MIB})() for p, m in gpu.procs.items()]


@cpu_only
def test_a_cpu_only_build_fails_the_gpu_profile_and_is_a_skip_on_the_cpu_profile(tmp_path):
    assert check_gpu(required=False).status is Status.SKIP
    offload = check_gpu_offload(required=True)
    assert offload.status is Status.FAIL and "CPU only" in offload.measured
    assert "SUITE_LLAMA_BUILD=cuda" in offload.detail
    assert check_gpu_offload(required=False).status is Status.SKIP
    gpu = Settings(profile="gpu", data_dir=tmp_path, inference={"chat": {"path": "/m/a.gguf"},
                                                                 "code": {"path": "/m/b.gguf"}})
    by_id = {r.id: r for r in validate(gpu, phase=1)}
    assert by_id["env.gpu"].status is Status.FAIL and "NVML" in by_id["env.gpu"].detail
    assert by_id["env.gpu.offload"].status is Status.FAIL


def test_every_gpu_with_driver_and_cuda_versions(monkeypatch):
    FakeNvml([FakeGpu("NVIDIA RTX 4050", 6144, [2048], {}),
              FakeGpu("NVIDIA H100", 81559, [75000], {})]).install(monkeypatch)
    result = check_gpu(required=True)
    assert result.measured == "2 GPU(s), driver 550.54.15, CUDA 12.4"
    assert result.status is Status.FAIL  # the second GPU is above 90 %
    assert "GPU 0 NVIDIA RTX 4050: memory 33 %" in result.detail and "GPU 1 NVIDIA H100: memory 92 %" in result.detail
    FakeNvml([FakeGpu("NVIDIA RTX 4050", 6144, [2048], {})]).install(monkeypatch)
    assert check_gpu(required=True).status is Status.PASS
    FakeNvml([]).install(monkeypatch)
    assert check_gpu(required=True).status is Status.FAIL  # NVML loads, but sees no GPU


def test_each_inference_process_must_hold_gpu_memory(monkeypatch, settings):
    FakeNvml([FakeGpu("A", 8192, [4000], {101: 3000, 7: 100}), FakeGpu("B", 8192, [10], {101: 500})]).install(
        monkeypatch)
    assert gpu_processes() == {101: 3500.0, 7: 100.0}
    gpu = settings.model_copy(update={"profile": "gpu"})
    chat, code = check_gpu_memory(gpu, ["inference-chat", "inference-code"],
                                  pids={"inference-chat": 101, "inference-code": 102})
    assert chat.status is Status.PASS and chat.measured == "pid 101: 3500 MiB"
    assert code.status is Status.FAIL and code.measured == "pid 102: 0 MiB"  # fell back to the CPU
    docker, = check_gpu_memory(gpu, ["inference-chat"], pids={"inference-chat": None})
    assert docker.status is Status.WARN
    assert {r.status for r in check_gpu_memory(settings, ["inference-chat"], pids={})} == {Status.SKIP}


@cpu_only
@pytest.mark.integration
def test_layers_on_the_gpu_are_what_llama_cpp_placed_not_what_was_asked(settings):
    """A real service on this CPU build: asked for every layer on the GPU, llama.cpp places none."""
    s = settings.model_copy(deep=True)
    s.inference.chat.n_gpu_layers, s.inference.code.n_gpu_layers = -1, 0
    s.inference.chat.n_ctx = s.inference.code.n_ctx = 512
    with serve(s, "inference-chat", "inference-code"):
        asked_all, asked_none = check_layers(s, "inference-chat"), check_layers(s, "inference-code")
    assert asked_all.status is Status.FAIL
    assert asked_all.measured == "0/18 on the GPU" and asked_all.target.startswith("18/18 layers")
    assert "build: CPU only" in asked_all.detail and "CPU 18" in asked_all.detail
    assert asked_none.status is Status.PASS and asked_none.measured == "0/18 on the GPU"
    gone = check_layers(s, "inference-chat")  # nothing answers any more
    assert gone.status is Status.FAIL and gone.measured == "unknown"


def test_gpu_memory_under_load_is_sampled_while_the_scenario_runs(monkeypatch, settings, tmp_path):
    FakeNvml([FakeGpu("A", 1000, [500, 700, 950, 600], {})]).install(monkeypatch)
    with MetricsSampler(settings, [], every_s=0.05, gpu=True) as watch:
        deadline = time.monotonic() + 10
        while watch.gpu_max_pct.get("GPU 0 A", 0) < 95 and time.monotonic() < deadline:
            time.sleep(0.05)
    from harness.load.runner import LoadRun

    run = LoadRun(SCENARIOS["chat"], "http://127.0.0.1:1", tmp_path, 1, 0.0, 0, "now", 1.0)
    result = gpu_memory(SCENARIOS["chat"], run, watch)
    assert result.status is Status.FAIL and result.measured == "max 95 %"  # the peak, not the last reading
    watch.gpu_max_pct = {"GPU 0 A": 70.0}
    assert gpu_memory(SCENARIOS["chat"], run, watch).status is Status.PASS
    blind = MetricsSampler(settings, [], gpu=True)
    blind.gpu_error = "NVML: NVML Shared Library Not Found"
    assert gpu_memory(SCENARIOS["chat"], run, blind).status is Status.FAIL
