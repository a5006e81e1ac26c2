"""Batch importers into the real broker: MovieLens-100K, SQLite, PostgreSQL, a paginated HTTP API, replay."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from recmesh.core.bus import EventProducer
from recmesh.core.events import now_ms
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS
from recmesh.ingestion.cleaning import CleaningOptions
from recmesh.ingestion.importers import (
    DryRunSink,
    HttpImportError,
    HttpSource,
    ProducerSink,
    RowsSource,
    SqlSource,
    movielens_sources,
    run_import,
)
from tests.integration.ingestion.conftest import read_topic, topic_count

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ml100k() -> Path:
    d = ROOT / ".cache" / "data" / "ml-100k"
    if not (d / "ml-100k.inter").exists():
        try:
            out = subprocess.run([str(ROOT / "infra" / "data" / "ml100k.sh")], capture_output=True, text=True,
                                 check=True, timeout=300)  # fmt: skip
            d = Path(out.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"MovieLens-100K not available: {exc}")
    return d


@pytest.fixture
def sink(settings_factory, topics):
    settings = settings_factory()
    producer = EventProducer(settings.kafka, topics, client_id="import-test").start()
    yield ProducerSink(producer, default_tenant=settings.tenant)
    producer.close(10)


def test_movielens_100k_loads_with_exact_counts(ml100k, sink, kafka_bootstrap, topics, tenant):
    """Exists because the demo and the quality benchmark start from exactly these 100,000 ratings."""
    result = run_import(movielens_sources(ml100k), sink, CleaningOptions(tenant=tenant))
    assert result.delivery == {"produced": 102_625, "failed": 0}
    assert (result.total("interactions"), result.total("items"), result.total("users")) == (100_000, 1_682, 943)
    assert all(not s.report.dropped for s in result.summaries)
    assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 100_000
    assert topic_count(kafka_bootstrap, topics, CATALOG_ITEMS) == 1_682
    assert topic_count(kafka_bootstrap, topics, CATALOG_USERS) == 943
    items = {k: v for k, v in read_topic(kafka_bootstrap, topics, CATALOG_ITEMS, expect=1_682, settle=0.2)}
    assert (items["1"].title, items["1"].categories) == ("Toy Story", ["Animation", "Children's", "Comedy"])
    assert items["1"].attributes == {"release_year": "1995"} and items["1"].tenant == tenant


def _events_rows(n: int) -> list[tuple]:
    base = 1_600_000_000
    return [(i % 37, f"item{i % 101}", "click" if i % 3 else "purchase", base + i, float(i % 5)) for i in range(n)]


def test_sqlite_table_and_query(tmp_path, sink, kafka_bootstrap, topics):
    """Exists because SQL imports must stream a real database's rows, types included, with exact counts."""
    db = tmp_path / "shop.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE events (customer INTEGER, sku TEXT, kind TEXT, ts INTEGER, amount REAL)")
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", _events_rows(1_000))
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                        [(None, "x", "click", 1_600_000_000, 1.0), (1, "x", "click", 4_000_000_000, 1.0)])  # fmt: skip
        con.commit()
    mapping = {"customer": "user_id", "sku": "item_id", "kind": "event_type", "ts": "timestamp", "amount": "value"}
    result = run_import([SqlSource(f"sqlite:///{db}", table="events", chunk_rows=300)], sink,
                        CleaningOptions(ts_unit="s"), mapping=mapping)  # fmt: skip
    rep = result.summaries[0].report
    assert (rep.read, rep.kept, dict(rep.dropped)) == (1_002, 1_000, {"missing_id": 1, "future_timestamp": 1})
    assert result.delivery == {"produced": 1_000, "failed": 0}
    assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 1_000
    q = SqlSource(f"sqlite:///{db}", query="SELECT customer, sku, ts FROM events WHERE kind = 'purchase'")
    res = run_import([q], DryRunSink(), CleaningOptions(ts_unit="s"), mapping=mapping)
    assert res.delivery["would_produce"] == 334


