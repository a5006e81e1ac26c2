"""Single-object encoding: framing, the standard CRC-64-AVRO fingerprint, resolution of old
versions, and DecodeError (never a random exception) for anything that is not a valid message."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form

from recmesh.core.codec import MAGIC, AvroCodec, SchemaStore, codec_for_schema, make_codec, schema_store
from recmesh.core.errors import DecodeError
from recmesh.core.events import (
    EVENT_CLASSES,
    Interaction,
    ItemUpdate,
    LabeledInteraction,
    ModelPublished,
    RecommendationServed,
    ServedItem,
    UserUpdate,
)

# -- an independent CRC-64-AVRO, written from the Avro specification ------------------------------
_EMPTY = 0xC15D213AA4D7A795
_MASK = 0xFFFFFFFFFFFFFFFF


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & (_MASK if fp & 1 else 0))
        table.append(fp)
    return table


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


# Vectors from the Avro project's share/test/data/schema-tests.txt (fingerprints as Java longs).
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"int"}', '"int"', 8247732601305521295),
    ('{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
     '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}',
     '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    ('{"type":"map","values":"string"}', '{"type":"map","values":"string"}', -8732877298790414990),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "canonical", "fp"), SPEC_VECTORS)
def test_crc64_avro_matches_the_spec_vectors(schema: str, canonical: str, fp: int) -> None:
    assert to_parsing_canonical_form(parse_schema(json.loads(schema))) == canonical
    assert crc64_avro(canonical.encode()) == fp & _MASK


def test_every_schema_fingerprint_is_the_little_endian_crc64_of_its_canonical_form() -> None:
    store = schema_store()
    assert len(store.by_fingerprint) == sum(len(v) for v in store.versions.values()), "fingerprint collision"
    for versions in store.versions.values():
        for sv in versions:
            canonical = to_parsing_canonical_form(parse_schema(json.loads(sv.path.read_text())))
            assert sv.fingerprint == struct.pack("<Q", crc64_avro(canonical.encode())), sv.path.name


def full_events() -> list[object]:
    """One event of each class with every field set to a non-default value."""
    return [
        Interaction("e1", "u1", "i1", "purchase", 9.5, 1_700_000_000_123, "s1", "r1", {"page": "home"}, "t1",
                    "batch"),
        ItemUpdate("i1", "t1", "Title", ["a", "b"], {"color": "red"}, False, 1_600_000_000_000, 1_700_000_000_000),
        UserUpdate("u1", "t1", {"country": "fr"}, ["vip"], 1_600_000_000_000, 1_700_000_000_000),
        RecommendationServed("r1", "u1", "t1", [ServedItem("i1", 0.9, 1, "als"), ServedItem("i2", 0.5, 2, "pop")],
                             "als", "v3", "treatment", "similar", 1_700_000_000_000),
        LabeledInteraction("l1", "u1", "i1", "t1", 1, "click", "r1", 3, "v3", "control", 1_699_999_999_000,
                           1_700_000_000_000),
        ModelPublished("als", "v3", "file:///reg/als/v3", "als", "rollback", "v2", {"ndcg@10": 0.31},
                       1_699_000_000_000, 1_600_000_000_000, 1_690_000_000_000, 1_700_000_000_000),
    ]  # fmt: skip


def test_full_events_cover_every_event_class() -> None:
    assert {type(e) for e in full_events()} == set(EVENT_CLASSES)


@pytest.mark.parametrize("event", full_events(), ids=lambda e: type(e).__name__)
def test_round_trip_and_framing(event: object) -> None:
    codec = AvroCodec(type(event))
    data = codec.encode(event)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == codec.reader.fingerprint
    # The body is plain Avro binary of the newest schema, readable by any Avro implementation.
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), codec.reader.parsed)
    assert isinstance(body, dict)
    assert codec.decode(data) == event


def test_v1_interaction_is_resolved_to_the_newest_reader() -> None:
    store = schema_store()
    v1 = store.versions["recmesh.events.Interaction"][0]
    assert v1.version == 1 and store.latest("recmesh.events.Interaction").version > 1
    rec = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "click", "value": None,
           "timestamp": 1_700_000_000_000, "session_id": None, "request_id": None, "context": {},
           "tenant": "t"}  # fmt: skip
    buf = io.BytesIO()
    buf.write(MAGIC + v1.fingerprint)
    fastavro.schemaless_writer(buf, v1.parsed, rec)
    ev = AvroCodec(Interaction).decode(buf.getvalue())
    assert ev == Interaction("e1", "u1", "i1", "click", None, 1_700_000_000_000, tenant="t", source="api")


def _valid() -> bytes:
    return AvroCodec(Interaction).encode(full_events()[0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b'{"event_id": "x"}', "bad magic"),
        (b"\x00\x00\x00\x00\x01" + b"x" * 20, "bad magic"),  # Confluent framing is not ours
        (MAGIC + b"\x01" * 8 + b"\x02e1", "unknown schema fingerprint"),
        (_valid()[:-5], "corrupt Avro body"),
        (_valid()[:12], "corrupt Avro body"),
        (MAGIC + _valid()[2:10], "corrupt Avro body"),  # header only
    ],
    ids=["empty", "json", "confluent", "unknown-fingerprint", "truncated", "very-truncated", "header-only"],
)
def test_undecodable_bytes_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        AvroCodec(Interaction).decode(data)


def test_a_different_record_on_the_topic_is_a_decode_error() -> None:
    data = AvroCodec(ItemUpdate).encode(ItemUpdate("i1", updated_at=1))
    with pytest.raises(DecodeError, match="recmesh.events.ItemUpdate where recmesh.events.Interaction"):
        AvroCodec(Interaction).decode(data)


def test_encoding_refuses_values_outside_the_schema() -> None:
    codec = AvroCodec(Interaction)
    with pytest.raises(ValueError):
        codec.encode(Interaction("e", "u", "i", "teleport", None, 1))  # not an EventType symbol


def test_codec_factories() -> None:
    assert isinstance(make_codec(Interaction, None), AvroCodec)
    assert codec_for_schema("recmesh.events.ItemUpdate")().cls is ItemUpdate


def test_schema_store_rejects_a_misnamed_file(tmp_path) -> None:
    (tmp_path / "Interaction.avsc").write_text('{"type":"record","name":"Interaction","fields":[]}')
    from recmesh.core.errors import SchemaError

    with pytest.raises(SchemaError, match="<Record>.v<N>.avsc"):
        SchemaStore(tmp_path)


@pytest.mark.parametrize("event", full_events(), ids=lambda e: type(e).__name__)
def test_confluent_wire_format_round_trip_with_a_mock_registry(event: object) -> None:
    """The optional Confluent format (magic 0 + big-endian schema id + Avro body) through
    confluent-kafka's in-memory ``mock://`` registry: no registry server needed."""
    pytest.importorskip("confluent_kafka.schema_registry.avro", reason="needs confluent-kafka[avro] (dev extra)")
    from recmesh.core.codec import ConfluentCodec

    codec = make_codec(type(event), "mock://recmesh-unit")
    assert isinstance(codec, ConfluentCodec)
    data = codec.encode(event, "t.catalog")
    assert data[0] == 0  # Confluent magic byte, not our C3 01
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert schema_id >= 1
    reader = schema_store().latest(type(event).SCHEMA)  # type: ignore[attr-defined]
    body = fastavro.schemaless_reader(io.BytesIO(data[5:]), reader.parsed)
    assert isinstance(body, dict)
    assert codec.decode(data, "t.catalog") == event
    with pytest.raises(DecodeError):
        codec.decode(_valid(), "t.catalog")  # single-object bytes are not Confluent framing
