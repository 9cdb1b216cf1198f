"""The one settings object: profile, ports, paths, models and per-service knobs.

Precedence (highest first): constructor arguments, ``SUITE_*`` environment variables (nested with
``__``, e.g. ``SUITE_GATEWAY__RETRIES=2``), the TOML file (``SUITE_CONFIG`` or ``<root>/suite.toml``),
then the profile defaults below.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Profile = Literal["cpu", "gpu"]
WILDCARDS = ("0.0.0.0", "::", "")  # bind addresses that mean every interface: not a name clients reach


def project_root() -> Path:
    """The checkout this package lives in (editable install), else the current directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def default_data_dir() -> Path:
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists():
        return root / "data"
    return Path.home() / ".local" / "share" / "suite-workbench"


class Ports(BaseModel):
    """Base ports from the seeds' stack; ``Settings.port_offset`` shifts all of them."""

    gateway: int = 8000
    inference_chat: int = 8001
    rag: int = 8002
    embedding: int = 8003
    inference_code: int = 8004
    memory: int = 8005
    tools: int = 8020
    qdrant: int = 6333
    prometheus: int = 9090
    alertmanager: int = 9093
    loki: int = 3100
    grafana: int = 3001
    gpu_exporter: int = 9400  # NVIDIA's DCGM exporter (compose `gpu` profile)


class ModelConfig(BaseModel):
    """One GGUF served by an inference service."""

    path: Path | None = Field(None, description="GGUF file; empty on the cpu profile = the bundled Gemma 3 270M")
    alias: str = Field("", description="model name clients send (default: the role, 'chat' or 'code')")
    chat_format: str = Field("gemma", description="llama-cpp-python chat format (Gemma GGUF has no template), "
                             "or 'auto': the GGUF's own Jinja template (tokenizer.chat_template)")
    n_ctx: int = Field(2048, ge=128, description="context length per request")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    n_gpu_layers: int | None = Field(None, description="layers on the GPU (default: 0 on cpu, -1 on gpu)")
    n_batch: int = Field(512, ge=1)
    flash_attn: bool = Field(False, description="llama.cpp's fused attention kernel: +10-15 % tok/s at 8 "
                             "streams on the CPU default (llama-server turns it on by default), but greedy "
                             "outputs then depend on what shares the batch (docs/benchmarks.md)")
    seed: int = Field(4242, description="default sampling seed")


ADAPTIVE_SPINCOUNT = 300_000  # libgomp's default: fastest while the threads have the cores
FIXED_SPINCOUNT = 3_000  # short: leaves the cores to others between decodes (no thread adaptation)


