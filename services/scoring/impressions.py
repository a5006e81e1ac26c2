"""Impression publishing off the request path.

A request only appends its response to a bounded in-memory queue (``put_nowait``: never
blocks, never raises into the request); a daemon thread turns queued responses into
``RecommendationServed`` events and hands them to the idempotent producer. When the queue
or the producer's own queue is full, the impression is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from recmesh.core.bus import EventProducer
from recmesh.core.errors import Backpressure
from recmesh.core.events import RecommendationServed, ServedItem, now_ms
from recmesh.core.topics import RECOMMENDATIONS_SERVED
from recmesh.scoring import metrics as sm

log = logging.getLogger(__name__)
_STOP = object()


class ImpressionPublisher:
    """Bounded queue + sender thread in front of an :class:`EventProducer`."""

    def __init__(self, producer: EventProducer, max_queue: int) -> None:
        self.producer = producer
        self.q: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="impressions", daemon=True)

    def start(self) -> ImpressionPublisher:
        self._thread.start()
        return self

    def publish(self, tenant: str, surface: str, body: dict[str, Any]) -> None:
        """Queue one response (the dict the API returns); drops when full."""
        try:
            self.q.put_nowait((tenant, surface, body, now_ms()))
        except queue.Full:
            self.dropped += 1
            sm.IMPRESSIONS.labels("dropped").inc()

    def _loop(self) -> None:
        while True:
            entry = self.q.get()
            if entry is _STOP:
                return
            tenant, surface, body, ts = entry
            try:
                ev = RecommendationServed(
                    request_id=body["request_id"],
                    user_id=body.get("user_id") or "",
                    tenant=tenant,
                    items=[
                        ServedItem(i["item_id"], float(i["score"]), int(i["rank"]), i["source"]) for i in body["items"]
                    ],
                    model_name=body.get("model_name"),
                    model_version=body.get("model_version"),
                    variant=body.get("variant") or "none",
                    surface=surface,
                    timestamp=ts,
                )
                self.producer.send(RECOMMENDATIONS_SERVED, ev)
                self.sent += 1
                sm.IMPRESSIONS.labels("sent").inc()
            except Backpressure:
                self.dropped += 1
                sm.IMPRESSIONS.labels("dropped").inc()
            except Exception:  # an impression must never take the thread down
                self.dropped += 1
                sm.IMPRESSIONS.labels("failed").inc()
                log.exception("impression not published")

    def close(self, timeout: float = 10.0) -> None:
        """Drain what is queued, stop the thread and close (flush) the producer."""
        if self._thread.is_alive():
            self.q.put(_STOP)
            self._thread.join(timeout)
        self.producer.close(timeout)
