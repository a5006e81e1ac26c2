"""HTTP JSON API sources: cursor or page pagination, retries with backoff, rate limiting.

Each response is a JSON object (rows at ``items_path``, a dotted path such as ``data`` or
``result.items``) or a bare JSON array. Pagination:

* ``cursor``: the next cursor is read at ``next_path`` (e.g. ``next_cursor`` or
  ``meta.next``) and sent as ``cursor_param``; a full URL there is followed as is. Stops
  when the cursor is missing/empty.
* ``page``: ``page_param`` counts up from ``start_page`` (with ``size_param=page_size``);
  stops at the first empty page or one shorter than ``page_size``.
* ``none``: one request.

Transient failures (connection errors, 429, 5xx) are retried with exponential backoff
(``Retry-After`` honoured); other 4xx fail the import. ``rate_limit_per_s`` spaces requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from recmesh.ingestion.importers.base import Kind, Row

log = logging.getLogger(__name__)


class HttpImportError(RuntimeError):
    """The API answered with a non-retryable error or kept failing past the retries."""


def _dig(doc: Any, path: str | None) -> Any:
    if not path:
        return doc
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


@dataclass
class HttpSource:
    """Rows fetched page by page from a JSON API."""

    url: str
    kind: Kind = "interactions"
    items_path: str | None = None
    pagination: Literal["cursor", "page", "none"] = "none"
    cursor_param: str = "cursor"
    next_path: str = "next_cursor"
    page_param: str = "page"
    size_param: str | None = "per_page"
    page_size: int = 500
    start_page: int = 1
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    rate_limit_per_s: float | None = None
    timeout_s: float = 30.0
    max_pages: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    requests: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or f"http:{httpx.URL(self.url).host}"
        self._last_request = 0.0

    def _throttle(self) -> None:
        if self.rate_limit_per_s:
            wait = self._last_request + 1.0 / self.rate_limit_per_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_request = time.monotonic()

    def _get(self, client: httpx.Client, url: str, params: dict[str, Any]) -> Any:
        delay = self.backoff_s
        for attempt in range(self.max_retries + 1):
            self._throttle()
            self.requests += 1
            try:
                resp = client.get(url, params=params)
            except httpx.TransportError as exc:
                err: str = f"{type(exc).__name__}: {exc}"
                retry_after = None
            else:
                if resp.status_code < 400:
                    return resp.json()
                if resp.status_code != 429 and resp.status_code < 500:
                    raise HttpImportError(f"GET {resp.url} → {resp.status_code}: {resp.text[:200]}")
                err = f"HTTP {resp.status_code}"
                ra = resp.headers.get("retry-after")
                retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
            if attempt == self.max_retries:
                raise HttpImportError(f"GET {url} failed after {self.max_retries + 1} attempts: {err}")
            self.retries += 1
            sleep = min(retry_after if retry_after is not None else delay, self.max_backoff_s)
            log.warning("http import retry", extra={"url": url, "error": err, "sleep_s": sleep})
            time.sleep(sleep)
            delay = min(delay * 2, self.max_backoff_s)
        raise AssertionError("unreachable")

    def _rows(self, doc: Any) -> list[Row]:
        rows = doc if isinstance(doc, list) else _dig(doc, self.items_path)
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            raise HttpImportError(f"expected a list of rows at {self.items_path or '<root>'}")
        return [r for r in rows if isinstance(r, dict)]

    def chunks(self) -> Iterator[list[Row]]:
        with httpx.Client(headers=self.headers, timeout=self.timeout_s, follow_redirects=True) as client:
            url = self.url
            params: dict[str, Any] = dict(self.params)
            page = self.start_page
            pages = 0
            while True:
                if self.pagination == "page":
                    params[self.page_param] = page
                    if self.size_param:
                        params[self.size_param] = self.page_size
                doc = self._get(client, url, params)
                rows = self._rows(doc)
                pages += 1
                if rows:
                    yield rows
                if self.max_pages is not None and pages >= self.max_pages:
                    return
                if self.pagination == "none":
                    return
                if self.pagination == "page":
                    if not rows or (self.size_param and len(rows) < self.page_size):
                        return
                    page += 1
                    continue
                nxt = _dig(doc, self.next_path) if isinstance(doc, dict) else None
                if nxt in (None, "", False):
                    return
                if isinstance(nxt, str) and nxt.startswith(("http://", "https://")):
                    url, params = nxt, {}
                else:
                    params = {**self.params, self.cursor_param: nxt}
