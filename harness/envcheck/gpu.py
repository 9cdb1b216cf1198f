"""GPU and driver through nvidia-smi; skipped with a reason when absent and not required."""

import shutil
import subprocess

from harness.result import CheckResult, Stage, Status, timed

QUERY = "name,driver_version,memory.used,memory.total,utilization.gpu"


def check_gpu(required: bool, max_memory_pct: float = 90.0) -> CheckResult:
    with timed() as t:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            status = Status.FAIL if required else Status.SKIP
            return CheckResult("env.gpu", "GPU and driver", Stage.ENVIRONMENT, status, target="nvidia-smi sees a GPU",
                               measured="no nvidia-smi",
                               detail="the gpu profile needs a GPU" if required else "no GPU on this machine; cpu profile",
                               **t.fields())
        try:
            out = subprocess.run([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return CheckResult("env.gpu", "GPU and driver", Stage.ENVIRONMENT, Status.FAIL, target="nvidia-smi answers",
                               measured="timeout", **t.fields())
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.strip()]
    if out.returncode != 0 or not lines:
        return CheckResult("env.gpu", "GPU and driver", Stage.ENVIRONMENT, Status.FAIL if required else Status.WARN,
                           target="nvidia-smi sees a GPU", measured="no GPU listed",
                           detail=(out.stderr or out.stdout).strip()[:300], **t.fields())
    name, driver, used, total, util = [x.strip() for x in lines[0].split(",")]
    pct = 100.0 * float(used) / float(total) if float(total) else 0.0
    return CheckResult("env.gpu", "GPU and driver", Stage.ENVIRONMENT, Status.PASS if pct < max_memory_pct else Status.FAIL,
                       target=f"GPU present, memory < {max_memory_pct:g} %",
                       measured=f"{name}, driver {driver}, memory {pct:.0f} % ({used}/{total} MiB), util {util} %",
                       detail=f"{len(lines)} GPU(s)", **t.fields())
