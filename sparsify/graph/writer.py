"""Write the pruned model: copy, patch weight bytes in place, rename atomically.

Pruning never changes a tensor's byte length, so the output is a copy of the input whose
weight payloads are overwritten with ``os.pwrite``: every opset import, metadata field and
unknown field survives byte for byte, and memory stays at one weight at a time.

- Embedded model: copy the file (kernel-side ``copyfile``), patch payloads.
- External data: the output gets its own data file ``<output name>.data``; every external
  tensor is copied into it (``copy_file_range``) and pruned ones patched; the small
  ``.onnx`` is re-serialized with the new locations.
- A pruned tensor stored in typed fields (``float_data``...) cannot be patched in place:
  the model is re-serialized from the skeleton (the row notes say its data became raw_data).

Everything is written to temporary files beside the output and renamed at the end; any
error (or SIGINT/SIGTERM) removes them, so no partial output ever appears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from sparsify.errors import OutputError
from sparsify.graph.model_io import LoadedModel, iter_tensors

__all__ = ["ModelWriter", "check_output_path", "data_file_for"]

logger = logging.getLogger(__name__)

_ALIGN_LARGE, _LARGE = 65536, 1 << 20  # page-aligned big tensors let ONNX Runtime mmap them


def data_file_for(output: Path) -> Path:
    return output.with_name(output.name + ".data")


def check_output_path(model: LoadedModel, output: Path) -> None:
    """Refuse outputs that would overwrite the input or cannot be written (exit 2)."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{output}: output folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{output}: {parent} is not a folder")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder")
    protected = {model.path.resolve(), *model.external_files}
    candidates = [output, data_file_for(output)] if model.uses_external_data else [output]
    for path in candidates:
        if path.resolve() in protected or (path.exists() and any(
            p.exists() and os.path.samefile(path, p) for p in protected
        )):
            raise OutputError(f"{path}: refusing to overwrite the input model or its data")


