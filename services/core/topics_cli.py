"""``recmesh topics``: create, inspect and replay the Kafka topics of the topic registry.

- ``ensure``: create or update every topic and its DLQ through the admin API (idempotent);
- ``list``: topics with partition counts, and per consumer group committed offsets and lag;
- ``replay``: reset a consumer group's committed offsets (from the beginning or from a time)
  so the service rebuilds its state from the log; refused while the group has members;
- ``dlq``: peek at dead letters with their error headers.

Topic names come from :mod:`recmesh.core.topics` only; TOPIC arguments are registry names
(``interactions.v1``) or the full prefixed name. ``--json`` gives machine-readable output.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import typer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

from recmesh.core.settings import KafkaSettings, ServiceSettings
from recmesh.core.topics import TopicRegistry, TopicSpec

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_BOOTSTRAP = typer.Option(None, "--bootstrap", "-b", help="Brokers (default: RECMESH_KAFKA__BOOTSTRAP_SERVERS).")
_PREFIX = typer.Option(None, "--prefix", help="Topic prefix (default: RECMESH_KAFKA__TOPIC_PREFIX).")
_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")
_TIMEOUT = 30.0
OffsetSpec: Any = _OffsetSpec
_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group never committed on that partition


def _console() -> Console:
    # Wide enough for topic names even when stdout is not a terminal (CI logs, pipes).
    return Console(width=160)


def _context(bootstrap: str | None, prefix: str | None) -> tuple[KafkaSettings, TopicRegistry, AdminClient]:
    kafka = ServiceSettings().kafka
    updates: dict[str, Any] = {}
    if bootstrap:
        updates["bootstrap_servers"] = bootstrap
    if prefix is not None:
        updates["topic_prefix"] = prefix
    if updates:
        kafka = kafka.model_copy(update=updates)
    conf: dict[str, Any] = {**kafka.client_config(), "socket.timeout.ms": 10_000}
    return kafka, TopicRegistry(kafka.topic_prefix), AdminClient(conf)


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _print_json(obj: Any) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _spec(reg: TopicRegistry, topic: str) -> TopicSpec:
    try:
        return reg.spec_for(topic)
    except KeyError:
        known = ", ".join(s.name for s in reg.specs())
        raise _fail(f"unknown topic {topic!r}; known: {known}") from None


def _partitions(admin: AdminClient, topic: str) -> list[int]:
    meta = admin.list_topics(topic=topic, timeout=_TIMEOUT).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise _fail(f"topic {topic} does not exist (run `recmesh topics ensure`)")
    return sorted(meta.partitions)


def _list_offsets(admin: AdminClient, request: dict[TopicPartition, Any]) -> dict[tuple[str, int], int]:
    if not request:
        return {}
    futs = admin.list_offsets(request, request_timeout=_TIMEOUT)
    return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futs.items()}


def _watermarks(admin: AdminClient, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    low = _list_offsets(admin, {TopicPartition(t, p): OffsetSpec.earliest() for t, p in tps})
    high = _list_offsets(admin, {TopicPartition(t, p): OffsetSpec.latest() for t, p in tps})
    return {k: (low[k], high[k]) for k in tps}


def _group_members(admin: AdminClient, group: str) -> tuple[str, list[str]]:
    desc = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT)[group].result()
    state = getattr(desc.state, "name", str(desc.state)).lower()
    return state, [f"{m.client_id}@{m.host}" for m in desc.members]


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    req = [ConsumerGroupTopicPartitions(group)]
    res = admin.list_consumer_group_offsets(req, request_timeout=_TIMEOUT)[group].result()
    return {(tp.topic, tp.partition): int(tp.offset) for tp in res.topic_partitions or []}


def _parse_time(value: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (a time without zone is UTC)."""
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"--from-timestamp {value!r}: give epoch milliseconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@app.command()
def ensure(
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    partitions: int | None = typer.Option(None, help="Cap every topic's partition count (small clusters)."),
    as_json: bool = _JSON,
) -> None:
    """Create missing topics (and their DLQs), raise partition counts, fix drifted configs."""
    kafka, reg, admin = _context(bootstrap, prefix)
    reg.partitions = partitions
    try:
        actions = reg.ensure(admin, timeout=_TIMEOUT)
    except KafkaException as exc:
        raise _fail(f"cannot ensure topics on {kafka.bootstrap_servers}: {exc}") from None
    rows = [
        {
            "topic": reg.name(s),
            "partitions": s.partitions,
            "cleanup": s.cleanup,
            "retention_ms": s.retention_ms if s.cleanup == "delete" else None,
            "action": actions.get(reg.name(s), "?"),
        }
        for s in reg.specs()
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"topics on {kafka.bootstrap_servers}")
    for col in ("topic", "partitions", "cleanup", "retention", "action"):
        table.add_column(col)
    for r in rows:
        style = "green" if r["action"] == "created" else ("yellow" if r["action"] not in ("ok", "exists") else "")
        retention = f"{int(r['retention_ms']) // 3_600_000} h" if r["retention_ms"] else "-"
        table.add_row(str(r["topic"]), str(r["partitions"]), str(r["cleanup"]), retention, f"[{style}]{r['action']}")
    _console().print(table)


