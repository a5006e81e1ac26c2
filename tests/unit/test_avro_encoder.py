"""The generated encoders write exactly the bytes fastavro writes (they replace it on the
producer hot path), for every schema version and samples that reach every field, union branch
and enum symbol; invalid values raise instead of producing garbage."""

from __future__ import annotations

import contextlib
import io
import random
from typing import Any

import fastavro
import pytest

from recmesh.core.avro_encoder import compile_decoder, compile_encoder
from recmesh.core.codec import AvroCodec, _strip_logical, schema_store
from recmesh.core.errors import DecodeError
from recmesh.core.events import EVENT_CLASSES, Interaction, from_record
from recmesh.core.schema_compat import _Sampler

VERSIONS = [v for vs in schema_store().versions.values() for v in vs]


def fastavro_bytes(parsed: Any, rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, rec)
    return buf.getvalue()


def samples(raw: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _strip_logical(raw)
    sampler = _Sampler(schema)
    out = [sampler.sample(schema, k) for k in range(sampler.variants(schema))]
    rng = random.Random(3)
    types = {f["name"]: f["type"] for f in schema["fields"]}
    edges = {"int": [0, -1, 63, 64, -65, 2**31 - 1, -(2**31)], "long": [0, -1, 64, -(2**63), 2**63 - 1]}
    for rec in out[:3]:  # edges of the variable-length encodings
        for name, value in list(rec.items()):
            t = types[name]
            t = next((b for b in t if b != "null"), None) if isinstance(t, list) else t
            if value is not None and isinstance(t, str) and t in edges:
                rec[name] = rng.choice(edges[t])
            elif t == "string":
                rec[name] = rng.choice(["", "é" * 40, "x" * 300])
    return out


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.fullname.rsplit('.', 1)[1]}.v{v.version}")
def test_generated_encoder_is_byte_identical_to_fastavro(version) -> None:
    encoder = compile_encoder(_strip_logical(version.raw))
    assert encoder is not None, "every project schema must be covered by the generator"
    for rec in samples(version.raw):
        out = bytearray()
        encoder(rec, out)
        assert bytes(out) == fastavro_bytes(version.parsed, rec), rec


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_events_encode_like_their_records(cls) -> None:
    codec = AvroCodec(cls)
    for rec in samples(codec.reader.raw):
        event = from_record(cls, rec)
        data = codec.encode(event)
        assert data[10:] == fastavro_bytes(codec.reader.parsed, rec)
        assert codec.decode(data) == event


@pytest.mark.parametrize(
    "change",
    [
        {"event_type": "teleport"},
        {"timestamp": 2**63},
        {"timestamp": 1.5},
        {"user_id": None},
        {"user_id": b"bytes"},
        {"value": "high"},
        {"context": {"k": 1}},
    ],
    ids=["enum", "long-overflow", "float-for-long", "null-for-string", "bytes-for-string", "str-for-double",
         "int-in-string-map"],
)  # fmt: skip
def test_invalid_values_raise(change: dict[str, Any]) -> None:
    base = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "value": None,
            "timestamp": 1, "session_id": None, "request_id": None, "context": {}, "tenant": "t",
            "source": "api"}  # fmt: skip
    with pytest.raises(ValueError, match="does not fit its schema"):
        AvroCodec(Interaction).encode(Interaction(**{**base, **change}))


def test_unsupported_schemas_fall_back_to_fastavro() -> None:
    schema = {"type": "record", "name": "U", "fields": [{"name": "x", "type": ["int", "string"]}]}
    assert compile_encoder(schema) is None


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"{v.fullname.rsplit('.', 1)[1]}.v{v.version}")
def test_generated_decoder_reads_what_fastavro_reads(version) -> None:
    decoder = compile_decoder(_strip_logical(version.raw))
    assert decoder is not None
    for rec in samples(version.raw):
        data = b"\xff" * 3 + fastavro_bytes(version.parsed, rec)
        assert decoder(data, 3) == fastavro.schemaless_reader(io.BytesIO(data[3:]), version.parsed) == rec


def test_block_encoded_arrays_and_maps_are_read() -> None:
    """Other Avro writers may use negative block counts (followed by the block's byte size)."""
    schema = {"type": "record", "name": "B", "fields": [
        {"name": "a", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "string"}}]}  # fmt: skip
    # a: one block of -2 items (size 2 bytes) [1, 2]; m: one block of 1 entry {"k": "v"}
    data = bytes([3, 4, 2, 4, 0]) + bytes([2, 2]) + b"k" + bytes([2]) + b"v" + bytes([0])
    decoder = compile_decoder(schema)
    assert decoder is not None
    assert decoder(data, 0) == {"a": [1, 2], "m": {"k": "v"}}


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_every_truncation_is_a_decode_error(cls) -> None:
    codec = AvroCodec(cls)
    data = codec.encode(from_record(cls, samples(codec.reader.raw)[0]))
    for cut in range(10, len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])


def test_random_bytes_never_escape_as_other_errors() -> None:
    codec = AvroCodec(Interaction)
    prefix = codec.encode(Interaction("e", "u", "i", "view", timestamp=1))[:10]
    rng = random.Random(11)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(0, 60))
        with contextlib.suppress(DecodeError):  # anything else escaping fails the test
            codec.decode(prefix + body)
