"""Kafka producer and the consumer runner, written once and used by every service.

Producer: idempotent (``enable.idempotence``, ``acks=all``), keyed, bounded local queue that
raises :class:`Backpressure` instead of blocking, delivery reports counted in metrics, a
background poll thread, flush on close. ``send_batch_async`` lets an HTTP handler await the
broker's acknowledgement of a whole batch without blocking the event loop.

Consumer runner: batch poll → decode (bytes never reach a handler) → handler → commit.
At-least-once: offsets are committed only after the handler returned (its effects durable)
and dead letters were acknowledged — asynchronously after each batch, synchronously when
partitions are revoked and on stop (a lost async commit only means idempotent redelivery).
Transient failures (Redis or broker down) are retried with capped exponential backoff for as
long as it takes, never committing past them. A message
that cannot be decoded, or whose handler keeps failing, goes to ``<topic>.dlq`` with the
headers ``error``, ``error_class``, ``source_topic``, ``source_partition``,
``source_offset``, and the runner moves on. ``stop()`` (SIGTERM) finishes the batch,
commits and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from recmesh.core import metrics as m
from recmesh.core.codec import make_codec
from recmesh.core.errors import Backpressure, TransientError
from recmesh.core.events import to_record
from recmesh.core.settings import KafkaSettings
from recmesh.core.topics import TopicRegistry, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
DeliveryCallback = Callable[[KafkaError | None, Message], None]


def _transient_types() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rex

    return (TransientError, rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, KafkaException,
            ConnectionError, TimeoutError)  # fmt: skip


TRANSIENT: tuple[type[BaseException], ...] = _transient_types()


def _key_of(spec: TopicSpec, event: Any) -> bytes | None:
    key = getattr(event, spec.key, None)
    return None if key is None else str(key).encode()


class EventProducer:
    """Typed, idempotent producer for the topics of one registry."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicRegistry,
        client_id: str = "recmesh",
        schema_registry_url: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self._schema_registry_url = schema_registry_url
        cfg: dict[str, Any] = {
            **kafka.client_config(),
            "client.id": f"{kafka.client_id}-{client_id}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": kafka.producer_linger_ms,
            "compression.type": "lz4",
            "queue.buffering.max.messages": kafka.producer_queue_max_messages,
            "queue.buffering.max.kbytes": 1_048_576,
            "batch.num.messages": 10_000,
            "message.timeout.ms": 120_000,
        }
        cfg.update(extra_config or {})
        self.config: dict[str, Any] = dict(cfg)  # what librdkafka was given (benchmarks reuse it)
        self._producer = Producer(cfg)
        self._codecs: dict[type[Any], Any] = {}
        self._names: dict[TopicSpec, str] = {}
        self._callbacks: dict[str, DeliveryCallback] = {}
        self._closed = False
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    # -- encoding ---------------------------------------------------------------------------
    def codec(self, cls: type[Any]) -> Any:
        c = self._codecs.get(cls)
        if c is None:
            c = self._codecs[cls] = make_codec(cls, self._schema_registry_url)
        return c

    def topic_name(self, spec: TopicSpec) -> str:
        """The spec's topic name on this cluster (cached: it is on the hot path)."""
        name = self._names.get(spec)
        if name is None:
            name = self._names[spec] = self.topics.name(spec)
        return name

    def encode(self, spec: TopicSpec, event: Any) -> bytes:
        if spec.value is None:
            raise TypeError(f"topic {spec.name} carries raw bytes, not events")
        out: bytes = self.codec(spec.value).encode(event, self.topic_name(spec))
        return out

    # -- producing --------------------------------------------------------------------------
    def _topic_callback(self, topic: str) -> DeliveryCallback:
        """One bound callback per topic: counts deliveries without a closure per message."""
        cb = self._callbacks.get(topic)
        if cb is None:
            produced = m.PRODUCED.labels(topic)
            failed = m.PRODUCE_FAILED.labels(topic)

            def cb(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    produced.inc()
                else:
                    failed.inc()
                    log.error("delivery failed", extra={"topic": topic, "error": str(err)})

            self._callbacks[topic] = cb
        return cb

    def _delivery(self, topic: str, user_cb: DeliveryCallback | None) -> DeliveryCallback:
        base = self._topic_callback(topic)
        if user_cb is None:
            return base

        def cb(err: KafkaError | None, msg: Message) -> None:
            base(err, msg)
            user_cb(err, msg)

        return cb

    def produce_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Enqueue pre-encoded bytes; raises :class:`Backpressure` when the local queue is full."""
        self._produce(topic, value, key, headers, self._delivery(topic, on_delivery))

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        cb: DeliveryCallback,
    ) -> None:
        hdrs = cast(list[tuple[str, str | bytes | None]] | None, headers)
        try:
            self._producer.produce(topic, value, key, headers=hdrs, on_delivery=cb)
        except BufferError:
            # Serving delivery reports frees queue slots; one retry before refusing.
            self._producer.poll(0)
            try:
                self._producer.produce(topic, value, key, headers=hdrs, on_delivery=cb)
            except BufferError:
                m.BACKPRESSURE.inc()
                raise Backpressure(f"producer queue full ({len(self._producer)} messages)") from None

    def send(
        self,
        spec: TopicSpec,
        event: Any,
        key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Encode and enqueue one event (keyed by the spec's key field unless ``key`` is given)."""
        kb = key.encode() if key is not None else _key_of(spec, event)
        self.produce_raw(self.topic_name(spec), self.encode(spec, event), kb, headers, on_delivery)

    def send_tombstone(self, spec: TopicSpec, key: str) -> None:
        """A null value for ``key`` on a compacted topic (deletes the entity)."""
        self.produce_raw(self.topic_name(spec), None, key.encode())

    async def send_batch_async(self, spec: TopicSpec, events: Sequence[Any], timeout: float = 30.0) -> list[str | None]:
        """Enqueue a batch and await the broker's acknowledgement of each message.

        Returns one entry per event: ``None`` when acknowledged, else the error text (an event
        that cannot be encoded is reported, not raised). Raises :class:`Backpressure` when the
        queue is full before anything was enqueued; past that point the refused rest is
        reported as ``"backpressure"``. Requires :meth:`start` (the poll thread).
        """
        loop = asyncio.get_running_loop()
        n = len(events)
        results: list[str | None] = [None] * n
        if not n:
            return results
        done: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        pending = [n]
        topic = self.topic_name(spec)
        produced, failed = m.PRODUCED.labels(topic), m.PRODUCE_FAILED.labels(topic)
        # One callback for the whole batch (no closure per message); the index of a failed
        # message is looked up by its bytes, which only happens on the rare failure path.
        values: list[bytes | None] = [None] * n

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def finish(k: int) -> None:
            with lock:
                pending[0] -= k
                last = pending[0] == 0
            if last and not loop.is_closed():
                loop.call_soon_threadsafe(resolve)

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                produced.inc()
            else:
                failed.inc()
                log.error("delivery failed", extra={"topic": topic, "error": str(err)})
                with contextlib.suppress(ValueError):
                    results[values.index(msg.value())] = str(err)
            finish(1)

        enqueued = 0
        for i, ev in enumerate(events):
            try:
                value = self.encode(spec, ev)
            except Exception as exc:  # fastavro raises ValueError/TypeError/... on invalid fields
                results[i] = f"invalid event: {type(exc).__name__}: {exc}"
                finish(1)
                continue
            values[i] = value
            try:
                self._produce(topic, value, _key_of(spec, ev), None, on_delivery)
            except Backpressure:
                if enqueued == 0:
                    raise
                # The enqueued prefix is still delivered and reported; the rest is refused.
                for j in range(i, n):
                    results[j] = "backpressure"
                finish(n - i)
                break
            except KafkaException as exc:  # e.g. message larger than message.max.bytes
                results[i] = str(exc)
                finish(1)
                continue
            enqueued += 1
        await asyncio.wait_for(done, timeout)
        return results

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> EventProducer:
        """Start the background thread that serves delivery callbacks."""
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name="producer-poll", daemon=True)
            self._poller.start()
        return self

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            m.PRODUCER_QUEUE.set(len(self._producer))

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._producer.poll(timeout))

    def queue_depth(self) -> int:
        return len(self._producer)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued message to be delivered; returns how many are still queued."""
        return int(self._producer.flush(timeout))

    def ping(self, timeout: float = 5.0) -> bool:
        """True when the cluster answers a metadata request."""
        try:
            self._producer.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        left = self.flush(timeout)
        if left:
            log.error("producer closed with undelivered messages", extra={"count": left})


@dataclass(slots=True)
class Record(Generic[T]):
    """A decoded message handed to handlers. ``value`` is None for a tombstone."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: T | None
    timestamp_ms: int
    headers: dict[str, bytes] = field(default_factory=dict)


