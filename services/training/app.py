"""Wiring of the training service: lake sink thread, retraining scheduler thread, health and metrics.

``build_app(settings)`` returns the FastAPI app (``/healthz``, ``/readyz``, ``/metrics`` only).
Its lifespan starts the lake sink (a consumer-runner thread writing Parquet) and a scheduler
thread that retrains ``training.model`` from the lake every ``retrain_every_minutes`` or once
``retrain_after_events`` new interaction rows reached the lake, gates the new version and
publishes a promotion on ``models.published.v1``. On SIGTERM the scheduler stops (a run in
progress finishes first), the sink finishes its batch (the file is written, then committed)
and the publisher is flushed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from recmesh.core.metrics import Counter, Gauge
from recmesh.core.registry import Registry
from recmesh.core.topics import INTERACTIONS, TopicRegistry
from recmesh.core.web import create_app

from .gate import kafka_publisher
from .lake import LAKE_LAG, LakeSink
from .pipeline import TrainingError, TrainResult, run_training
from .registry_cli import request_from_settings
from .settings import TrainingSettings

log = logging.getLogger(__name__)

RUNS = Counter("recmesh_training_runs_total", "Scheduled training runs by outcome.", ["model", "outcome"])
NEW_EVENTS = Gauge("recmesh_training_new_events", "Interaction rows in the lake since the last run.")


class Scheduler:
    """Decides when to retrain and runs the pipeline (one run at a time, in its own thread)."""

    def __init__(self, settings: TrainingSettings, registry: Registry, publisher: Any,
                 rows_seen: Any = lambda: 0, clock: Any = time.monotonic) -> None:  # fmt: skip
        self.settings = settings
        self.tr = settings.training
        self.registry = registry
        self.publisher = publisher
        self.rows_seen = rows_seen
        self.clock = clock
        self.last_run = clock()
        self.rows_at_last_run = rows_seen()
        self.runs = 0
        self.last_result: TrainResult | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._force = threading.Event()
        if self.tr.retrain_on_start:
            self._force.set()

    def due(self) -> str | None:
        """Why a run is due now, or None."""
        if self._force.is_set():
            return "requested"
        new = self.rows_seen() - self.rows_at_last_run
        NEW_EVENTS.set(new)
        if self.tr.retrain_after_events and new >= self.tr.retrain_after_events:
            return f"{new} new events"
        if self.tr.retrain_every_minutes and self.clock() - self.last_run >= self.tr.retrain_every_minutes * 60:
            return "schedule"
        return None

    def trigger(self) -> None:
        self._force.set()

    def run_once(self, reason: str = "manual") -> TrainResult | None:
        self._force.clear()
        self.last_run = self.clock()
        self.rows_at_last_run = self.rows_seen()
        end = int(time.time() * 1000)
        start = None if self.tr.window_days is None else end - int(self.tr.window_days * 86_400_000)
        req = request_from_settings(self.settings, lake_uri=self.tr.lake_uri, start_ms=start, end_ms=None,
                                    min_interactions=self.tr.min_interactions)  # fmt: skip
        log.info("training run starting", extra={"model": req.model, "reason": reason})
        self.runs += 1
        try:
            res = run_training(req, self.registry, self.publisher)
        except TrainingError as exc:
            RUNS.labels(req.model, "skipped").inc()
            self.last_error = str(exc)
            log.info("training run skipped", extra={"model": req.model, "reason": str(exc)})
            return None
        except Exception as exc:  # a failed run must never take the service (or the sink) down
            RUNS.labels(req.model, "failed").inc()
            self.last_error = repr(exc)
            log.exception("training run failed", extra={"model": req.model})
            return None
        RUNS.labels(req.model, "promoted" if res.promoted else "registered").inc()
        self.last_result, self.last_error = res, None
        return res

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            reason = self.due()
            if reason:
                self.run_once(reason)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name="training-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 600) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class TrainingService:
    """Everything the lifespan starts and stops."""

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        tr = settings.training
        self.registry = Registry(settings.registry.uri)
        self.sink: LakeSink | None = None
        if tr.sink_enabled:
            self.sink = LakeSink(
                settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), tr.lake_uri,
                group_id=tr.group_id, batch_rows=tr.sink_batch_rows, batch_seconds=tr.sink_batch_seconds,
                schema_registry_url=settings.schema_registry_url,
            )  # fmt: skip
        self.publish, self._close_publisher = kafka_publisher(settings)
        sink = self.sink
        rows = (lambda: sink.rows_by_topic.get(INTERACTIONS.name, 0)) if sink is not None else (lambda: 0)
        self.scheduler = Scheduler(settings, self.registry, self.publish, rows_seen=rows)
        self._sink_thread: threading.Thread | None = None

    def start(self) -> None:
        if self.sink is not None:
            self._sink_thread = self.sink.start_thread()
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        if self.sink is not None:
            self.sink.stop()
            if self._sink_thread is not None:
                self._sink_thread.join(30)
        self._close_publisher()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {"runs": self.scheduler.runs}
        ok = True
        if self.sink is not None:
            lag = self.sink.lag()
            LAKE_LAG.set(lag)
            details.update(sink_assigned=self.sink.runner.ready.is_set(), lake_lag=lag,
                           lake_rows=self.sink.rows_written)  # fmt: skip
            ok = self.sink.runner.ready.is_set() and not self.sink.runner.stopping
        champ = self.registry.champion(self.settings.training.model)
        details["champion"] = champ.version if champ else None
        if self.scheduler.last_error:
            details["last_error"] = self.scheduler.last_error[:300]
        return ok, details


def build_app(settings: TrainingSettings) -> FastAPI:
    """The training service's app; the lifespan owns the sink and scheduler threads."""
    service = TrainingService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = create_app("recmesh-training", service.ready, lifespan,
                     description="Lake sink, scheduled retraining, promotion gate.")  # fmt: skip
    app.state.service = service
    return app
