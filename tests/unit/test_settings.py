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
    assert s.auth.tenants_by_key() == {"key-a": "shop1", "key-b": "*"}
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
    monkeypatch.setenv("RECMESH_AUTH__API_KEYS", '{"hunter2-api-key": "shop1"}')
    s = ServiceSettings()
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(s.auth)):
        assert "hunter2" not in text
    assert s.kafka.client_config()["sasl.password"] == "hunter2-kafka"
    assert s.redis.password is not None and s.redis.password.get_secret_value() == "hunter2-redis"
    assert s.auth.tenants_by_key() == {"hunter2-api-key": "shop1"}  # the authenticator still sees the key


def test_api_keys_are_checked_in_clear_but_dumped_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from recmesh.core.errors import Forbidden, Unauthenticated
    from recmesh.core.web import ApiKeyAuth

    monkeypatch.setenv("RECMESH_AUTH__API_KEYS", '{"k-shop": "shop1", "k-all": "*"}')
    s = ServiceSettings()
    auth = ApiKeyAuth(s.auth)
    assert auth.check("k-shop", "shop1") == "shop1" and auth.check("k-all", "other") == "other"
    with pytest.raises(Forbidden):
        auth.check("k-shop", "other")
    with pytest.raises(Unauthenticated):
        auth.check("nope", "shop1")
    for text in (repr(s), s.model_dump_json(), str(s.model_dump(mode="json"))):
        assert "k-shop" not in text and "k-all" not in text


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


def test_stack_ports_come_from_the_environment_with_explicit_variables_winning() -> None:
    """`make up` next to another stack: an offset moves every port, an explicit port wins."""
    from recmesh.stack import StackConfig, infra_env

    default = StackConfig.from_env({})
    ports = (default.kafka_port, default.controller_port, default.redis_port, default.grpc_port)
    assert ports == (9092, 9093, 6379, 50051)
    assert default.port("ingestion") == 8001 and default.bootstrap == "127.0.0.1:9092"

    shifted = StackConfig.from_env({"RECMESH_STACK_PORT_OFFSET": "100", "REDIS_PORT": "7000"})
    assert (shifted.kafka_port, shifted.controller_port, shifted.redis_port) == (9192, 9193, 7000)
    assert (shifted.port("scoring"), shifted.port("training"), shifted.grpc_port) == (8100, 8104, 50151)
    assert shifted.redis == "redis://127.0.0.1:7000/0"
    env = shifted.service_env("ingestion")
    assert env["RECMESH_HTTP__PORT"] == "8101" and env["RECMESH_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:9192"
    assert infra_env(shifted)["KAFKA_CONTROLLER_PORT"] == "9193" and infra_env(shifted)["REDIS_PORT"] == "7000"

    explicit_env = {"KAFKA_PORT": "29092", "KAFKA_CONTROLLER_PORT": "29999", "RECMESH_REDIS__URL": "redis://cache:6380/2",
                    "RECMESH_SCORING__GRPC_PORT": "51000"}  # fmt: skip
    explicit = StackConfig.from_env(explicit_env, port_offset=5)
    assert (explicit.kafka_port, explicit.controller_port, explicit.grpc_port) == (29092, 29999, 51000)
    assert explicit.redis == "redis://cache:6380/2" and explicit.port("scoring") == 8005
    with pytest.raises(SystemExit, match="KAFKA_PORT"):
        StackConfig.from_env({"KAFKA_PORT": "nine"})
    with pytest.raises(SystemExit, match="RECMESH_STACK_PORT_OFFSET"):
        StackConfig.from_env({"RECMESH_STACK_PORT_OFFSET": "x"})
