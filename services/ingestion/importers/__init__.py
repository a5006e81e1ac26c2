"""Batch importers (``recmesh ingest ...``): files, MovieLens, SQL and HTTP API sources.

Every source yields chunks of rows; :func:`run_import` maps, cleans and produces them.
"""

from recmesh.ingestion.importers.base import (
    DryRunSink,
    ImportResult,
    ImportSummary,
    ProducerSink,
    RowsSource,
    Source,
    apply_plan,
    column_plan,
    run_import,
)
from recmesh.ingestion.importers.files import (
    FileSource,
    ImportFormatError,
    file_source,
    movielens_source,
    movielens_sources,
)
from recmesh.ingestion.importers.http import HttpImportError, HttpSource
from recmesh.ingestion.importers.sql import SqlSource

__all__ = [
    "DryRunSink", "FileSource", "HttpImportError", "HttpSource", "ImportFormatError", "ImportResult",
    "ImportSummary", "ProducerSink", "RowsSource", "Source", "SqlSource", "apply_plan", "column_plan",
    "file_source", "movielens_source", "movielens_sources", "run_import",
]  # fmt: skip
