"""Wiring of the feedback service: Redis, the labels producer, one consumer runner, HTTP ops app.

The main runner (group ``feedback.group_id``) consumes ``interactions.v1``,
``recommendations.served.v1`` and ``catalog.items.v1``. A second runner (group
``<group_id>-seen``) is the freshness fast lane: it only writes the seen items that
scoring's ``exclude_seen`` reads, so they stay fresh while the counters lag. By default it runs
in a child process of its own (``seen_lane_process``): in a thread it waited for the GIL behind the
counters' batches (p50 +15 ms under load). The parent restarts the child if it dies, and the child
stops when the parent goes (SIGTERM, or the parent's death noticed within 0.2 s). Interactions and served
recommendations are both keyed by user id with the same partition count, so with the range
assignor one replica owns a user's clicks and impressions. A sweeper thread emits the negatives
of impressions whose attribution window closed without a click (``timeout_negatives``; every
replica sweeps, each due impression is claimed by one). Shutdown (SIGTERM): stop the sweeper and
the runner (finishes its batch and commits), join them, flush the producer, close Redis.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from fastapi import FastAPI

from recmesh.core.bus import ConsumerRunner, EventProducer, Subscription
from recmesh.core.logs import configure_logging
from recmesh.core.store import connect
from recmesh.core.topics import CATALOG_ITEMS, INTERACTIONS, RECOMMENDATIONS_SERVED, TopicRegistry
from recmesh.core.web import create_service_app
from recmesh.feedback.handlers import FeedbackHandler
from recmesh.feedback.settings import FeedbackSettings

log = logging.getLogger(__name__)


class FeedbackService:
    """The consumer, its producer and Redis; usable without HTTP (tests, benchmarks)."""

    def __init__(self, settings: FeedbackSettings) -> None:
        self.settings = settings
        s = settings.feedback
        self.topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
        self.redis = connect(settings.redis)
        self.kafka = settings.kafka.model_copy(update={"consumer_poll_timeout_s": s.poll_timeout_s})
        # labels and dead letters share one producer; a short linger keeps the per-batch flush cheap
        self.producer = EventProducer(
            self.kafka, self.topics, client_id="feedback", schema_registry_url=settings.schema_registry_url,
            extra_config={"linger.ms": 1},
        ).start()  # fmt: skip
        self.handler = FeedbackHandler(self.redis, settings.redis, s, settings.tenant, producer=self.producer)
        extra: dict[str, Any] = {"fetch.wait.max.ms": s.fetch_wait_max_ms}
        if s.group_instance_id:
            extra["group.instance.id"] = s.group_instance_id
        self.runner = ConsumerRunner(
            self.kafka, self.topics, s.group_id,
            [Subscription(INTERACTIONS, self.handler.handle_interactions),
             Subscription(RECOMMENDATIONS_SERVED, self.handler.handle_served),
             Subscription(CATALOG_ITEMS, self.handler.handle_catalog)],
            producer=self.producer, schema_registry_url=settings.schema_registry_url,
            client_id="feedback", extra_config=extra,
        )  # fmt: skip
        self.seen_runner = None
        self.seen_lane: SeenLaneProcess | None = None
        if s.seen_fast_lane and s.seen_lane_process:
            self.seen_lane = SeenLaneProcess(settings)
        elif s.seen_fast_lane:
            self.seen_runner = seen_runner(settings, self.handler, self.producer)
        self._threads: list[threading.Thread] = []
        self._stop_sweep = threading.Event()

    def start(self) -> FeedbackService:
        if self.seen_lane is not None:
            self.seen_lane.start()
        self._threads = [r.start_thread() for r in (self.runner, self.seen_runner) if r is not None]
        if self.handler.sweeping:
            sweeper = threading.Thread(target=self._sweep_loop, name="feedback-sweep", daemon=True)
            sweeper.start()
            self._threads.append(sweeper)
        return self

    def _sweep_loop(self) -> None:
        """Timeout negatives: sweep closed impressions until stopped (a failed round is retried next time)."""
        interval = self.settings.feedback.sweep_interval_s
        while not self._stop_sweep.wait(interval):
            try:
                while self.handler.sweep() and not self._stop_sweep.is_set():
                    pass  # a full round may have left more due impressions: go on at once
            except Exception as exc:
                log.warning("negatives sweep failed; retrying", extra={"error": repr(exc)})

    def stop(self, timeout: float = 30.0) -> None:
        self._stop_sweep.set()
        for r in (self.runner, self.seen_runner):
            if r is not None:
                r.stop()
        if self.seen_lane is not None:
            self.seen_lane.stop(timeout)
        for t in self._threads:
            t.join(timeout)
        self.producer.close(10)
        self.redis.close()

    def ready_check(self) -> tuple[bool, dict[str, Any]]:
        ok = self.runner.ready.is_set() and (self.seen_runner is None or self.seen_runner.ready.is_set())
        details: dict[str, Any] = {"consumers": "assigned" if ok else "starting",
                                   "consumer_lag": self.runner.total_lag()}  # fmt: skip
        if self.seen_lane is not None:
            lane_ok, details["seen_lane"] = self.seen_lane.status()
            ok = ok and lane_ok
        try:
            self.redis.ping()
            details["redis"] = "ok"
        except Exception as exc:
            ok = False
            details["redis"] = f"unreachable: {type(exc).__name__}"
        return ok, details


def seen_runner(settings: FeedbackSettings, handler: FeedbackHandler, producer: EventProducer | None) -> ConsumerRunner:
    """The seen fast lane's runner (group ``<group_id>-seen``; ZADD GT is idempotent, no DLQ needed)."""
    s = settings.feedback
    extra: dict[str, Any] = {"fetch.wait.max.ms": s.fetch_wait_max_ms}
    if s.group_instance_id:
        extra["group.instance.id"] = f"{s.group_instance_id}-seen"
    return ConsumerRunner(
        settings.kafka.model_copy(update={"consumer_poll_timeout_s": s.poll_timeout_s}),
        TopicRegistry(prefix=settings.kafka.topic_prefix), f"{s.group_id}-seen",
        [Subscription(INTERACTIONS, handler.handle_seen, dlq=False)],
        producer=producer, schema_registry_url=settings.schema_registry_url, client_id="feedback-seen",
        extra_config=extra,
    )  # fmt: skip


