"""Stage every output beside its final path, then publish all of them at once.

A run writes nothing under a final name until everything it will publish (model, external
data, report) is complete in staging files.  :class:`Publication` then renames them in a
fixed order — external data first (its name is content-derived, so it can never be paired
with another run's graph), the model next (it names that data file), the report last —
while holding an exclusive lock on each output folder (two runs on the same ``-o`` publish
one after the other, never interleaved) and with SIGINT/SIGTERM deferred, so an interrupt
lands before or after the whole publication, never inside it.

Staging files are named ``.<final name>.<pid>.<random>.sparsify-tmp``.  Any error removes
them; a ``kill -9`` cannot, so every run first removes staging files in its output folders
whose writer process no longer exists (:func:`remove_stale_staging`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from sparsify.errors import OutputError

__all__ = ["PUBLISHED", "Publication", "STAGING_SUFFIX", "publish_folder", "remove_stale_staging", "stage_folder",
           "stage_path", "umask", "write_atomically"]

STAGING_SUFFIX = ".sparsify-tmp"
_STAGING = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{12})" + re.escape(STAGING_SUFFIX) + "$")

#: Final paths published by this process, in order (the CLI's interrupt message reads it).
PUBLISHED: list[str] = []


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def stage_path(final: Path) -> Path:
    """Create an empty staging file beside ``final`` (mode as the umask gives new files)."""
    path = _staging_name(final)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~umask())
    os.close(fd)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove staging files in ``folder`` whose writer process is gone; return them."""
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _STAGING.match(name)
        if match is None or _alive(int(match.group("pid"))):
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():  # a staged folder (publish_folder)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError, IsADirectoryError):
            os.unlink(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside are acted on only after it.  Python-level handlers are
    swapped (a thread signal mask would not do: a process-directed signal is delivered to any
    thread that does not block it — ONNX Runtime's worker threads, say — and Python then
    raises in the main thread all the same)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def defer(signum, _frame) -> None:
        received.append(signum)

    held: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, defer) for s in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):  # each signal once, in arrival order
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)


@contextlib.contextmanager
def folder_locks(folders: list[Path]) -> Iterator[None]:
    """Exclusive ``flock`` on each folder (sorted, so two runs never deadlock)."""
    fds = []
    try:
        for folder in sorted({str(f.resolve()) for f in folders}):
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue  # cannot open the folder for locking: the renames below report real problems
            fds.append(fd)
            with contextlib.suppress(OSError):  # a file system without flock (some network mounts): unserialised
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class Publication:
    """Staged files and their final names, published together in the order added."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (staging, final)
        self._temps: list[Path] = []

    def stage(self, final: Path) -> Path:
        """A new staging file for ``final`` (removed again unless published)."""
        path = stage_path(final)
        self._temps.append(path)
        return path

    def scratch(self, near: Path) -> Path:
        """A staging file that is never published (removed by :meth:`discard`)."""
        return self.stage(near)

    def add(self, staged: Path, final: Path) -> None:
        self._staged.append((staged, final))

    def finals(self) -> list[Path]:
        return [final for _, final in self._staged]

    def publish(self, remove_after: Callable[[], list[Path]] | None = None) -> None:
        """Rename every staged file to its final name, in order, under the folder locks and
        with interrupts held; then remove the files ``remove_after()`` names (superseded by
        this publication; computed under the locks, so a concurrent run's files are final)."""
        folders = [_folder(final) for _, final in self._staged]
        try:
            with folder_locks(folders), _signals_held():
                for staged, final in self._staged:
                    os.replace(staged, final)
                    PUBLISHED.append(str(final))
                for path in remove_after() if remove_after else []:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot publish {self._staged[-1][1]}: {exc.strerror or exc}") from None
        self.discard()

    def discard(self) -> None:
        """Remove every staging file not yet renamed."""
        for path in self._temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._temps = []


def write_atomically(path: Path, data: bytes | str) -> None:
    """Stage ``data`` beside ``path`` and publish it (one file, all or nothing)."""
    publication = Publication()
    try:
        staged = publication.stage(path)
        staged.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        publication.add(staged, path)
        publication.publish()
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        publication.discard()


def _staging_name(final: Path, tag: str = "") -> Path:
    return _folder(final) / f".{final.name}{tag}.{os.getpid()}.{secrets.token_hex(6)}{STAGING_SUFFIX}"


def stage_folder(final: Path) -> Path:
    """An empty staging folder beside ``final`` (a folder to publish with :func:`publish_folder`)."""
    path = _staging_name(final)
    os.mkdir(path, 0o777)
    return path


def publish_folder(staged: Path, final: Path) -> None:
    """Put the staged folder in place of ``final`` under the folder lock with interrupts held:
    a folder already there is moved aside first and removed only once the new one is in place,
    so ``final`` is always either the old folder or the new one, never half of each."""
    aside = _staging_name(final, "-old")
    try:
        with folder_locks([_folder(final)]), _signals_held():
            if final.exists():
                os.replace(final, aside)
            os.replace(staged, final)
            PUBLISHED.append(str(final))
    except OSError as exc:
        if aside.exists() and not final.exists():
            os.replace(aside, final)  # put the old folder back
        raise OutputError(f"cannot publish {final}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)
