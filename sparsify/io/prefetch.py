"""Stored weights without copying them: each file is memory-mapped read-only once and a
weight is a numpy view of its bytes, unmapped from the process once the caller moves on; a
background thread reads the next weight into the page cache so reading it from disk overlaps
work on the current one.

A view of page-cached data costs no copy (reading a multi-GB model this way runs at the speed
of the page cache, where copying it into buffers with ``pread`` took several times longer on
small VMs).  Weights are visited in storage order (file, then offset), which keeps the disk
reading sequential.  The offsets and lengths were checked against the file sizes when the
model was opened.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from onnx import TensorProto

from sparsify.io.dtypes import STORAGE
from sparsify.io.model import LoadedModel

__all__ = ["mapped_bits", "storage_order", "writable_copy"]


def storage_order(model: LoadedModel, tensors: Sequence[TensorProto]) -> list[int]:
    """Indices of ``tensors`` sorted by where their bytes are stored (graph-held ones first)."""
    def key(index: int) -> tuple[str, int, int]:
        loc = model.location(tensors[index])
        return ("" if loc.kind == "inline" else str(loc.path), loc.offset, index)
    return sorted(range(len(tensors)), key=key)


def mapped_bits(model: LoadedModel, tensors: Sequence[TensorProto]) -> Generator[np.ndarray, None, None]:
    """The stored bits of each of ``tensors`` (in the order given) as read-only arrays; views
    into a file mapping, valid until the generator finishes.  Tensors held inside the graph,
    and dtypes without a fixed-size storage, come from ``read_bits``."""
    maps: dict[Path, mmap.mmap] = {}
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsify-readahead") as pool:
            ahead = _will_need(model, tensors[0], pool) if tensors else None
            for index, tensor in enumerate(tensors):
                if ahead is not None:
                    ahead.result()  # this weight is in the page cache now (or failed to read: read_bits reports it)
                ahead = _will_need(model, tensors[index + 1], pool) if index + 1 < len(tensors) else None
                bits = _view(model, tensor, maps)
                yield model.read_bits(tensor) if bits is None else bits
                _done_with(model, tensor, maps)
    finally:
        for mapping in maps.values():
            with contextlib.suppress(BufferError):  # a caller still holds a view: it goes with that
                mapping.close()


def _mapping(path: Path, maps: dict[Path, mmap.mmap]) -> mmap.mmap | None:
    if path not in maps:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return None
            maps[path] = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
    return maps[path]


def _view(model: LoadedModel, tensor: TensorProto, maps: dict[Path, mmap.mmap]) -> np.ndarray | None:
    loc, storage = model.location(tensor), STORAGE.get(tensor.data_type)
    if loc.kind == "inline" or storage is None or loc.length == 0:
        return None
    model.check_length(tensor, storage, loc.length)
    mapping = _mapping(loc.path, maps)
    if mapping is None or loc.offset + loc.length > len(mapping):
        return None  # the file changed since the model was opened: read_bits reports it
    flat = np.frombuffer(mapping, dtype=np.uint8, count=loc.length, offset=loc.offset)
    return flat.view(storage).reshape(tuple(int(d) for d in tensor.dims))


def _done_with(model: LoadedModel, tensor: TensorProto, maps: dict[Path, mmap.mmap]) -> None:
    """Unmap a visited weight's pages from this process (they stay in the page cache, and a
    view still held faults them back in), so resident memory stays at about one weight."""
    loc = model.location(tensor)
    mapping = maps.get(loc.path) if loc.kind != "inline" else None
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = loc.offset - loc.offset % mmap.PAGESIZE
    end = min(len(mapping), loc.offset + loc.length)
    if end > start:
        mapping.madvise(mmap.MADV_DONTNEED, start, end - start)


_WARM_CHUNK = 128 << 10  # reads this size copy through the CPU cache (larger ones ran ~4x slower on small VMs)


def _will_need(model: LoadedModel, tensor: TensorProto, pool: ThreadPoolExecutor) -> Future[None] | None:
    """Read ``tensor``'s bytes on a background thread, the way ``cat`` does (sequential reads
    into one small buffer, with the kernel's readahead), so they are in the page cache when the
    working thread gets to them; ``POSIX_FADV_WILLNEED`` and mapping faults read with less
    overlap."""
    loc = model.location(tensor)
    if loc.kind == "inline" or loc.length == 0:
        return None

    def warm() -> None:
        buffer = bytearray(_WARM_CHUNK)
        with contextlib.suppress(OSError), open(loc.path, "rb", buffering=0) as handle:
            fd, position, end = handle.fileno(), loc.offset, loc.offset + loc.length
            while position < end:
                got = os.preadv(fd, [memoryview(buffer)[: min(_WARM_CHUNK, end - position)]], position)
                if got <= 0:
                    return
                position += got
    return pool.submit(warm)


def writable_copy(bits: np.ndarray, buffer: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(copy, buffer)``: ``bits`` copied into ``buffer`` (a uint8 array, replaced by a larger
    one when too small).  Pass the returned buffer to the next call; reusing it keeps
    weight-sized allocations, and their page faults, out of a loop over weights."""
    if buffer is None or buffer.size < bits.nbytes:
        buffer = np.empty(bits.nbytes, dtype=np.uint8)
    copy = buffer[: bits.nbytes].view(bits.dtype).reshape(bits.shape)
    np.copyto(copy, bits)
    return copy, buffer