BatchHandler = Callable[[list[Record[Any]]], None]


@dataclass
class Subscription:
    """One topic of a runner: its spec and the batch handler for its decoded records."""

    spec: TopicSpec
    handler: BatchHandler
    dlq: bool = True


class ConsumerRunner:
    """Poll, decode, handle, commit; DLQ, retries, rebalance, lag and graceful stop."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicRegistry,
        group_id: str,
        subscriptions: Sequence[Subscription],
        producer: EventProducer | None = None,
        schema_registry_url: str | None = None,
        client_id: str = "recmesh",
        extra_config: dict[str, Any] | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.group_id = group_id
        self.subs = {topics.name(s.spec): s for s in subscriptions}
        self._owns_producer = producer is None
        self.producer = producer or EventProducer(kafka, topics, client_id=f"{client_id}-dlq",
                                                  schema_registry_url=schema_registry_url)  # fmt: skip
        self._codecs = {
            name: (make_codec(s.spec.value, schema_registry_url) if s.spec.value is not None else None)
            for name, s in self.subs.items()
        }
        cfg: dict[str, Any] = {
            **kafka.client_config(),
            "group.id": group_id,
            "client.id": f"{kafka.client_id}-{client_id}",
            "enable.auto.commit": False,
            "auto.offset.reset": auto_offset_reset,
            "enable.partition.eof": False,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "statistics.interval.ms": 5_000,
            "stats_cb": self._on_stats,
            "on_commit": self._on_commit,
            "fetch.wait.max.ms": 50,
        }
        cfg.update(extra_config or {})
        self._reset_latest = auto_offset_reset == "latest"
        self.consumer = Consumer(cfg)
        self._stop = threading.Event()
        self.assigned: set[tuple[str, int]] = set()
        self.processed = 0
        self.dead_lettered = 0
        self.lag: dict[tuple[str, int], int] = {}
        self.ready = threading.Event()
        self._dlq_pending = 0
        self._dlq_failed: list[str] = []
        self._dlq_lock = threading.Lock()
        self._processed_offsets: dict[tuple[str, int], int] = {}

    # -- callbacks --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        if self._reset_latest and parts:
            self._pin_to_end(consumer, parts)
        self.assigned |= {(p.topic, p.partition) for p in parts}
        self.ready.set()
        log.info("partitions assigned", extra={"group": self.group_id, "partitions": len(parts)})

    def _pin_to_end(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Resolve "latest" now, not at the first fetch: a message produced after ``ready`` is set
        must be consumed (librdkafka resolves the offset lazily, and would skip one produced in
        between). Partitions with a committed offset keep it."""
        try:
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10)}
            for p in parts:
                if committed.get((p.topic, p.partition), -1) < 0:
                    p.offset = consumer.get_watermark_offsets(p, timeout=10)[1]
            consumer.assign(parts)
        except KafkaException as exc:
            log.warning("could not pin new partitions to the log end", extra={"error": str(exc)})

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Batches are handled between polls, so every processed offset is known here: commit
        # them before the partitions go, so the next owner does not redo finished work.
        revoked = {(p.topic, p.partition) for p in parts}
        self._commit_sync(revoked)
        self.assigned -= revoked
        log.info("partitions revoked", extra={"group": self.group_id, "partitions": len(parts)})

    def _on_stats(self, stats_json: str) -> None:
        try:
            stats = orjson.loads(stats_json)
            for tname, t in stats.get("topics", {}).items():
                for pid, p in t.get("partitions", {}).items():
                    lag = p.get("consumer_lag", -1)
                    if int(pid) >= 0 and lag >= 0:
                        self.lag[(tname, int(pid))] = lag
                        m.CONSUMER_LAG.labels(tname, pid, self.group_id).set(lag)
        except Exception:  # stats are best effort
            log.debug("bad stats payload", exc_info=True)

    # -- processing -------------------------------------------------------------------------
    def _decode(self, msg: Message) -> Record[Any]:
        topic: str = msg.topic()  # type: ignore[assignment]
        raw = msg.value()
        codec = self._codecs[topic]
        value = None if raw is None or codec is None else codec.decode(raw, topic)
        key = msg.key()
        return Record(
            topic=topic,
            partition=msg.partition(),  # type: ignore[arg-type]
            offset=msg.offset(),  # type: ignore[arg-type]
            key=key.decode("utf-8", "replace") if key is not None else None,
            value=value,
            timestamp_ms=msg.timestamp()[1],
            headers=dict(msg.headers() or ()),  # type: ignore[arg-type]
        )

    def _on_dlq_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Served by whichever thread polls the producer (its poll thread, or our flush).
        with self._dlq_lock:
            if err is not None:
                self._dlq_failed.append(str(err))
            self._dlq_pending -= 1

    def dead_letter(self, msg: Message, exc: BaseException) -> None:
        """Send the original key and bytes to ``<topic>.dlq`` with the error headers.

        Delivery is confirmed before the batch is committed (see :meth:`_confirm_dead_letters`).
        A subscription with ``dlq=False`` only logs and counts the failure.
        """
        topic = cast(str, msg.topic())
        sub = self.subs[topic]
        m.DEAD_LETTERED.labels(topic, self.group_id).inc()
        self.dead_lettered += 1
        log.warning("dead-lettered" if sub.dlq else "dropped (no DLQ)",
                    extra={"topic": topic, "partition": msg.partition(), "offset": msg.offset(),
                           "error": str(exc)[:200], "error_class": type(exc).__name__})  # fmt: skip
        if not sub.dlq:
            return
        headers = [
            ("error", str(exc)[:1000].encode()),
            ("error_class", type(exc).__name__.encode()),
            ("source_topic", topic.encode()),
            ("source_partition", str(msg.partition()).encode()),
            ("source_offset", str(msg.offset()).encode()),
            ("consumer_group", self.group_id.encode()),
        ]
        dlq = self.topics.dlq(sub.spec)
        while True:
            try:
                with self._dlq_lock:
                    self._dlq_pending += 1
                try:
                    self.producer.produce_raw(dlq, msg.value(), msg.key(), headers, self._on_dlq_delivery)
                except BaseException:
                    with self._dlq_lock:
                        self._dlq_pending -= 1
                    raise
                return
            except Backpressure:
                # The shared producer is saturated: wait for deliveries rather than drop a letter.
                self.producer.poll(0.1)
            except KafkaException as exc2:
                raise TransientError(f"dead letter not enqueued: {exc2}") from exc2

    def _confirm_dead_letters(self) -> None:
        """Block until this batch's dead letters are acknowledged; raise TransientError otherwise."""
        if self._dlq_pending == 0 and not self._dlq_failed:
            return
        left = self.producer.flush(30)
        with self._dlq_lock:
            failed, self._dlq_failed = self._dlq_failed, []
            pending = self._dlq_pending
        if left or failed or pending > 0:
            raise TransientError(f"dead letters not delivered: {left} queued, errors {failed[:3]}")

    def _call_with_retry(
        self, handler: BatchHandler, records: list[Record[Any]], topic: str, retries: int
    ) -> Exception | None:
        """Run the handler; retry transient errors until stop, others ``retries`` times.

        Returns None on success, or the last non-transient exception.
        """
        delay = self.kafka.retry_backoff_s
        attempts = 0
        while True:
            try:
                handler(records)
                return None
            except TRANSIENT as exc:
                m.FAILED.labels(topic, self.group_id, "transient").inc()
                if self._stop.is_set():
                    raise _Stopping() from exc
                log.warning("transient failure, retrying", extra={"topic": topic, "error": str(exc), "delay_s": delay})
            except Exception as exc:
                m.FAILED.labels(topic, self.group_id, "error").inc()
                attempts += 1
                if attempts > retries:
                    return exc
                log.warning(
                    "handler failed, retrying",
                    extra={"topic": topic, "error": repr(exc), "attempt": attempts},
                )
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def process_batch(self, msgs: list[Message]) -> None:
        """Decode and handle one polled batch (per topic, in order); DLQ what fails."""
        by_topic: dict[str, list[tuple[Message, Record[Any]]]] = {}
        counts: dict[str, int] = {}
        for msg in msgs:
            topic = cast(str, msg.topic())
            counts[topic] = counts.get(topic, 0) + 1
            try:
                rec = self._decode(msg)
            except Exception as exc:  # DecodeError, or a codec bug: neither may stop the stream
                self.dead_letter(msg, exc)
                continue
            by_topic.setdefault(topic, []).append((msg, rec))
        for topic, n in counts.items():
            m.CONSUMED.labels(topic, self.group_id).inc(n)
        for topic, items in by_topic.items():
            sub = self.subs[topic]
            t0 = time.perf_counter()
            failed = 0
            if len(items) == 1:
                err = self._call_with_retry(sub.handler, [items[0][1]], topic, self.kafka.max_retries)
            else:
                # A deterministic failure of a batch is isolated at once rather than retried as a whole.
                err = self._call_with_retry(sub.handler, [r for _, r in items], topic, 0)
                if err is not None:
                    log.warning("batch failed, isolating", extra={"topic": topic, "error": repr(err)})
                    for msg, rec in items:
                        one_err = self._call_with_retry(sub.handler, [rec], topic, self.kafka.max_retries)
                        if one_err is not None:
                            self.dead_letter(msg, one_err)
                            failed += 1
                    err = None
            if err is not None:
                self.dead_letter(items[0][0], err)
                failed += 1
            m.PROCESSING_SECONDS.labels(topic, self.group_id).observe(time.perf_counter() - t0)
            m.PROCESSED.labels(topic, self.group_id).inc(len(items) - failed)
            self.processed += len(items) - failed

    def _rewind(self, msgs: list[Message]) -> None:
        """Seek every partition of the batch back to its first offset (the batch is redelivered)."""
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            k = (cast(str, msg.topic()), cast(int, msg.partition()))
            off = cast(int, msg.offset())
            first[k] = min(first.get(k, off), off)
        for (t, p), off in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, off))
            except KafkaException as exc:  # the partition moved away: its new owner resumes from the commit
                log.warning("seek failed", extra={"topic": t, "partition": p, "error": str(exc)})

    def _commit(self, msgs: list[Message]) -> None:
        """Commit the batch's offsets asynchronously (the batch's effects are already durable).

        A synchronous commit per batch costs a coordinator round trip (~20 ms on a loaded
        broker) and caps throughput; an async commit that is lost only means redelivery, which
        idempotent handlers absorb. Offsets are committed synchronously on revoke and on stop.
        """
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            k: tuple[str, int] = (msg.topic(), msg.partition())  # type: ignore[assignment]
            offsets[k] = max(offsets.get(k, -1), msg.offset() + 1)  # type: ignore[operator]
        self._processed_offsets.update(offsets)
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)
        except KafkaException as exc:  # e.g. mid-rebalance: the next commit (or the new owner) covers it
            log.warning("commit not sent", extra={"error": str(exc)})

    def _on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("async commit failed; a later commit covers it", extra={"error": str(err)})

    def _commit_sync(self, only: set[tuple[str, int]] | None = None) -> None:
        """Synchronously commit what was processed (all partitions, or ``only`` these)."""
        keys = [k for k in self._processed_offsets if only is None or k in only]
        if not keys:
            return
        tps = [TopicPartition(t, p, self._processed_offsets.pop((t, p))) for t, p in keys]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # The partitions already moved: their new owner re-processes from the last commit (idempotent).
            log.warning("final commit failed", extra={"error": str(exc)})

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Block until :meth:`stop`; on return the consumer is closed."""
        self.consumer.subscribe(list(self.subs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consumer started", extra={"group": self.group_id, "topics": list(self.subs)})
        backoff = self.kafka.retry_backoff_s
        try:
            while not self._stop.is_set():
                msgs = self.consumer.consume(self.kafka.consumer_batch_size, self.kafka.consumer_poll_timeout_s)
                if not msgs:
                    continue
                good = []
                for msg in msgs:
                    err = msg.error()
                    if err is None:
                        good.append(msg)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error", extra={"error": str(err)})
                if not good:
                    continue
                try:
                    self.process_batch(good)
                    self._confirm_dead_letters()
                except _Stopping:
                    log.info("stopping during transient retry; batch left uncommitted for redelivery")
                    break
                except TransientError as exc:
                    # Dead letters were not acknowledged: never commit past them; redeliver the batch.
                    log.warning("batch not committed, rewinding", extra={"error": str(exc)})
                    self._rewind(good)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = self.kafka.retry_backoff_s
                self._commit(good)
        finally:
            try:
                self._commit_sync()
                self.consumer.close()
            finally:
                if self._owns_producer:
                    self.producer.close(10)
            log.info("consumer stopped", extra={"group": self.group_id, "processed": self.processed})

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread (services that also serve HTTP)."""
        t = threading.Thread(target=self.run, name=f"consumer-{self.group_id}", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def total_lag(self) -> int:
        return sum(v for (t, p), v in self.lag.items() if (t, p) in self.assigned)


class _Stopping(Exception):
    """Internal: the runner was stopped while a transient failure was being retried."""


def encode_json_event(event: Any) -> bytes:
    """JSON form of an event (the baseline of the codec benchmark; not a wire format)."""
    return orjson.dumps(to_record(event))
