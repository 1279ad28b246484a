"""Open an ONNX model without loading its weights, and read one weight at a time.

The model is parsed into a *skeleton* (see ``protowire``): every tensor whose bytes live
in the model file or in an external-data file is a reference, read on demand with
``os.pread``.  External-data locations are validated here so that a hostile model can
never make us read outside its own folder.
"""

from __future__ import annotations

import math
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from sparsify.errors import InputError
from sparsify.io.dtypes import STORAGE, dtype_name
from sparsify.io.paths import check_name_lengths
from sparsify.io.protowire import EMBEDDED_LOCATION, FileWindow, WireError, strip_raw_data

__all__ = ["LoadedModel", "TensorLocation", "iter_tensors", "open_model", "tensor_nbytes"]


@dataclass(frozen=True)
class TensorLocation:
    kind: str  # "embedded" (model file), "external" (data file) or "inline" (in the skeleton)
    path: Path = Path()  # the file holding the bytes (unused for "inline")
    offset: int = 0
    length: int = 0


def iter_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model, in a stable order (subgraphs and functions too)."""

    def from_graph(graph: onnx.GraphProto) -> Iterator[TensorProto]:
        yield from graph.initializer
        yield from from_nodes(graph.node)

    def from_nodes(nodes) -> Iterator[TensorProto]:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from from_graph(attr.g)
                for sub in attr.graphs:
                    yield from from_graph(sub)

    yield from from_graph(model.graph)
    for function in model.functions:
        yield from from_nodes(function.node)


def _external_info(tensor: TensorProto) -> dict[str, str]:
    info = {entry.key: entry.value for entry in tensor.external_data}
    if any(isinstance(v, bytes) for item in info.items() for v in item) or isinstance(tensor.name, bytes):
        raise InputError(f"tensor {tensor.name!r}: external data entries are not valid UTF-8 text (corrupt model?)")
    return info


class LoadedModel:
    """A model's skeleton plus the means to read any of its tensors' bytes."""

    def __init__(self, path: Path, skeleton: onnx.ModelProto):
        self.path = path
        self.skeleton = skeleton
        self.external_files: set[Path] = set()
        # A tensor is known by its ordinal (its position in iter_tensors' order, which is also
        # the order the writer walks).  Holding every wrapper keeps each one's id() its own, so
        # the one identity lookup (``ordinal``) is sound: protobuf (upb) hands out the same
        # wrapper while one is alive, and ids of freed wrappers get reused.
        self.tensors: list[TensorProto] = list(iter_tensors(skeleton))
        self._ordinals = {id(t): i for i, t in enumerate(self.tensors)}
        self._locations: dict[int, TensorLocation] = {}  # tensor ordinal -> where its bytes are
        self._index_locations()

    @property
    def uses_external_data(self) -> bool:
        return bool(self.external_files)

    def _index_locations(self) -> None:
        model_dir = self.path.resolve().parent
        sizes: dict[Path, int] = {}
        for ordinal, tensor in enumerate(self.tensors):
            if tensor.data_location != TensorProto.EXTERNAL:
                continue
            info = _external_info(tensor)
            offset, length = _int_field(tensor, info, "offset"), _int_field(tensor, info, "length", None)
            location = info.get("location", "")
            if location == EMBEDDED_LOCATION:
                self._locations[ordinal] = TensorLocation("embedded", self.path, offset, length)
                continue
            data_path = _safe_data_path(tensor.name, location, model_dir)
            if data_path not in sizes:
                sizes[data_path] = data_path.stat().st_size
            size = sizes[data_path]
            # ONNX Runtime's rule: the byte size follows from shape and dtype; a missing
            # length means exactly that many bytes (anything after them is ignored), and a
            # declared length that differs is refused.
            expected = tensor_nbytes(tensor)
            if length is None:
                if expected is None:
                    raise InputError(f"tensor {tensor.name!r}: external data without a length, and its size cannot "
                                     f"be derived from dtype {dtype_name(tensor.data_type)}")
                length = expected
            elif expected is not None and length != expected:
                raise InputError(f"tensor {tensor.name!r}: shape {[int(d) for d in tensor.dims]} needs {expected} "
                                 f"bytes but its external data length is {length}")
            if offset + length > size:
                raise InputError(
                    f"tensor {tensor.name!r}: external data {location!r} holds {size} bytes, "
                    f"the model asks for {length} bytes at offset {offset}"
                )
            self.external_files.add(data_path)
            self._locations[ordinal] = TensorLocation("external", data_path, offset, length)

    def ordinal(self, tensor: TensorProto) -> int:
        """The tensor's position among ``self.tensors`` (it must be one of them)."""
        found = self._ordinals.get(id(tensor))
        if found is None or self.tensors[found] is not tensor:
            raise AssertionError(f"internal error: tensor {tensor.name!r} is not one of this model's tensors")
        return found

    def location(self, tensor: TensorProto) -> TensorLocation:
        return self._locations.get(self.ordinal(tensor), TensorLocation("inline"))

    def read_bytes(self, tensor: TensorProto) -> bytes:
        loc = self.location(tensor)
        if loc.kind == "inline":
            return tensor.raw_data
        with open(loc.path, "rb") as handle:
            data = os.pread(handle.fileno(), loc.length, loc.offset)
        if len(data) != loc.length:
            raise InputError(f"tensor {tensor.name!r}: data file ended early (truncated model?)")
        return data

    def check_length(self, tensor: TensorProto, storage: np.dtype, length: int) -> None:
        shape = [int(d) for d in tensor.dims]
        if any(d < 0 for d in shape):
            raise InputError(f"tensor {tensor.name!r}: negative dimension in {shape}")
        expected = math.prod(shape) * storage.itemsize
        if length != expected:
            raise InputError(f"tensor {tensor.name!r}: shape {shape} needs {expected} bytes but {length} are stored")

    def read_bits(self, tensor: TensorProto) -> np.ndarray:
        """The tensor's stored values as their storage dtype (see ``dtypes.STORAGE``)."""
        storage = STORAGE.get(tensor.data_type)
        if storage is None:
            raise InputError(f"tensor {tensor.name!r}: cannot read {dtype_name(tensor.data_type)}")
        shape = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in shape):
            raise InputError(f"tensor {tensor.name!r}: negative dimension in {list(shape)}")
        count = math.prod(shape)
        loc = self.location(tensor)
        if loc.kind == "inline" and not tensor.HasField("raw_data"):
            values = _typed_values(tensor, storage)
        else:
            self.check_length(tensor, storage, loc.length if loc.kind != "inline" else len(tensor.raw_data))
            values = np.frombuffer(self.read_bytes(tensor), dtype=storage)
        if values.size != count:
            raise InputError(
                f"tensor {tensor.name!r}: shape {list(shape)} needs {count} values, "
                f"{values.size} are stored"
            )
        return values.reshape(shape)


