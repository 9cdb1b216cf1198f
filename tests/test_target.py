"""The target file: validated with one clear line per field, no secret in it, its JSON schema and the
examples in docs/ kept true, our own suite generated from the settings, and permissions read as the
harness will apply them (read-only by default; load and kills beyond loopback only by name)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from harness.errors import RunbookError
from harness.load.plan import plan, target_refusal
from harness.target import TargetError, headers, load, open_target, parse, schema, secrets, suite_target
from harness.target import control as ctl
from suite.settings import Settings, project_root

DOCS = project_root() / "docs"
MINIMAL = {"name": "t", "gateway": {"kind": "litellm", "base_url": "http://127.0.0.1:4000",
                                    "auth": {"env": "T_GATEWAY_KEY"}}}


def write(tmp_path: Path, text: str, name: str = "target.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_bad_field_is_named_on_its_own_line(tmp_path):
    path = write(tmp_path, """
name = "bad"
[gateway]
kind = "nginx"
base_url = "ftp://example"
api_key = "sk-live-123"
[[inference]]
kind = "llama-server"
base_url = "http://user:pw@127.0.0.1:8001"
auth = { env = "sk-live-123" }
[[inference]]
name = "code"
kind = "llama-server"
base_url = "http://127.0.0.1:8004"
allow_kill = true
""")
    with pytest.raises(TargetError) as err:
        load(path)
    text = str(err.value)
    assert isinstance(err.value, RunbookError) and str(path) in text  # `harness run` exits 2 with it
    lines = [line.strip() for line in text.splitlines()[1:]]
    assert any(line.startswith("gateway.kind: unknown kind 'nginx'") and "llama-server" in line for line in lines)
    assert any(line.startswith("gateway.base_url:") and "http(s) URL" in line for line in lines)
    assert any(line.startswith("gateway.api_key: unknown field") and "auth.env" in line for line in lines)
    assert any(line.startswith("inference[0].base_url:") and "credentials" in line for line in lines)
    assert any(line.startswith("inference[0].auth.env:") and "not an environment variable name" in line
               for line in lines)
    assert any(line.startswith("inference[1]:") and "kill_command" in line for line in lines)
    assert any(line.startswith("inference[0].name:") or "inference[0]" in line for line in lines)


def test_a_file_that_does_not_parse_or_names_no_part_says_so(tmp_path):
    with pytest.raises(TargetError, match="does not parse"):
        load(write(tmp_path, "name = [unclosed"))
    with pytest.raises(TargetError, match="no part"):
        load(write(tmp_path, 'name = "empty"'))
    with pytest.raises(TargetError, match="cannot read"):
        load(tmp_path / "absent.toml")
    with pytest.raises(TargetError, match="inference\\[0\\] needs a name"):
        parse({"name": "x", "inference": [{"kind": "llama-server", "base_url": "http://127.0.0.1:1"}]})
    with pytest.raises(TargetError, match="repeated: chat"):
        parse({"name": "x", "inference": [{"name": "chat", "kind": "openai", "base_url": "http://127.0.0.1:1"},
                                          {"name": "chat", "kind": "openai", "base_url": "http://127.0.0.1:2"}]})


def test_yaml_and_toml_read_alike_and_the_digest_is_the_file_s(tmp_path):
    import yaml

    toml_file = write(tmp_path, 'name = "t"\n[gateway]\nkind = "litellm"\nbase_url = "http://127.0.0.1:4000"\n'
                                'auth = { env = "T_GATEWAY_KEY" }\n')
    yaml_file = write(tmp_path, yaml.safe_dump(MINIMAL), "target.yaml")
    a, b = load(toml_file), load(yaml_file)
    assert a.summary()["parts"] == b.summary()["parts"]
    assert a.digest.startswith("sha256:") and a.digest != b.digest
    assert a.gateway.health == "/health/liveliness" and a.gateway.ready == "/health/readiness"


def test_secrets_come_from_the_environment_and_a_missing_one_is_named(tmp_path, monkeypatch):
    target = parse(MINIMAL)
    monkeypatch.delenv("T_GATEWAY_KEY", raising=False)
    with pytest.raises(TargetError, match="T_GATEWAY_KEY .* is not set"):
        headers(target, target.gateway)
    monkeypatch.setenv("T_GATEWAY_KEY", "sk-test-secret")
    assert headers(target, target.gateway) == {"Authorization": "Bearer sk-test-secret"}
    assert secrets(target) == ["sk-test-secret"]
    assert "sk-test-secret" not in json.dumps(target.summary())  # what run.json records
    bare = parse({"name": "q", "vector_store": {"kind": "qdrant", "base_url": "http://127.0.0.1:6333",
                                                "auth": {"header": "api-key", "scheme": "", "file": str(tmp_path / "k")}}})
    (tmp_path / "k").write_text("qdrant-secret\n")
    assert headers(bare, bare.vector_store) == {"api-key": "qdrant-secret"}


def test_permissions_are_read_only_by_default_and_remote_hosts_need_their_name():
    target = parse({"name": "t", "allow_remote_hosts": ["10.231.0.2"],
                    "gateway": {"kind": "litellm", "base_url": "http://10.231.0.9:4000", "allow_load": True},
                    "embedding": {"kind": "tei", "base_url": "http://10.231.0.2:8080", "allow_load": True},
                    "inference": [{"name": "chat", "kind": "llama-server", "base_url": "http://127.0.0.1:8001",
                                   "gateway_model": "chat"}]})
    chat = target.part("chat")
    assert chat.permissions() == {"write": False, "load": False, "kill": False, "restore": False}
    assert "allow_kill = false" in ctl.refusal(target, chat)
    scenarios = {sc.name: sc for sc in plan("seed-100x5,embedding,rag")}
    assert "beyond loopback" in target_refusal(target, scenarios["seed-100x5"])  # 10.231.0.9 is not named
    assert target_refusal(target, scenarios["embedding"]) == ""  # 10.231.0.2 is
    assert target_refusal(target, scenarios["rag"]) == "not applicable: no RAG service in the target"
    assert any("10.231.0.9 is beyond loopback" in line for line in target.not_allowed())


def test_our_suite_is_a_target_generated_from_its_settings(tmp_path):
    settings = Settings(data_dir=tmp_path, port_offset=9000)
    one, three = suite_target(settings, 1), open_target("", settings, 3)
    assert one.ours and three.ours and one.source == "settings"
    assert [p.name for p in one.parts()] == ["gateway", "inference-chat", "inference-code"]
    assert [p.name for p in three.parts()] == ["gateway", "inference-chat", "inference-code", "embedding", "rag",
                                              "tools", "memory"]
    assert three.gateway.base_url == settings.url("gateway") and three.mcp.name == "tools"
    assert three.inference_for("chat").name == "inference-chat" and three.gateway.fallbacks == {"chat": "code",
                                                                                                "code": "chat"}
    assert all(p.auth.run_keys and p.allow_kill for p in three.parts())
    assert three.missing("vector_store") == "not applicable: no vector store in the target"


def test_the_schema_in_docs_is_current_and_the_examples_follow_it():
    shipped = json.loads((DOCS / "target.schema.json").read_text())
    assert shipped == schema(), "regenerate: python -m harness.target schema > docs/target.schema.json"
    jsonschema.Draft202012Validator.check_schema(shipped)
    examples = sorted((DOCS / "targets").glob("*.toml"))
    assert {p.name for p in examples} >= {"seeds.toml", "third-party.toml"}
    for path in examples:
        jsonschema.validate(tomllib.loads(path.read_text()), shipped)
        load(path)
    seeds = load(DOCS / "targets" / "seeds.toml")
    ports = {p.name: p.port for p in seeds.parts()}
    assert ports == {"gateway": 8000, "chat": 8001, "code": 8004, "embedding": 8003, "rag": 8002,
                     "vector_store": 6333, "mcp": 8020, "memory": 8005}
    assert seeds.memory.health == "/v1/memory/health"