class ModelWriter:
    """Context manager: ``replace()`` pruned tensors, then ``commit()``; errors roll back."""

    def __init__(self, model: LoadedModel, output: Path):
        self.model = model
        self.output = output
        self._temps: list[str] = []
        self._inline: dict[int, bytes] = {}
        self._new_external: dict[int, tuple[int, int]] = {}
        self._rebuild = False
        self._fd: int | None = None  # the file whose payloads we patch

    def __enter__(self) -> ModelWriter:
        with self._rollback_on_error():
            if self.model.uses_external_data:
                self._data_tmp = self._temp(data_file_for(self.output))
                self._fd = os.open(self._data_tmp, os.O_RDWR)
                self._copy_external_tensors()
            else:
                self._model_tmp = self._temp(self.output)
                shutil.copyfile(self.model.path, self._model_tmp)
                self._fd = os.open(self._model_tmp, os.O_RDWR)
        return self

    @contextlib.contextmanager
    def _rollback_on_error(self):
        """Any failure removes every temporary file; OS errors become one-line OutputErrors."""
        try:
            yield
        except OSError as exc:
            self.abort()
            raise OutputError(f"{self.output}: cannot write: {exc.strerror or exc}") from None
        except BaseException:
            self.abort()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _temp(self, final: Path) -> str:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent or ".")
        self._temps.append(name)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.close(fd)
        return name

    def _copy_external_tensors(self) -> None:
        position = 0
        sources: dict[Path, int] = {}
        try:
            for tensor in self.model.tensors:
                loc = self.model.location(tensor)
                if loc.kind != "external":
                    continue
                if loc.length >= _LARGE:
                    position = -(-position // _ALIGN_LARGE) * _ALIGN_LARGE
                if loc.path not in sources:
                    sources[loc.path] = os.open(loc.path, os.O_RDONLY)
                _copy_range(sources[loc.path], self._fd, loc.offset, position, loc.length)
                self._new_external[id(tensor)] = (position, loc.length)
                position += loc.length
        finally:
            for fd in sources.values():
                os.close(fd)

    def replace(self, tensor: TensorProto, bits: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(bits)).cast("B")  # no copy for the pwrite paths
        loc = self.model.location(tensor)
        if loc.kind == "embedded" and not self.model.uses_external_data:
            self._pwrite(data, loc.offset, loc.length)
        elif loc.kind == "external":
            offset, length = self._new_external[id(tensor)]
            self._pwrite(data, offset, length)
        else:
            self._inline[id(tensor)] = bytes(data)
            if loc.kind == "inline" and not tensor.HasField("raw_data"):
                self._rebuild = True

    def _pwrite(self, data: bytes, offset: int, length: int) -> None:
        if len(data) != length:
            raise AssertionError("internal error: pruned tensor changed its byte length")
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise OutputError(f"{self.output}: cannot write: {exc.strerror or exc}") from None

    def finish(self) -> Path:
        """Write everything to temporary files; return the one to verify.  Nothing the user
        had is touched until :meth:`publish`."""
        with self._rollback_on_error():
            os.close(self._fd)
            self._fd = None
            if self.model.uses_external_data:
                self._candidate = self._temp(self.output)
                self._write_proto(self._candidate, data_name=os.path.basename(self._data_tmp))
            elif self._rebuild or self._inline:
                self._candidate = self._temp(self.output)
                self._write_proto(self._candidate, data_name=None)
            else:
                self._candidate = self._model_tmp
        return Path(self._candidate)

    def publish(self) -> None:
        """Rename the finished files into place (the model last)."""
        with self._rollback_on_error():
            if self.model.uses_external_data:
                final_proto = self._temp(self.output)
                self._write_proto(final_proto, data_name=data_file_for(self.output).name)
                os.replace(self._data_tmp, data_file_for(self.output))
                os.replace(final_proto, self.output)
            else:
                os.replace(self._candidate, self.output)
        self._temps = [t for t in self._temps if os.path.exists(t)]
        self.abort()

    def _write_proto(self, path: str, data_name: str | None) -> None:
        """Re-serialize the skeleton with every embedded payload restored."""
        final = onnx.ModelProto()
        final.CopyFrom(self.model.skeleton)
        patched = None if self.model.uses_external_data else self._model_tmp
        with open(patched or self.model.path, "rb") as source:  # embedded payloads: one open file
            for original, tensor in zip(self.model.tensors, iter_tensors(final), strict=True):
                loc = self.model.location(original)
                new = self._inline.get(id(original))
                if loc.kind == "external":
                    offset, length = self._new_external[id(original)]
                    _set_external(tensor, data_name, offset, length)
                elif loc.kind == "embedded":
                    _set_raw(tensor, new if new is not None else os.pread(source.fileno(), loc.length, loc.offset))
                elif new is not None:
                    _set_raw(tensor, new)
        with open(path, "wb") as handle:
            handle.write(final.SerializeToString())

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for name in self._temps:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        self._temps = []


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_raw(tensor: TensorProto, data: bytes) -> None:
    for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "external_data"):
        tensor.ClearField(name)
    tensor.ClearField("data_location")
    tensor.raw_data = data


def _set_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("external_data")
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL


def _copy_range(src_fd: int, dst_fd: int, src_offset: int, dst_offset: int, length: int) -> None:
    while length > 0:
        try:
            copied = os.copy_file_range(src_fd, dst_fd, length, src_offset, dst_offset)
        except OSError:
            copied = 0
        if copied <= 0:  # not supported across these filesystems: plain reads and writes
            chunk = os.pread(src_fd, min(length, 1 << 24), src_offset)
            if not chunk:
                raise OSError("unexpected end of external data file")
            copied = os.pwrite(dst_fd, chunk, dst_offset)
        src_offset, dst_offset, length = src_offset + copied, dst_offset + copied, length - copied
