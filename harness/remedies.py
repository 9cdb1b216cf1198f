"""A next step beside every failure: one table from check-id pattern to what to do about it.

Each row is a check kind (an ``fnmatch`` pattern over check ids, most specific first) and its
``Remedy``: the command to run, the setting to change, and where to read on — a section of a
runbook's executed notebook (linked from the report) or of the project's docs. The text may name
parts of the check: ``{name}`` (the id's second part: the service, scenario or tool), ``{detail}``
(what the check observed, e.g. which process holds a port), ``{target}``, ``{measured}``, ``{id}``.

The checks themselves stay as they are: the report, JUnit and ``harness run``'s closing lines look a
failed or warning check up here (``next_step``). A runbook that failed without a failed check, was
skipped or never ran gets ``step_remedy``; an expired or refused waiver ``waiver_remedy``.
``tests/test_remedies.py`` holds every check id the harness can write against this table, so a new
check kind without its own row fails a test instead of falling through to the generic one.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from harness.result import CheckResult, Status


@dataclass(frozen=True)
class Remedy:
    step: str  # what to do, with the command or setting
    runbook: str = ""  # "05_load" or "05_load#Server-side view beside the client": where the evidence is
    doc: str = ""  # "README.md § Sizing slots": where to read on

    def fill(self, result: CheckResult | None = None, **extra: str) -> Remedy:
        fields = _fields(result) if result is not None else {}
        fields.update(extra)
        return Remedy(self.step.format_map(_Blank(fields)), self.runbook, self.doc)

    @property
    def runbook_href(self) -> str:
        """The executed notebook's HTML page in the run directory, at the section when one is named."""
        if not self.runbook:
            return ""
        stem, _, section = self.runbook.partition("#")
        return f"notebooks/{stem}.html" + (f"#{anchor(section)}" if section else "")

    @property
    def runbook_text(self) -> str:
        stem, _, section = self.runbook.partition("#")
        return f"{stem} § {section}" if section else stem

    def text(self) -> str:
        """One line: the step, then where to look (for JUnit and the terminal)."""
        where = [w for w in (self.runbook and f"runbook {self.runbook_text}", self.doc) if w]
        return self.step + (f" (see {'; '.join(where)})" if where else "")


def anchor(heading: str) -> str:
    """The id nbconvert gives a markdown heading in the HTML export (spaces become '-')."""
    return heading.strip().replace(" ", "-")


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _fields(r: CheckResult) -> dict[str, str]:
    parts = r.id.split(".")
    nested = parts[:2] == ["security", "external"] and len(parts) > 2  # security.external.<part>.<line>
    return {"id": r.id, "name": parts[2] if nested else parts[1] if len(parts) > 1 else r.id, "detail": (r.detail or "").strip()[:400],
            "target": r.target, "measured": r.measured}


LOAD_TIME = ("Open the load runbook's server-side view: a long waiting line or every slot busy means "
             "requests queued for a slot, and `inference.slots` is sized as the README explains; a low "
             "server-side p95 puts the time between the server and the client (gateway, Locust on the same "
             "cores: rerun on a quiet box). Raw samples: load/{name}/samples.jsonl "
             "(notebooks/latency_explorer.ipynb)")
LOGS = ("`suite status` (state, last exit) and `suite logs {name} -n 100` show why (a part of a target file: "
        "its own logs, e.g. `docker logs NAME`)")

