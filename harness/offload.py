"""After bring-up, on the GPU profile's promise: every inference service has the layers on the GPU
that it was asked to put there (llama.cpp's own placement, from its ``/health``), and its process
holds GPU memory (NVML's compute processes). A CPU-only build, a GPU that could not be used or a
model that did not fit fails here instead of passing every gate slowly on the CPU.

On the cpu profile the layer count is checked too (0 requested, 0 placed) and the memory check is a
skip.
"""

from __future__ import annotations

import httpx

from harness import stack
from harness.envcheck.gpu import GpuUnavailable, gpu_processes
from harness.httpclient import verify
from harness.result import CheckResult, Stage, Status, now_iso
from suite import services
from suite.settings import Settings

INFERENCE = ("inference-chat", "inference-code")


def check_layers(settings: Settings, name: str) -> CheckResult:
    """The service's offloaded layer count (llama.cpp's placement) equals the requested one."""
    started = now_iso()
    title = f"{name}: layers on the GPU as requested"
    try:
        layers = httpx.get(settings.url(name) + "/health", timeout=10, verify=verify(settings)).json().get("gpu_layers")
    except (httpx.HTTPError, ValueError) as exc:
        layers, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = "its /health does not report gpu_layers"
    if not layers or layers.get("on_gpu") is None:
        return CheckResult(f"gpu.{name}.layers", title, Stage.HEALTH, Status.FAIL, target="placement reported",
                           measured="unknown", detail=problem if not layers else "llama.cpp did not log the placement",
                           started_at=started)
    devices = ", ".join(f"{d} {n}" for d, n in sorted(layers["devices"].items()))
    requested = "all" if layers["requested"] < 0 else str(layers["requested"])
    detail = [f"devices: {devices}", f"n_gpu_layers={layers['requested']}",
              "build: " + ("GPU offload" if layers["offload_supported"] else "CPU only")]
    if layers.get("summary"):
        detail.append(layers["summary"])
    return CheckResult(f"gpu.{name}.layers", title, Stage.HEALTH,
                       Status.PASS if layers["as_requested"] else Status.FAIL,
                       target=f"{layers['expected']}/{layers['n_layer']} layers on the GPU (requested: {requested})",
                       measured=f"{layers['on_gpu']}/{layers['n_layer']} on the GPU", detail="; ".join(detail),
                       started_at=started)


def check_gpu_memory(settings: Settings, names: list[str], pids: dict[str, int | None] | None = None
                     ) -> list[CheckResult]:
    """Each inference process holds GPU memory (gpu profile); a skip on the cpu profile. ``pids``:
    the services' process ids (default: what ``suite status`` reports)."""
    started = now_iso()
    if settings.profile != "gpu":
        return [CheckResult.skipped(f"gpu.{n}.memory", f"{n}: process holds GPU memory", Stage.HEALTH,
                                    target="GPU memory held", measured="cpu profile",
                                    detail="cpu profile: no GPU to hold memory on", started_at=started)
                for n in names]
    try:
        held = gpu_processes()
    except GpuUnavailable as exc:
        held, reason = None, str(exc)
    if pids is None:
        pids = {n: s.get("pid") for n, s in stack.running(settings).items()}
    out = []
    for name in names:
        pid = pids.get(name)
        title = f"{name}: process holds GPU memory"
        if held is None:
            status, measured, detail = Status.FAIL, "NVML unavailable", reason
        elif pid is None:  # containers: their pids are not the host's
            total = sum(held.values())
            status, measured = Status.WARN, f"{total:.0f} MiB held by {len(held)} process(es) in total"
            detail = f"{settings.backend} backend: the service's process id is not known here"
        else:
            mib = held.get(int(pid), 0.0)
            status, measured = (Status.PASS if mib > 0 else Status.FAIL), f"pid {pid}: {mib:.0f} MiB"
            detail = f"GPU processes: {', '.join(f'{p} {m:.0f} MiB' for p, m in sorted(held.items())) or 'none'}"
        out.append(CheckResult(f"gpu.{name}.memory", title, Stage.HEALTH, status, target="> 0 MiB on a GPU",
                               measured=measured, detail=detail, started_at=started))
    return out


def check_offload(settings: Settings, phase: int) -> list[CheckResult]:
    """Layers and GPU memory of every inference service of the phase."""
    names = [s.name for s in services.for_phase(phase) if s.name in INFERENCE]
    return [*(check_layers(settings, n) for n in names), *check_gpu_memory(settings, names)]


def not_applicable(target) -> list[CheckResult]:
    """A target file's inference servers: their layer placement is the suite's own report (its /health)."""
    return [CheckResult.skipped("gpu.offload.layers", "GPU offload of the inference services", Stage.HEALTH,
                                measured="not applicable",
                                detail=f"not applicable: GPU offload is read from the suite's own inference "
                                       f"services; target {target.name} has none")]
