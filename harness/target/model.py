"""The target file: a stack's parts by role, how each is reached and what a run may do to it.

A target is what the runbooks certify. Our own suite is one (``harness.target.suite`` builds it from
``Settings``); any OpenAI-compatible stack is another, described in a TOML or YAML file::

    name = "seeds"
    allow_remote_hosts = []          # hosts load and fault drills may reach beyond loopback, by name

    [gateway]
    kind = "litellm"
    base_url = "http://127.0.0.1:8000"
    auth = { env = "LITELLM_MASTER_KEY" }   # Authorization: Bearer $LITELLM_MASTER_KEY
    chat_model = "chat"
    code_model = "code"
    allow_load = true

    [[inference]]
    name = "chat"
    kind = "llama-server"
    base_url = "http://127.0.0.1:8001"
    gateway_model = "chat"           # the gateway model it backs (the failover drill stops it)
    allow_kill = true
    kill_command = "docker kill -s KILL chat"
    restart_command = "docker start chat"

Roles: ``gateway``, ``inference`` (a list), ``embedding``, ``rag``, ``vector_store``, ``mcp``,
``memory``; a role left out is absent, and every check of it says "not applicable". A part names its
``kind`` (``KINDS``: the probe paths, version source and documented routes of known software), its
``base_url`` (any host: nothing assumes loopback), ``auth`` (a header and the NAME of an environment
variable or a file holding the secret: the file format has no field for a secret itself), its
``metrics_url`` if it has one, and its permissions: read-only by default; ``allow_write`` (smoke writes
that are cleaned up), ``allow_load`` (the seed load gates), ``allow_kill`` with ``kill_command`` and
``restart_command``, ``allow_restore``. Load and fault drills go to a host beyond loopback only when
``allow_remote_hosts`` names it.

Validation is pydantic's, reported one line per field (``TargetError``); ``docs/target.schema.json``
is ``schema()`` (``python -m harness.target schema``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import RunbookError

Kind = Literal["suite", "llama-server", "litellm", "qdrant", "tei", "infinity", "mcp", "openai"]
ROLES = ("gateway", "inference", "embedding", "rag", "vector_store", "mcp", "memory")
ROLE_WORDS = {"gateway": "gateway", "inference": "inference server", "embedding": "embedding server",
              "rag": "RAG service", "vector_store": "vector store", "mcp": "MCP server", "memory": "memory API"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TargetError(RunbookError):
    """A target file that cannot be read or does not validate (one line per field)."""


@dataclass(frozen=True)
class KindDefaults:
    """What a kind of software answers: probe paths, where it tells its version, the routes it
    documents (for the unauthenticated-access probes) and the ones public by its design."""

    health: str | None
    ready: str | None
    version: tuple[str, ...] = ()  # GET paths whose JSON tells the version or the models, in order
    routes: tuple[tuple[str, str], ...] = ()  # (METHOD, path) the software documents
    public: tuple[str, ...] = ()  # paths it answers without a key by design (probes, model list)
    openapi: bool = False  # serves /openapi.json: its routes are read from there too
    label: str = ""


_LLAMA_ROUTES = (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                 ("POST", "/completion"), ("POST", "/v1/embeddings"), ("POST", "/embedding"), ("POST", "/tokenize"),
                 ("POST", "/detokenize"), ("POST", "/infill"), ("POST", "/apply-template"), ("GET", "/props"),
                 ("GET", "/slots"), ("GET", "/metrics"))
_OPENAI_ROUTES = (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                  ("POST", "/v1/embeddings"))
KINDS: dict[str, KindDefaults] = {
    "suite": KindDefaults("/health", "/ready", ("/v1/models", "/openapi.json"), openapi=True,
                          public=("/health", "/ready", "/metrics"), label="Suite Workbench service"),
    "llama-server": KindDefaults("/health", "/health", ("/props", "/v1/models"), _LLAMA_ROUTES,
                                 public=("/health", "/v1/health", "/models", "/v1/models"), label="llama.cpp llama-server"),
    # LiteLLM's /openapi.json lists ~1000 operations (its admin UI's, most needing a database): its
    # OpenAI surface and the admin routes that read keys, users, models and spend are probed
    "litellm": KindDefaults("/health/liveliness", "/health/readiness", ("/health/readiness/details", "/v1/models"),
                            (*_OPENAI_ROUTES, ("GET", "/models"), ("POST", "/chat/completions"),
                             ("POST", "/embeddings"), ("GET", "/model/info"), ("GET", "/v1/model/info"),
                             ("GET", "/key/list"), ("GET", "/key/info"), ("GET", "/user/list"), ("GET", "/user/info"),
                             ("GET", "/team/list"), ("GET", "/spend/logs"), ("GET", "/global/spend")),
                            public=("/health/liveliness", "/health/readiness", "/health/liveness"),
                            label="LiteLLM proxy"),
    "qdrant": KindDefaults("/healthz", "/readyz", ("/",), (("GET", "/collections"), ("GET", "/cluster"),
                                                          ("GET", "/telemetry"), ("GET", "/metrics")),
                           public=("/healthz", "/readyz", "/livez"), label="Qdrant"),
    "tei": KindDefaults("/health", "/health", ("/info",), (("POST", "/embed"), ("POST", "/v1/embeddings"),
                                                          ("GET", "/info"), ("GET", "/metrics")),
                        public=("/health",), label="Text Embeddings Inference"),
    "infinity": KindDefaults("/health", "/health", ("/models",), (("POST", "/embeddings"), ("GET", "/models"),
                                                                 ("POST", "/v1/embeddings")),
                             public=("/health",), openapi=True, label="Infinity"),
    "mcp": KindDefaults(None, None, label="MCP server (Streamable HTTP)"),
    "openai": KindDefaults("/v1/models", "/v1/models", ("/v1/models",), _OPENAI_ROUTES,
                           label="OpenAI-compatible server"),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Auth(Strict):
    """How a part authenticates: ``header: scheme SECRET``, the secret read from the environment
    variable ``env`` or the file ``file`` when the run starts (never written in the target file)."""

    header: str = Field("Authorization", description="request header that carries the secret")
    scheme: str = Field("Bearer", description="written before the secret ('' for a bare key, e.g. Qdrant's api-key)")
    env: str | None = Field(None, description="NAME of the environment variable that holds the secret")
    file: Path | None = Field(None, description="a file (0600) that holds the secret, instead of env")
    run_keys: bool = Field(False, description="the suite's own run keys (minted by `harness run` with "
                           "`suite keys`): only for a target generated from the suite's settings")

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (the file names the variable "
                             "that holds the secret, never the secret itself)")
        return value

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9-]+$", value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Auth:
        given = [name for name in ("env", "file", "run_keys") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("name exactly one source of the secret: env = \"VARIABLE\" or file = \"PATH\""
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def describe(self) -> str:
        source = (f"${self.env}" if self.env else f"file {self.file}" if self.file else "the run's keys")
        return f"{self.header}: {self.scheme + ' ' if self.scheme else ''}<{source}>"


class Part(Strict):
    """One part of the stack."""

    name: str = Field("", description="how results name it (default: the role; required for inference)")
    kind: Kind = Field(description="the software: probe paths, version and routes default per kind")
    base_url: str = Field(description="http(s)://host:port[/prefix]; any host (parts on other machines are URLs)")
    auth: Auth | None = Field(None, description="how it authenticates; none: the security review says it is open")
    health_path: str | None = Field(None, description="liveness path (default per kind)")
    ready_path: str | None = Field(None, description="readiness path (default per kind)")
    metrics_url: str | None = Field(None, description="its Prometheus /metrics URL, if it has one")
    models: list[str] = Field(default_factory=list, description="model names it answers to")
    mcp_path: str = Field("/mcp", description="Streamable HTTP endpoint (kind mcp)")
    allow_write: bool = Field(False, description="smoke checks may write (and clean up after themselves)")
    allow_load: bool = Field(False, description="the load runbook may run the seed gates against it")
    allow_kill: bool = Field(False, description="the fault drill may kill it with kill_command")
    kill_command: str | None = Field(None, description="shell command that kills the part, e.g. docker kill -s KILL "
                                     "NAME; run in the target file's folder")
    restart_command: str | None = Field(None, description="shell command that starts it again (none: it "
                                        "comes back by itself, e.g. a restart policy)")
    allow_restore: bool = Field(False, description="a backup drill may restore (roll back) its data")

    _folder: str = PrivateAttr("")  # the target file's folder: where its commands run

    @field_validator("base_url", "metrics_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        if parsed.username or parsed.password:
            raise ValueError("a URL must not carry credentials: put the secret in an environment variable and "
                             "name it in auth.env")
        if parsed.query or parsed.fragment:
            raise ValueError(f"{value!r}: no query or fragment")
        return value.rstrip("/")

    @field_validator("health_path", "ready_path", "mcp_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value

    @model_validator(mode="after")
    def _kill(self) -> Part:
        if self.allow_kill and not self.kill_command and self.kind != "suite":
            raise ValueError("allow_kill needs kill_command (the command that kills this part)")
        return self

    # -- derived ---------------------------------------------------------------------------------
    @property
    def defaults(self) -> KindDefaults:
        return KINDS[self.kind]

    @property
    def health(self) -> str | None:
        return self.health_path or self.defaults.health

    @property
    def ready(self) -> str | None:
        return self.ready_path or self.defaults.ready

    @property
    def host(self) -> str:
        return urlparse(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parsed = urlparse(self.base_url)
        return parsed.port or (443 if parsed.scheme == "https" else 80)

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, path: str = "") -> str:
        return self.base_url + path

    def secret(self) -> str | None:
        """The secret, read now (None without auth); ``TargetError`` when its source is missing."""
        if self.auth is None:
            return None
        if self.auth.run_keys:
            raise TargetError(f"{self.name}: run keys are given per role (harness.target.credentials)")
        if self.auth.env:
            value = os.environ.get(self.auth.env, "")
            if not value:
                raise TargetError(f"{self.name}: the environment variable {self.auth.env} that holds its key is "
                                  f"not set (export {self.auth.env}=... before `harness run`)")
            return value
        path = Path(self.auth.file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TargetError(f"{self.name}: cannot read its key file {path}: {exc.strerror}") from None
        if not value:
            raise TargetError(f"{self.name}: its key file {path} is empty")
        return value

    def permissions(self) -> dict[str, bool]:
        return {"write": self.allow_write, "load": self.allow_load, "kill": self.allow_kill,
                "restore": self.allow_restore}


class GatewayPart(Part):
    chat_model: str = Field("chat", description="the gateway model name of chat (seed chat gates)")
    code_model: str = Field("code", description="the gateway model name of code (seed code gate)")
    embedding_model: str | None = Field(None, description="the gateway model name of embeddings, if it routes them")
    fallbacks: dict[str, str] = Field(default_factory=dict, description="model -> model the gateway should "
                                      "answer from when the first one's server is down (the failover drill)")


class InferencePart(Part):
    gateway_model: str | None = Field(None, description="the gateway model name this server backs "
                                      "(the failover drill stops it and asks the gateway for that model)")


class EmbeddingPart(Part):
    dimension: int | None = Field(None, ge=1, description="vector size it must return (checked when given)")


class Target(Strict):
    """A stack by role (module docstring)."""

    name: str = Field(description="what the report calls this stack")
    description: str = ""
    allow_remote_hosts: list[str] = Field(default_factory=list, description="hosts beyond loopback that the "
                                          "load and fault drills may reach, each by name or address")
    gateway: GatewayPart | None = None
    inference: list[InferencePart] = Field(default_factory=list)
    embedding: EmbeddingPart | None = None
    rag: Part | None = None
    vector_store: Part | None = None
    mcp: Part | None = None
    memory: Part | None = None

    _source: str = PrivateAttr("")  # the file, or "settings" for our own suite
    _digest: str = PrivateAttr("")
    _ours: bool = PrivateAttr(False)
    _phase: int = PrivateAttr(3)
    _settings: Any = PrivateAttr(None)  # the suite's settings, for a target generated from them

    @model_validator(mode="after")
    def _names(self) -> Target:
        for role in ROLES:
            value = getattr(self, role)
            if isinstance(value, Part) and not value.name:
                value.name = role
        for i, part in enumerate(self.inference):
            if not part.name:
                raise ValueError(f"inference[{i}] needs a name (e.g. \"chat\" or \"code\")")
        names = [p.name for p in self.parts()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"part names must be unique; repeated: {', '.join(dupes)}")
        if not names:
            raise ValueError("the target has no part: give at least one of " + ", ".join(ROLES))
        return self

    # -- reading ---------------------------------------------------------------------------------
    def parts(self) -> list[Part]:
        """Every part, in role order."""
        out: list[Part] = []
        for role in ROLES:
            value = getattr(self, role)
            out += value if isinstance(value, list) else [value] if value is not None else []
        return out

    def role_of(self, part: Part) -> str:
        for role in ROLES:
            value = getattr(self, role)
            if part is value or (isinstance(value, list) and any(part is p for p in value)):
                return role
        return ""

    def part(self, name: str) -> Part:
        for p in self.parts():
            if p.name == name:
                return p
        raise KeyError(f"no part named {name!r} in target {self.name!r}; parts: "
                       + ", ".join(p.name for p in self.parts()))

    def inference_for(self, gateway_model: str) -> InferencePart | None:
        return next((p for p in self.inference if p.gateway_model == gateway_model), None)

    def missing(self, role: str) -> str:
        """``not applicable: no MCP server in the target``."""
        return f"not applicable: no {ROLE_WORDS.get(role, role)} in the target"

    @property
    def source(self) -> str:
        return self._source

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def ours(self) -> bool:
        """Generated from the suite's own settings: the suite's local checks (its key store, data
        files, supervisor) apply."""
        return self._ours

    @property
    def phase(self) -> int:
        return self._phase

    def remote_allowed(self, part: Part) -> bool:
        """May load and fault drills reach this part? Loopback yes; another host only by name."""
        return part.loopback or part.host in self.allow_remote_hosts

    def not_allowed(self) -> list[str]:
        """What the run may not do, part by part (for the report)."""
        out = []
        for p in self.parts():
            denied = [k for k, v in p.permissions().items() if not v]
            if denied:
                out.append(f"{p.name}: no {', no '.join(denied)}")
            if not self.remote_allowed(p):
                out.append(f"{p.name}: {p.host} is beyond loopback and not in allow_remote_hosts (no load, no kill)")
        return out

    def summary(self) -> dict[str, Any]:
        """What the run records about its target (``target.json``): no secret, only where they come from."""
        return {"name": self.name, "description": self.description, "source": self.source, "digest": self.digest,
                "ours": self.ours, "allow_remote_hosts": self.allow_remote_hosts,
                "parts": [{"name": p.name, "role": self.role_of(p), "kind": p.kind, "base_url": p.base_url,
                           "auth": p.auth.describe() if p.auth else None, "health": p.health, "ready": p.ready,
                           "metrics_url": p.metrics_url, "models": p.models, "permissions": p.permissions()}
                          for p in self.parts()],
                "not_allowed": self.not_allowed()}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _field_path(loc: tuple) -> str:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif not str(item).startswith(("function-", "model-")):
            out += ("." if out else "") + str(item)
    return out or "(the file)"


def format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = _field_path(tuple(x for x in err["loc"] if x not in ("GatewayPart", "Part")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + (" (a target file names where a secret is, never the secret: use auth.env)"
                                     if any(w in str(err["loc"][-1]).lower() for w in ("key", "token", "secret",
                                                                                       "password")) else "")
        elif err["type"] == "literal_error" and err["loc"][-1] == "kind":
            msg = f"unknown kind {err.get('input')!r}; kinds: {', '.join(KINDS)}"
        lines.append(f"  {where}: {msg}")
    return f"target file {source} is not valid:\n" + "\n".join(lines)


def parse(data: dict[str, Any], source: str = "<target>") -> Target:
    """A validated target from parsed data; ``TargetError`` listing each field's problem."""
    if not isinstance(data, dict):
        raise TargetError(f"target file {source} must hold a table/mapping at the top")
    try:
        return Target.model_validate(data)
    except ValidationError as exc:
        raise TargetError(format_errors(exc, source)) from None


def load(path: str | Path) -> Target:
    """Read and validate a target file (``.toml``, ``.yaml``/``.yml``, ``.json``)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read target file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(raw)
        elif path.suffix == ".json":
            data = json.loads(raw)
        else:
            raise TargetError(f"target file {path}: name it .toml, .yaml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError, UnicodeDecodeError) as exc:
        raise TargetError(f"target file {path} does not parse: {exc}") from None
    target = parse(data, str(path))
    for part in target.parts():
        part._folder = str(path.resolve().parent)
    target._source = str(path.resolve())
    target._digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    return target


def schema() -> dict[str, Any]:
    """The JSON schema of a target file (``docs/target.schema.json``)."""
    out = Target.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "Suite Workbench target file"
    return out
