"""``recmesh ingest``: batch importers from files, MovieLens, SQL databases and HTTP APIs.

Each command reads its source in chunks, cleans and normalises the rows
(:mod:`recmesh.ingestion.cleaning`) and produces Avro events through the idempotent
producer (or, with ``--via-http URL``, through the ingestion API). A rich progress bar
shows rows/s; a summary table at the end lists what was read, kept and dropped, and why.
``--dry-run`` validates without producing. Settings come from the environment
(``RECMESH_KAFKA__BOOTSTRAP_SERVERS``, ``RECMESH_INGESTION__...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from recmesh.ingestion.settings import EventTypeRule, IngestionSettings

app = typer.Typer(help="Batch importers: files, SQL, HTTP APIs.", no_args_is_help=True)
console = Console(stderr=True)


class RowsPerSecond(ProgressColumn):
    """Rows per second of a task (rich's speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("—" if speed is None else f"{speed:,.0f} rows/s", style="cyan")


class RowCount(ProgressColumn):
    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(done if task.total is None else f"{done}/{int(task.total):,}", style="green")


def make_progress() -> Progress:
    """The progress bar used by every importer (and the demo's HTTP replay)."""
    from rich.progress import BarColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        RowCount(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _mapping(maps: list[str] | None) -> dict[str, str]:
    out = {}
    for m in maps or []:
        col, sep, fld = m.partition("=")
        if not sep or not col or not fld:
            raise typer.BadParameter(f"--map expects COLUMN=FIELD, got {m!r}")
        out[col.strip()] = fld.strip()
    return out


def _run(
    sources: list[Any],
    *,
    maps: list[str] | None,
    dry_run: bool,
    via_http: str | None,
    api_key: str | None,
    tenant: str | None,
    rules: list[str] | None,
    ts_unit: str | None,
    event_type: str | None,
    value_min: float | None,
    value_max: float | None,
    clamp: bool,
    bot_max: int | None,
) -> None:
    from recmesh.core.logs import configure_logging
    from recmesh.ingestion.cleaning import CleaningOptions
    from recmesh.ingestion.importers import DryRunSink, ProducerSink, run_import

    settings = IngestionSettings()
    configure_logging("ingestion-cli", "WARNING", json_lines=False)
    try:
        parsed_rules = [EventTypeRule.parse(r) for r in rules] if rules else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    opts = CleaningOptions.from_section(
        settings.ingestion,
        tenant=tenant or settings.tenant,
        rules=parsed_rules,
        ts_unit=ts_unit,
        default_event_type=event_type,
        value_min=value_min,
        value_max=value_max,
        out_of_range="clamp" if clamp else None,
        bot_max_events_per_minute=bot_max,
    )
    producer = None
    sink: Any
    if dry_run:
        sink = DryRunSink()
        target = "dry run (nothing produced)"
    elif via_http:
        from recmesh.ingestion.client import HttpSink

        sink = HttpSink(via_http, api_key=api_key)
        target = f"{via_http} (HTTP API)"
    else:
        from recmesh.core.bus import EventProducer
        from recmesh.core.topics import TopicRegistry

        producer = EventProducer(
            settings.kafka,
            TopicRegistry(prefix=settings.kafka.topic_prefix),
            client_id="ingestion-import",
            schema_registry_url=settings.schema_registry_url,
        ).start()
        sink = ProducerSink(producer, default_tenant=settings.tenant)
        target = f"Kafka {settings.kafka.bootstrap_servers}"
    tasks: dict[str, Any] = {}
    try:
        with make_progress() as bar:

            def progress(name: str, n: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=None)
                bar.advance(tasks[name], n)

            result = run_import(sources, sink, opts, mapping=_mapping(maps), progress=progress)
    finally:
        if producer is not None:
            producer.close(30)
    _summary(result, target)
    if not result.ok:
        raise typer.Exit(1)


def _summary(result: Any, target: str) -> None:
    table = Table(title=f"Import summary → {target}")
    for col in ("source", "kind", "read", "kept", "dropped", "clamped", "remapped", "seconds", "rows/s"):
        table.add_column(col, justify="left" if col in ("source", "kind", "dropped", "remapped") else "right",
                         overflow="fold")  # fmt: skip
    for s in result.summaries:
        r = s.report
        dropped = ", ".join(f"{k} {v:,}" for k, v in r.dropped.most_common()) or "—"
        remapped = ", ".join(f"{k} {v:,}" for k, v in r.remapped.most_common()) or "—"
        table.add_row(s.name, s.kind, f"{r.read:,}", f"{r.kept:,}", dropped, f"{r.clamped:,}", remapped,
                      f"{s.seconds:.2f}", f"{s.rows_per_s:,.0f}")  # fmt: skip
    console.print(table)
    for s in result.summaries:  # plain lines too: logs and narrow terminals keep every reason
        r = s.report
        parts = [f"read {r.read:,}", f"kept {r.kept:,}"]
        parts += [f"dropped {k} {v:,}" for k, v in r.dropped.most_common()]
        parts += [f"remapped {k} {v:,}" for k, v in r.remapped.most_common()]
        console.print(f"{s.name}: " + ", ".join(parts), soft_wrap=True)
    d = result.delivery
    console.print(", ".join(f"{k}: {v:,}" for k, v in d.items()), soft_wrap=True)


# -- common options -----------------------------------------------------------------------------------
MapOpt = typer.Option(None, "--map", "-m", help="COLUMN=FIELD (user_id, item_id, event_type, value, timestamp, "
                      "event_id, session_id, title, categories, attributes.X, ...); repeatable.")  # fmt: skip
DryOpt = typer.Option(False, "--dry-run", help="Validate and count without producing.")
HttpOpt = typer.Option(None, "--via-http", help="Send through the ingestion API at this base URL instead of Kafka.")
KeyOpt = typer.Option(None, "--api-key", envvar="RECMESH_API_KEY", help="X-API-Key for --via-http.")
TenantOpt = typer.Option(None, "--tenant", help="Tenant of rows that name none (default: settings).")
RuleOpt = typer.Option(None, "--rule", help="Event-type rule, e.g. 'rating>=4:like'; repeatable.")
TsOpt = typer.Option(None, "--ts-unit", help="Numeric timestamps are s, ms, us or auto (default auto).")
TypeOpt = typer.Option(None, "--event-type", help="Event type of rows without one (default view, rating for ratings).")
MinOpt = typer.Option(None, "--value-min", help="Values below are dropped (or clamped with --clamp).")
MaxOpt = typer.Option(None, "--value-max", help="Values above are dropped (or clamped with --clamp).")
ClampOpt = typer.Option(False, "--clamp", help="Clamp out-of-range values instead of dropping the row.")
BotOpt = typer.Option(None, "--bot-max", help="Drop a user's events beyond N per minute (bot filter).")
KindOpt = typer.Option("interactions", "--kind", help="interactions, items or users.")


@app.command("file")
def ingest_file(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV/TSV, Parquet, NDJSON or a MovieLens file."),
    format: str = typer.Option("auto", "--format", "-f", help="auto, csv, tsv, parquet, ndjson or movielens."),
    kind: str = KindOpt,
    sep: str | None = typer.Option(None, "--sep", help="Field separator of CSV files."),
    maps: list[str] | None = MapOpt,
    dry_run: bool = DryOpt,
    via_http: str | None = HttpOpt,
    api_key: str | None = KeyOpt,
    tenant: str | None = TenantOpt,
    rules: list[str] | None = RuleOpt,
    ts_unit: str | None = TsOpt,
    event_type: str | None = TypeOpt,
    value_min: float | None = MinOpt,
    value_max: float | None = MaxOpt,
    clamp: bool = ClampOpt,
    bot_max: int | None = BotOpt,
) -> None:
    """Import one file (format from the name unless --format; MovieLens names are recognised)."""
    from recmesh.ingestion.importers import ImportFormatError, file_source

    if kind not in ("interactions", "items", "users"):
        raise typer.BadParameter("--kind must be interactions, items or users")
    try:
        src = file_source(path, None if format == "auto" else format, kind=kind, sep=sep,  # type: ignore[arg-type]
                          chunk_rows=IngestionSettings().ingestion.import_chunk_rows)  # fmt: skip
    except ImportFormatError as exc:
        raise typer.BadParameter(str(exc)) from None
    _run([src], maps=maps, dry_run=dry_run, via_http=via_http, api_key=api_key, tenant=tenant, rules=rules,
         ts_unit=ts_unit, event_type=event_type, value_min=value_min, value_max=value_max, clamp=clamp,
         bot_max=bot_max)  # fmt: skip


@app.command("movielens")
def ingest_movielens(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="A MovieLens or RecBole dataset dir."),
    dry_run: bool = DryOpt,
    via_http: str | None = HttpOpt,
    api_key: str | None = KeyOpt,
    tenant: str | None = TenantOpt,
    rules: list[str] | None = RuleOpt,
    no_catalog: bool = typer.Option(False, "--no-catalog", help="Ratings only (skip items and users)."),
) -> None:
    """Import a MovieLens dataset: items (titles, genres), users (demographics), then ratings."""
    from recmesh.ingestion.importers import ImportFormatError, movielens_sources

    try:
        sources = movielens_sources(directory)
    except ImportFormatError as exc:
        raise typer.BadParameter(str(exc)) from None
    if no_catalog:
        sources = [s for s in sources if s.kind == "interactions"]
    _run(sources, maps=None, dry_run=dry_run, via_http=via_http, api_key=api_key, tenant=tenant, rules=rules,
         ts_unit=None, event_type=None, value_min=None, value_max=None, clamp=False, bot_max=None)  # fmt: skip


@app.command("sql")
def ingest_sql(
    url: str = typer.Argument(..., help="SQLAlchemy URL, e.g. sqlite:///data.db or postgresql+psycopg://..."),
    query: str | None = typer.Option(None, "--query", "-q", help="SELECT returning the rows."),
    table: str | None = typer.Option(None, "--table", "-t", help="Table (or schema.table) to read whole."),
    kind: str = KindOpt,
    chunk: int = typer.Option(50_000, "--chunk", help="Rows fetched per round trip."),
    maps: list[str] | None = MapOpt,
    dry_run: bool = DryOpt,
    via_http: str | None = HttpOpt,
    api_key: str | None = KeyOpt,
    tenant: str | None = TenantOpt,
    rules: list[str] | None = RuleOpt,
    ts_unit: str | None = TsOpt,
    event_type: str | None = TypeOpt,
    value_min: float | None = MinOpt,
    value_max: float | None = MaxOpt,
    clamp: bool = ClampOpt,
    bot_max: int | None = BotOpt,
) -> None:
    """Import the rows of a SQL query or table (streamed in chunks)."""
    from recmesh.ingestion.importers import SqlSource

    if (query is None) == (table is None):
        raise typer.BadParameter("give exactly one of --query or --table")
    src = SqlSource(url, kind=kind, query=query, table=table, chunk_rows=chunk)  # type: ignore[arg-type]
    _run([src], maps=maps, dry_run=dry_run, via_http=via_http, api_key=api_key, tenant=tenant, rules=rules,
         ts_unit=ts_unit, event_type=event_type, value_min=value_min, value_max=value_max, clamp=clamp,
         bot_max=bot_max)  # fmt: skip


@app.command("http")
def ingest_http(
    url: str = typer.Argument(..., help="First page URL of a JSON API."),
    kind: str = KindOpt,
    items_path: str | None = typer.Option(None, "--items-path", help="Dotted path to the rows (default: root)."),
    pagination: str = typer.Option("none", "--pagination", help="cursor, page or none."),
    cursor_param: str = typer.Option("cursor", "--cursor-param"),
    next_path: str = typer.Option("next_cursor", "--next-path", help="Dotted path of the next cursor or URL."),
    page_param: str = typer.Option("page", "--page-param"),
    size_param: str = typer.Option("per_page", "--size-param"),
    page_size: int = typer.Option(500, "--page-size"),
    header: list[str] | None = typer.Option(None, "--header", "-H", help="'Name: value'; repeatable."),
    rate_limit: float | None = typer.Option(None, "--rate-limit", help="Most requests per second."),
    retries: int = typer.Option(5, "--retries", help="Retries of 429/5xx/connection errors (backoff)."),
    maps: list[str] | None = MapOpt,
    dry_run: bool = DryOpt,
    via_http: str | None = HttpOpt,
    api_key: str | None = KeyOpt,
    tenant: str | None = TenantOpt,
    rules: list[str] | None = RuleOpt,
    ts_unit: str | None = TsOpt,
    event_type: str | None = TypeOpt,
    value_min: float | None = MinOpt,
    value_max: float | None = MaxOpt,
    clamp: bool = ClampOpt,
    bot_max: int | None = BotOpt,
) -> None:
    """Import rows from a paginated JSON API (cursor or page), with retries and rate limiting."""
    from recmesh.ingestion.importers import HttpSource

    if pagination not in ("cursor", "page", "none"):
        raise typer.BadParameter("--pagination must be cursor, page or none")
    headers = {}
    for h in header or []:
        k, sep, v = h.partition(":")
        if not sep:
            raise typer.BadParameter(f"--header expects 'Name: value', got {h!r}")
        headers[k.strip()] = v.strip()
    src = HttpSource(url, kind=kind, items_path=items_path, pagination=pagination,  # type: ignore[arg-type]
                     cursor_param=cursor_param, next_path=next_path, page_param=page_param,
                     size_param=size_param or None, page_size=page_size, headers=headers,
                     rate_limit_per_s=rate_limit, max_retries=retries)  # fmt: skip
    _run([src], maps=maps, dry_run=dry_run, via_http=via_http, api_key=api_key, tenant=tenant, rules=rules,
         ts_unit=ts_unit, event_type=event_type, value_min=value_min, value_max=value_max, clamp=clamp,
         bot_max=bot_max)  # fmt: skip
