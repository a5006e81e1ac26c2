"""File sources: CSV/TSV, Parquet, NDJSON, and the MovieLens formats recognised by file name.

MovieLens: GroupLens ``u.data`` / ``u.item`` / ``u.user`` (ML-100K), ``ratings.dat`` /
``movies.dat`` / ``users.dat`` (ML-1M, ``::``-separated, Latin-1), ``ratings.csv`` /
``movies.csv`` (ML-latest), and RecBole atomic files ``*.inter`` / ``*.item`` / ``*.user``
(tab-separated, ``name:type`` headers, ``token_seq`` space-separated). Ratings are
``rating`` events with the rating as value and epoch-second timestamps; titles and genres
become catalog items, demographics become user attributes.

Every source streams chunks of row dicts; nothing reads a whole large file into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from recmesh.ingestion.importers.base import Kind, Row

FORMATS = ("csv", "tsv", "parquet", "ndjson")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
GROUPLENS_NAMES = frozenset(
    {"u.data", "u.item", "u.user", "ratings.dat", "movies.dat", "users.dat", "ratings.csv", "movies.csv"}
)
_SEQ_CATEGORY_COLUMNS = {"class", "genre", "genres", "categories", "category"}


class ImportFormatError(ValueError):
    """The file's format cannot be recognised or read."""


