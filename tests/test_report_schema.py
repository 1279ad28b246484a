"""The report's JSON Schema (sparsify/schema/report.schema.json) accepts what the pass writes
and rejects what it must not (so the suite-wide validation in conftest.py can fail)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from onnx import helper

import sparsify
from sparsify.report import SCHEMA_PATH, validate_report
from tests.builders import init, make_model, rand, save, vi


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"), helper.make_node("MatMul", ["y", "V"], ["z"], name="odd")]
    path = save(make_model(nodes, [vi("x", [2, 8])], [vi("z", None)], [init(rand([8, 6]), "W"), init(rand([6, 4]), "V")]),
                folder / "m.onnx")
    sparsify.prune(path)
    return json.loads((folder / "m.sparse.report.json").read_text())


def test_written_reports_validate(written):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)  # the schema itself is well-formed
    validate_report(written)
    assert json.loads(SCHEMA_PATH.read_text())["properties"]["schema_version"]["const"] == written["schema_version"]


@pytest.mark.parametrize("break_it", [
    lambda r: r.pop("targets"),
    lambda r: r["targets"][0].update(status="half-pruned"),
    lambda r: r["targets"][1].update(reason=""),  # a skipped row without its reason
    lambda r: r["parity"]["outputs"][0].update(rel_l2_error="NaN"),  # non-finite numbers are exactly "nan", "inf", "-inf"
    lambda r: r.update(output_data_file="m.sparse.onnx.data"),  # not a content-named data file
    lambda r: r.update(unexpected=1),
    lambda r: r["totals"].update(weight_bytes_saved_fraction=1.5),
])
def test_schema_rejects_broken_reports(written, break_it):
    report = copy.deepcopy(written)
    assert report["targets"][1]["status"] == "skipped"
    break_it(report)
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)
