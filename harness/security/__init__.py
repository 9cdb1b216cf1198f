"""The security review of a live stack (runbook ``04_security``) and the scans CI runs.

``matrix`` — the RBAC matrix from each service's own route table × {no key, guest, developer, admin,
revoked, expired}; ``corpus`` — the sandbox corpus through every file-touching tool; ``review`` — the
deployment settings checklist; ``transport`` — Host and cross-origin probes; ``scans`` — Bandit and
pip-audit. Every line is a ``CheckResult`` of stage ``security``.
"""
