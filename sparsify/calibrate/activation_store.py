"""Where calibration activations wait between segments: in memory, or memory-mapped on disk.

Sequential calibration (``calibrate/segments.py``) carries every calibration sample's live
tensors from one segment to the next.  For a wide model and a large calibration set these can
exceed the RAM the weights leave free (a d4096 decoder, 512 sequences of 2048 tokens: 16 GiB of
float32 per live tensor).  ``ActivationStore`` keeps them in memory while their total stays
within ``limit`` bytes; past it, each sample's tensors are written to ``.npy`` files in a
temporary folder beside the output.  Such a sample is a :class:`SpilledSample`: each read maps
its file afresh (``numpy.load(mmap_mode="r")``) and the mapping goes when the array is dropped, so
what is resident is the sample a segment or a statistic is reading now, not every sample it
has read.  Files of a segment's inputs are removed once the next segment's outputs replace them;
:meth:`ActivationStore.close` removes the folder (also after an error or an interrupt).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ActivationStore", "SpilledSample", "default_activation_memory"]

Sample = Mapping[str, Any]


class SpilledSample(Mapping[str, Any]):
    """One sample's live tensors, those on disk read (memory-mapped, read-only) on each access."""

    def __init__(self, files: dict[str, Path], kept: dict[str, Any]):
        self.files, self.kept = files, kept

    def __getitem__(self, name: str) -> Any:
        if name in self.kept:
            return self.kept[name]
        return np.load(self.files[name], mmap_mode="r")

    def __iter__(self) -> Iterator[str]:
        yield from self.files
        yield from self.kept

    def __len__(self) -> int:
        return len(self.files) + len(self.kept)

    def nbytes(self) -> int:
        return sum(path.stat().st_size for path in self.files.values()) + _nbytes(self.kept)

    def only(self, keep: Callable[[str], bool]) -> SpilledSample:
        """The same files, fewer names (nothing is read)."""
        return SpilledSample({n: p for n, p in self.files.items() if keep(n)}, {n: v for n, v in self.kept.items() if keep(n)})


def default_activation_memory() -> int:
    """A quarter of physical memory (the weights of the largest stage, its Hessians and the
    ONNX Runtime arenas need the rest); 2 GiB when the machine does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, OSError, ValueError):
        return 2 << 30


def _nbytes(sample: Mapping[str, Any]) -> int:
    if isinstance(sample, SpilledSample):
        return sample.nbytes()
    return sum(v.nbytes for v in sample.values() if isinstance(v, np.ndarray))


class ActivationStore:
    """Holds each segment's per-sample live tensors within ``limit`` bytes of memory.

    ``limit``: bytes of activations held in memory per segment (0: every tensor on disk).
    ``parent``: the folder the temporary one is made in (beside the output, whose disk is the
    one the user chose for large files; ``/tmp`` may be memory-backed).
    """

    def __init__(self, limit: int, parent: Path):
        self.limit = limit
        self.parent = parent
        self.folder: Path | None = None  # made at the first spill
        self.peak_bytes = 0  # the largest set of live tensors one segment produced
        self.spilled_bytes = 0  # bytes written to disk, all segments together
        self._generation = 0
        self._current: Path | None = None  # the folder of the samples now held
        self._batch: list[Sample] = []
        self._batch_bytes = 0
        self._batch_folder: Path | None = None

    @property
    def on_disk(self) -> bool:
        return self.spilled_bytes > 0

    # -- one segment's outputs ----------------------------------------------------------

    def begin(self) -> None:
        """Start collecting the samples a segment produces."""
        self._batch, self._batch_bytes, self._batch_folder = [], 0, None
        self._generation += 1

    def add(self, sample: Sample) -> None:
        """One sample's live tensors.  Once the segment's total passes the limit, this sample
        and every one held so far go to disk."""
        self._batch_bytes += _nbytes(sample)
        self.peak_bytes = max(self.peak_bytes, self._batch_bytes)
        if self._batch_folder is None and self._batch_bytes > self.limit:
            self._batch_folder = self._new_folder()
            self._batch = [self._spill(number, held) for number, held in enumerate(self._batch)]
        if self._batch_folder is not None:
            sample = self._spill(len(self._batch), sample)
        self._batch.append(sample)

    def end(self) -> list[Sample]:
        """The segment's samples; the files of the samples they replace are removed."""
        previous, self._current = self._current, self._batch_folder
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        batch, self._batch = self._batch, []
        return batch

    # -- files --------------------------------------------------------------------------

    def _new_folder(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=".sparsify-activations-", dir=self.parent))
        folder = self.folder / f"segment-{self._generation}"
        folder.mkdir()
        return folder

    def _spill(self, number: int, sample: Sample) -> SpilledSample:
        assert self._batch_folder is not None
        files: dict[str, Path] = {}
        kept: dict[str, Any] = {}
        for position, name in enumerate(sample):
            value = sample[name]  # one tensor at a time: a pass-through one is read from its file now
            if not isinstance(value, np.ndarray) or value.dtype == object or value.nbytes == 0:
                kept[name] = value  # sequences, maps and empty tensors stay in memory
                continue
            path = self._batch_folder / f"{number}-{position}.npy"
            np.save(path, value, allow_pickle=False)
            self.spilled_bytes += value.nbytes
            files[name] = path
            del value
        return SpilledSample(files, kept)

    def close(self) -> None:
        """Remove every file this store wrote."""
        self._batch, self._current = [], None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
