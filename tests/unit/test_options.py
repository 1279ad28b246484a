"""PruneOptions is the one description of prune's options: the CLI flags are generated from it,
validation names API parameters or CLI flags by interface, and the report records it."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from sparsify.errors import UsageError
from sparsify.options import PruneOptions, add_prune_arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_prune_arguments(parser)
    return parser


def test_every_field_has_a_flag_and_the_parsed_defaults_equal_the_api_defaults():
    parser = _parser()
    flags = {f.name: f.metadata["flags"] for f in dataclasses.fields(PruneOptions)}
    assert all(flags.values())
    from_cli = PruneOptions.from_namespace(parser.parse_args([]))
    assert from_cli == PruneOptions()


@pytest.mark.parametrize("argv, field, value", [
    (["--no-verify"], "verify", False),
    (["--no-bias-correction", "--method", "wanda", "--calibration", "c.npz"], "bias_correction", False),
    (["--include", "a", "--include", "b"], "include", ["a", "b"]),
    (["--eval", "e.npz", "--max-output-drift", "0.1"], "eval_data", "e.npz"),
    (["--report", "r.json"], "report_path", "r.json"),
    (["-o", "out.onnx"], "output", "out.onnx"),
    (["--input-shape", "x:1x8"], "input_shapes", ["x:1x8"]),
    (["--seed", "7"], "seed", 7),
])
def test_flags_map_onto_fields(argv, field, value):
    options = PruneOptions.from_namespace(_parser().parse_args(argv))
    assert getattr(options, field) == value
    options.validate("cli")


def test_method_choices_come_from_the_registry():
    with pytest.raises(SystemExit):
        _parser().parse_args(["--method", "nope"])


@pytest.mark.parametrize("keywords, api, cli", [
    ({"method": "wanda"}, "method= wanda needs calibration=", "--method wanda needs --calibration"),
    ({"max_accuracy_drop": 0.1}, "max_accuracy_drop= needs eval_data=", "--max-accuracy-drop needs --eval"),
    ({"seed": -1}, "seed= must be", "--seed must be"),
    ({"max_rel_error": -1}, "max_rel_error= must be >= 0", "--max-rel-error must be >= 0"),
    ({"verify": False, "min_top1_agreement": 0.5}, "verify=False cannot", "--no-verify cannot"),
])
def test_errors_name_parameters_in_the_api_and_flags_on_the_command_line(keywords, api, cli):
    options = PruneOptions(**keywords)
    with pytest.raises(UsageError, match=api.replace("=", "=")) as from_api:
        options.validate("api")
    assert "--" not in str(from_api.value)
    with pytest.raises(UsageError, match=cli):
        PruneOptions(**keywords).validate("cli")


def test_unknown_keyword_is_a_usage_error_naming_it():
    with pytest.raises(UsageError, match="unknown parameter 'calibrations'"):
        PruneOptions.from_keywords({"calibrations": ["c.npz"]})


def test_a_single_string_is_one_item_of_a_repeatable_option():
    assert PruneOptions.from_keywords({"include": "fc"}).include == ["fc"]


def test_numeric_options_accept_numpy_scalars_and_refuse_text():
    options = PruneOptions(max_rel_error=np.float32(0.25))
    options.validate()
    assert type(options.max_rel_error) is float
    with pytest.raises(UsageError, match="must be a number"):
        PruneOptions(max_rel_error="a lot").validate()


def test_arguments_are_json_and_mark_arrays_given_in_memory():
    options = PruneOptions(inputs={"x": np.zeros((1, 2), np.float32)}, include=["a"])
    recorded = options.arguments()
    assert recorded["inputs"] == "<arrays given in memory>" and recorded["include"] == ["a"]
    assert set(recorded) == {f.name for f in dataclasses.fields(PruneOptions)}
    json.dumps(recorded)


def test_read_files_lists_paths_only():
    options = PruneOptions(method="wanda", calibration=["a.npz", {"x": np.zeros(1)}], masks=None)
    assert [p.name for p in options.read_files()["calibration"]] == ["a.npz"]
