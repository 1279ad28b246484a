"""Write the pruned model: copy, patch weight bytes in place, stage, publish all at once.

Pruning never changes a tensor's byte length, so the output is a copy of the input whose
weight payloads are replaced: every opset import, metadata field and unknown field survives
byte for byte, and memory stays at one weight at a time.

- Embedded model: copy the file (kernel-side ``copyfile``), patch payloads.
- External data: the output gets its own data file, and each of its bytes is written once:
  a pruned tensor with ``os.pwrite`` at its new position when it is replaced, every other
  external tensor copied kernel-side (``copy_file_range``) when the writer finishes.  (Copying
  everything first and overwriting the pruned tensors wrote a fully pruned model twice: on a
  model larger than the page cache, twice to disk.)  The small ``.onnx`` is re-serialized with
  the new locations.  The data file's name carries a fingerprint of its content
  (``<output name>.<16 hex>.data``), so a graph can only ever be paired with the data it was
  written with, even when two runs publish to the same ``-o`` at once.
- A pruned tensor stored in typed fields (``float_data``...) cannot be patched in place:
  the model is re-serialized from the skeleton (the row notes say its data became raw_data).

The write and the fingerprint's hash of a replaced tensor run on background threads while the
caller prunes the next one (both release the GIL): ``replace()`` returns once the previous
replacement is done, so a caller may reuse a buffer two replacements later.

Everything is written to staging files of a :class:`~sparsify.io.publish.Publication`; the
caller publishes them (with the report) only after verification.  Any error (or
SIGINT/SIGTERM) removes them, so no partial output ever appears.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from sparsify.errors import OutputError
from sparsify.io.model import LoadedModel, iter_tensors
from sparsify.io.publish import Publication

__all__ = ["ModelWriter", "data_file_for", "superseded_data_files"]

_ALIGN_LARGE, _LARGE = 65536, 1 << 20  # page-aligned big tensors let ONNX Runtime mmap them


def data_file_for(output: Path, fingerprint: str) -> Path:
    """The external-data file of ``output`` whose content has this fingerprint."""
    return output.with_name(f"{output.name}.{fingerprint}.data")


def superseded_data_files(output: Path, keep: Path | None, protected: set[Path]) -> list[Path]:
    """Data files an earlier run published for ``output`` (other fingerprints; all of them when
    the new output is embedded), never one this run reads."""
    pattern = re.compile(re.escape(output.name) + r"\.[0-9a-f]{16}\.data$")
    folder = output.parent if str(output.parent) else Path(".")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        path = folder / name
        if pattern.match(name) and (keep is None or name != keep.name) and path.resolve() not in protected:
            found.append(path)
    return found


class ModelWriter:
    """Context manager: ``replace()`` pruned tensors, ``finish()`` (the file to verify), then
    ``stage_final()`` adds the model (and its data) to the publication; errors roll back."""

    def __init__(self, model: LoadedModel, output: Path, publication: Publication):
        self.model = model
        self.output = output
        self.publication = publication
        self._inline: dict[int, bytes] = {}  # tensor ordinal -> new bytes kept in the model file
        self._new_external: dict[int, tuple[int, int]] = {}  # tensor ordinal -> (offset, length) in the new data
        self._rebuild = False
        self._fd: int | None = None  # the file whose payloads we patch
        self._fingerprint = hashlib.sha256()
        self._pruned: dict[int, str] = {}  # tensor ordinal -> digest of its new bytes
        # External tensors nobody replaced are copied by finish(): ordinal -> (source, offset).
        self._to_copy: dict[int, tuple[Path, int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []  # the last replacement's write (and hash)
        self.data_file: Path | None = None  # final external-data path, known after finish()

    def __enter__(self) -> ModelWriter:
        with self._rollback_on_error():
            if self.model.uses_external_data:
                self._data_tmp = self.publication.stage(self.output.with_name(self.output.name + ".data"))
                self._fd = os.open(self._data_tmp, os.O_RDWR)
                self._lay_out_external_tensors()
            else:
                self._model_tmp = self.publication.stage(self.output)
                shutil.copyfile(self.model.path, self._model_tmp)
                self._fd = os.open(self._model_tmp, os.O_RDWR)
        return self

    @contextlib.contextmanager
    def _rollback_on_error(self):
        """Any failure removes every staging file; OS errors become one-line OutputErrors."""
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

    def _lay_out_external_tensors(self) -> None:
        """Positions of every external tensor in the new data file (nothing written yet)."""
        position = 0
        seen: set[Path] = set()
        for ordinal, tensor in enumerate(self.model.tensors):
            loc = self.model.location(tensor)
            if loc.kind != "external":
                continue
            if loc.length >= _LARGE:
                position = -(-position // _ALIGN_LARGE) * _ALIGN_LARGE
            if loc.path not in seen:
                seen.add(loc.path)
                info = os.stat(loc.path)
                # The copied bytes are identified by their source file's identity and range.
                self._fingerprint.update(f"{loc.path}|{info.st_dev}|{info.st_ino}|{info.st_size}|"
                                         f"{info.st_mtime_ns}".encode())
            self._new_external[ordinal] = (position, loc.length)
            self._to_copy[ordinal] = (loc.path, loc.offset)
            self._fingerprint.update(f"|{ordinal}:{loc.offset}+{loc.length}@{position}".encode())
            position += loc.length
        self._data_size = position

    def _copy_the_rest(self) -> None:
        """Copy every external tensor nobody replaced, in file order, kernel-side where possible."""
        fd = self._open_fd()
        sources: dict[Path, int] = {}
        try:
            for ordinal in sorted(self._to_copy, key=lambda o: self._new_external[o][0]):
                path, offset = self._to_copy[ordinal]
                position, length = self._new_external[ordinal]
                if path not in sources:
                    sources[path] = os.open(path, os.O_RDONLY)
                _copy_range(sources[path], fd, offset, position, length)
        finally:
            for source in sources.values():
                os.close(source)
        if os.fstat(fd).st_size != self._data_size:
            os.ftruncate(fd, self._data_size)

    def _settle(self) -> None:
        """Wait for the last replacement's write and hash; their errors surface here."""
        pending, self._pending = self._pending, []
        for job in pending:
            job.result()

    def _submit(self, *jobs) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sparsify-write")
        self._pending = [self._pool.submit(job) for job in jobs]

    def replace(self, tensor: TensorProto, bits: np.ndarray) -> None:
        """Write ``bits`` as ``tensor``'s new payload.  The write happens in the background:
        ``bits`` must stay unchanged until the next ``replace()``, ``finish()`` or ``abort()``."""
        with self._rollback_on_error():
            self._settle()
        data = np.ascontiguousarray(bits).reshape(-1).view(np.uint8).data  # no copy for the pwrite paths
        ordinal = self.model.ordinal(tensor)
        loc = self.model.location(tensor)
        if loc.kind != "inline" and len(data) != loc.length:  # checked here, not on the writing thread
            raise AssertionError("internal error: pruned tensor changed its byte length")
        if loc.kind == "embedded" and not self.model.uses_external_data:
            self._submit(lambda: self._pwrite(data, loc.offset))
        elif loc.kind == "external":
            offset = self._new_external[ordinal][0]
            self._to_copy.pop(ordinal, None)

            def digest() -> None:
                self._pruned[ordinal] = hashlib.sha256(data).hexdigest()
            self._submit(lambda: self._pwrite(data, offset), digest)
        else:
            self._inline[ordinal] = bytes(data)
            if loc.kind == "inline" and not tensor.HasField("raw_data"):
                self._rebuild = True

    def read_back(self, tensor: TensorProto) -> bytes:
        """The bytes ``replace()`` wrote for ``tensor`` (read from the staging file)."""
        with self._rollback_on_error():
            self._settle()
        ordinal = self.model.ordinal(tensor)
        if ordinal in self._inline:
            return self._inline[ordinal]
        loc = self.model.location(tensor)
        offset, length = self._new_external[ordinal] if loc.kind == "external" else (loc.offset, loc.length)
        data = os.pread(self._open_fd(), length, offset)
        if len(data) != length:
            raise AssertionError(f"internal error: {tensor.name!r} was not written")
        return data

    def _open_fd(self) -> int:
        if self._fd is None:
            raise AssertionError("internal error: the writer's file is closed")
        return self._fd

    def _pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        fd = self._open_fd()
        try:
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise OutputError(f"{self.output}: cannot write: {exc.strerror or exc}") from None

    def finish(self) -> Path:
        """Write everything to staging files; return the one to verify.  Nothing the user
        had is touched until the publication is published."""
        with self._rollback_on_error():
            self._settle()
            if self.model.uses_external_data:
                self._copy_the_rest()
            os.close(self._open_fd())
            self._fd = None
            self._shut_down()
            if self.model.uses_external_data:
                for ordinal in sorted(self._pruned):
                    self._fingerprint.update(f"|{ordinal}={self._pruned[ordinal]}".encode())
                self.data_file = data_file_for(self.output, self._fingerprint.hexdigest()[:16])
                self._candidate = self.publication.scratch(self.output)
                self._write_proto(self._candidate, data_name=os.path.basename(self._data_tmp))
            elif self._rebuild or self._inline:
                self._candidate = self.publication.stage(self.output)
                self._write_proto(self._candidate, data_name=None)
            else:
                self._candidate = self._model_tmp
        return Path(self._candidate)

    def stage_final(self) -> None:
        """Add the finished files to the publication: the data file, then the model."""
        with self._rollback_on_error():
            if self.data_file is not None:  # external data: finish() named the data file
                final_proto = self.publication.stage(self.output)
                self._write_proto(final_proto, data_name=self.data_file.name)
                self.publication.add(self._data_tmp, self.data_file)
                self.publication.add(final_proto, self.output)
            else:
                self.publication.add(self._candidate, self.output)

    def _write_proto(self, path: Path, data_name: str | None) -> None:
        """Re-serialize the skeleton with every embedded payload restored."""
        final = onnx.ModelProto()
        final.CopyFrom(self.model.skeleton)
        patched = None if self.model.uses_external_data else self._model_tmp
        with open(patched or self.model.path, "rb") as source:  # embedded payloads: one open file
            for ordinal, (original, tensor) in enumerate(zip(self.model.tensors, iter_tensors(final), strict=True)):
                loc = self.model.location(original)
                new = self._inline.get(ordinal)
                if loc.kind == "external":
                    if data_name is None:
                        raise AssertionError("internal error: a tensor stored externally, but no data file named")
                    offset, length = self._new_external[ordinal]
                    _set_external(tensor, data_name, offset, length)
                elif loc.kind == "embedded":
                    _set_raw(tensor, new if new is not None else os.pread(source.fileno(), loc.length, loc.offset))
                elif new is not None:
                    _set_raw(tensor, new)
        with open(path, "wb") as handle:
            handle.write(final.SerializeToString())

    def _shut_down(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        try:
            with contextlib.suppress(Exception):  # the run already failed: its error is the one to report
                self._settle()
        finally:
            self._pending = []
            self._shut_down()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.publication.discard()


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