def run_seen_lane(settings: FeedbackSettings, ready: Any, parent_pid: int) -> None:
    """Entry point of the seen-lane child process: runs until SIGTERM or until the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent, which stops us
    configure_logging(f"{settings.service_name}-seen", settings.log_level, settings.log_json)
    redis = connect(settings.redis)
    runner = seen_runner(settings, FeedbackHandler(redis, settings.redis, settings.feedback, settings.tenant), None)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())

    def watch() -> None:
        while not runner.stopping:
            if runner.ready.is_set():
                ready.set()
            if os.getppid() != parent_pid:  # SIGKILLed parent: do not linger as an orphan
                log.warning("feedback parent process is gone; stopping the seen lane")
                runner.stop()
            time.sleep(0.2)

    threading.Thread(target=watch, name="seen-lane-watch", daemon=True).start()
    gc.collect()
    gc.freeze()
    try:
        runner.run()
    finally:
        redis.close()


class SeenLaneProcess:
    """Supervises the seen-lane child: spawn, restart with backoff when it dies, SIGTERM on stop."""

    def __init__(self, settings: FeedbackSettings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process holding librdkafka threads
        self.ready = self._ctx.Event()
        self.proc: Any = None
        self.restarts = 0
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        # is_alive() reaps with waitpid: two threads racing on it can make the loser see ECHILD,
        # which multiprocessing reports as "still alive"; one lock serialises every check
        self._lock = threading.Lock()

    def alive(self) -> bool:
        with self._lock:
            return self.proc is not None and self.proc.is_alive()

    def _spawn(self) -> None:
        self.ready.clear()
        self.proc = self._ctx.Process(target=run_seen_lane, args=(self.settings, self.ready, os.getpid()),
                                      name="recmesh-feedback-seen", daemon=True)  # fmt: skip
        self.proc.start()
        log.info("seen lane process started", extra={"pid": self.proc.pid})

    def start(self) -> None:
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="seen-lane-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.wait(0.5):
            if self.proc is not None and not self.alive() and not self._stop.is_set():
                log.error("seen lane process exited; restarting",
                          extra={"exitcode": self.proc.exitcode, "backoff_s": backoff})  # fmt: skip
                if self._stop.wait(backoff):
                    return
                self.restarts += 1
                self._spawn()
                backoff = min(backoff * 2, 30.0)
            elif self.ready.is_set():
                backoff = 1.0

    def status(self) -> tuple[bool, str]:
        if not self.alive():
            return False, "down (restarting)"
        return (True, f"pid {self.proc.pid}") if self.ready.is_set() else (False, f"starting (pid {self.proc.pid})")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(5)
        if self.alive():
            self.proc.terminate()  # SIGTERM: the child finishes its batch and commits
            self.proc.join(timeout)
            if self.proc.is_alive():
                log.warning("seen lane process did not stop in time; killing it")
                self.proc.kill()
                self.proc.join(5)


def build_app(settings: FeedbackSettings) -> FastAPI:
    """Ops-only FastAPI app (health, readiness, metrics) whose lifespan runs the consumers."""
    return create_service_app(
        "recmesh-feedback",
        lambda: FeedbackService(settings),
        description="Popularity, trending, co-visitation, seen items, attribution, CTR.",
    )