class InferenceSettings(BaseModel):
    chat: ModelConfig = Field(default_factory=lambda: ModelConfig(alias="chat"))
    code: ModelConfig = Field(default_factory=lambda: ModelConfig(alias="code"))
    engine: Literal["serial", "batched"] = Field(
        "batched", description="batched = N slots with continuous batching (suite.inference.engine); "
        "serial = llama_cpp.server's own one-request-at-a-time path"
    )
    slots: int = Field(
        8, ge=1, description="parallel sequences of the batched engine; each holds n_ctx cells of KV cache "
        "(Gemma 3 270M: 18 KiB per cell, 36 MiB per slot at n_ctx 2048; README: sizing slots)"
    )
    queue_limit: int = Field(16, ge=0, description="requests waiting beyond the slots before 429")
    ready_timeout_s: float = Field(30.0, gt=0, description="deadline of the /ready 1-token completion")
    max_tokens_cap: int | None = Field(
        None, ge=1, description="most tokens one request may generate, whatever it asks (none: up to the "
        "context); bounds long generations, e.g. while fuzzing")
    stall_s: float = Field(
        30.0, gt=0, description="batched engine: no decode step for this long while requests are in "
        "flight means the engine is stuck; /health then fails (and the supervisor restarts the service)"
    )
    omp_spincount: int | None = Field(
        None, ge=0, description="GOMP_SPINCOUNT of the inference services (llama.cpp's OpenMP threads spin "
        "this long at a barrier before they sleep; the environment's GOMP_SPINCOUNT wins). None: libgomp's own "
        f"{ADAPTIVE_SPINCOUNT} (llama-server's) where the batched engine adapts its threads to the box "
        f"(adaptive_threads, Linux), else {FIXED_SPINCOUNT}, which leaves the cores to the other services "
        "between decodes (docs/benchmarks.md)")
    adaptive_threads: bool = Field(
        True, description="batched engine: decode with half the CPU threads while other processes keep it "
        "waiting for a core (more than a quarter of a decode on the runqueue), all of them again once the box "
        "is quiet (suite/inference/threads.py)")
    prefix_cache_tokens: int | None = Field(
        None, ge=0, description="batched engine: most KV cells finished sequences may keep as reusable "
        "prefixes (none: whatever the idle slots hold; 0: no reuse between requests). Costs no memory: "
        "the cells are the idle slots' share of the cache (slots x n_ctx, already allocated); without "
        "flash attention every cached cell adds attention work to each decode step (README: sizing slots)")
    batch_invariant: bool = Field(
        False, description="batched engine: plain (not repacked) CPU weights and one KV stream per "
        "sequence, so a sequence's output does not depend on what else shares its batch (exact "
        "replays under load; about half the throughput at 8 streams)"
    )

    def spincount(self) -> int:
        """The GOMP_SPINCOUNT the inference services get (``omp_spincount``, or its default)."""
        if self.omp_spincount is not None:
            return self.omp_spincount
        adaptive = self.engine == "batched" and self.adaptive_threads and os.path.exists("/proc/self/schedstat")
        return ADAPTIVE_SPINCOUNT if adaptive else FIXED_SPINCOUNT

    @model_validator(mode="after")
    def _default_aliases(self) -> InferenceSettings:
        self.chat.alias = self.chat.alias or "chat"
        self.code.alias = self.code.alias or "code"
        return self


def http_url(value: str, what: str) -> str:
    """``value`` without a trailing slash when it is an http(s) URL with a host, else ValueError."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {value!r}: write http(s)://host:port")
    return value.rstrip("/")


class ReplicaConfig(BaseModel):
    """One replica of a gateway pool: an OpenAI-compatible inference server (ours, llama-server, ...)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL, http(s)://host:port (https verified against tls.ca_file)")
    name: str = Field("", description="its name in metrics and /health (default: the alias's service name "
                      "for the stack's own service, else inference-<alias>@host:port)")
    ready_path: str = Field("/ready", description="probe that readmits it after a failure (llama-server: /health)")
    load_probe: Literal["auto", "metrics", "slots", "none"] = Field(
        "auto", description="where its busy slots are read: metrics = our /metrics (inference_slots, "
        "inference_active_slots, inference_queue_depth) or llama-server's (llamacpp:requests_processing, "
        "..._deferred), slots = llama-server's /slots, auto = whichever answers, none = in-flight only")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "replica url")


MODEL_ALIASES = ("chat", "code")  # the gateway's model aliases (suite.gateway.routing.ALIASES)