@app.command("list")
def list_(
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    group: list[str] | None = typer.Option(None, "--group", "-g", help="Group(s) to show (default: recmesh-*)."),
    as_json: bool = _JSON,
) -> None:
    """Topics with partition counts and end offsets; per consumer group, committed offsets and lag."""
    kafka, reg, admin = _context(bootstrap, prefix)
    try:
        existing = admin.list_topics(timeout=_TIMEOUT).topics
        names = {reg.name(s) for s in reg.specs()}
        tps = [(n, p) for n in sorted(names) if n in existing for p in existing[n].partitions]
        marks = _watermarks(admin, tps)
        if group:
            groups = list(group)
        else:
            listed = admin.list_consumer_groups(request_timeout=_TIMEOUT).result()
            groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith("recmesh-"))
        group_rows: list[dict[str, Any]] = []
        for g in groups:
            state, members = _group_members(admin, g)
            committed = _committed(admin, g)
            per_topic: dict[str, dict[str, int]] = {}
            for (t, p), off in committed.items():
                if (t, p) not in marks:
                    continue  # a topic of another registry (prefix)
                low, high = marks[(t, p)]
                lag = high - (off if off >= 0 else low)
                agg = per_topic.setdefault(t, {"committed": 0, "end": 0, "lag": 0, "partitions": 0})
                agg["committed"] += max(off, 0)
                agg["end"] += high
                agg["lag"] += max(lag, 0)
                agg["partitions"] += 1
            for t, agg in sorted(per_topic.items()):
                group_rows.append({"group": g, "state": state, "members": len(members), "topic": t, **agg})
    except KafkaException as exc:
        raise _fail(f"cannot read cluster state from {kafka.bootstrap_servers}: {exc}") from None
    topic_rows = []
    for s in reg.specs():
        name = reg.name(s)
        if name in existing:
            ends = [marks[(name, p)] for p in existing[name].partitions]
            topic_rows.append({"topic": name, "partitions": len(ends), "messages": sum(h - lo for lo, h in ends),
                               "end_offset": sum(h for _, h in ends), "cleanup": s.cleanup})  # fmt: skip
        else:
            topic_rows.append({"topic": name, "partitions": 0, "messages": 0, "end_offset": 0, "cleanup": "missing"})
    if as_json:
        _print_json({"topics": topic_rows, "groups": group_rows})
        return
    console = _console()
    t1 = Table(title=f"topics on {kafka.bootstrap_servers}")
    for col in ("topic", "partitions", "messages", "end offset", "cleanup"):
        t1.add_column(col)
    for r in topic_rows:
        t1.add_row(str(r["topic"]), str(r["partitions"]), str(r["messages"]), str(r["end_offset"]), str(r["cleanup"]))
    console.print(t1)
    t2 = Table(title="consumer groups")
    for col in ("group", "state", "members", "topic", "committed", "end", "lag"):
        t2.add_column(col)
    for r in group_rows:
        lag_style = "red" if int(r["lag"]) > 0 else "green"
        t2.add_row(str(r["group"]), str(r["state"]), str(r["members"]), str(r["topic"]), str(r["committed"]),
                   str(r["end"]), f"[{lag_style}]{r['lag']}")  # fmt: skip
    console.print(t2 if group_rows else "[dim]no consumer groups with committed offsets on these topics[/dim]")


