"""Hostile and broken files: refused with one line and exit 2, never read outside the model's
folder, bounded memory, no crash."""

from __future__ import annotations

import resource
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from tests.builders import init, make_model, rand, save, vi


def cli(*args, limit_bytes=None):
    def limit():
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "sparsify", *map(str, args)], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit)


def assert_refused(result, text):
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert text in result.stderr, result.stderr


def _external_model(folder, location, length=8 * 4 * 4):
    w = init(rand([8, 4]), "W")
    onnx.external_data_helper.set_external_data(w, location=location, offset=0, length=length)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    path = folder / "m.onnx"
    path.write_bytes(make_model([node], [vi("x", [2, 8])], [vi("y", None)], [w]).SerializeToString())
    return path


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(rand([8, 4]).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "data.bin").symlink_to(secret)
    assert_refused(cli(_external_model(folder, "data.bin"), "--no-verify"), "escapes the model's folder")
    assert not (folder / "m.sparse.onnx").exists()


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "..\\..\\x", "a/../../b"])
def test_escaping_locations_are_refused(tmp_path, location):
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    result = cli(_external_model(folder, location))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "refused" in result.stderr or "missing" in result.stderr or "not a regular file" in result.stderr


def test_embedded_bytes_disagree_with_shape(tmp_path):
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[8, 4], raw_data=b"\0" * 16)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    path = save(make_model([node], [vi("x", [2, 8])], [vi("y", None)], [w]), tmp_path / "m.onnx")
    assert_refused(cli(path), "needs 128 bytes but 16 are stored")


def test_external_length_disagrees_with_shape(tmp_path):
    (tmp_path / "d.bin").write_bytes(b"\0" * 64)
    assert_refused(cli(_external_model(tmp_path, "d.bin", length=64)), "needs 128 bytes but its external data length is 64")


def test_absurd_shape_is_refused_in_bounded_memory(tmp_path):
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000], raw_data=b"\0" * 64)
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    path = save(make_model([node], [vi("x", [2, 1_000_000])], [vi("y", None)], [w]), tmp_path / "m.onnx")
    # 10^12 floats would need 4 TB; with address space capped at 3 GB any attempt to
    # allocate would die with a MemoryError (exit 1), not this clear refusal.
    assert_refused(cli(path, limit_bytes=3 << 30), "needs 4000000000000 bytes but 64 are stored")


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_deeply_nested_protobuf(tmp_path):
    graph = b""
    for _ in range(500):  # graph -> node -> attribute(g) -> graph ... 500 levels down
        graph = _field(1, _field(5, _field(6, graph)))  # node.attribute.g
    data = b"\x08\x07" + _field(7, graph)  # ir_version 7, graph
    (tmp_path / "deep.onnx").write_bytes(data)
    assert_refused(cli(tmp_path / "deep.onnx"), "not an ONNX model")


def test_length_prefix_larger_than_file(tmp_path):
    data = b"\x08\x07" + _varint(7 << 3 | 2) + _varint(1 << 40) + b"\0" * 32
    (tmp_path / "huge.onnx").write_bytes(data)
    assert_refused(cli(tmp_path / "huge.onnx"), "not an ONNX model")


def test_duplicate_initializer_names(tmp_path):
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
    model = make_model([node], [vi("x", [2, 8])], [vi("y", None)], [init(rand([8, 4]), "W"), init(rand([8, 4], 1), "W")])
    path = tmp_path / "dup.onnx"
    path.write_bytes(model.SerializeToString())
    assert_refused(cli(path), "duplicate initializer name 'W'")


def test_negative_and_non_integer_external_offsets(tmp_path):
    (tmp_path / "d.bin").write_bytes(rand([8, 4]).tobytes())
    path = _external_model(tmp_path, "d.bin")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "offset":
            entry.value = "-5"
    path.write_bytes(model.SerializeToString())
    assert_refused(cli(path), "negative external data offset")
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "offset":
            entry.value = "12abc"
    path.write_bytes(model.SerializeToString())
    assert_refused(cli(path), "is not an integer")