# (check-id pattern, remedy): the first matching row wins, so specific rows come before general ones.
REMEDIES: tuple[tuple[str, Remedy], ...] = (
    # environment (runbook 00)
    ("env.ports", Remedy(
        "Held: {detail}. If that is a suite stack you started earlier, stop it with `suite down` (with the "
        "SUITE_PORT_OFFSET and SUITE_DATA_DIR it was started with; `suite status` shows it); otherwise stop "
        "that process, or run this stack beside it on other ports: `SUITE_PORT_OFFSET=1000 harness run` "
        "(every port + 1000)", "00_validate_env", "README.md § Configuration")),
    ("env.python", Remedy("Use Python 3.11 or newer: `bash scripts/install.sh` makes .venv with it",
                          "00_validate_env", "README.md § Two commands")),
    ("env.packages", Remedy("Install what is missing ({detail}): `bash scripts/install.sh`", "00_validate_env",
                            "README.md § Two commands")),
    ("env.disk", Remedy("Free space on the data dir's disk (`suite backup prune --keep-last 7`, old runs/) or put "
                        "the data elsewhere: `SUITE_DATA_DIR=/a/bigger/disk`; the bar is `-p min_disk_gb=`",
                        "00_validate_env", "README.md § Configuration")),
    ("env.docker", Remedy("Start the Docker engine (`dockerd`) and install Compose 2.0 or newer, or run the "
                          "process backend: `SUITE_BACKEND=process`", "00_validate_env",
                          "README.md § Containers and a GPU box")),
    ("env.git", Remedy("Commit or stash what `git status` lists ({detail}): a release is certified from a "
                       "clean tree", "00_validate_env")),
    ("env.cpu.contention", Remedy("Something else uses this box's CPU ({detail}): stop it or wait until it is "
                                  "done (`harness box` says when the box is quiet); no load gate passes on a "
                                  "contended box", "00_validate_env", "docs/verdicts.md § Contention made visible")),
    ("env.gpu.offload", Remedy("Rebuild llama-cpp-python for CUDA: `SUITE_LLAMA_BUILD=cuda bash "
                               "scripts/install.sh`, or run the cpu profile (`SUITE_PROFILE=cpu`)",
                               "00_validate_env", "README.md § Configuration")),
    ("env.gpu", Remedy("`nvidia-smi` shows whether the driver sees the GPU and what holds its memory; on a box "
                       "without a GPU run the cpu profile (`SUITE_PROFILE=cpu`)", "00_validate_env",
                       "README.md § Containers and a GPU box")),
    ("env.model.*", Remedy("Install the bundled models: `suite models install` (a sha256 that differs: delete "
                           "the file, install again); gpu profile: `inference.{name}.path` in suite.toml",
                           "00_validate_env", "README.md § Configuration")),
    # bring-up, health, GPU placement (runbooks 01, 02)
    ("bringup.*.reach", Remedy("Nothing answers at {name}'s base_url ({detail}): start that part, or fix its "
                               "base_url in the target file", "01_bring_up", "docs/targets.md § Writing a target file")),
    ("bringup.*.key", Remedy("{name} refused the key the target gives it ({detail}): export the environment "
                             "variable its auth names with that part's own key (or fix auth.header / scheme), "
                             "then run again", "01_bring_up", "docs/targets.md § Keys")),
    ("bringup.*", Remedy("`suite status` (each service's last exit) and `suite logs SERVICE -n 100` show which "
                         "service did not become ready and why; fix it, then `harness resume RUN` (the "
                         "bring-up runs again)", "01_bring_up", "README.md § Using it")),
    ("health.*.health", Remedy(f"{LOGS}: the process is down or its engine stopped", "02_health",
                               "README.md § Using it")),
    ("health.*.ready", Remedy(f"{LOGS}: it answers but its real probe fails or is too slow (a model still "
                              "loading; a dependency down)", "02_health", "README.md § Using it")),
    ("gpu.*.layers", Remedy("llama.cpp put fewer layers on the GPU than `n_gpu_layers` asks: free GPU memory "
                            "(`nvidia-smi`), or lower `inference.slots` / `n_ctx`", "02_health#GPU offload",
                            "README.md § Sizing slots")),
    ("gpu.*.memory", Remedy("`nvidia-smi` shows the inference processes' GPU memory; a CPU-only build holds "
                            "none (`SUITE_LLAMA_BUILD=cuda bash scripts/install.sh`)", "02_health#GPU offload",
                            "README.md § Containers and a GPU box")),
    # smoke (runbook 03)
    ("smoke.gateway.*", Remedy("`suite logs gateway -n 100`, then the model it routes to (`suite logs "
                               "inference-chat`, `inference-code`); failover needs both models up",
                               "03_smoke#Gateway: chat, code, failover", "README.md § Using it")),
    ("smoke.embed.*", Remedy("`suite logs embedding -n 100`; the service must answer 384-dim vectors",
                             "03_smoke#Embeddings")),
    ("smoke.mcp.*", Remedy("An MCP client could not list or call the server's tools ({detail}): its endpoint is "
                           "mcp_path (default /mcp, Streamable HTTP) on its base_url", "03_smoke",
                           "docs/targets.md § Roles and kinds")),
    ("smoke.rag.*", Remedy("`suite logs rag -n 100` (RAG needs embedding and the gateway up); `suite rag status` "
                           "shows the collections and their index state",
                           "03_smoke#RAG: index, re-index, query (Korean and English)",
                           "README.md § Vector store and backups")),
    ("smoke.tools*", Remedy("`suite logs tools -n 100`; which role may call which tool: docs/security.md "
                            "§ What each role may do", "03_smoke#Tools and memory (phase 3)")),
    ("smoke.memory.*", Remedy("`suite logs memory -n 100`", "03_smoke#Tools and memory (phase 3)")),
    # security (runbook 04)
    ("security.config.auth", Remedy("Turn keys on: `SUITE_AUTH__ENABLED=true` (the default)",
                                    "04_security#Deployment settings review", "docs/security.md § Settings")),
    ("security.config.file_modes", Remedy("`chmod 600` the files and `chmod 700` the folders named: {detail}",
                                          "04_security#Deployment settings review")),
    ("security.config.admin_keys", Remedy("`suite keys list`; revoke old admin keys (`suite keys revoke ID`) "
                                          "and create them with an expiry (`--ttl 30d`)",
                                          "04_security#Deployment settings review", "docs/security.md § Settings")),
    ("security.config.run_keys", Remedy("Revoke what an earlier run left active: `suite keys revoke-run RUN_ID` "
                                        "({detail})", "04_security#Deployment settings review")),
    ("security.config.*", Remedy("Change the setting the check names ({detail})",
                                 "04_security#Deployment settings review",
                                 "docs/security.md § Deployment settings")),
    ("security.rbac.*", Remedy("A route answered a role it must refuse, or refused one it must serve: the detail "
                               "names route and role ({detail}); the policy is one table, docs/security.md "
                               "§ What each role may do", "04_security#RBAC matrix")),
    ("security.transport.*", Remedy("A foreign Host or Origin was served ({detail}): keep "
                                    "`auth.allowed_hosts` / `auth.allowed_origins` to the names you serve",
                                    "04_security#Host and cross-origin probes", "docs/security.md § Transport")),
    ("security.external.*.auth", Remedy("{name} answers without a valid key ({detail}): give it a key (llama-server "
                                        "--api-key, LiteLLM master_key, Qdrant service.api_key; an MCP server "
                                        "behind an authenticating proxy) and name its variable in auth.env",
                                        "04_security#From outside, every part", "docs/targets.md § What the "
                                        "security review probes")),
    ("security.external.*.browser", Remedy("A web page could call {name} ({detail}): restrict its CORS origins and "
                                           "Host names, or put it behind a proxy that does",
                                           "04_security#From outside, every part", "docs/targets.md § What the "
                                           "security review probes")),
    ("security.external.*.tls", Remedy("{name}'s transport ({detail}): serve it over https with a valid "
                                       "certificate (renew before it expires)", "04_security#From outside, every part",
                                       "docs/targets.md § Parts on other hosts")),
    ("security.external.*", Remedy("{name} shows what it was sent ({detail}): llama-server --no-slots, keep "
                                   "/metrics behind the key", "04_security#From outside, every part",
                                   "docs/targets.md § What the security review probes")),
    ("security.sandbox.*", Remedy("A tool reached outside its sandbox ({detail}): a security bug, not a setting; "
                                  "do not release, file it with the corpus line",
                                  "04_security#Sandbox corpus (phase 3)", "docs/security.md § Sandbox corpus")),
    ("security.scan.pip_audit", Remedy("Upgrade the packages named ({detail}) and pin the fixed version in "
                                       "pyproject.toml", "04_security#Scans", "docs/security.md § Scans")),
    ("security.scan.*", Remedy("Fix each finding named ({detail}), or accept it with a reason in "
                               "harness/security/bandit_accepted.toml", "04_security#Scans",
                               "docs/security.md § Scans")),
    # load (runbook 05)
    ("load.*.box", Remedy("The box was contended while {name} ran ({detail}): its gates could not pass there; "
                          "rerun when `harness box` says the box is quiet", "05_load#Verdicts",
                          "docs/verdicts.md § Contention made visible")),
    ("load.*.fail_ratio*", Remedy("Failed requests are in load/{name}/ (Locust's failures CSV, samples.jsonl): "
                                  "429s mean the waiting line overflowed (`inference.queue_limit`, "
                                  "`inference.slots`), 5xx `suite logs gateway -n 100`",
                                  "05_load#Server-side view beside the client", "README.md § Sizing slots")),
    ("load.*.server", Remedy("The server counted other requests than the client sent ({detail}): "
                             "load/{name}/server.json and `suite logs gateway -n 100`",
                             "05_load#Server-side view beside the client", "README.md § Monitoring")),
    ("load.*.gpu_memory", Remedy("GPU memory ran high under load: lower `inference.slots` or `n_ctx`",
                                 "05_load#Server-side view beside the client", "README.md § Sizing slots")),
    ("load.*.run", Remedy("The scenario did not complete its count ({detail}): its time cap (`-p max_run_s=`, "
                          "per stated count) or a gate decided against (`-p abort_on_fail=false` runs it out) "
                          "ended it", "05_load#Verdicts", "docs/verdicts.md § No PASS on evidence the run does not have")),
    ("load.*.rps*", Remedy("Throughput under its floor: the server-side view shows CPU seconds and slots busy "
                           "per service; on a shared box rerun when it is quiet, else more slots or GPU layers",
                           "05_load#Server-side view beside the client", "README.md § Sizing slots")),
    ("load.*.tps_*", Remedy("Tokens per second under the floor: the server-side view shows the engine's "
                            "decode and CPU; more GPU layers, fewer concurrent streams per slot",
                            "05_load#Server-side view beside the client", "README.md § Sizing slots")),
    ("load.*.*", Remedy(LOAD_TIME, "05_load#Server-side view beside the client", "README.md § Sizing slots")),
    # fault drill (06), backups (07), monitoring (08)
    ("fault.*", Remedy("{name} did not come back as it should after kill -9 ({detail}): its log tail is in "
                       "faults/, `suite logs {name} -n 100`; the budget is `-p drill_recovery_s` / "
                       "`drill_recovery_by_service`", "06_fault_drill#Timeline", "README.md § Runbooks")),
    ("backup.*", Remedy("Reproduce it by hand: `suite backup verify latest`, `suite restore latest --into "
                        "/tmp/drill` ({detail})", "07_backup", "README.md § Vector store and backups")),
    ("monitor.binaries", Remedy("Install Prometheus and Alertmanager: `apt-get install prometheus "
                                "prometheus-alertmanager` (scripts/install.sh does it as root)",
                                "08_monitoring", "README.md § Monitoring")),
    ("monitor.rules.*", Remedy("`promtool check rules deploy/monitoring/rules/*.yml`; after changing ports or "
                               "limits `python -m harness.monitor render --out deploy/monitoring`",
                               "08_monitoring", "README.md § Monitoring")),
    ("monitor.logs", Remedy("Error lines per service are in monitoring/log_errors.json; `suite logs SERVICE -n "
                            "200` shows them in context", "08_monitoring#Log scan: ERROR/CRITICAL lines since "
                            "the run began", "README.md § Monitoring")),
    ("monitor.p95.*", Remedy("Prometheus' p95 of {name} is over its bound: read it like a load p95 (slots, "
                             "waiting line)", "05_load#Server-side view beside the client",
                             "README.md § Sizing slots")),
    ("monitor.*", Remedy("`suite status` for targets that are down; the runbook's output has Prometheus' and "
                         "Alertmanager's answers ({detail})", "08_monitoring", "README.md § Monitoring")),
)
# the preflight of every runbook after bring-up (Runbook.needs_services): <stage>.services
SERVICES = ("*.services", Remedy("The stack is not up ({detail}): run 01_bring_up or the `suite up` command named, "
                                 "then this runbook again", "01_bring_up", "README.md § Using it"))
