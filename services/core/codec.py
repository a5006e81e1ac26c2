"""Avro codecs over fastavro: single-object encoding by default, Confluent wire format optional.

Every ``.avsc`` in the schema directory is parsed once. Versions of one record are files
``<Record>.v<N>.avsc``; the highest N is the reader schema. Single-object encoding is
``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
Canonical Form + the Avro body. Decoding looks the fingerprint up among all known versions
and resolves to the newest with Avro schema resolution, so old and new producers coexist.

Timestamps stay epoch-millisecond ints in Python: logical types are kept in the files (and
so in the wire contract) but not applied by fastavro on read, which would cost a datetime
per field per message.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from recmesh.core.errors import DecodeError, SchemaError
from recmesh.core.events import EVENT_CLASSES, from_record, record_builder, to_record

T = TypeVar("T")
MAGIC = b"\xc3\x01"
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


def default_schema_dir() -> Path:
    """``$RECMESH_SCHEMA_DIR``, else ``schemas/`` at the repository root."""
    env = os.environ.get("RECMESH_SCHEMA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "schemas"


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    """One released version of one record schema."""

    fullname: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes

    @property
    def json(self) -> str:
        return json.dumps(self.raw)


class SchemaStore:
    """All schema versions in a directory, indexed by record name and by fingerprint."""

    def __init__(self, schema_dir: Path | str | None = None) -> None:
        self.dir = Path(schema_dir) if schema_dir else default_schema_dir()
        if not self.dir.is_dir():
            raise SchemaError(f"schema directory not found: {self.dir} (set RECMESH_SCHEMA_DIR)")
        self.versions: dict[str, list[SchemaVersion]] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(self.dir.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise SchemaError(f"schema file name must be <Record>.v<N>.avsc: {path.name}")
            raw = json.loads(path.read_text())
            fullname = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
            if raw["name"] != m["name"]:
                raise SchemaError(f"{path.name}: record name {raw['name']!r} does not match the file name")
            # Parsing Canonical Form ignores logicalType and docs, so the fingerprint is the standard one.
            canonical = to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(raw)))
            fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
            parsed = fastavro.parse_schema(_strip_logical(raw), named_schemas={})
            sv = SchemaVersion(fullname, int(m["version"]), path, raw, parsed, fp)
            self.versions.setdefault(fullname, []).append(sv)
            self.by_fingerprint[fp] = sv
        for vs in self.versions.values():
            vs.sort(key=lambda v: v.version)

    def latest(self, fullname: str) -> SchemaVersion:
        try:
            return self.versions[fullname][-1]
        except KeyError:
            raise SchemaError(f"no schema for record {fullname} in {self.dir}") from None


_STORE: SchemaStore | None = None


def schema_store() -> SchemaStore:
    """The process-wide schema store (parsed once)."""
    global _STORE
    if _STORE is None:
        _STORE = SchemaStore()
    return _STORE


class AvroCodec(Generic[T]):
    """Single-object-encoding codec for one event class.

    Encoding and decoding are fastavro's (compiled); decoding finds the writer schema by
    fingerprint and lets fastavro resolve older versions to the newest.
    """

    def __init__(self, cls: type[T], store: SchemaStore | None = None) -> None:
        self.cls = cls
        self.store = store or schema_store()
        self.reader = self.store.latest(cast(Any, cls).SCHEMA)
        self._prefix = MAGIC + self.reader.fingerprint
        self._writer = fastavro.schemaless_writer
        self._read = fastavro.schemaless_reader
        # fingerprint -> (writer schema, reader schema or None when they are the same)
        self._readers: dict[bytes, tuple[Any, Any]] = {
            v.fingerprint: (v.parsed, None if v is self.reader else self.reader.parsed)
            for v in self.store.versions[self.reader.fullname]
        }
        self._from_record = record_builder(cls)

    def encode(self, event: T, topic: str | None = None) -> bytes:
        buf = io.BytesIO()
        buf.write(self._prefix)
        try:
            self._writer(buf, self.reader.parsed, to_record(event))
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"{self.cls.__name__} does not fit its schema: {type(exc).__name__}: {exc}") from exc
        return buf.getvalue()

    def decode_record(self, data: bytes) -> dict[str, Any]:
        """Bytes → record dict resolved to the newest schema version."""
        if not data.startswith(MAGIC) or len(data) < 10:
            raise DecodeError("not Avro single-object encoding (bad magic)")
        fp = data[2:10]
        schemas = self._readers.get(fp)
        if schemas is None:
            writer = self.store.by_fingerprint.get(fp)
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {fp.hex()}")
            raise DecodeError(f"record {writer.fullname} where {self.reader.fullname} was expected")
        try:
            buf = io.BytesIO(data)
            buf.seek(10)
            rec = self._read(buf, schemas[0], schemas[1])
        except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
            raise DecodeError(f"corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        return cast(dict[str, Any], rec)

    def decode(self, data: bytes, topic: str | None = None) -> T:
        rec = self.decode_record(data)
        try:
            return cast(T, self._from_record(rec))
        except (TypeError, ValueError) as exc:  # a record the event class cannot take
            raise DecodeError(f"record does not fit {self.cls.__name__}: {exc}") from exc


class ConfluentCodec(Generic[T]):
    """Confluent wire format (magic 0 + schema id + body) through a Schema Registry.

    Used when ``RECMESH_SCHEMA_REGISTRY_URL`` is set, for users who run a registry
    (``mock://<name>`` is confluent-kafka's in-memory registry, for tests). Serialisation goes
    through confluent-kafka's ``AvroSerializer``/``AvroDeserializer``, which need the
    ``confluent-kafka[avro]`` extra.
    """

    def __init__(self, cls: type[T], registry_url: str, store: SchemaStore | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

        self.cls = cls
        self.store = store or schema_store()
        reader = self.store.latest(cast(Any, cls).SCHEMA)
        # new_client understands confluent-kafka's in-memory ``mock://`` registries (tests);
        # older clients without it only take real URLs.
        factory = getattr(SchemaRegistryClient, "new_client", SchemaRegistryClient)
        client = factory({"url": registry_url})
        self._ser = AvroSerializer(client, json.dumps(reader.raw), to_dict=lambda obj, ctx: to_record(obj))
        self._de = AvroDeserializer(
            client, json.dumps(reader.raw), from_dict=lambda rec, ctx: from_record(cls, _to_millis(rec))
        )

    def encode(self, event: T, topic: str | None = None) -> bytes:
        from confluent_kafka.serialization import MessageField, SerializationContext

        out = self._ser(event, SerializationContext(topic or "", MessageField.VALUE))
        return cast(bytes, out)

    def decode(self, data: bytes, topic: str | None = None) -> T:
        from confluent_kafka.serialization import MessageField, SerializationContext

        try:
            return cast(T, self._de(data, SerializationContext(topic or "", MessageField.VALUE)))
        except Exception as exc:
            raise DecodeError(f"{type(exc).__name__}: {exc}") from exc


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _to_millis(value: Any) -> Any:
    """confluent-kafka's deserializer applies logical types; our events keep epoch-ms ints."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (dt - _EPOCH) // _MS
    if isinstance(value, dict):
        return {k: _to_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_millis(v) for v in value]
    return value


Codec = AvroCodec[Any] | ConfluentCodec[Any]


def make_codec(cls: type[T], schema_registry_url: str | None = None) -> AvroCodec[T] | ConfluentCodec[T]:
    """The codec the settings ask for: Confluent when a registry URL is set, else single-object."""
    if schema_registry_url:
        return ConfluentCodec(cls, schema_registry_url)
    return AvroCodec(cls)


def codec_for_schema(fullname: str) -> Callable[[], AvroCodec[Any]]:
    """Factory for the codec of a record by full name (used by tooling)."""
    for cls in EVENT_CLASSES:
        if fullname == cls.SCHEMA:
            return lambda: AvroCodec(cls)
    raise SchemaError(f"no event class for {fullname}")
