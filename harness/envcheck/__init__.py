"""Environment validation: one small module per resource, each returning ``CheckResult``s."""

from __future__ import annotations

from harness.envcheck.contention import check_contention
from harness.envcheck.disk import check_disk
from harness.envcheck.docker import check_docker
from harness.envcheck.git import check_git
from harness.envcheck.gpu import check_gpu, check_gpu_offload
from harness.envcheck.models import check_models
from harness.envcheck.packages import check_packages
from harness.envcheck.ports import check_ports
from harness.envcheck.python import check_python
from harness.result import CheckResult, Stage
from suite.settings import Settings


def validate(settings: Settings, phase: int = 1, min_disk_gb: float = 0.0,
             require_clean_git: bool = False, target=None) -> list[CheckResult]:
    """Every environment check for this profile and phase, in the order of the seeds' checklist. With
    a target file (``harness.target``) the checks of the suite's own deployment (its model files, its
    ports, its Docker backend) do not apply: the target's parts were deployed by their owner."""
    if target is not None and not target.ours:
        why = f"not applicable: target {target.name} was deployed by its owner; this run starts nothing"
        return [check_python(), check_packages(),
                *(CheckResult.skipped(cid, title, Stage.ENVIRONMENT, measured="not applicable", detail=why)
                  for cid, title in (("env.model.suite", "the suite's model files"), ("env.ports", "the suite's ports"),
                                     ("env.docker", "Docker for the suite's docker backend"))),
                check_disk(settings.data_dir, min_disk_gb or 5.0), check_gpu(required=False),
                check_git(require_clean=require_clean_git)]
    gpu = settings.profile == "gpu"
    docker = settings.backend == "docker"
    return [
        check_python(),
        check_packages(),
        *check_models(settings),
        check_ports(settings, phase),
        check_disk(settings.data_dir, min_disk_gb or (20.0 if gpu else 5.0)),
        check_gpu(required=gpu),
        check_gpu_offload(required=gpu),
        check_docker(required=docker),
        check_git(require_clean=require_clean_git),
    ]


__all__ = ["validate", "check_contention", "check_disk", "check_docker", "check_git", "check_gpu", "check_gpu_offload", "check_models",
           "check_packages", "check_ports", "check_python"]
