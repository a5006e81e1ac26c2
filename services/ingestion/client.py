"""Sending events through the HTTP API (``POST /v1/events``), for the demo and importers.

:func:`replay_via_http` posts events in batches over one keep-alive connection, in the
order given (the demo replays MovieLens in time order), honours ``503 Retry-After``
(backpressure) by waiting and resending the same batch, and returns the totals.
:class:`HttpSink` plugs the same path into :func:`~recmesh.ingestion.importers.run_import`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import orjson

from recmesh.core.events import Interaction, to_record


class HttpIngestError(RuntimeError):
    """The API refused a batch for a reason that retrying will not fix."""


def _record(ev: Any) -> dict[str, Any]:
    if isinstance(ev, Interaction):
        rec = to_record(ev)
        return {k: v for k, v in rec.items() if v is not None and v != {}}
    return dict(ev)


def _catalog_record(ev: Any) -> dict[str, Any]:
    rec = to_record(ev)
    rec.pop("updated_at", None)  # set by the server
    return {k: v for k, v in rec.items() if v is not None}


class HttpEventClient:
    """A keep-alive client for ``POST /v1/events`` with backpressure-aware retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        tenant: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 20,
    ) -> None:
        headers = {"content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        if tenant:
            headers["x-tenant"] = tenant
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.max_retries = max_retries
        self.totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "requests": 0, "retries": 0}
        self.errors: list[dict[str, Any]] = []

    def post(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        body = orjson.dumps(records)
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            self.totals["requests"] += 1
            try:
                resp = self.http.post("/v1/events", content=body)
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
                self.totals["retries"] += 1
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if resp.status_code == 202:
                out: dict[str, Any] = resp.json()
                self.totals["accepted"] += out["accepted"]
                self.totals["duplicates"] += out.get("duplicates", 0)
                self.totals["rejected"] += len(out["rejected"])
                if out["rejected"] and len(self.errors) < 20:
                    self.errors.extend(out["rejected"][: 20 - len(self.errors)])
                return out
            if resp.status_code == 503 and attempt < self.max_retries:
                self.totals["retries"] += 1
                ra = resp.headers.get("retry-after")
                time.sleep(float(ra) if ra and ra.isdigit() else delay)
                delay = min(delay * 2, 10.0)
                continue
            raise HttpIngestError(f"POST /v1/events → {resp.status_code}: {resp.text[:300]}")
        raise HttpIngestError("unreachable")

    def close(self) -> None:
        self.http.close()


def replay_via_http(
    events: Iterable[Interaction | dict[str, Any]],
    base_url: str,
    batch: int = 500,
    api_key: str | None = None,
    tenant: str | None = None,
    progress: bool | Callable[[int], None] = True,
    total: int | None = None,
) -> dict[str, int]:
    """POST ``events`` in order, ``batch`` per request; returns accepted/duplicates/rejected totals.

    ``progress=True`` shows a rich progress bar (rows/s); a callable gets the rows sent per batch.
    """
    if total is None and hasattr(events, "__len__"):
        total = len(events)  # type: ignore[arg-type]
    client = HttpEventClient(base_url, api_key=api_key, tenant=tenant)
    bar: Any = None
    task: Any = None
    if progress is True:
        from recmesh.ingestion.cli import make_progress

        bar = make_progress()
        bar.start()
        task = bar.add_task(f"POST {base_url}/v1/events", total=total)
    try:
        buf: list[dict[str, Any]] = []
        for ev in events:
            buf.append(_record(ev))
            if len(buf) >= batch:
                client.post(buf)
                _advance(progress, bar, task, len(buf))
                buf = []
        if buf:
            client.post(buf)
            _advance(progress, bar, task, len(buf))
    finally:
        if bar is not None:
            bar.stop()
        client.close()
    return dict(client.totals)


def _advance(progress: Any, bar: Any, task: Any, n: int) -> None:
    if bar is not None:
        bar.advance(task, n)
    elif callable(progress):
        progress(n)


class HttpSink:
    """Import sink that sends interactions through the HTTP API instead of producing directly."""

    def __init__(self, base_url: str, batch: int = 500, api_key: str | None = None) -> None:
        self.client = HttpEventClient(base_url, api_key=api_key)
        self.batch = batch
        self._catalog_paths = {"items": "/v1/items", "users": "/v1/users"}

    def write(self, kind: str, events: list[Any]) -> None:
        for i in range(0, len(events), self.batch):
            part = events[i : i + self.batch]
            if kind == "interactions":
                self.client.post([_record(e) for e in part])
            else:
                resp = self.client.http.post(
                    self._catalog_paths[kind], content=orjson.dumps([_catalog_record(e) for e in part])
                )
                if resp.status_code != 202:
                    raise HttpIngestError(f"POST {self._catalog_paths[kind]} → {resp.status_code}: {resp.text[:300]}")
                self.client.totals["accepted"] += resp.json()["accepted"]

    def close(self) -> dict[str, int]:
        self.client.close()
        t = self.client.totals
        return {"produced": t["accepted"], "duplicates": t["duplicates"], "failed": t["rejected"]}