class GatewaySettings(BaseModel):
    pools: dict[str, list[ReplicaConfig]] = Field(
        default_factory=dict, description="replicas serving a model alias, e.g. {chat = "
        "[\"https://10.0.0.2:8001\", \"https://10.0.0.3:8001\"]} (a URL or a table with url, name, "
        "ready_path, load_probe); an alias not named is served by its own service, inference-<alias>")
    retries: int = Field(1, ge=0, description="extra tries, after retry_backoff_s, of a request that did not "
                         "reach an engine (connect error, 503 with Retry-After) on a replica that is the "
                         "last of its pool left to try")
    retry_backoff_s: float = Field(0.2, ge=0)
    retry_unsafe: bool = Field(
        False, description="also try the next replica after a read timeout or a 5xx answer; the engine may "
        "have run the request, so one request can run twice (each such replay is counted in "
        "gateway_replays_total{reason=\"timeout\"|\"5xx\"}). Off: the client gets the 504 or the 5xx")
    cooldown_s: float = Field(15.0, ge=0, description="a replica that failed (transport error, 5xx) is out of "
                              "rotation until its ready_path passes; one whose ready_path answers 4xx (cannot "
                              "be probed) comes back this long after it failed. Also the Retry-After of a 503 "
                              "when no replica could serve")
    fallback: dict[str, str] = Field(default_factory=lambda: {"chat": "code", "code": "chat"},
                                     description="alias served instead when every replica of an alias's "
                                     "pool failed")
    fallback_on_overload: bool = Field(False, description="when every replica of the pool answered 429 (queues "
                                       "full), try the fallback alias instead of passing the 429 through")
    recovery_probe_s: float = Field(1.0, gt=0, description="while a replica is out of rotation, probe its "
                                    "ready_path this often and readmit it as soon as it passes")
    load_probe_s: float = Field(1.0, ge=0, description="read each replica's busy slots this often (0: never; "
                                "least-busy then counts this gateway's in-flight requests only)")
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(300.0, gt=0)

    @field_validator("pools", mode="before")
    @classmethod
    def _urls_are_replicas(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {alias: [{"url": r} if isinstance(r, str) else r for r in (reps or [])]
                    for alias, reps in value.items()}
        return value

    @field_validator("pools")
    @classmethod
    def _known_aliases(cls, value: dict[str, list[ReplicaConfig]]) -> dict[str, list[ReplicaConfig]]:
        unknown = [a for a in value if a not in MODEL_ALIASES]
        if unknown:
            raise ValueError(f"gateway.pools: unknown model alias {', '.join(unknown)} "
                             f"(aliases: {', '.join(MODEL_ALIASES)})")
        return value


class EmbeddingSettings(BaseModel):
    model_path: Path | None = Field(None, description="sentence-transformers model dir (default: MiniLM-L6)")
    model_name: str = "all-MiniLM-L6-v2"
    loader: Literal["auto", "sentence-transformers"] = Field(
        "auto", description="auto: a Transformer → mean Pooling → Normalize folder (MiniLM-L6) runs on "
        "transformers alone (a restart skips importing sentence-transformers: its trainers, "
        "cross-encoders, scikit-learn); any other folder, or sentence-transformers here, loads through the library")
    max_texts: int = Field(1024, ge=1, description="texts beyond this are dropped and reported")
    max_chars: int = Field(8000, ge=1, description="characters beyond this are cut and reported")
    batch_wait_ms: float = Field(5.0, ge=0, description="micro-batching window")
    max_batch: int = Field(64, ge=1)
    device: str | None = Field(None, description="torch device (default: cpu on cpu profile)")
    ready_timeout_s: float = Field(30.0, gt=0, description="deadline of the /ready one-string embed")


class RagSettings(BaseModel):
    store: Literal["edge", "local"] = Field(
        "edge", description="embedded vector store when no qdrant_url is set: edge = Qdrant Edge "
        "(qdrant-edge-py: HNSW, WAL, snapshots in process; the default), local = qdrant-client local mode "
        "(the fallback; `suite rag migrate` copies it into edge)")
    edge_path: Path | None = Field(None, description="Qdrant Edge store: one shard per collection "
                                   "(default: <data_dir>/edge)")
    optimize_threshold: int = Field(
        5000, ge=100, description="edge: points written since the last optimize() that start one in the "
        "background (also the engine's indexing threshold: segments below it are searched exactly)")
    optimize_threads: int = Field(1, ge=0, description="edge: HNSW build threads of a background "
                                  "optimize (0 = every core; 1 leaves a core to queries on small machines)")
    qdrant_path: Path | None = Field(None, description="qdrant-client local mode path (default: data/qdrant)")
    qdrant_url: str | None = Field(None, description="Qdrant server URL (gpu profile default)")
    qdrant_api_key_file: Path | None = Field(
        None, description="a 0600 file holding the Qdrant server's API key (sent as api-key); a file, "
        "so the key never sits in settings dumps. The security review requires it with a server; the "
        "docker backend makes <data_dir>/secrets/qdrant_api_key when none is set")
    chunk_chars: int = Field(800, ge=50)
    chunk_overlap: int = Field(100, ge=0)
    top_k: int = Field(4, ge=1, le=50)
    answer_max_tokens: int = Field(128, ge=1)
    allowed_dirs: list[Path] = Field(default_factory=list, description="folders /index may read files from")
    context_chars: int = Field(2000, ge=100, description="retrieved text passed to the answer model, at most")
    embed_batch: int = Field(64, ge=1, le=1024, description="chunks sent to the embedding service per call")
    embedding_timeout_s: float = Field(60.0, gt=0, description="deadline of one call to the embedding service")
    answer_timeout_s: float = Field(120.0, gt=0, description="deadline of the answer through the gateway")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with a 503 when a dependency is down")


class ToolsSettings(BaseModel):
    sandbox_roots: list[Path] = Field(default_factory=list, description="file tools work only here")
    approvals_required: bool = Field(True, description="destructive calls by developers wait for an admin")
    approval_ttl_s: float = Field(900.0, gt=0, description="a pending request expires after this")
    approved_ttl_s: float = Field(
        300.0, gt=0, description="an approved request not run within this (service down) expires")
    rate_limit_per_minute: int = Field(60, ge=1, description="calls per key per minute, all tools together")
    audit_refusals_per_minute: int = Field(
        5, ge=0, description="refused requests (no key, bad key, role outside the route's policy) audited "
        "one by one per client address and minute; the rest of the minute's are one summary row")
    rate_limit_per_tool: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="stricter per-minute limits of single tools, per key")
    max_file_bytes: int = Field(1_000_000, ge=1)
    max_argument_bytes: int = Field(
        1_500_000, ge=1024, description="JSON size of one call's arguments (413 beyond; base64 of a "
        "max_file_bytes file fits)")
    allow_hardlinked_reads: bool = Field(
        False, description="read regular files with more than one hard link (one may live outside)")
    command_allowlist: list[str] = Field(
        default_factory=lambda: ["ls", "cat", "echo", "wc", "head", "tail"],
        description="programs run_command may start; those without an argument table in "
        "suite/tools/commands.py take no options, only sandbox paths")
    command_timeout_s: float = Field(10.0, gt=0)
    command_max_output_bytes: int = Field(
        65_536, ge=1, description="stdout/stderr kept per command; the program is killed beyond it")
    command_max_memory_bytes: int = Field(
        1 << 30, ge=16 << 20, description="address-space limit (RLIMIT_AS) of a command or git")
    security_db: Path | None = Field(None, description="keys, approvals, audit (default: <data_dir>/tools/security.db)")
    approval_poll_s: float = Field(1.0, gt=0, description="how often approvals decided by the CLI are executed")
    search_max_results: int = Field(200, ge=1, description="matches returned by search_files")
    upstream_timeout_s: float = Field(120.0, gt=0, description="deadline of calls to memory, rag and gateway")


