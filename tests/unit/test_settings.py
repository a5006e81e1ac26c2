"""Settings come from RECMESH_* variables with nested ``__`` sections, keep secrets out of
reprs and logs, and refuse an open API in production."""

from __future__ import annotations

import os

import pytest
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from recmesh.core.settings import ServiceSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever RECMESH_* the developer's shell has must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("RECMESH_"):
            monkeypatch.delenv(name)


def test_defaults_run_the_local_stack() -> None:
    s = ServiceSettings()
    assert s.env == "dev"
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.schema_registry_url is None


def test_prefix_and_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECMESH_SERVICE_NAME", "feedback")
    monkeypatch.setenv("RECMESH_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("RECMESH_KAFKA__CONSUMER_BATCH_SIZE", "123")
    monkeypatch.setenv("RECMESH_REDIS__DEDUPE_TTL_S", "60")
    monkeypatch.setenv("RECMESH_AUTH__API_KEYS", '{"key-a": "shop1", "key-b": "*"}')
    monkeypatch.setenv("KAFKA__BOOTSTRAP_SERVERS", "not-ours:1")  # no prefix: ignored
    s = ServiceSettings()
    assert s.service_name == "feedback"
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.consumer_batch_size == 123
    assert s.redis.dedupe_ttl_s == 60
    assert s.auth.api_keys == {"key-a": "shop1", "key-b": "*"}
    assert s.kafka.client_config()["bootstrap.servers"] == "k1:9092,k2:9092"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECMESH_KAFKA__CONSUMER_BATCH_SIZE", "0")
    with pytest.raises(PydanticValidationError):
        ServiceSettings()


def test_secrets_stay_out_of_repr_but_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECMESH_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("RECMESH_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("RECMESH_KAFKA__SASL_PASSWORD", "hunter2-kafka")
    monkeypatch.setenv("RECMESH_REDIS__PASSWORD", "hunter2-redis")
    s = ServiceSettings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2" not in text
    assert s.kafka.client_config()["sasl.password"] == "hunter2-kafka"
    assert s.redis.password is not None and s.redis.password.get_secret_value() == "hunter2-redis"


def test_production_refuses_an_open_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECMESH_ENV", "prod")
    with pytest.raises(PydanticValidationError, match="RECMESH_AUTH__API_KEYS"):
        ServiceSettings()
    monkeypatch.setenv("RECMESH_AUTH__API_KEYS", '{"k": "*"}')
    assert ServiceSettings().env == "prod"


def test_a_service_section_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Section(BaseModel):
        window_s: int = 60

    class MySettings(ServiceSettings):
        mine: Section = Field(default_factory=Section)

    monkeypatch.setenv("RECMESH_MINE__WINDOW_S", "5")
    s = MySettings()
    assert s.mine.window_s == 5
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_settings_are_frozen() -> None:
    s = ServiceSettings()
    with pytest.raises(PydanticValidationError):
        s.env = "prod"  # type: ignore[misc]
