"""Which paths a run may write: never onto a path it reads, never onto a non-regular file.

Every command collects the paths it will read (the model, its external-data files, npz
inputs, masks, a reference model) and the paths it will write (model, data file, report,
engine ...) and calls :func:`check_write_paths` before anything is written.  Paths are
compared by resolved name *and* by (device, inode), so hard links, symbolic links and
``a/../b`` spellings of the same file are caught too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from sparsify.errors import OutputError, UsageError

__all__ = ["NAME_MAX", "check_name_lengths", "check_write_paths", "file_identity", "model_reads"]

NAME_MAX = 255  # bytes per path component on Linux file systems (ext4, xfs, tmpfs, btrfs)


def check_name_lengths(path: Path, what: str, error: type[Exception] = OutputError) -> None:
    """A component over NAME_MAX bytes is refused with one line (the OS would say ENAMETOOLONG)."""
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise error(f"{what} {_short(path)}: file name longer than {NAME_MAX} bytes")


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:50]}…{text[-50:]}"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file (following links), else None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def model_reads(label: str, path: Path, external_files: Iterable[Path]) -> list[tuple[str, Path]]:
    """(label, path) read entries for a model file and its external-data files."""
    return [(label, Path(path)), *((f"{label}'s external data", Path(p)) for p in sorted(external_files))]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the literal spelling
        return Path(os.path.abspath(path))


def _check_target(label: str, path: Path) -> None:
    check_name_lengths(path, label)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{label} {_short(path)}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{label} {_short(path)}: {parent} is not a folder")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"{label} {_short(path)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{label} {_short(path)}: is a folder")
    if not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{label} {_short(path)}: exists and is not a regular file (a device, FIFO or socket); "
                          "refusing to replace it")


def check_write_paths(reads: Iterable[tuple[str, Path]], writes: Mapping[str, Path],
                      in_place: Iterable[str] = ()) -> None:
    """Refuse (exit 2) any written path that is a read path, another written path, or not a
    regular file.  ``reads``: (label, path) pairs; ``writes``: label -> path; ``in_place``:
    labels of writes that update a file they also read by design (rewritten atomically)."""
    allowed = set(in_place)
    read_list = [(label, Path(p), _resolved(Path(p)), file_identity(Path(p))) for label, p in reads]
    seen: dict[Path, str] = {}
    for label, raw in writes.items():
        path = Path(raw)
        _check_target(label, path)
        resolved, identity = _resolved(path), file_identity(path)
        if resolved in seen:
            raise UsageError(f"{label} {_short(path)} is also the {seen[resolved]} path: give them different paths")
        seen[resolved] = label
        if label in allowed:
            continue
        for read_label, read_path, read_resolved, read_identity in read_list:
            if resolved == read_resolved or (identity is not None and identity == read_identity):
                raise UsageError(f"{label} {_short(path)} is the {read_label} {_short(read_path)}: "
                                 "refusing to overwrite a file this run reads")