class AuthSettings(BaseModel):
    enabled: bool = Field(
        True, description="keys of `suite keys` on every route of every service but /health, /ready, "
        "/metrics; false opens every route (announced by `suite up`, refused beyond loopback)")
    key_store: Path | None = Field(None, description="hashed API keys (default: <data_dir>/auth/keys.db)")
    cache_s: float = Field(
        5.0, ge=0, le=300, description="a verified key is trusted this long before the store is read "
        "again: the bound on how late a revocation is noticed")
    anonymous_role: Literal["guest", "developer", "admin"] = Field(
        "developer", description="the role of every caller when auth is disabled")
    unauthenticated_per_minute: int = Field(
        120, ge=1, description="failed attempts (no key, bad key) per client address per minute, per "
        "service; beyond it 429 and nothing more is logged or audited")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header names accepted besides the bound address and "
        "the loopback names (a reverse proxy's public name)")
    allowed_origins: list[str] = Field(
        default_factory=list, description="browser Origins accepted (scheme://host[:port]); by "
        "default only loopback origins")
    max_admin_key_days: int = Field(
        30, ge=1, description="the security review fails an admin key older than this or without expiry")
    run_key_ttl_s: float = Field(
        7200.0, gt=0, description="lifetime of the keys a pipeline run or a test mints for itself")