@dataclass
class FileSource:
    """Rows of one file. ``names`` for header-less files; ``transform`` reshapes a chunk."""

    path: Path
    kind: Kind
    format: str = "csv"
    sep: str | None = None
    names: list[str] | None = None
    encoding: str = "utf-8"
    chunk_rows: int = 50_000
    transform: Callable[[list[Row]], list[Row]] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.name = self.name or self.path.name

    def chunks(self) -> Iterator[list[Row]]:
        if self.format == "parquet":
            gen = self._parquet()
        elif self.format == "ndjson":
            gen = self._ndjson()
        elif self.sep is not None and len(self.sep) > 1:
            gen = self._split_lines()
        else:
            gen = self._csv()
        for chunk in gen:
            yield self.transform(chunk) if self.transform else chunk

    def _csv(self) -> Iterator[list[Row]]:
        import pandas as pd

        sep = self.sep or ("\t" if self.format == "tsv" else ",")
        reader = pd.read_csv(
            self.path,
            sep=sep,
            header=None if self.names else 0,
            names=self.names,
            dtype=str,
            chunksize=self.chunk_rows,
            encoding=self.encoding,
            quoting=3 if sep == "\t" else 0,  # RecBole titles contain bare quotes
            skipinitialspace=False,
        )
        with reader:
            for df in reader:
                yield df.to_dict("records")

    def _split_lines(self) -> Iterator[list[Row]]:
        assert self.sep is not None
        names = self.names
        chunk: list[Row] = []
        with self.path.open(encoding=self.encoding, errors="replace") as f:
            if names is None:
                names = f.readline().rstrip("\r\n").split(self.sep)
            for line in f:
                line = line.rstrip("\r\n")
                if not line:
                    continue
                chunk.append(dict(zip(names, line.split(self.sep), strict=False)))
                if len(chunk) >= self.chunk_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def _ndjson(self) -> Iterator[list[Row]]:
        chunk: list[Row] = []
        with self.path.open("rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ImportFormatError(f"{self.path}:{lineno}:{exc.colno}: {exc.msg}") from None
                if not isinstance(obj, dict):
                    raise ImportFormatError(f"{self.path}:{lineno}: a line must be a JSON object")
                chunk.append(obj)
                if len(chunk) >= self.chunk_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def _parquet(self) -> Iterator[list[Row]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        for batch in pf.iter_batches(batch_size=self.chunk_rows):
            yield batch.to_pylist()


# -- MovieLens ------------------------------------------------------------------------------------
def _ml100k_items(rows: list[Row]) -> list[Row]:
    out = []
    for r in rows:
        cats = [g for g in ML100K_GENRES if r.get(g) == "1"]
        out.append({"item_id": r["item_id"], "title": r.get("title"), "categories": cats,
                    "release_date": r.get("release_date"), "imdb_url": r.get("imdb_url")})  # fmt: skip
    return out


def _pipe_genres(rows: list[Row]) -> list[Row]:
    for r in rows:
        g = r.get("genres")
        r["genres"] = [] if not isinstance(g, str) or g == "(no genres listed)" else g.split("|")
    return rows


def _recbole_seq(rows: list[Row]) -> list[Row]:
    for r in rows:
        for k, v in r.items():
            if k.endswith(":token_seq") and k.split(":", 1)[0].lower() in _SEQ_CATEGORY_COLUMNS:
                r[k] = v.split() if isinstance(v, str) else []
    return rows


RATING_DEFAULTS = {"ts_unit": "s", "default_event_type": "rating"}


def movielens_source(path: Path | str, chunk_rows: int = 50_000) -> FileSource | None:
    """A source for a MovieLens or RecBole file recognised by its name, else None."""
    p = Path(path)
    n = p.name
    lat = "latin-1"
    ratings = ["user_id", "item_id", "rating", "timestamp"]
    known: dict[str, dict[str, Any]] = {
        "u.data": {"kind": "interactions", "sep": "\t", "names": ratings, "defaults": RATING_DEFAULTS},
        "ratings.dat": {"kind": "interactions", "sep": "::", "names": ratings, "defaults": RATING_DEFAULTS},
        "ratings.csv": {"kind": "interactions", "sep": ",", "defaults": RATING_DEFAULTS},
        "u.item": {"kind": "items", "sep": "|", "encoding": lat, "transform": _ml100k_items,
                   "names": ["item_id", "title", "release_date", "video_release_date", "imdb_url",
                             *ML100K_GENRES]},
        "movies.dat": {"kind": "items", "sep": "::", "encoding": lat, "transform": _pipe_genres,
                       "names": ["item_id", "title", "genres"]},
        "movies.csv": {"kind": "items", "sep": ",", "transform": _pipe_genres},
        "u.user": {"kind": "users", "sep": "|", "names": ["user_id", "age", "gender", "occupation", "zip_code"]},
        "users.dat": {"kind": "users", "sep": "::", "names": ["user_id", "gender", "age", "occupation",
                                                              "zip_code"]},
    }  # fmt: skip
    spec = known.get(n)
    if spec is None:
        kind = {".inter": "interactions", ".item": "items", ".user": "users"}.get(p.suffix)
        if kind is None:
            return None
        spec = {"kind": kind, "sep": "\t", "transform": _recbole_seq}
        if kind == "interactions":
            spec["defaults"] = RATING_DEFAULTS
    return FileSource(path=p, format="csv", chunk_rows=chunk_rows, **spec)


def movielens_sources(directory: Path | str, chunk_rows: int = 50_000) -> list[FileSource]:
    """Every MovieLens/RecBole file of a dataset directory: items, then users, then ratings."""
    d = Path(directory)
    if not d.is_dir():
        raise ImportFormatError(f"{d} is not a directory")
    found = [s for p in sorted(d.iterdir()) if p.is_file() and (s := movielens_source(p, chunk_rows))]
    # One layout per directory: prefer GroupLens files over RecBole conversions when both exist.
    grouplens = [s for s in found if s.path.name in GROUPLENS_NAMES]
    chosen = grouplens or found
    if not any(s.kind == "interactions" for s in chosen):
        raise ImportFormatError(f"no MovieLens ratings in {d} (expected u.data, ratings.dat, ratings.csv or *.inter)")
    order = {"items": 0, "users": 1, "interactions": 2}
    return sorted(chosen, key=lambda s: order[s.kind])


def file_source(
    path: Path | str,
    format: str | None = None,
    kind: Kind = "interactions",
    sep: str | None = None,
    chunk_rows: int = 50_000,
) -> FileSource:
    """A source for any supported file; ``format=None`` guesses from the name (MovieLens names first)."""
    p = Path(path)
    if not p.is_file():
        raise ImportFormatError(f"{p}: no such file")
    if format in (None, "auto", "movielens"):
        ml = movielens_source(p, chunk_rows)
        if ml is not None:
            return ml
        if format == "movielens":
            raise ImportFormatError(f"{p.name} is not a MovieLens or RecBole file name")
        suffixes = [s.lower() for s in p.suffixes]
        ext = suffixes[-1] if suffixes else ""
        if ext in (".gz", ".bz2", ".zst", ".xz") and len(suffixes) > 1:
            ext = suffixes[-2]
        format = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".parquet": "parquet",
                  ".pq": "parquet", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}.get(ext)  # fmt: skip
        if format is None:
            raise ImportFormatError(f"{p.name}: unknown format (use --format csv|tsv|parquet|ndjson)")
    if format not in FORMATS:
        raise ImportFormatError(f"unknown format {format!r} (one of {', '.join(FORMATS)}, movielens)")
    return FileSource(path=p, kind=kind, format=format, sep=sep, chunk_rows=chunk_rows)
