"""Configuration for every service: pydantic-settings, env prefix ``RECMESH_``, nested ``__``.

One settings object is built in each service's entry point and passed down; nothing else
reads the environment. Sections are shared (Kafka, Redis, registry, HTTP, auth); each service
subclasses :class:`ServiceSettings` to add its own section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    """Connection to the Kafka cluster and client tuning."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated broker list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol."
    )
    sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. PLAIN or SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    topic_prefix: str = Field(
        "", description="Prefix for every topic name (isolates tests or tenants sharing one cluster)."
    )
    client_id: str = Field("recmesh", description="client.id prefix; the service name is appended.")
    producer_queue_max_messages: int = Field(
        200_000, ge=1, description="Local producer queue bound; beyond it callers get backpressure."
    )
    producer_linger_ms: float = Field(5.0, ge=0, description="linger.ms: batching delay for producers.")
    consumer_batch_size: int = Field(500, ge=1, description="Max messages handed to a handler per poll.")
    consumer_poll_timeout_s: float = Field(0.05, gt=0, description="Poll timeout of the consumer runner.")
    max_retries: int = Field(
        5,
        ge=0,
        description="Retries of a failing handler before the DLQ (transient errors retry until they pass).",
    )
    retry_backoff_s: float = Field(0.2, gt=0, description="First retry delay; doubles each retry.")

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        cfg = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password:
            cfg["sasl.password"] = self.sasl_password.get_secret_value()
        return cfg


class RedisSettings(BaseModel):
    """Online feature store connection and key time-to-live per key family (seconds)."""

    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss://).")
    password: SecretStr | None = Field(None, description="Password, when not in the URL (secret).")
    socket_timeout_s: float = Field(1.0, gt=0, description="Socket timeout for every command.")
    user_vector_ttl_s: int = Field(30 * 86400, description="TTL of per-model-version user vectors.")
    recent_items_ttl_s: int = Field(30 * 86400, description="TTL of a user's recent-items list.")
    recent_items_max: int = Field(50, ge=1, description="Cap of the recent-items list.")
    seen_ttl_s: int = Field(90 * 86400, description="TTL of a user's seen-items set.")
    seen_max: int = Field(1000, ge=1, description="Cap of the seen-items set.")
    counters_ttl_s: int = Field(30 * 86400, description="TTL of popularity, trending and co-visitation.")
    impression_ttl_s: int = Field(3600, description="How long an impression waits for attribution.")
    dedupe_ttl_s: int = Field(7 * 86400, description="TTL of processed event ids (idempotency).")


class RegistrySettings(BaseModel):
    """Model registry location (any fsspec URI)."""

    uri: str = Field(".local/registry", description="Registry root: local path, file://, s3://, ...")


class HttpSettings(BaseModel):
    """HTTP server of the service (API or health/metrics)."""

    host: str = Field("127.0.0.1", description="Bind address (0.0.0.0 in containers).")
    port: int = Field(8000, ge=0, le=65535, description="Port; 0 picks a free one.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")


class AuthSettings(BaseModel):
    """API keys. Keys map to a tenant, or '*' for every tenant. None configured = open API.

    The key strings are the secrets, so they are held as ``SecretStr`` (masked in reprs, logs
    and dumps); the env variable stays the same JSON object ``{key: tenant}``.
    """

    api_keys: dict[SecretStr, str] = Field(
        default_factory=dict, description="JSON object {key: tenant or '*'} (secret in production)."
    )

    def tenants_by_key(self) -> dict[str, str]:
        """The keys in clear, for the authenticator only (never log or return this)."""
        return {k.get_secret_value(): t for k, t in self.api_keys.items()}


class ServiceSettings(BaseSettings):
    """Settings every service shares. Build once in the entry point with ``ServiceSettings()``."""

    model_config = SettingsConfigDict(env_prefix="RECMESH_", env_nested_delimiter="__", extra="ignore", frozen=True)

    env: Literal["dev", "test", "prod"] = Field("dev", description="dev/test allow open auth.")
    service_name: str = Field("recmesh", description="Name in logs, metrics and client ids.")
    tenant: str = Field("default", description="Default tenant for events that name none.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="JSON-line logs (False: human-readable).")
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; set it to use the Confluent wire format."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # type: ignore[arg-type]
    redis: RedisSettings = Field(default_factory=RedisSettings)  # type: ignore[arg-type]
    registry: RegistrySettings = Field(default_factory=RegistrySettings)  # type: ignore[arg-type]
    http: HttpSettings = Field(default_factory=HttpSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="after")
    def _refuse_open_production(self) -> ServiceSettings:
        if self.env == "prod" and not self.auth.api_keys:
            raise ValueError("RECMESH_AUTH__API_KEYS must be set when RECMESH_ENV=prod")
        return self