class MemorySettings(BaseModel):
    retention_days: float = Field(90.0, gt=0)
    maintain_every_s: float = Field(3600.0, gt=0)
    backup_every_s: float = Field(86400.0, gt=0)
    backups_kept: int = Field(7, ge=1, description="scheduled backups: the newest N are always kept")
    backups_keep_days: float = Field(7.0, ge=0, description="scheduled backups younger than this are kept too")
    db_path: Path | None = Field(None, description="SQLite file (default: <data_dir>/memory/memory.db)")
    backup_dir: Path | None = Field(None, description="scheduled backups (default: <data_dir>/memory/backups)")
    maintainer_enabled: bool = Field(True, description="run retention, optimize/VACUUM and backups in-process")
    maintainer_start_delay_s: float = Field(5.0, ge=0, description="first maintainer run after start-up")
    max_note_chars: int = Field(100_000, ge=1, le=1_000_000, description="longest note text accepted")


MiB = 1024 * 1024


class GuardSettings(BaseModel):
    """Limits every service enforces at its edge before any work (``suite.web.guard``)."""

    max_body_bytes: int = Field(1 * MiB, ge=1024, description="largest request body a service reads; a larger "
                                "one is answered 413 before the rest is read")
    service_max_body_bytes: dict[str, int] = Field(
        default_factory=lambda: {"embedding": 16 * MiB, "rag": 16 * MiB, "tools": 4 * MiB},
        description="per-service overrides of max_body_bytes (embedding and RAG take many texts at "
        "once; tools writes files up to tools.max_file_bytes, JSON-escaped)")
    max_json_depth: int = Field(32, ge=2, le=1000, description="deepest nesting of arrays/objects accepted")
    max_json_values: int = Field(200_000, ge=100, description="most JSON values (scalars, arrays, objects) "
                                 "in one body; bounds the work of parsing and validating it")

    def body_limit(self, service: str) -> int:
        return self.service_max_body_bytes.get(service, self.max_body_bytes)


class BackupSettings(BaseModel):
    """Backup sets (``suite backup``, ``suite restore``, runbook 07): vector store + every SQLite database."""

    dir: Path | None = Field(None, description="backup sets (default: <data_dir>/backups)")
    keep_last: int = Field(7, ge=1, description="retention: the newest N sets are always kept")
    keep_days: float = Field(7.0, ge=0, description="retention: sets younger than this are kept too")
    partial_max_age_s: float = Field(3600.0, gt=0, description="a '.partial' set older than this is a "
                                     "leftover of a crashed backup and is removed")
    health_retries: int = Field(10, ge=1, description="rollback: readiness polls after the restore")
    health_backoff_s: float = Field(1.0, gt=0, description="rollback: first pause between polls (doubles, "
                                    "at most 10 s)")


class StorageSettings(BaseModel):
    """A full disk (``suite.storage``): what every stateful part keeps free before it writes."""

    reserve_bytes: int = Field(
        64 * MiB, ge=0, description="free space every write leaves on the file system it writes to (data "
        "dir, backup dir); a write that would eat into it is refused with 507. 64 MiB: the edge store "
        "pre-allocates 32 MiB WAL segments and writes them through mmap (a page the disk cannot back "
        "kills the process with SIGBUS)")


class SupervisionSettings(BaseModel):
    """The process backend's supervising parent (supervisord plus the suite's watch): restart policy
    (systemd ``Restart=on-failure`` with ``StartLimitBurst``) and liveness."""

    start_secs: int = Field(5, ge=0, description="a (re)started service must stay up this long to count as "
                            "started; an earlier exit is a failed start, retried after 1, 2, 3 … s")
    start_retries: int = Field(3, ge=0, description="failed starts in a row before a service is left FATAL")
    start_limit_burst: int = Field(5, ge=1, description="automatic restarts allowed within "
                                   "start_limit_interval_s; one more and the service is stopped (FATAL)")
    start_limit_interval_s: float = Field(300.0, gt=0, description="window of start_limit_burst")
    stop_wait_s: int = Field(10, ge=1, description="SIGTERM to the service's process group, SIGKILL after this long")
    liveness_interval_s: float = Field(5.0, gt=0, description="how often the watch probes each running "
                                       "service's /health")
    liveness_timeout_s: float = Field(5.0, gt=0, description="a /health probe slower than this failed")
    liveness_failures: int = Field(3, ge=1, description="failed /health probes in a row before the watch "
                                   "kills the service (SIGKILL; supervisord restarts it)")
    liveness_start_period_s: float = Field(300.0, ge=0, description="failures do not count until the service "
                                           "has answered /health once since it started, or this long passed")
    log_max_bytes: int = Field(10_000_000, ge=0, description="a service log is rotated at this size (0: never)")
    log_backups: int = Field(3, ge=0, description="rotated service logs kept")


