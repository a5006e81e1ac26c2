"""SQL sources through SQLAlchemy: a URL plus a query or a table, streamed in chunks.

Rows are fetched with a server-side cursor where the driver supports one
(``stream_results``), ``fetchmany(chunk_rows)`` at a time, so a large table never sits in
memory. Table names are reflected (and so quoted) by SQLAlchemy, never pasted into SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from recmesh.ingestion.importers.base import Kind, Row


@dataclass
class SqlSource:
    """Rows of ``query`` (or of ``table``) on the database at ``url``."""

    url: str
    kind: Kind = "interactions"
    query: str | None = None
    table: str | None = None
    chunk_rows: int = 50_000
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of query or table")
        if not self.name:
            self.name = f"sql:{self.table}" if self.table else "sql:query"

    def chunks(self) -> Iterator[list[Row]]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url)
        try:
            if self.table is not None:
                schema, _, name = self.table.rpartition(".")
                tbl = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
                stmt: Any = sa.select(tbl)
            else:
                stmt = sa.text(self.query or "")
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, max_row_buffer=self.chunk_rows).execute(stmt)
                keys = list(result.keys())
                while True:
                    rows = result.fetchmany(self.chunk_rows)
                    if not rows:
                        break
                    yield [dict(zip(keys, r, strict=True)) for r in rows]
        finally:
            engine.dispose()