_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}


def tensor_nbytes(tensor: TensorProto) -> int | None:
    """Bytes a tensor's values take when stored raw, or None when the dtype has no fixed size."""
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise InputError(f"tensor {tensor.name!r}: negative dimension in {dims}")
    count = math.prod(dims)
    if tensor.data_type in _FOUR_BIT:
        return (count + 1) // 2
    storage = STORAGE.get(tensor.data_type)
    if storage is not None:
        return count * storage.itemsize
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if tensor.data_type == TensorProto.STRING or itemsize == 0:
        return None
    return count * itemsize


def _typed_values(tensor: TensorProto, storage: np.dtype) -> np.ndarray:
    if tensor.data_type == TensorProto.FLOAT:
        return np.asarray(tensor.float_data, dtype=np.float32).view(storage)
    if tensor.data_type == TensorProto.DOUBLE:
        return np.asarray(tensor.double_data, dtype=np.float64)
    if tensor.data_type == TensorProto.INT64:
        return np.asarray(tensor.int64_data, dtype=np.int64)
    # fp16/bf16 bit patterns and 8-bit ints are stored one per int32_data entry.
    return np.asarray(tensor.int32_data, dtype=np.int64).astype(storage)


def _int_field(tensor: TensorProto, info: dict[str, str], key: str, default: int | None = 0):
    if key not in info:
        return default
    try:
        value = int(info[key])
    except ValueError:
        raise InputError(f"tensor {tensor.name!r}: external data {key} {info[key]!r} is not an integer") from None
    if value < 0:
        raise InputError(f"tensor {tensor.name!r}: negative external data {key}")
    return value


