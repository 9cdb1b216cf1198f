"""The one settings object: defaults, env and TOML overrides, profile rules, clear errors."""

import pytest
from pydantic import ValidationError

from suite.settings import Settings


def test_defaults_are_the_seed_ports_on_loopback(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.host == "127.0.0.1"
    assert [s.port(n) for n in ("gateway", "inference-chat", "rag", "embedding", "inference-code",
                                "memory", "tools")] == [8000, 8001, 8002, 8003, 8004, 8005, 8020]
    assert s.url("gateway") == "http://127.0.0.1:8000"
    assert s.inference.chat.alias == "chat" and s.inference.code.alias == "code"
    assert s.inference.chat.n_gpu_layers == 0 and s.inference.chat.chat_format == "gemma"
    assert s.qdrant_location() == {"path": str(tmp_path / "qdrant")}


def test_env_overrides_nested_fields_and_keeps_their_siblings(monkeypatch, tmp_path):
    monkeypatch.setenv("SUITE_PORT_OFFSET", "1000")
    monkeypatch.setenv("SUITE_GATEWAY__RETRIES", "3")
    monkeypatch.setenv("SUITE_INFERENCE__CHAT__PATH", "/models/chat.gguf")
    s = Settings(data_dir=tmp_path)
    assert s.port("gateway") == 9000 and s.port("tools") == 9020
    assert s.gateway.retries == 3 and s.gateway.cooldown_s == 15.0
    assert str(s.inference.chat.path) == "/models/chat.gguf" and s.inference.chat.alias == "chat"
    assert s.model_path("chat").name == "chat.gguf"


def test_toml_file_is_read_and_env_wins_over_it(monkeypatch, tmp_path):
    cfg = tmp_path / "suite.toml"
    cfg.write_text('log_level = "DEBUG"\n[gateway]\nretries = 2\ncooldown_s = 1.5\n')
    monkeypatch.setenv("SUITE_CONFIG", str(cfg))
    monkeypatch.setenv("SUITE_GATEWAY__RETRIES", "4")
    s = Settings(data_dir=tmp_path)
    assert s.log_level == "DEBUG" and s.gateway.cooldown_s == 1.5 and s.gateway.retries == 4


def test_missing_config_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SUITE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="SUITE_CONFIG"):
        Settings()


def test_gpu_profile_needs_model_paths_and_names_the_setting(tmp_path):
    with pytest.raises(ValidationError, match="inference.chat.path"):
        Settings(profile="gpu", data_dir=tmp_path)
    # a customised alias does not change the settings key the message names
    with pytest.raises(ValidationError, match="SUITE_INFERENCE__CODE__PATH"):
        Settings(profile="gpu", data_dir=tmp_path,
                 inference={"chat": {"path": "/m/a.gguf"}, "code": {"alias": "coder"}})


def test_gpu_profile_defaults(tmp_path):
    s = Settings(profile="gpu", data_dir=tmp_path,
                 inference={"chat": {"path": "/m/a.gguf"}, "code": {"path": "/m/b.gguf"}})
    assert s.inference.chat.n_gpu_layers == -1 and s.inference.code.n_gpu_layers == -1
    assert s.qdrant_location() == {"url": "http://127.0.0.1:6333"}
    assert s.embedding.device == "cuda"


@pytest.mark.parametrize("field,value", [("port_offset", 99999), ("profile", "tpu"), ("ports", {"gateway": "x"})])
def test_invalid_values_are_refused(field, value, tmp_path):
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, **{field: value})


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="no_such"):
        Settings(data_dir=tmp_path, no_such=1)


def test_settings_file_round_trip(tmp_path):
    s = Settings(data_dir=tmp_path, port_offset=123, gateway={"retries": 5})
    again = Settings.from_file(s.dump_file(tmp_path / "s.json"))
    assert again == s


def test_vector_store_choice_edge_by_default_local_on_request_server_by_url(tmp_path):
    assert Settings(data_dir=tmp_path).vector_store() == {"kind": "edge", "location": str(tmp_path / "edge")}
    assert Settings(data_dir=tmp_path, rag={"store": "local"}).vector_store() == {
        "kind": "local", "location": str(tmp_path / "qdrant")}
    gpu = {"profile": "gpu", "inference": {"chat": {"path": "/m/a.gguf"}, "code": {"path": "/m/b.gguf"}}}
    assert Settings(data_dir=tmp_path, **gpu).vector_store()["kind"] == "server"
    # choosing an embedded store on the gpu profile keeps it embedded
    assert Settings(data_dir=tmp_path, rag={"store": "edge"}, **gpu).vector_store()["kind"] == "edge"
