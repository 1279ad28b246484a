"""Protobuf wire-format scan of an ONNX file that leaves weight bytes on disk.

``onnx.load`` copies every weight into Python memory (and a save copies it again), which
is what makes a plain load+save peak near 3x the file size.  Instead we walk the
ModelProto's wire format, copy every field except the ``raw_data`` payloads of tensors,
and replace each payload by an external-data reference to *its byte range in the input
file* (location = :data:`EMBEDDED_LOCATION`).  The result is a small, valid ModelProto
(the "skeleton") that the rest of the pipeline analyses; weights are read one at a time
with ``os.pread`` and rewritten in place in a copy of the file (see ``writer.py``).
"""

from __future__ import annotations

import os

from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto

__all__ = ["EMBEDDED_LOCATION", "FileWindow", "WireError", "strip_raw_data"]

#: Location string that marks a skeleton tensor whose bytes are in the model file itself.
EMBEDDED_LOCATION = "\x00sparsify-embedded"

_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _FUNCTION = range(6)


def _number(message, field: str) -> int:
    """A field's number, from onnx's own protobuf descriptors (never a bare integer here)."""
    return message.DESCRIPTOR.fields_by_name[field].number


# Length-delimited fields that hold a message we descend into (field number -> kind).
_CHILDREN = {
    _MODEL: {_number(ModelProto, "graph"): _GRAPH, _number(ModelProto, "functions"): _FUNCTION},
    _GRAPH: {_number(GraphProto, "node"): _NODE, _number(GraphProto, "initializer"): _TENSOR},
    _FUNCTION: {_number(FunctionProto, "node"): _NODE},
    _NODE: {_number(NodeProto, "attribute"): _ATTR},
    _ATTR: {_number(AttributeProto, "t"): _TENSOR, _number(AttributeProto, "g"): _GRAPH,
            _number(AttributeProto, "tensors"): _TENSOR, _number(AttributeProto, "graphs"): _GRAPH},
    _TENSOR: {},
}
_RAW_DATA = _number(TensorProto, "raw_data")
_EXTERNAL_DATA = _number(TensorProto, "external_data")
_DATA_LOCATION = _number(TensorProto, "data_location")
_ENTRY_KEY, _ENTRY_VALUE = _number(StringStringEntryProto, "key"), _number(StringStringEntryProto, "value")
# A file may not name the marker: its tensor would be read from (and patched into) the
# model file's own bytes.  Any occurrence in an external_data entry is refused.
_SENTINEL = EMBEDDED_LOCATION.encode()
_MAX_DEPTH = 64  # nested subgraphs deeper than this are hostile, not models


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


class FileWindow:
    """Byte access to a file through a small sliding ``pread`` window.

    The scan moves forward and jumps over weight payloads, so it reads only the bytes
    around message headers.  (An mmap would do too on paper, but kernels with large
    page-cache folios map megabytes per fault: ~0.3x the model's size of RSS.)
    """

    _SIZE = 1 << 18

    def __init__(self, fd: int, size: int):
        self._fd, self._size = fd, size
        self._lo = self._hi = 0
        self._data = b""

    def __len__(self) -> int:
        return self._size

    def _load(self, pos: int) -> None:
        data = os.pread(self._fd, self._SIZE, pos)
        if not data:
            raise WireError("unexpected end of file")
        self._lo, self._hi, self._data = pos, pos + len(data), data

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop = key.start, key.stop
            if not (self._lo <= start and stop <= self._hi):
                if stop - start > self._SIZE:
                    data = os.pread(self._fd, stop - start, start)
                    if len(data) != stop - start:
                        raise WireError("unexpected end of file")
                    return data
                self._load(start)
            return self._data[start - self._lo : stop - self._lo]
        if not self._lo <= key < self._hi:
            self._load(key)
        return self._data[key - self._lo]


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _encode_varint(field << 3 | wire)


def _entry(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    body = _tag(_ENTRY_KEY, 2) + _encode_varint(len(k)) + k + _tag(_ENTRY_VALUE, 2) + _encode_varint(len(v)) + v
    return _tag(_EXTERNAL_DATA, 2) + _encode_varint(len(body)) + body


def _embedded_reference(offset: int, length: int) -> bytes:
    # data_location = EXTERNAL, then location/offset/length entries.
    return (
        _tag(_DATA_LOCATION, 0) + _encode_varint(TensorProto.EXTERNAL)
        + _entry("location", EMBEDDED_LOCATION)
        + _entry("offset", str(offset))
        + _entry("length", str(length))
    )


def _skip_scalar(buf, pos: int, end: int, wire: int) -> int:
    """The position after a varint (0), fixed64 (1) or fixed32 (5) field's value."""
    if wire == 0:
        return _varint(buf, pos, end)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    raise WireError(f"unsupported wire type {wire}")


def _fields(buf, start: int, end: int):
    """(field start, tag end, field number, payload start or None, field end) per field."""
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(buf, pos, end)
        tag_end = pos
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0")
        payload = None
        if wire != 2:
            pos = _skip_scalar(buf, pos, end, wire)
        else:
            length, payload = _varint(buf, pos, end)
            pos = payload + length
            if pos > end:
                raise WireError("length-delimited field runs past the end of its message")
        if pos > end:
            raise WireError("field runs past the end of its message")
        yield field_start, tag_end, field, payload, pos


def _strip(buf, start: int, end: int, kind: int, depth: int) -> bytes:
    if depth > _MAX_DEPTH:
        raise WireError(f"messages nested deeper than {_MAX_DEPTH} levels")
    out = bytearray()
    children = _CHILDREN[kind]
    raw_span: tuple[int, int] | None = None
    external = False
    for field_start, tag_end, field, payload, pos in _fields(buf, start, end):
        child = children.get(field) if payload is not None else None
        if child is not None and payload is not None:
            body = _strip(buf, payload, pos, child, depth + 1)
            out += buf[field_start:tag_end]
            out += _encode_varint(len(body)) + body
            continue
        if kind == _TENSOR and payload is not None and field == _RAW_DATA:
            raw_span = (payload, pos - payload)
            continue
        if kind == _TENSOR and payload is not None and field == _EXTERNAL_DATA:
            external = True
            if _SENTINEL in bytes(buf[payload:pos]):
                raise WireError("a tensor's external data names a location reserved for sparsify's own use")
        out += buf[field_start:pos]
    if raw_span is not None:
        if external:
            raise WireError("a tensor holds both raw_data and external_data")
        out += _embedded_reference(*raw_span)
    return bytes(out)


def strip_raw_data(buf) -> bytes:
    """Serialized ModelProto ``buf`` with every tensor's raw_data replaced by a reference.

    ``buf``: bytes, a memoryview or a :class:`FileWindow`.  Offsets in the references are
    absolute positions in ``buf``.
    """
    return _strip(buf, 0, len(buf), _MODEL, 0)
