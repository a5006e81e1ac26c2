"""Specialised Avro binary encoders, generated once per schema version (the producer hot path).

fastavro's generic ``schemaless_writer`` walks the schema for every message (~10-25 µs for an
Interaction); the producer is then bound by encoding, not by Kafka. :func:`compile_encoder`
turns a record schema into straight-line Python that reads the event's attributes (or a
dict's items) and appends Avro binary to a ``bytearray`` — several times faster, same bytes.

Only what the project's schemas use is generated: primitives, enums, arrays, maps, fixed,
nested records and ``[null, X]`` unions. Anything else makes :func:`compile_encoder` return
None and the codec keeps using fastavro. ``tests/unit/test_avro_encoder.py`` checks the
output is byte-identical to fastavro's for samples that fill every field of every schema.
Invalid values raise (TypeError, ValueError, KeyError, AttributeError, struct.error,
OverflowError); the codec reports them as ValueError.
"""

from __future__ import annotations

import keyword
import struct
from collections.abc import Callable
from typing import Any, cast

Encoder = Callable[[Any, bytearray], None]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_MIN_LONG, _MAX_LONG = -(2**63), 2**63 - 1
_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1


class Unsupported(Exception):
    """The schema uses a construct this generator does not handle (fastavro is used instead)."""


def _write_long(out: bytearray, n: int) -> None:
    if n < _MIN_LONG or n > _MAX_LONG:
        raise OverflowError(f"{n} does not fit an Avro long")
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_int(out: bytearray, n: int) -> None:
    if n < _MIN_INT or n > _MAX_INT:
        raise OverflowError(f"{n} does not fit an Avro int")
    _write_long(out, n)


def _write_bytes(out: bytearray, b: bytes) -> None:
    if not isinstance(b, bytes | bytearray | memoryview):
        raise TypeError(f"bytes expected, got {type(b).__name__}")
    _write_long(out, len(b))
    out += b


def _varint(n: int) -> bytes:
    out = bytearray()
    _write_long(out, n)
    return bytes(out)