# -- PostgreSQL: a throwaway cluster from Debian's binaries --------------------------------------------
# the newest Debian server installed (/usr/lib/postgresql/<major>/bin), whatever the release ships
_PG_BINS = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.split(".")[0].isdigit()]
PG_BIN = max(_PG_BINS, key=lambda p: int(p.parent.name.split(".")[0]), default=Path("/nonexistent"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url():
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL binaries not installed")
    base = Path(tempfile.mkdtemp(prefix="rm-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run as the postgres user
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = base / "data"
    subprocess.run([*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    ctl = [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data)]
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*ctl, "-o", opts, "-l", str(base / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_table(postgres_url, sink, kafka_bootstrap, topics):
    """Exists because production catalogs live in PostgreSQL: timestamptz and numeric must normalise."""
    import psycopg

    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as con:
        con.execute("CREATE TABLE shop_events (customer BIGINT, sku TEXT, kind TEXT, ts TIMESTAMPTZ, amount NUMERIC)")
        with con.cursor() as cur:
            cur.executemany("INSERT INTO shop_events VALUES (%s, %s, %s, to_timestamp(%s), %s)", _events_rows(2_000))
            cur.execute("INSERT INTO shop_events VALUES (NULL, 'x', 'click', now(), 1)")
    mapping = {"customer": "user_id", "sku": "item_id", "kind": "event_type", "ts": "timestamp", "amount": "value"}
    collected: list = []

    class Tee(ProducerSink):
        def write(self, kind, events):
            collected.extend(events)
            super().write(kind, events)

    tee = Tee(sink.producer)
    result = run_import([SqlSource(postgres_url, table="public.shop_events", chunk_rows=500)], tee,
                        CleaningOptions(), mapping=mapping)  # fmt: skip
    rep = result.summaries[0].report
    assert (rep.read, rep.kept, dict(rep.dropped)) == (2_001, 2_000, {"missing_id": 1})
    assert result.delivery == {"produced": 2_000, "failed": 0}
    assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 2_000
    first = min(collected, key=lambda e: e.timestamp)
    assert (first.user_id, first.item_id, first.event_type, first.timestamp, first.value) == (
        "0", "item0", "purchase", 1_600_000_000_000, 0.0)  # fmt: skip


# -- HTTP API source ------------------------------------------------------------------------------------
class _Api(BaseHTTPRequestHandler):
    rows = [{"uid": f"u{i}", "iid": f"i{i}", "type": "view", "ts": 1_700_000_000_000 + i} for i in range(230)]
    failures: dict[str, int] = {}
    seen: list[str] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.seen.append(self.path)
        if u.path == "/cursor":
            start = int(q.get("cursor", "0"))
            if start == 100 and self.failures.get("c100", 0) < 1:  # one 500, then success
                self.failures["c100"] = 1
                return self._send(500, b"boom")
            chunk = self.rows[start : start + 100]
            nxt = start + 100 if start + 100 < len(self.rows) else None
            return self._send(200, orjson.dumps({"data": {"items": chunk}, "meta": {"next": nxt}}))
        if u.path == "/pages":
            page, size = int(q["page"]), int(q["per_page"])
            if page == 2 and self.failures.get("p2", 0) < 2:  # 429 twice with Retry-After
                self.failures["p2"] = self.failures.get("p2", 0) + 1
                return self._send(429, b"slow down", {"Retry-After": "0"})
            return self._send(200, orjson.dumps(self.rows[(page - 1) * size : page * size]))
        if u.path == "/forbidden":
            return self._send(403, b"no")
        return self._send(404, b"")

    def _send(self, code, body, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api_server():
    _Api.failures, _Api.seen = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_api_cursor_and_page_pagination_with_retries(api_server, sink, kafka_bootstrap, topics):
    """Exists because partner APIs paginate, fail transiently and rate-limit; no row may be lost or doubled."""
    mapping = {"uid": "user_id", "iid": "item_id", "type": "event_type", "ts": "timestamp"}
    src = HttpSource(f"{api_server}/cursor", items_path="data.items", pagination="cursor", next_path="meta.next",
                     backoff_s=0.01, rate_limit_per_s=40)  # fmt: skip
    t0 = time.monotonic()
    result = run_import([src], sink, CleaningOptions(), mapping=mapping)
    assert result.summaries[0].report.kept == 230 and result.delivery == {"produced": 230, "failed": 0}
    assert (src.requests, src.retries) == (4, 1)  # 3 pages + one 500
    assert time.monotonic() - t0 >= 3 / 40  # rate limit spaces the 4 requests
    assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 230

    pages = HttpSource(f"{api_server}/pages", pagination="page", page_size=100, backoff_s=0.01)
    res = run_import([pages], DryRunSink(), CleaningOptions(), mapping=mapping)
    assert res.delivery["would_produce"] == 230 and pages.retries == 2
    assert [p for p in _Api.seen if p.startswith("/pages")][-1] == "/pages?page=3&per_page=100"

    with pytest.raises(HttpImportError, match="403"):
        run_import([HttpSource(f"{api_server}/forbidden")], DryRunSink(), CleaningOptions())


def test_replay_via_http_through_a_real_server(ml100k, settings_factory, kafka_bootstrap, topics, tenant, redis_client):
    """Exists because the demo replays MovieLens through POST /v1/events with this function."""
    import uvicorn

    from recmesh.ingestion.app import build_app
    from recmesh.ingestion.client import replay_via_http
    from recmesh.ingestion.importers import file_source
    from recmesh.ingestion.settings import IngestionSettings

    settings = settings_factory(IngestionSettings)
    server = uvicorn.Server(uvicorn.Config(build_app(settings, ensure_topics=False), host="127.0.0.1", port=0,
                                           log_config=None, access_log=False))  # fmt: skip
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        collected: list = []

        class Keep(DryRunSink):
            def write(self, kind, events):
                collected.extend(events)

        src = file_source(ml100k / "ml-100k.inter", chunk_rows=3_000)
        first = next(src.chunks())  # the first 3,000 ratings are enough, replayed in time order
        run_import([RowsSource("ml-100k", "interactions", first, defaults=src.defaults)], Keep(),
                   CleaningOptions(tenant=tenant))  # fmt: skip
        events = sorted(collected, key=lambda e: e.timestamp)
        sent: list[int] = []
        totals = replay_via_http(events, f"http://127.0.0.1:{port}", batch=500, progress=sent.append)
        assert totals["accepted"] == 3_000 and totals["rejected"] == 0 and totals["requests"] == 6
        assert sum(sent) == 3_000
        again = replay_via_http(events[:500], f"http://127.0.0.1:{port}", progress=False)
        assert again["accepted"] == 0 and again["duplicates"] == 500  # same (derived) ids: accepted once
        assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 3_000
        assert now_ms() > events[-1].timestamp
    finally:
        server.should_exit = True
        t.join(15)