@app.command()
def replay(
    topic: str = typer.Argument(..., help="Topic to replay, e.g. interactions.v1."),
    group: str = typer.Option(..., "--group", "-g", help="Consumer group to reset, e.g. recmesh-feedback."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Re-read everything retained."),
    from_timestamp: str | None = typer.Option(
        None, "--from-timestamp", help="Re-read from this time: epoch ms or ISO 8601 (UTC if no zone)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the new offsets without changing them."),
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    as_json: bool = _JSON,
) -> None:
    """Reset GROUP's committed offsets on TOPIC so its service rebuilds state from the log.

    The group must have no active members: stop (or scale to zero) the service first.
    """
    if from_beginning == (from_timestamp is not None):
        raise _fail("give exactly one of --from-beginning or --from-timestamp", 2)
    kafka, reg, admin = _context(bootstrap, prefix)
    name = reg.name(_spec(reg, topic))
    try:
        parts = _partitions(admin, name)
        state, members = _group_members(admin, group)
        if members:
            raise _fail(
                f"group {group} has {len(members)} active member(s) ({', '.join(members[:5])}); "
                "stop the consuming service before replaying"
            )
        before = _committed(admin, group)
        marks = _watermarks(admin, [(name, p) for p in parts])
        if from_beginning:
            target = {p: marks[(name, p)][0] for p in parts}
        else:
            ts = _parse_time(str(from_timestamp))
            found = _list_offsets(admin, {TopicPartition(name, p): OffsetSpec.for_timestamp(ts) for p in parts})
            # No message at or after the time: start at the end (nothing to re-read there).
            target = {p: (found[(name, p)] if found[(name, p)] >= 0 else marks[(name, p)][1]) for p in parts}
        if not dry_run:
            req = [ConsumerGroupTopicPartitions(group, [TopicPartition(name, p, o) for p, o in target.items()])]
            admin.alter_consumer_group_offsets(req, request_timeout=_TIMEOUT)[group].result()
    except KafkaException as exc:
        raise _fail(f"replay failed: {exc}") from None
    rows = [
        {"partition": p, "before": before.get((name, p), _NO_OFFSET), "after": o, "to_read": marks[(name, p)][1] - o}
        for p, o in sorted(target.items())
    ]
    if as_json:
        _print_json({"topic": name, "group": group, "state": state, "dry_run": dry_run, "partitions": rows})
        return
    table = Table(title=f"{'would reset' if dry_run else 'reset'} {group} on {name}")
    for col in ("partition", "committed before", "committed now", "to re-read"):
        table.add_column(col)
    for r in rows:
        b = "-" if r["before"] == _NO_OFFSET else str(r["before"])
        table.add_row(str(r["partition"]), b, str(r["after"]), str(r["to_read"]))
    _console().print(table)


@app.command()
def dlq(
    topic: str = typer.Argument(..., help="Source topic (interactions.v1) or its DLQ (interactions.v1.dlq)."),
    limit: int = typer.Option(20, help="Show at most this many dead letters (the oldest first)."),
    bootstrap: str | None = _BOOTSTRAP,
    prefix: str | None = _PREFIX,
    as_json: bool = _JSON,
) -> None:
    """Peek at dead letters with their error headers (nothing is consumed or committed)."""
    from confluent_kafka import Consumer

    kafka, reg, admin = _context(bootstrap, prefix)
    spec = _spec(reg, topic)
    name = reg.name(spec) if spec.name.endswith(".dlq") else reg.dlq(spec)
    parts = _partitions(admin, name)
    marks = _watermarks(admin, [(name, p) for p in parts])
    consumer = Consumer({**kafka.client_config(), "group.id": f"recmesh-cli-peek-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        todo = {p for p in parts if marks[(name, p)][1] > marks[(name, p)][0]}
        consumer.assign([TopicPartition(name, p, marks[(name, p)][0]) for p in todo])
        deadline = datetime.now(UTC).timestamp() + _TIMEOUT
        while todo and len(rows) < limit and datetime.now(UTC).timestamp() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                todo.discard(int(msg.partition() or 0))
                continue
            raw_headers = cast(list[tuple[str, bytes | None]], msg.headers() or [])
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in raw_headers}
            value = msg.value() or b""
            rows.append({"partition": msg.partition(), "offset": msg.offset(), "timestamp_ms": msg.timestamp()[1],
                         "key": (msg.key() or b"").decode("utf-8", "replace"), "headers": headers,
                         "value_bytes": len(value), "value_head": value[:16].hex()})  # fmt: skip
            if int(msg.offset() or 0) + 1 >= marks[(name, int(msg.partition() or 0))][1]:
                todo.discard(int(msg.partition() or 0))
    finally:
        consumer.close()
    if as_json:
        _print_json({"topic": name, "dead_letters": rows})
        return
    table = Table(title=f"dead letters in {name} ({sum(h - lo for lo, h in marks.values())} retained)")
    for col in ("p/offset", "key", "error_class", "error", "source", "bytes", "head"):
        table.add_column(col, overflow="fold")
    for r in rows:
        h = r["headers"]
        source = f"{h.get('source_topic', '?')}[{h.get('source_partition', '?')}]@{h.get('source_offset', '?')}"
        table.add_row(f"{r['partition']}/{r['offset']}", r["key"], h.get("error_class", ""),
                      h.get("error", "")[:120], source, str(r["value_bytes"]), r["value_head"])  # fmt: skip
    _console().print(table)