class _Generator:
    def __init__(self) -> None:
        self.env: dict[str, Any] = {
            "_long": _write_long,
            "_int": _write_int,
            "_bytes": _write_bytes,
            "_pack_d": struct.Struct("<d").pack,
            "_pack_f": struct.Struct("<f").pack,
            "_isdict": lambda o: isinstance(o, dict),
        }
        self.named: dict[str, Any] = {}
        self.funcs: dict[str, str] = {}  # record full name -> function name
        self.sources: list[str] = []
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any, prefix: str) -> str:
        name = self.fresh(prefix)
        self.env[name] = value
        return name

    # -- schema walking -------------------------------------------------------------------------
    def resolve(self, schema: Any, namespace: str) -> tuple[Any, str]:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            full = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
            found = self.named.get(full) or self.named.get(schema)
            if found is None:
                raise Unsupported(f"unknown named type {schema}")
            return cast(tuple[Any, str], found)
        return schema, namespace

    def register(self, schema: dict[str, Any], namespace: str) -> str:
        ns = schema.get("namespace", namespace)
        name = schema["name"]
        full = name if "." in name else f"{ns}.{name}".lstrip(".")
        self.named[full] = (schema, full.rpartition(".")[0])
        return full

    def record_func(self, schema: dict[str, Any], namespace: str) -> str:
        full = self.register(schema, namespace)
        if full in self.funcs:
            return self.funcs[full]
        fname = self.fresh("_rec_")
        self.funcs[full] = fname
        ns = full.rpartition(".")[0]
        body_attr: list[str] = []
        body_item: list[str] = []
        for f in schema["fields"]:
            n = f["name"]
            attr = f"getattr(obj, {n!r})" if keyword.iskeyword(n) or not n.isidentifier() else f"obj.{n}"
            var = self.fresh("v")
            body_attr.append(f"    {var} = {attr}")
            body_item.append(f"    {var} = obj[{n!r}]")
            code = self.write(f["type"], var, ns, 1)
            body_attr += code
            body_item += code
        lines = [f"def {fname}(obj, out):", "    if _isdict(obj):", f"        return {fname}_d(obj, out)"]
        lines += body_attr or ["    pass"]
        lines += [f"def {fname}_d(obj, out):", *(body_item or ["    pass"])]
        self.sources.append("\n".join(lines))
        return fname

    def write(self, schema: Any, var: str, namespace: str, depth: int) -> list[str]:
        """Lines (indented by ``depth``) appending the encoding of local ``var``."""
        pad = "    " * depth
        schema, namespace = self.resolve(schema, namespace)
        if isinstance(schema, list):
            return self.union(schema, var, namespace, depth)
        t = schema if isinstance(schema, str) else schema["type"]
        if isinstance(t, dict | list):  # {"type": {...}} wrapper
            return self.write(t, var, namespace, depth)
        if t == "null":
            return [f"{pad}if {var} is not None: raise TypeError('null expected')"]
        if t == "boolean":
            return [f"{pad}if {var} is True: out.append(1)",
                    f"{pad}elif {var} is False: out.append(0)",
                    f"{pad}else: raise TypeError('boolean expected')"]  # fmt: skip
        if t == "int":
            return [f"{pad}if type({var}) is not int: raise TypeError('int expected')", f"{pad}_int(out, {var})"]
        if t == "long":
            return [f"{pad}if type({var}) is not int: raise TypeError('long expected')", f"{pad}_long(out, {var})"]
        if t == "float":
            return [f"{pad}out += _pack_f({var})"]
        if t == "double":
            return [f"{pad}out += _pack_d({var})"]
        if t == "string":
            return self.string(var, pad)
        if t == "bytes":
            return [f"{pad}_bytes(out, {var})"]
        if t == "enum":
            self.register(schema, namespace)
            table = self.const({s: _varint(i) for i, s in enumerate(schema["symbols"])}, "_enum")
            return [f"{pad}out += {table}[{var}]"]
        if t == "fixed":
            self.register(schema, namespace)
            size = int(schema["size"])
            return [f"{pad}if len({var}) != {size}: raise ValueError('fixed of size {size} expected')",
                    f"{pad}out += {var}"]  # fmt: skip
        if t in ("record", "error"):
            fname = self.record_func(schema, namespace)
            return [f"{pad}{fname}({var}, out)"]
        if t == "array":
            item = self.fresh("x")
            return [f"{pad}if {var}:", f"{pad}    _long(out, len({var}))", f"{pad}    for {item} in {var}:",
                    *self.write(schema["items"], item, namespace, depth + 2), f"{pad}out.append(0)"]  # fmt: skip
        if t == "map":
            k, x = self.fresh("k"), self.fresh("x")
            return [f"{pad}if {var}:", f"{pad}    _long(out, len({var}))", f"{pad}    for {k}, {x} in {var}.items():",
                    *self.string(k, pad + "        "), *self.write(schema["values"], x, namespace, depth + 2),
                    f"{pad}out.append(0)"]  # fmt: skip
        raise Unsupported(f"type {t!r}")

    def string(self, var: str, pad: str) -> list[str]:
        """Inline string write (no call per field): a one-byte length for short strings."""
        enc, n = self.fresh("s"), self.fresh("n")
        return [f"{pad}{enc} = {var}.encode()", f"{pad}{n} = len({enc})",
                f"{pad}if {n} < 64: out.append({n} << 1)", f"{pad}else: _long(out, {n})",
                f"{pad}out += {enc}"]  # fmt: skip

    def union(self, branches: list[Any], var: str, namespace: str, depth: int) -> list[str]:
        pad = "    " * depth
        if len(branches) == 2 and "null" in branches:
            null_i = branches.index("null")
            other = branches[1 - null_i]
            return [f"{pad}if {var} is None:", f"{pad}    out.append({_varint(null_i)[0]})", f"{pad}else:",
                    f"{pad}    out.append({_varint(1 - null_i)[0]})",
                    *self.write(other, var, namespace, depth + 1)]  # fmt: skip
        raise Unsupported("unions other than [null, X]")


def compile_encoder(schema: dict[str, Any]) -> Encoder | None:
    """An encoder ``fn(record_or_object, out_bytearray)`` for a record schema (logical types
    stripped), or None when the schema uses something not generated here."""
    gen = _Generator()
    try:
        top = gen.record_func(schema, schema.get("namespace", ""))
    except Unsupported:
        return None
    exec("\n\n".join(gen.sources), gen.env)  # noqa: S102 - source generated above from the schema only
    fn: Encoder = gen.env[top]
    return fn


# -- decoding ------------------------------------------------------------------------------------
Decoder = Callable[[bytes, int], dict[str, Any]]


