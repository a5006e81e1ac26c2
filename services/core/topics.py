"""The one registry of topic names. No other module spells a topic name.

Each topic is a typed :class:`TopicSpec` (name, key field, value class, partitions, cleanup
policy, retention). A :class:`TopicRegistry` applies an optional prefix (tests and tenants
sharing a cluster) and creates or updates topics through the Kafka admin API.

Catalog topics are compacted and a tombstone deletes by key, so their keys are
tenant-qualified: :func:`catalog_key` builds them and :func:`parse_catalog_key` reads them
back, for every producer and consumer of ``catalog.items.v1`` / ``catalog.users.v1``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import AlterConfigOpType as _AlterOp  # type: ignore[attr-defined]
from confluent_kafka.admin import ConfigEntry as _ConfigEntry  # type: ignore[attr-defined]
from confluent_kafka.admin import ConfigResource as _ConfigResource  # type: ignore[attr-defined]
from confluent_kafka.admin import NewPartitions as _NewPartitions  # type: ignore[attr-defined]
from confluent_kafka.admin import NewTopic as _NewTopic  # type: ignore[attr-defined]

from recmesh.core.events import (
    Interaction,
    ItemUpdate,
    LabeledInteraction,
    ModelPublished,
    RecommendationServed,
    UserUpdate,
)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """A topic: name (without prefix), key field, value class, partitions, cleanup, retention."""

    name: str
    key: str
    value: type[Any] | None
    partitions: int = 6
    cleanup: Literal["delete", "compact"] = "delete"
    retention_ms: int | None = 7 * DAY_MS
    doc: str = ""

    @property
    def configs(self) -> dict[str, str]:
        cfg: dict[str, str] = {"cleanup.policy": self.cleanup}
        if self.retention_ms is not None and self.cleanup == "delete":
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


INTERACTIONS = TopicSpec(
    "interactions.v1", "user_id", Interaction, doc="ingestion → feedback, personalization, training"
)  # noqa: E501
CATALOG_ITEMS = TopicSpec(
    "catalog.items.v1",
    "item_id",
    ItemUpdate,
    partitions=3,
    cleanup="compact",
    retention_ms=None,
    doc="ingestion → training, scoring, feedback",
)  # noqa: E501
CATALOG_USERS = TopicSpec(
    "catalog.users.v1",
    "user_id",
    UserUpdate,
    partitions=3,
    cleanup="compact",
    retention_ms=None,
    doc="ingestion → training, personalization",
)  # noqa: E501
RECOMMENDATIONS_SERVED = TopicSpec(
    "recommendations.served.v1", "user_id", RecommendationServed, doc="scoring → feedback"
)  # noqa: E501
FEEDBACK_LABELED = TopicSpec("feedback.labeled.v1", "user_id", LabeledInteraction, doc="feedback → training")
MODELS_PUBLISHED = TopicSpec(
    "models.published.v1",
    "name",
    ModelPublished,
    partitions=1,
    cleanup="compact",
    retention_ms=None,
    doc="training → scoring, personalization",
)  # noqa: E501

ALL: tuple[TopicSpec, ...] = (
    INTERACTIONS, CATALOG_ITEMS, CATALOG_USERS, RECOMMENDATIONS_SERVED, FEEDBACK_LABELED, MODELS_PUBLISHED,
)  # fmt: skip

DLQ_RETENTION_MS = 14 * DAY_MS


def dlq_spec(spec: TopicSpec) -> TopicSpec:
    """The dead-letter topic of ``spec``: original key and bytes plus error headers."""
    return TopicSpec(f"{spec.name}.dlq", spec.key, None, partitions=1, retention_ms=DLQ_RETENTION_MS,
                     doc=f"dead letters of {spec.name}")  # fmt: skip


# ASCII "unit separator": not a character anyone types into an id, and never valid in a tenant.
CATALOG_KEY_SEP = "\x1f"


def catalog_key(tenant: str | None, entity_id: str, default_tenant: str) -> str:
    """Kafka key of a catalog record (upsert or tombstone) of ``entity_id`` in ``tenant``.

    The default tenant keeps the bare id (records written before keys were qualified stay
    valid); any other tenant gets ``<tenant>\\x1f<id>``, so compaction and tombstones of one
    tenant never touch another tenant's entity with the same id. A default-tenant id that
    itself contains the separator is qualified too, so :func:`parse_catalog_key` is exact.
    Raises ValueError for a tenant containing the separator.
    """
    t = tenant or default_tenant
    if t == default_tenant and CATALOG_KEY_SEP not in entity_id:
        return entity_id
    if CATALOG_KEY_SEP in t:
        raise ValueError(f"tenant {t!r} contains the catalog key separator (\\x1f)")
    return f"{t}{CATALOG_KEY_SEP}{entity_id}"


def parse_catalog_key(key: str, default_tenant: str) -> tuple[str, str]:
    """(tenant, entity id) of a catalog key built by :func:`catalog_key` (a bare id: the default tenant)."""
    tenant, sep, entity_id = key.partition(CATALOG_KEY_SEP)
    return (tenant, entity_id) if sep else (default_tenant, key)


class TopicRegistry:
    """Topic names as seen on one cluster: base specs + prefix + partition override."""

    def __init__(self, prefix: str = "", partitions: int | None = None) -> None:
        self.prefix = prefix
        self.partitions = partitions

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.name}"

    def dlq(self, spec: TopicSpec) -> str:
        return self.name(dlq_spec(spec))

    def specs(self, with_dlq: bool = True) -> list[TopicSpec]:
        out: list[TopicSpec] = []
        for spec in ALL:
            out.append(spec)
            if with_dlq:
                out.append(dlq_spec(spec))
        if self.partitions is not None:
            out = [replace(s, partitions=min(s.partitions, self.partitions)) for s in out]
        return out

    def spec_for(self, name: str) -> TopicSpec:
        """The spec of a topic given by base name (``interactions.v1``, ``interactions.v1.dlq``)
        or by its full, prefixed name. Raises KeyError for a topic this registry does not know."""
        for spec in self.specs():
            if name in (spec.name, self.name(spec)):
                return spec
        raise KeyError(name)

    def ensure(self, admin: AdminClient, timeout: float = 30.0) -> dict[str, str]:
        """Create missing topics, raise partition counts, update drifted configs.

        Returns name → action: ``created``, ``exists`` (created concurrently), ``ok``
        (nothing to do), or a description of what changed. Running it twice is a no-op.
        """
        existing = admin.list_topics(timeout=timeout).topics
        actions: dict[str, str] = {}
        create = [
            _NewTopic(self.name(s), num_partitions=s.partitions, replication_factor=-1, config=s.configs)
            for s in self.specs()
            if self.name(s) not in existing
        ]
        if create:
            for topic, fut in admin.create_topics(create, operation_timeout=timeout).items():
                try:
                    fut.result()
                    actions[topic] = "created"
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    actions[topic] = "exists"
        present = [s for s in self.specs() if self.name(s) in existing]
        grow = []
        changes: dict[str, list[str]] = {self.name(s): [] for s in present}
        for s in present:
            name = self.name(s)
            have = len(existing[name].partitions)
            if have < s.partitions:
                grow.append(_NewPartitions(name, s.partitions))
                changes[name].append(f"partitions {have}→{s.partitions}")
        if grow:
            for fut in admin.create_partitions(grow, operation_timeout=timeout).values():
                fut.result()
        current = self._describe_configs(admin, [self.name(s) for s in present], timeout)
        resources = []
        for s in present:
            name = self.name(s)
            drift = {k: v for k, v in s.configs.items() if current.get(name, {}).get(k) != v}
            if drift:
                resources.append(
                    _ConfigResource(
                        _ConfigResource.Type.TOPIC,
                        name,
                        incremental_configs=[
                            _ConfigEntry(k, v, incremental_operation=_AlterOp.SET) for k, v in drift.items()
                        ],
                    )
                )
                changes[name] += [f"{k}={v}" for k, v in drift.items()]
        if resources:
            for fut in admin.incremental_alter_configs(resources).values():
                fut.result()
            self._await_configs(admin, [s for s in present if changes[self.name(s)]], timeout)
        for name, what in changes.items():
            actions[name] = ", ".join(what) if what else "ok"
        return actions

    def _await_configs(self, admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
        """Altered configs reach describe_configs asynchronously; wait (briefly) so that an
        immediate second ``ensure`` sees them and reports ``ok``."""
        deadline = time.monotonic() + min(timeout, 10.0)
        while time.monotonic() < deadline:
            current = self._describe_configs(admin, [self.name(s) for s in specs], timeout)
            if all(current.get(self.name(s), {}).get(k) == v for s in specs for k, v in s.configs.items()):
                return
            time.sleep(0.1)

    @staticmethod
    def _describe_configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        futs = admin.describe_configs(
            [_ConfigResource(_ConfigResource.Type.TOPIC, n) for n in names], request_timeout=timeout
        )
        out: dict[str, dict[str, str]] = {}
        for res, fut in futs.items():
            out[res.name] = {k: str(e.value) for k, e in fut.result().items()}
        return out

    def delete_all(self, admin: AdminClient, timeout: float = 30.0) -> None:
        """Delete this registry's topics (tests clean up their prefixed topics)."""
        existing = admin.list_topics(timeout=timeout).topics
        names = [self.name(s) for s in self.specs() if self.name(s) in existing]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=timeout).values():
                with contextlib.suppress(KafkaException):
                    fut.result()
