"""Reading the user's .npz files (inputs, calibration, eval sets, masks) with one error style.

Every member's NPY header is read before any array: a file that is not an npz (an ``.npy``
given by mistake, a corrupt zip, a member that is not NPY), an array of objects, strings or
records, or a declared size beyond ``max_bytes`` (a small compressed file can declare
gigabytes) is refused with one line before anything is allocated.  Pickles are never loaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from sparsify.errors import UsageError

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "ArraySource", "input_byte_limit", "is_path", "read_arrays", "read_npz",
           "scan_arrays", "scan_npz", "source_name", "write_npz"]

#: An .npz file, or the same arrays already in memory ({name: array}, e.g. from the Python API).
ArraySource = str | Path | Mapping[str, np.ndarray]

#: Default cap on what one npz file may declare in total (``--max-input-bytes``).
DEFAULT_MAX_INPUT_BYTES = 8 << 30
_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("max_input_bytes", default=DEFAULT_MAX_INPUT_BYTES)


@contextlib.contextmanager
def input_byte_limit(max_bytes: int | None) -> Iterator[None]:
    """Every npz read inside uses this cap (the API's ``max_input_bytes``)."""
    if max_bytes is None:
        yield
        return
    if max_bytes < 0:
        raise UsageError(f"--max-input-bytes must be >= 0, got {max_bytes}")
    token = _LIMIT.set(max_bytes)
    try:
        yield
    finally:
        _LIMIT.reset(token)
_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: what model inputs and masks hold


def _header(path: Path, archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    key = member[:-4]
    if not member.endswith(".npy"):
        raise UsageError(f"{path}: member {member!r} is not an NPY array")
    try:
        with archive.open(member) as handle:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = npy_format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported NPY version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise UsageError(f"{path}: array {key!r} is not a readable NPY array ({str(exc).splitlines()[0][:120]})") from None
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise UsageError(f"{path}: array {key!r} has dtype {dtype}; only bool, integer and float arrays are accepted")
    return tuple(int(d) for d in shape), dtype


def scan_npz(path: str | Path, max_bytes: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} from the headers alone; refuses what :func:`read_npz` would."""
    path = Path(path)
    max_bytes = _LIMIT.get() if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not an .npz file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic == b"\x93NUMPY":
        raise UsageError(f"{path}: is a single .npy array; an .npz is needed (np.savez(path, input_name=array))")
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {member[:-4]: _header(path, archive, member) for member in archive.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:120]})") from None
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    if total > max_bytes:
        raise UsageError(f"{path}: its arrays declare {total:,} bytes, more than --max-input-bytes {max_bytes:,}")
    return headers


def read_npz(path: str | Path, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """All arrays of ``path``; a missing, unreadable, oversized or non-numeric file is a
    one-line usage error."""
    headers = scan_npz(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:120]})") from None
    for key, array in arrays.items():
        if key in headers and (array.shape, array.dtype) != headers[key]:
            raise UsageError(f"{path}: array {key!r} does not match its header")
    return arrays


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed .npz with one NPY member per array (what ``np.savez`` writes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                npy_format.write_array(member, np.asanyarray(array), allow_pickle=False)


def is_path(source: ArraySource | None) -> bool:
    return isinstance(source, str | Path)


def source_name(source: ArraySource, what: str = "arrays") -> str:
    """How errors name a source: the file's path, or ``<what given in memory>``."""
    return str(source) if is_path(source) else f"<{what} given in memory>"


def _check_arrays(source: Mapping, what: str) -> dict[str, np.ndarray]:
    name = source_name(source, what)
    arrays = {}
    for key, value in source.items():
        if not isinstance(key, str):
            raise UsageError(f"{name}: key {key!r} is not a string")
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if array.dtype.hasobject or array.dtype.names is not None or array.dtype.kind not in _KINDS:
            raise UsageError(f"{name}: array {key!r} has dtype {array.dtype}; only bool, integer and float arrays are accepted")
        arrays[key] = array
    return arrays


def scan_arrays(source: ArraySource, what: str = "arrays") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of an npz (headers only) or of arrays in memory."""
    if isinstance(source, str | Path):
        return scan_npz(source)
    return {k: (tuple(a.shape), a.dtype) for k, a in _check_arrays(source, what).items()}


def read_arrays(source: ArraySource, what: str = "arrays") -> dict[str, np.ndarray]:
    """The arrays of an npz (checked as :func:`read_npz` does) or of a mapping given in memory."""
    if isinstance(source, str | Path):
        return read_npz(source)
    return _check_arrays(source, what)
