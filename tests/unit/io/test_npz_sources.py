"""Array sources: an .npz path and the same arrays given in memory read and scan alike, and
both refuse what the model could never take."""

from __future__ import annotations

import numpy as np
import pytest

from sparsify.errors import UsageError
from sparsify.io.npz import read_arrays, scan_arrays, source_name


def test_a_path_and_a_mapping_give_the_same_arrays_and_headers(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "labels": np.array([1, 0])}
    np.savez(tmp_path / "a.npz", **arrays)
    from_file, in_memory = read_arrays(tmp_path / "a.npz"), read_arrays(arrays)
    assert set(from_file) == set(in_memory)
    for key in arrays:
        np.testing.assert_array_equal(from_file[key], in_memory[key])
    assert scan_arrays(tmp_path / "a.npz") == scan_arrays(arrays)


@pytest.mark.parametrize("bad, match", [
    ({"x": np.array(["a", "b"])}, "dtype"),
    ({"x": np.array([object()], dtype=object)}, "dtype"),
    ({1: np.zeros(2)}, "not a string"),
])
def test_a_mapping_is_checked_like_a_file(bad, match):
    with pytest.raises(UsageError, match=match):
        read_arrays(bad, "inputs")


def test_errors_name_the_source():
    assert source_name("data/x.npz") == "data/x.npz"
    assert source_name({"x": np.zeros(1)}, "masks") == "<masks given in memory>"
