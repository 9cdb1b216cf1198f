"""The one settings object: profile, ports, paths, models and per-service knobs.

Precedence (highest first): constructor arguments, ``SUITE_*`` environment variables (nested with
``__``, e.g. ``SUITE_GATEWAY__RETRIES=2``), the TOML file (``SUITE_CONFIG`` or ``<root>/suite.toml``),
then the profile defaults below.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Profile = Literal["cpu", "gpu"]


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


class ModelConfig(BaseModel):
    """One GGUF served by an inference service."""

    path: Path | None = Field(None, description="GGUF file; empty on the cpu profile = the bundled Gemma 3 270M")
    alias: str = Field("", description="model name clients send (default: the role, 'chat' or 'code')")
    chat_format: str = Field("gemma", description="llama-cpp-python chat format (Gemma GGUF has no template)")
    n_ctx: int = Field(2048, ge=128, description="context length per request")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    n_gpu_layers: int | None = Field(None, description="layers on the GPU (default: 0 on cpu, -1 on gpu)")
    n_batch: int = Field(512, ge=1)
    seed: int = Field(4242, description="default sampling seed")


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
    batch_invariant: bool = Field(
        False, description="batched engine: plain (not repacked) CPU weights and one KV stream per "
        "sequence, so a sequence's output does not depend on what else shares its batch (exact "
        "replays under load; about half the throughput at 8 streams)"
    )

    @model_validator(mode="after")
    def _default_aliases(self) -> InferenceSettings:
        self.chat.alias = self.chat.alias or "chat"
        self.code.alias = self.code.alias or "code"
        return self


class GatewaySettings(BaseModel):
    retries: int = Field(1, ge=0, description="extra tries on the same upstream before falling back")
    retry_backoff_s: float = Field(0.2, ge=0)
    cooldown_s: float = Field(15.0, ge=0, description="skip an upstream this long after it failed")
    fallback: dict[str, str] = Field(default_factory=lambda: {"chat": "code"})
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(300.0, gt=0)


class EmbeddingSettings(BaseModel):
    model_path: Path | None = Field(None, description="sentence-transformers model dir (default: MiniLM-L6)")
    model_name: str = "all-MiniLM-L6-v2"
    max_texts: int = Field(1024, ge=1, description="texts beyond this are dropped and reported")
    max_chars: int = Field(8000, ge=1, description="characters beyond this are cut and reported")
    batch_wait_ms: float = Field(5.0, ge=0, description="micro-batching window")
    max_batch: int = Field(64, ge=1)
    device: str | None = Field(None, description="torch device (default: cpu on cpu profile)")
    ready_timeout_s: float = Field(30.0, gt=0, description="deadline of the /ready one-string embed")


class RagSettings(BaseModel):
    qdrant_path: Path | None = Field(None, description="qdrant-client local mode path (default: data/qdrant)")
    qdrant_url: str | None = Field(None, description="Qdrant server URL (gpu profile default)")
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
    approval_ttl_s: float = Field(900.0, gt=0)
    rate_limit_per_minute: int = Field(60, ge=1)
    max_file_bytes: int = Field(1_000_000, ge=1)
    command_allowlist: list[str] = Field(default_factory=lambda: ["ls", "cat", "echo", "wc", "head", "tail"])
    command_timeout_s: float = Field(10.0, gt=0)
    command_max_output_bytes: int = Field(65_536, ge=1, description="stdout/stderr kept per command")
    security_db: Path | None = Field(None, description="keys, approvals, audit (default: <data_dir>/tools/security.db)")
    approval_poll_s: float = Field(1.0, gt=0, description="how often approvals decided by the CLI are executed")
    search_max_results: int = Field(200, ge=1, description="matches returned by search_files")
    upstream_timeout_s: float = Field(120.0, gt=0, description="deadline of calls to memory, rag and gateway")


class MemorySettings(BaseModel):
    retention_days: float = Field(90.0, gt=0)
    maintain_every_s: float = Field(3600.0, gt=0)
    backup_every_s: float = Field(86400.0, gt=0)
    backups_kept: int = Field(7, ge=1)
    db_path: Path | None = Field(None, description="SQLite file (default: <data_dir>/memory/memory.db)")
    backup_dir: Path | None = Field(None, description="scheduled backups (default: <data_dir>/memory/backups)")
    maintainer_enabled: bool = Field(True, description="run retention, optimize/VACUUM and backups in-process")
    maintainer_start_delay_s: float = Field(5.0, ge=0, description="first maintainer run after start-up")
    max_note_chars: int = Field(100_000, ge=1, description="longest note text accepted")


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
    memory: MemorySettings = Field(default_factory=MemorySettings)

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
        for model in (self.inference.chat, self.inference.code):
            if model.n_gpu_layers is None:
                model.n_gpu_layers = -1 if gpu else 0
            if gpu and model.path is None:
                raise ValueError(
                    f"profile 'gpu' needs inference.{model.alias}.path (a GGUF file); "
                    f"set SUITE_INFERENCE__{model.alias.upper()}__PATH or suite.toml"
                )
        if self.embedding.device is None:
            self.embedding.device = "cuda" if gpu else "cpu"
        if gpu and self.rag.qdrant_url is None and "qdrant_path" not in self.rag.model_fields_set:
            self.rag.qdrant_url = f"http://127.0.0.1:{self.ports.qdrant + self.port_offset}"
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    # -- derived values -------------------------------------------------------------------------
    def port(self, service: str) -> int:
        """Port of a service by its name ('gateway', 'inference-chat', ...)."""
        return getattr(self.ports, service.replace("-", "_")) + self.port_offset

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.port(service)}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.data_dir / "pids"

    def model_path(self, role: str) -> Path:
        """GGUF path of the 'chat' or 'code' model (the bundled Gemma when none is set)."""
        cfg: ModelConfig = getattr(self.inference, role)
        if cfg.path is not None:
            return cfg.path.expanduser()
        from suite.models import GEMMA_FILE

        return self.models_dir / GEMMA_FILE

    def qdrant_location(self) -> dict[str, Any]:
        """Keyword arguments for ``QdrantClient``: a server URL or the embedded local path."""
        if self.rag.qdrant_url:
            return {"url": self.rag.qdrant_url}
        return {"path": str(self.rag.qdrant_path or self.data_dir / "qdrant")}

    def dump_file(self, path: Path) -> Path:
        """Write the effective settings as JSON so child processes see exactly these values."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, path)
        return path

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


def load_settings(**overrides: Any) -> Settings:
    """Settings from env/TOML, with keyword overrides (used by tests and the CLI)."""
    return Settings(**overrides)
