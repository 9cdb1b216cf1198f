"""The pipeline's profiles: ``-p profile=NAME`` reaches every runbook that declares ``profile``.

- ``seed`` (the default): the release pipeline, what a GO means — the seeds' load gates, every
  service drilled, the scans, the alert drill.
- ``quick`` (development): the load runbook's short scenarios (``harness.load.scenarios``), the
  security review without the Bandit and pip-audit scans (``scripts/test.sh`` runs them), a fault
  drill of ``inference-chat`` alone (the gateway's failover and a supervised restart), and the
  monitoring runbook without its alert drill. What it leaves out shows as skipped, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("seed", "quick")
QUICK_DRILL = ("inference-chat",)


@dataclass(frozen=True)
class Policy:
    """What a profile leaves out of the release pipeline. The runbooks read it and decide nothing
    themselves: a reason here is the detail of the ``skip`` line that replaces the part left out."""

    name: str
    scans: str | None = None  # None: the security runbook runs Bandit and pip-audit; else why not
    alert_drill: str | None = None  # None: the monitoring runbook drills an alert; else why not
    drill: tuple[str, ...] | None = None  # the services the fault drill kills; None: every one


def policy(profile: str) -> Policy:
    """The profile's policy; a name that is no profile raises ``ValueError``."""
    if not check(profile):
        return Policy(profile)
    return Policy(profile, scans="profile quick: scripts/test.sh runs them",
                  alert_drill="profile quick: no alert drill", drill=QUICK_DRILL)


def check(profile: str) -> bool:
    """True for the quick profile; a name that is no profile raises ``ValueError``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return profile == "quick"