REMEDIES = (SERVICES, *REMEDIES)
# a gate left undecided: by its interval, or by the box it was measured on
UNDECIDED = Remedy("Its 95 % interval straddles the target ({detail}): more requests decide it (`-p requests=N` "
                   "for the scenario, up to its budget; a p95 needs 72 samples to pass)", "05_load#Verdicts",
                   "docs/verdicts.md § Percentiles with their uncertainty")
CONTENDED = Remedy("It was measured while the box was contended ({detail}): rerun when `harness box` says the "
                   "box is quiet", "05_load#Verdicts", "docs/verdicts.md § Contention made visible")
GENERIC = Remedy("Open the executed notebook at this check: its detail says what was measured ({detail})")


def remedy_for(check_id: str) -> tuple[str, Remedy]:
    """The table row for a check id (``("*", GENERIC)`` when none matches)."""
    for pattern, remedy in REMEDIES:
        if fnmatch.fnmatchcase(check_id, pattern):
            return pattern, remedy
    return "*", GENERIC


def next_step(result: CheckResult) -> Remedy | None:
    """What to do about a failed, indeterminate or warning check (None for one that passed, was skipped
    or is a figure)."""
    if result.status is Status.INDETERMINATE:
        remedy = CONTENDED if "contended" in result.caveat else UNDECIDED
        return remedy.fill(result, detail=result.caveat[:400])
    if result.status not in (Status.FAIL, Status.WARN):
        return None
    pattern, remedy = remedy_for(result.id)
    filled = remedy.fill(result)
    if pattern == "*" and not result.detail:
        return Remedy("Open the executed notebook at this check")
    return filled