class TlsSettings(BaseModel):
    """TLS between the services and for their clients (``suite tls init`` makes the files)."""

    enabled: bool = Field(False, description="every service serves HTTPS with its certificate from "
                          "<dir>/<service>.crt and .key, and the stack's URLs are https; required for a "
                          "bind beyond loopback")
    dir: Path | None = Field(None, description="the CA and the per-service certificates (default: <data_dir>/tls)")
    ca_file: Path | None = Field(None, description="CA certificate every client of the stack verifies servers "
                                 "against (default: <dir>/ca.crt; the system's trust store when absent)")
    cert_days: int = Field(397, ge=1, le=3650, description="validity of the certificates `suite tls init` issues")


class SigningSettings(BaseModel):
    key: Path | None = Field(
        None, description="Ed25519 private key (PEM, 0600) that signs each run's attestation; made by "
        "`harness keys init`, never under runs/ (default: <data_dir>/signing/harness-ed25519.pem)")


class DockerSettings(BaseModel):
    """The docker backend: which images, which user the containers run as, the liveness watch."""

    images: Literal["auto", "official", "debian"] = Field(
        "auto", description="official: compose.yaml's images (a registry); debian: add compose.debian.yaml "
        "(images from Debian's packages, `suite image build`; no Qdrant server, Grafana, Loki); auto: debian "
        "unless the Qdrant image compose.yaml names is in the engine")
    container_uid: int = Field(10001, ge=1, description="the containers' user when the host user is root "
                               "(the data dir is then handed to it); otherwise the host user")
    watch: bool = Field(True, description="run the liveness watch beside the containers: a container whose "
                        "/health keeps failing is killed, and its restart policy brings it back")


