"""The pipeline's profiles: ``-p profile=NAME`` reaches every runbook that declares ``profile``.

- ``seed`` (the default): the release pipeline, what a GO means — the seeds' load gates, every
  service drilled, the scans, the alert drill.
- ``quick`` (development): the load runbook's short scenarios (``harness.load.scenarios``), the
  security review without the Bandit and pip-audit scans (``scripts/test.sh`` runs them), a fault
  drill of ``inference-chat`` alone (the gateway's failover and a supervised restart), and the
  monitoring runbook without its alert drill. What it leaves out shows as skipped, with the reason.
"""

from __future__ import annotations

PROFILES = ("seed", "quick")
QUICK_DRILL = ("inference-chat",)


def check(profile: str) -> bool:
    """True for the quick profile; a name that is no profile raises ``ValueError``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return profile == "quick"