def step_remedy(step: dict, run_id: str = "RUN") -> Remedy | None:
    """What to do about a runbook that did not pass (None when it passed or is the report step)."""
    status = Status.parse(step.get("status", Status.PENDING))
    stem = Path(step["notebook"]).stem
    if status is Status.PASS or step.get("report"):
        return None
    if status is Status.NOT_RUN:
        return Remedy(f"The run has no record of {stem}: `harness resume {run_id}` runs it (by hand: open "
                      f"runbooks/{step['notebook']} in JupyterLab)")
    if status is Status.SKIP:
        return Remedy(f"Skipped after an earlier failure: fix that one, then `harness resume {run_id}`")
    error = step.get("error") or ""
    if "ChecksFailed" in error or re.match(r"\d+ check\(s\) failed", error):
        return Remedy(f"Fix the failed checks (each has its next step), then `harness resume {run_id}` (what "
                      f"passed is kept)", stem)
    cell = re.match(r"cell (\d+)", error)
    where = f"at cell {cell.group(1)}" if cell else "where it stopped"
    return Remedy(f"Open its executed notebook {where}, fix the cause, then `harness resume {run_id}` (what "
                  f"passed is kept)", stem)


def waiver_remedy(expired: bool) -> Remedy:
    if expired:
        return Remedy("Renew the waiver (a new `expires` and a justification that still holds) or remove it, "
                      "then run again with `harness run --waivers FILE`", doc="README.md § Waivers")
    return Remedy("Narrow the pattern to the checks you accept, then run again", doc="README.md § Waivers")