def _read_long(b: bytes, pos: int) -> tuple[int, int]:
    byte = b[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")
    return (n >> 1) ^ -(n & 1), pos


class _DecoderGenerator(_Generator):
    def __init__(self) -> None:
        super().__init__()
        self.env.update({
            "_rlong": _read_long,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_unpack_f": struct.Struct("<f").unpack_from,
        })  # fmt: skip

    def record_func(self, schema: dict[str, Any], namespace: str) -> str:
        full = self.register(schema, namespace)
        if full in self.funcs:
            return self.funcs[full]
        fname = self.fresh("_drec_")
        self.funcs[full] = fname
        ns = full.rpartition(".")[0]
        body: list[str] = []
        names: list[tuple[str, str]] = []
        for f in schema["fields"]:
            var = self.fresh("v")
            body += self.read(f["type"], var, ns, 1)
            names.append((f["name"], var))
        ret = ", ".join(f"{n!r}: {v}" for n, v in names)
        self.sources.append("\n".join([f"def {fname}(b, pos, blen):", *body, f"    return {{{ret}}}, pos"]))
        return fname

    def length(self, var: str, pad: str) -> list[str]:
        """Read a non-negative length into ``var`` (one-byte fast path)."""
        return [f"{pad}{var} = b[pos]",
                f"{pad}if {var} < 0x80 and not {var} & 1: {var} >>= 1; pos += 1",
                f"{pad}else: {var}, pos = _rlong(b, pos)"]  # fmt: skip

    def read(self, schema: Any, var: str, namespace: str, depth: int) -> list[str]:
        """Lines (indented by ``depth``) reading one value into local ``var``, advancing ``pos``."""
        pad = "    " * depth
        schema, namespace = self.resolve(schema, namespace)
        if isinstance(schema, list):
            if len(schema) == 2 and "null" in schema:
                null_i = schema.index("null")
                idx = self.fresh("u")
                # Branch index 0 / 1 is the single zig-zag byte 0 / 2: compare the raw byte.
                return [f"{pad}{idx} = b[pos]", f"{pad}pos += 1", f"{pad}if {idx} == {2 * null_i}: {var} = None",
                        f"{pad}elif {idx} == {2 * (1 - null_i)}:",
                        *self.read(schema[1 - null_i], var, namespace, depth + 1),
                        f"{pad}else: raise ValueError('bad union index')"]  # fmt: skip
            raise Unsupported("unions other than [null, X]")
        t = schema if isinstance(schema, str) else schema["type"]
        if isinstance(t, dict | list):
            return self.read(t, var, namespace, depth)
        if t == "null":
            return [f"{pad}{var} = None"]
        if t == "boolean":
            return [f"{pad}{var} = b[pos] == 1", f"{pad}pos += 1"]
        if t in ("int", "long"):
            return [f"{pad}{var}, pos = _rlong(b, pos)"]
        if t == "float":
            return [f"{pad}{var} = _unpack_f(b, pos)[0]", f"{pad}pos += 4"]
        if t == "double":
            return [f"{pad}{var} = _unpack_d(b, pos)[0]", f"{pad}pos += 8"]
        if t in ("string", "bytes"):
            n = self.fresh("n")
            conv = ".decode()" if t == "string" else ""
            return [*self.length(n, pad),
                    f"{pad}if {n} < 0 or pos + {n} > blen: raise EOFError('truncated')",
                    f"{pad}{var} = b[pos:pos + {n}]{conv}", f"{pad}pos += {n}"]  # fmt: skip
        if t == "enum":
            self.register(schema, namespace)
            syms = self.const(tuple(schema["symbols"]), "_syms")
            i = self.fresh("e")
            return [*self.length(i, pad), f"{pad}if {i} < 0: raise ValueError('bad enum index')",
                    f"{pad}{var} = {syms}[{i}]"]  # fmt: skip
        if t == "fixed":
            self.register(schema, namespace)
            size = int(schema["size"])
            return [f"{pad}if pos + {size} > blen: raise EOFError('truncated')",
                    f"{pad}{var} = b[pos:pos + {size}]", f"{pad}pos += {size}"]  # fmt: skip
        if t in ("record", "error"):
            fname = self.record_func(schema, namespace)
            return [f"{pad}{var}, pos = {fname}(b, pos, blen)"]
        if t in ("array", "map"):
            cnt, item, key = self.fresh("c"), self.fresh("x"), self.fresh("k")
            is_map = t == "map"
            inner = self.read(schema["values" if is_map else "items"], item, namespace, depth + 2)
            if is_map:
                inner = self.read("string", key, namespace, depth + 2) + inner + [f"{pad}        {var}[{key}] = {item}"]
            else:
                inner = inner + [f"{pad}        {var}.append({item})"]
            return [f"{pad}{var} = {{}}" if is_map else f"{pad}{var} = []", f"{pad}while True:",
                    f"{pad}    {cnt}, pos = _rlong(b, pos)", f"{pad}    if {cnt} == 0: break",
                    f"{pad}    if {cnt} < 0: {cnt} = -{cnt}; _, pos = _rlong(b, pos)",
                    f"{pad}    if {cnt} > blen: raise ValueError('block count larger than the message')",
                    f"{pad}    for _ in range({cnt}):", *inner]  # fmt: skip
        raise Unsupported(f"type {t!r}")


def compile_decoder(schema: dict[str, Any]) -> Decoder | None:
    """A decoder ``fn(data, offset) -> record dict`` for data written with exactly this schema
    (logical types stripped), or None when the schema uses something not generated here.
    Truncated or corrupt input raises (IndexError, EOFError, ValueError, struct.error, ...)."""
    gen = _DecoderGenerator()
    try:
        top = gen.record_func(schema, schema.get("namespace", ""))
    except Unsupported:
        return None
    exec("\n\n".join(gen.sources), gen.env)  # noqa: S102 - source generated above from the schema only
    fn = gen.env[top]

    def decode(data: bytes, offset: int) -> dict[str, Any]:
        rec, _ = fn(data, offset, len(data))
        return rec  # type: ignore[no-any-return]

    return decode