def _safe_data_path(name: str, location: str, model_dir: Path) -> Path:
    """Resolve an external-data location, refusing anything outside the model's folder."""
    if not location:
        raise InputError(f"tensor {name!r}: external data without a location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or "\x00" in location:
        raise InputError(f"tensor {name!r}: external data location {location!r} is absolute (refused)")
    try:
        resolved = (model_dir / location).resolve()
        if resolved != model_dir and model_dir not in resolved.parents:
            raise InputError(f"tensor {name!r}: external data location {location!r} escapes the model's folder (refused)")
        info = os.stat(resolved)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"tensor {name!r}: external data file {location!r} is missing") from None
    except (OSError, RuntimeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"tensor {name!r}: external data file {location[:100]!r}: {detail}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"tensor {name!r}: external data {location!r} is not a regular file")
    return resolved


def _check_text(path: Path, model: onnx.ModelProto) -> None:
    """Names the pass reads must be text: protobuf hands back ``bytes`` for a string field
    that is not valid UTF-8, which would break name lookups and the JSON report."""
    graph = model.graph

    def bad(values, what: str) -> None:
        if any(isinstance(v, bytes) for v in values):
            raise InputError(f"{path}: {what} is not valid UTF-8 text (corrupt model?)")

    for index, node in enumerate(graph.node):
        bad((node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in node.attribute)),
            f"a name in node #{index}")
    for tensor in graph.initializer:
        bad((tensor.name, *(v for e in tensor.external_data for v in (e.key, e.value))), "an initializer name or external-data entry")
    for value in (*graph.input, *graph.output, *graph.value_info):
        bad((value.name,), "a graph input/output name")
    bad((o.domain for o in model.opset_import), "an opset domain")


def open_model(path: str | os.PathLike) -> LoadedModel:
    """Parse ``path`` into a skeleton; raise InputError with one clear line if it is not ONNX."""
    path = Path(path)
    check_name_lengths(path, "input", InputError)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not an ONNX file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a device, FIFO or socket)")
    try:
        size = info.st_size
        if size == 0:
            raise InputError(f"{path}: empty file, not an ONNX model")
        with open(path, "rb") as handle:
            stripped = strip_raw_data(FileWindow(handle.fileno(), size))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except WireError as exc:
        raise InputError(f"{path}: not an ONNX model (corrupt or truncated: {exc})") from None
    except RecursionError:
        raise InputError(f"{path}: not an ONNX model (nested too deeply)") from None
    skeleton = onnx.ModelProto()
    try:
        skeleton.ParseFromString(stripped)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InputError(f"{path}: not an ONNX model (corrupt or truncated: {exc})") from None
    if skeleton.ir_version < 1 or not skeleton.HasField("graph"):
        raise InputError(f"{path}: not an ONNX model (no ir_version or graph)")
    _check_text(path, skeleton)
    duplicates = [n for n, c in Counter(t.name for t in skeleton.graph.initializer).items() if c > 1]
    if duplicates:
        raise InputError(f"{path}: duplicate initializer name {duplicates[0]!r}")
    return LoadedModel(path, skeleton)