class Settings(BaseSettings):
    """Everything a service, the supervisor or the harness needs to know about the stack."""

    model_config = SettingsConfigDict(
        env_prefix="SUITE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: Profile = Field("cpu", description="cpu = embedded default; gpu = user GGUFs, Qdrant server")
    host: str = Field("127.0.0.1", description="bind address of every service")
    port_offset: int = Field(0, ge=-6000, le=50000, description="added to every port (side-by-side stacks)")
    ports: Ports = Field(default_factory=Ports)
    data_dir: Path = Field(default_factory=default_data_dir, description="models, stores, pids, logs")
    backend: Literal["process", "docker"] = Field("process", description="how `suite up` runs services")
    ready_deadline_s: float = Field(300.0, gt=0, description="how long `suite up` waits for readiness")
    log_level: str = "INFO"
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    urls: dict[str, str] = Field(
        default_factory=dict, description="base URLs of services that run on other hosts, by service name "
        "(e.g. {embedding = \"https://10.0.0.4:8003\"}): clients call them there, and `suite up` waits for "
        "them instead of starting them")
    signing: SigningSettings = Field(default_factory=SigningSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = config_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @model_validator(mode="after")
    def _profile_defaults(self) -> Settings:
        gpu = self.profile == "gpu"
        for role in ("chat", "code"):  # the settings keys, whatever alias clients use
            model: ModelConfig = getattr(self.inference, role)
            if model.n_gpu_layers is None:
                model.n_gpu_layers = -1 if gpu else 0
            if gpu and model.path is None:
                raise ValueError(
                    f"profile 'gpu' needs inference.{role}.path (a GGUF file); "
                    f"set SUITE_INFERENCE__{role.upper()}__PATH or suite.toml"
                )
        if self.embedding.device is None:
            self.embedding.device = "cuda" if gpu else "cpu"
        embedded_chosen = {"qdrant_path", "edge_path", "store"} & self.rag.model_fields_set
        if gpu and self.rag.qdrant_url is None and not embedded_chosen:
            self.rag.qdrant_url = f"http://127.0.0.1:{self.ports.qdrant + self.port_offset}"
        self.data_dir = self.data_dir.expanduser().resolve()
        from suite.services import BY_NAME

        for name, url in self.urls.items():
            if name not in BY_NAME:
                raise ValueError(f"urls.{name}: no such service (services: {', '.join(BY_NAME)})")
            http_url(url, f"urls.{name}")
        return self

    # -- derived values -------------------------------------------------------------------------
    def port(self, service: str) -> int:
        """Port of a service by its name ('gateway', 'inference-chat', ...)."""
        return getattr(self.ports, service.replace("-", "_")) + self.port_offset

    def url(self, service: str) -> str:
        """Where clients reach ``service``: its ``urls`` entry, else this host's address (loopback for a
        wildcard bind) and its port, https when ``tls.enabled``."""
        if service in self.urls:
            return self.urls[service].rstrip("/")
        host = "127.0.0.1" if self.host in WILDCARDS else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls.enabled else 'http'}://{host}:{self.port(service)}"

    @property
    def tls_dir(self) -> Path:
        return self.tls.dir or self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file or self.tls_dir / "ca.crt"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def key_store_path(self) -> Path:
        return Path(self.auth.key_store or self.data_dir / "auth" / "keys.db")

    @property
    def memory_db_path(self) -> Path:
        """The memory service's SQLite database."""
        return Path(self.memory.db_path or self.data_dir / "memory" / "memory.db")

    @property
    def security_db_path(self) -> Path:
        """The tool server's SQLite database (approvals and audit)."""
        return Path(self.tools.security_db or self.data_dir / "tools" / "security.db")

    @property
    def signing_key_path(self) -> Path:
        return Path(self.signing.key or self.data_dir / "signing" / "harness-ed25519.pem").expanduser()

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.data_dir / "pids"

    @property
    def supervisor_dir(self) -> Path:
        """supervisord's config, control socket, state and exit journal (mode 0700)."""
        return self.data_dir / "supervisor"

    def model_path(self, role: str) -> Path:
        """GGUF path of the 'chat' or 'code' model (the bundled Gemma when none is set)."""
        cfg: ModelConfig = getattr(self.inference, role)
        if cfg.path is not None:
            return cfg.path.expanduser()
        from suite.models import GEMMA_FILE

        return self.models_dir / GEMMA_FILE

    def qdrant_api_key(self) -> str | None:
        """The Qdrant server's API key, read from ``rag.qdrant_api_key_file`` (None when unset)."""
        path = self.rag.qdrant_api_key_file
        return path.expanduser().read_text(encoding="utf-8").strip() or None if path else None

    def qdrant_location(self) -> dict[str, Any]:
        """Keyword arguments for ``QdrantClient``: a server URL or the local-mode path."""
        if self.rag.qdrant_url:
            return {"url": self.rag.qdrant_url}
        return {"path": str(self.local_store_path)}

    @property
    def local_store_path(self) -> Path:
        """Where the qdrant-client local-mode store lives (used, or migrated from)."""
        return self.rag.qdrant_path or self.data_dir / "qdrant"

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir or self.data_dir / "backups"

    @property
    def edge_store_path(self) -> Path:
        return self.rag.edge_path or self.data_dir / "edge"

    def vector_store(self) -> dict[str, str]:
        """The vector store these settings choose: ``{"kind": "server"|"edge"|"local", "location": ...}``."""
        if self.rag.qdrant_url:
            return {"kind": "server", "location": self.rag.qdrant_url}
        path = self.edge_store_path if self.rag.store == "edge" else self.local_store_path
        return {"kind": self.rag.store, "location": str(path)}

    def dump_file(self, path: Path) -> Path:
        """Write the effective settings as JSON so child processes see exactly these values."""
        from suite.fsio import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only: the settings name key files and the stack's layout
        return write_atomic(path, self.model_dump_json(indent=2), mode=0o600)

    @classmethod
    def from_file(cls, path: Path) -> Settings:
        return cls(**json.loads(Path(path).read_text()))


def config_file() -> Path | None:
    explicit = os.environ.get("SUITE_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"SUITE_CONFIG points to {path}, which is not a file")
        return path
    candidate = project_root() / "suite.toml"
    return candidate if candidate.is_file() else None

