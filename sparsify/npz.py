"""Reading the user's .npz files (inputs, calibration, eval sets, masks) with one error style."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sparsify.errors import UsageError

__all__ = ["read_npz"]


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of ``path``; a missing or unreadable file is a one-line usage error."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{path}: not a readable .npz file ({exc})") from None
