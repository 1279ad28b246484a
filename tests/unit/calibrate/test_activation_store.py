"""ActivationStore: memory up to its limit, memory-mapped files beyond it, nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest

from sparsify.calibrate.activation_store import ActivationStore, default_activation_memory


def _samples(count: int, rows: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"h": rng.standard_normal((rows, 4)).astype(np.float32), "ids": np.arange(rows, dtype=np.int64)}
            for _ in range(count)]


def _files(tmp_path):
    return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())


def _segment(store: ActivationStore, samples):
    store.begin()
    for sample in samples:
        store.add(sample)
    return store.end()


def test_within_the_limit_everything_stays_in_memory(tmp_path):
    samples = _samples(3)
    store = ActivationStore(10**6, tmp_path)
    held = _segment(store, samples)
    assert all(a["h"] is b["h"] for a, b in zip(held, samples, strict=True))  # the same arrays, no copy
    assert not store.on_disk and _files(tmp_path) == [] and store.folder is None
    assert store.peak_bytes == sum(v.nbytes for s in samples for v in s.values())


def test_past_the_limit_earlier_and_later_samples_go_to_disk(tmp_path):
    samples = _samples(4)
    one = sum(v.nbytes for v in samples[0].values())
    store = ActivationStore(2 * one, tmp_path)  # the third sample passes the limit
    held = _segment(store, samples)
    assert store.on_disk and store.spilled_bytes == 4 * one
    for stored, original in zip(held, samples, strict=True):
        for name, value in original.items():
            assert isinstance(stored[name], np.memmap), name  # every sample, the first two included
            assert not stored[name].flags.writeable
            np.testing.assert_array_equal(stored[name], value)
            assert stored[name].dtype == value.dtype
    assert len(_files(tmp_path)) == 8


def test_a_segment_removes_the_files_of_the_samples_it_replaces(tmp_path):
    store = ActivationStore(0, tmp_path)
    first = _segment(store, _samples(2, seed=1))
    first_files = set(_files(tmp_path))
    second = _segment(store, [{"h": s["h"] * 2} for s in first])  # reads the first segment's files
    second_files = set(_files(tmp_path))
    assert first_files and second_files and not first_files & second_files
    np.testing.assert_array_equal(second[1]["h"], _samples(2, seed=1)[1]["h"] * 2)
    store.close()
    assert not any(tmp_path.iterdir())


def test_zero_limit_spills_every_tensor_but_not_empty_or_object_ones(tmp_path):
    store = ActivationStore(0, tmp_path)
    sample = {"empty": np.zeros((0, 3), np.float32), "seq": [np.ones(2)], "x": np.ones((2, 2), np.float16)}
    (held,) = _segment(store, [sample])
    assert held["empty"] is sample["empty"] and held["seq"] is sample["seq"]
    assert isinstance(held["x"], np.memmap) and held["x"].dtype == np.float16
    store.close()
    assert _files(tmp_path) == []


def test_close_is_safe_twice_and_before_any_spill(tmp_path):
    store = ActivationStore(0, tmp_path)
    store.close()
    _segment(store, _samples(1))
    store.close()
    store.close()
    assert not any(tmp_path.iterdir())


def test_unwritable_folder_fails_on_spill_without_leaving_files(tmp_path):
    missing = tmp_path / "gone"
    store = ActivationStore(0, missing)
    store.begin()
    with pytest.raises(OSError):
        store.add(_samples(1)[0])
    store.close()
    assert not missing.exists()


def test_default_limit_is_a_fraction_of_ram():
    limit = default_activation_memory()
    assert 0 < limit < 1 << 50


def test_a_spilled_sample_holds_paths_and_maps_a_file_only_while_it_is_read(tmp_path):
    from sparsify.calibrate.activation_store import SpilledSample

    store = ActivationStore(0, tmp_path)
    (held,) = _segment(store, _samples(1))
    assert isinstance(held, SpilledSample)
    assert all(not isinstance(v, np.ndarray) for v in held.files.values())  # no mapping kept between reads
    first, second = held["h"], held["h"]
    assert first is not second and np.shares_memory(first, first) and not np.shares_memory(first, second)
    assert held.nbytes() >= sum(v.nbytes for v in _samples(1)[0].values())
    # dropping names reads nothing: it works with the files gone
    for path in held.files.values():
        path.unlink()
    smaller = held.only(lambda name: name == "ids")
    assert list(smaller) == ["ids"] and "h" not in smaller
    with pytest.raises(FileNotFoundError):
        smaller["ids"]
    store.close()
