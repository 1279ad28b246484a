"""Data-aware one-shot pruning: wanda, sparsegpt (with fallbacks) and the accuracy budget."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import sparsify
from sparsify.errors import UsageError
from sparsify.masks.sparsegpt import sparsegpt_prune
from tests.builders import init, is_nm, make_model, rand, reference_prune, run, save, vi, weights


def _mlp(tmp_path, k=16, hidden=16, classes=8, seed=0):
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["logits"], name="fc2")]
    inits = [init(rand([k, hidden], seed), "W1"), init(rand([hidden, classes], seed + 1), "W2")]
    return save(make_model(nodes, [vi("x", ["batch", k])], [vi("logits", ["batch", classes])], inits), tmp_path / "m.onnx")


def _skewed_inputs(tmp_path, k=16, rows=256, name="calib.npz", seed=3):
    x = rand([rows, k], seed)
    x *= np.where(np.arange(k) % 2 == 0, 10.0, 0.1).astype(np.float32)  # even features dominate
    np.savez(tmp_path / name, x=x)
    return tmp_path / name, x


def test_wanda_scores_weight_times_activation_norm(tmp_path):
    path = _mlp(tmp_path)
    calib, x = _skewed_inputs(tmp_path)
    report = sparsify.prune(path, output=tmp_path / "w.onnx", method="wanda", calibration=[str(calib)])
    w1 = weights(path)["W1"]
    norm = np.linalg.norm(x.astype(np.float64), axis=0)
    expected = reference_prune(w1, 0, scores=np.moveaxis(np.abs(w1) * norm[:, None], 0, 0))
    np.testing.assert_array_equal(weights(tmp_path / "w.onnx")["W1"], expected)
    assert not np.array_equal(expected, reference_prune(w1, 0))  # it differs from magnitude here
    assert {t.outcome.method for t in report.rows} == {"wanda"}


def _reconstruction_error(w_dense, w_sparse, x):
    return np.linalg.norm(x @ w_dense - x @ w_sparse) / np.linalg.norm(x @ w_dense)


def test_sparsegpt_beats_magnitude_and_wanda_on_the_layer_objective(tmp_path):
    path = _mlp(tmp_path, k=32, hidden=32)
    rng = np.random.default_rng(5)
    mix = rng.standard_normal((32, 32)).astype(np.float32)  # correlated features: OBS has work to do
    x = rand([512, 32], 7) @ mix
    np.savez(tmp_path / "c.npz", x=x)
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        out = tmp_path / f"{method}.onnx"
        report = sparsify.prune(path, output=out, method=method, calibration=[str(tmp_path / "c.npz")] if method != "magnitude" else None)
        w1 = weights(out)["W1"]
        assert is_nm(w1, 0) and report.count("pruned") == 2
        errors[method] = _reconstruction_error(weights(path)["W1"], w1, x)
    assert errors["sparsegpt"] < errors["wanda"] <= errors["magnitude"] * 1.05
    assert errors["sparsegpt"] < 0.8 * errors["magnitude"]


def test_the_fit_of_the_kept_weights_lowers_the_layer_objective_end_to_end(tmp_path):
    """Few calibration rows for the width (as with little data): the default fit of the kept
    weights beats OBS's own weights (``fit_iterations=0``) on the calibration data, on the same
    masks, and the report records the setting."""
    path = _mlp(tmp_path, k=32, hidden=32)
    rng = np.random.default_rng(6)
    x = rand([48, 32], 8) @ rng.standard_normal((32, 32)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    cal = {"method": "sparsegpt", "calibration": [str(tmp_path / "c.npz")], "verify": False, "bias_correction": False}
    fitted = sparsify.prune(path, output=tmp_path / "fit.onnx", **cal)
    plain = sparsify.prune(path, output=tmp_path / "obs.onnx", fit_iterations=0, **cal)
    assert plain.arguments["fit_iterations"] == 0 and fitted.arguments["fit_iterations"] is None
    dense, a, b = weights(path)["W1"], weights(tmp_path / "fit.onnx")["W1"], weights(tmp_path / "obs.onnx")["W1"]
    assert is_nm(a, 0) and np.array_equal(a != 0, b != 0)  # the fit moves values, never the mask
    assert _reconstruction_error(dense, a, x) < 0.97 * _reconstruction_error(dense, b, x)


def test_sparsegpt_with_identity_hessian_is_magnitude():
    w = rand([6, 16], 1)
    out = sparsegpt_prune(w, np.eye(16), 2, 4, damp=0.0)
    np.testing.assert_allclose(out, reference_prune(w, 1), rtol=1e-6, atol=1e-7)


def test_sparsegpt_blocking_does_not_change_the_result():
    w, x = rand([5, 24], 2), rand([100, 24], 3)
    h = x.T.astype(np.float64) @ x
    a = sparsegpt_prune(w, h, 2, 4, block=4)
    b = sparsegpt_prune(w, h, 2, 4, block=128)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    assert is_nm(a, 1)


def _cnn(tmp_path):
    """pointwise -> 3x3 (padded) -> grouped 3x3 stride 2 -> depthwise (not prunable): every conv kind."""
    nodes = [helper.make_node("Conv", ["x", "Wp"], ["a"], name="pointwise"),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "Wk"], ["b"], name="k3", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "Wg"], ["c"], name="grouped", group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "Wd"], ["y"], name="depthwise", group=16, pads=[1, 1, 1, 1])]
    inits = [init(rand([16, 8, 1, 1]), "Wp"), init(rand([16, 16, 3, 3], 1), "Wk"), init(rand([16, 8, 3, 3], 4), "Wg"),
             init(rand([16, 1, 3, 3], 5), "Wd")]
    path = save(make_model(nodes, [vi("x", [1, 8, 8, 8])], [vi("y", None)], inits), tmp_path / "c.onnx")
    np.savez(tmp_path / "cal.npz", x=rand([16, 1, 8, 8, 8], 2))
    return path


def test_sparsegpt_and_wanda_handle_kxk_strided_and_grouped_convs(tmp_path):
    path = _cnn(tmp_path)
    x = np.load(tmp_path / "cal.npz")["x"]
    dense = np.concatenate([run(path, {"x": s})[0] for s in x])
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        cal = {} if method == "magnitude" else {"calibration": [str(tmp_path / "cal.npz")], "bias_correction": False}
        out = tmp_path / f"{method}.onnx"
        report = sparsify.prune(path, output=out, method=method, verify=False, **cal)
        rows = {t.target.layer: t for t in report.rows}
        for layer in ("pointwise", "k3", "grouped"):
            assert rows[layer].outcome.method == method and not rows[layer].outcome.method_fallback, rows[layer].outcome
        assert rows["depthwise"].outcome.status == "skipped"
        ws = weights(out)
        assert is_nm(ws["Wp"], 1) and is_nm(ws["Wk"], 1) and is_nm(ws["Wg"], 1)
        sparse = np.concatenate([run(out, {"x": s})[0] for s in x])
        errors[method] = float(np.linalg.norm(sparse - dense) / np.linalg.norm(dense))
    # on its own calibration data, the OBS update must beat magnitude clearly
    assert errors["sparsegpt"] < 0.8 * errors["magnitude"], errors
    assert errors["wanda"] < errors["magnitude"] * 1.1, errors


def test_sparsegpt_quantized_weight_falls_back(tmp_path):
    q = np.random.default_rng(0).integers(-100, 100, (16, 4)).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    path = save(make_model(nodes, [vi("x", [2, 16])], [vi("y", None)], [init(q, "Wq"), init(np.array(0.1, np.float32), "s")]),
                tmp_path / "q.onnx")
    np.savez(tmp_path / "cal.npz", x=rand([8, 2, 16]))
    report = sparsify.prune(path, output=tmp_path / "o.onnx", method="sparsegpt", calibration=[str(tmp_path / "cal.npz")])
    assert "requantizing" in report.rows[0].outcome.notes[0] and report.rows[0].outcome.status == "pruned"
    assert is_nm(weights(tmp_path / "o.onnx")["Wq"], 0)


def test_fp16_sparsegpt_keeps_pattern_after_rounding(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    w = rand([16, 8]).astype(np.float16)
    path = save(make_model(nodes, [vi("x", [2, 16], 10)], [vi("y", None, 10)], [init(w, "W")]), tmp_path / "h.onnx")
    np.savez(tmp_path / "cal.npz", x=rand([8, 2, 16]).astype(np.float16))
    sparsify.prune(path, output=tmp_path / "o.onnx", method="sparsegpt", calibration=[str(tmp_path / "cal.npz")])
    assert is_nm(weights(tmp_path / "o.onnx")["W"], 0)


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "wanda"}, "needs calibration="),
    ({"method": "nope"}, "unknown method="),
    ({"max_accuracy_drop": 0.01}, "needs eval_data="),
    ({"max_output_drift": 0.1, "max_accuracy_drop": 0.1, "eval_data": "x"}, "not both"),
    ({"max_output_drift": -1, "inputs": "x"}, "must be >= 0"),
    ({"method": "wanda", "calibration": "c.npz", "activation_memory": -1}, "activation_memory= must be an integer >= 0"),
    ({"method": "wanda", "calibration": "c.npz", "activation_memory": 1.5}, "activation_memory= must be an integer"),
    ({"method": "wanda", "calibration": "c.npz", "activation_memory": True}, "activation_memory= must be an integer"),
    ({"activation_memory": 0}, "activation_memory= applies only with calibration="),
    ({"method": "wanda", "calibration": "c.npz", "fit_iterations": 2}, "fit_iterations= applies only to method= sparsegpt"),
    ({"method": "sparsegpt", "calibration": "c.npz", "fit_iterations": -1}, "fit_iterations= must be an integer >= 0"),
    ({"method": "sparsegpt", "calibration": "c.npz", "fit_iterations": 2.5}, "fit_iterations= must be an integer"),
    ({"method": "sparsegpt", "calibration": "c.npz", "fit_iterations": True}, "fit_iterations= must be an integer"),
])
def test_data_aware_usage_errors(tmp_path, kwargs, match):
    with pytest.raises(UsageError, match=match):
        sparsify.prune(_mlp(tmp_path), **kwargs)


def _labelled(tmp_path, path, rows=200):
    x = rand([rows, 16], 11)
    labels = np.argmax(run(path, {"x": x})[0], axis=1)  # dense accuracy is exactly 1.0
    np.savez(tmp_path / "eval.npz", x=x, labels=labels)
    return tmp_path / "eval.npz", x, labels


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_accuracy_budget_keeps_sensitive_layers_dense(tmp_path, method):
    path = _mlp(tmp_path)
    evaluation, x, labels = _labelled(tmp_path, path)
    calib = {}
    if method != "magnitude":  # calibrated methods leave the in-memory model pruned: the dense
        np.savez(tmp_path / "c.npz", x=rand([64, 16], 5))  # reference must still be the dense one
        calib = {"method": method, "calibration": [str(tmp_path / "c.npz")]}
    plain = sparsify.prune(path, output=tmp_path / "plain.onnx", verify=False, **calib)
    plain_acc = np.mean(np.argmax(run(tmp_path / "plain.onnx", {"x": x})[0], 1) == labels)
    assert plain_acc < 0.97 and plain.count("pruned") == 2  # pruning everything costs accuracy
    budget = 1.0 - plain_acc - 0.01  # strictly tighter than "prune everything"
    report = sparsify.prune(path, output=tmp_path / "b.onnx", max_accuracy_drop=budget, eval_data=str(evaluation), **calib)
    assert report.budget["dense_value"] == 1.0  # labels are the dense model's own predictions
    got = np.mean(np.argmax(run(tmp_path / "b.onnx", {"x": x})[0], 1) == labels)
    assert 1.0 - got <= budget + 1e-9  # measured independently on the written model
    assert report.budget["met"] and report.budget["kept_dense"]
    dense_rows = [t for t in report.rows if t.outcome.status == "skipped"]
    assert dense_rows and all("accuracy drop budget" in t.outcome.reason for t in dense_rows)
    assert all(t.outcome.sensitivity is not None for t in report.rows)


def test_output_drift_budget_extremes(tmp_path):
    path = _mlp(tmp_path)
    np.savez(tmp_path / "in.npz", x=rand([64, 16], 4))
    loose = sparsify.prune(path, output=tmp_path / "a.onnx", max_output_drift=10.0, inputs=str(tmp_path / "in.npz"))
    assert loose.count("pruned") == 2 and loose.budget["kept_dense"] == []
    strict = sparsify.prune(path, output=tmp_path / "b.onnx", max_output_drift=0.0, inputs=str(tmp_path / "in.npz"))
    assert strict.count("pruned") == 0 and len(strict.budget["kept_dense"]) == 2
    assert strict.parity.outputs[0].rel_l2_error == 0.0


def test_cli_method_and_budget(tmp_path):
    import json
    import subprocess
    import sys

    path = _mlp(tmp_path)
    calib, _ = _skewed_inputs(tmp_path)
    evaluation, _, _ = _labelled(tmp_path, path)
    result = subprocess.run([sys.executable, "-m", "sparsify", str(path), "--method", "sparsegpt", "--calibration", str(calib),
                             "--max-accuracy-drop", "0.05", "--eval", str(evaluation)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "budget: accuracy drop <= 0.05" in result.stdout
    data = json.loads((tmp_path / "m.sparse.report.json").read_text())
    assert data["budget"]["met"] and data["targets"][0]["method"] in ("sparsegpt", None)
    bad = subprocess.run([sys.executable, "-m", "sparsify", str(path), "--method", "wanda"], capture_output=True, text=True)
    assert bad.returncode == 2 and "needs --calibration" in bad.stderr
    assert onnx.load(str(tmp_path / "m.sparse.onnx")) is not None


def _biased(tmp_path, gemm=False, shared=False):
    if gemm:
        nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"), helper.make_node("Add", ["h", "b"], ["y"])]
    outputs = [vi("y", None)]
    if shared:
        nodes.append(helper.make_node("Mul", ["b", "b"], ["b2"]))
        outputs.append(vi("b2", None))
    inits = [init(rand([16, 8]), "W"), init(rand([8], 1), "b")]
    return save(make_model(nodes, [vi("x", ["batch", 16])], outputs, inits), tmp_path / "m.onnx")


@pytest.mark.parametrize("gemm", [False, True])
def test_bias_correction_restores_the_output_mean(tmp_path, gemm):
    path = _biased(tmp_path, gemm)
    x = rand([300, 16], 2) + 3.0  # non-zero-mean inputs: pruning shifts the output mean
    np.savez(tmp_path / "c.npz", x=x)
    report = sparsify.prune(path, output=tmp_path / "o.onnx", method="wanda", calibration=[str(tmp_path / "c.npz")])
    dense, sparse = run(path, {"x": x})[0], run(tmp_path / "o.onnx", {"x": x})[0]
    np.testing.assert_allclose(sparse.mean(0), dense.mean(0), atol=1e-3)
    plain = sparsify.prune(path, output=tmp_path / "p.onnx", method="wanda", calibration=[str(tmp_path / "c.npz")],
                           bias_correction=False)
    shifted = run(tmp_path / "p.onnx", {"x": x})[0]
    assert np.abs(shifted.mean(0) - dense.mean(0)).max() > 0.1  # without it the mean moves
    assert "bias 'b' corrected" in report.rows[0].outcome.notes[-1] and not plain.rows[0].outcome.notes
    assert weights(tmp_path / "p.onnx")["b"].tobytes() == weights(path)["b"].tobytes()


def test_bias_used_elsewhere_is_not_touched(tmp_path):
    path = _biased(tmp_path, shared=True)
    np.savez(tmp_path / "c.npz", x=rand([50, 16], 2) + 3.0)
    report = sparsify.prune(path, output=tmp_path / "o.onnx", method="sparsegpt", calibration=[str(tmp_path / "c.npz")])
    assert report.rows[0].outcome.status == "pruned" and not report.rows[0].outcome.notes
    assert weights(tmp_path / "o.onnx")["b"].tobytes() == weights(path)["b"].tobytes()


def _gelu_mlp(tmp_path, residual=False):
    """fc1 -> +b1 -> GELU (as PyTorch's exporter writes it: Div, Erf, Add, Mul, Mul) -> *scale -> fc2."""
    c = lambda v, n: init(np.array(v, np.float32), n)  # noqa: E731
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Div", ["hb", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["hb", "e1"], ["g"]),
             helper.make_node("Mul", ["g", "half"], ["gelu"]),
             helper.make_node("Mul", ["gelu", "scale"], ["s"]),
             helper.make_node("MatMul", ["s", "W2"], ["y"], name="fc2")]
    outputs = [vi("y", None)] + ([vi("hb", None)] if residual else [])
    inits = [init(rand([16, 32]), "W1"), init(rand([32], 1), "b1"), c(2 ** 0.5, "sqrt2"), c(1.0, "one"), c(0.5, "half"),
             init(rand([32], 2) + 2, "scale"), init(rand([32, 8], 3), "W2")]
    return save(make_model(nodes, [vi("x", ["batch", 16])], outputs, inits), tmp_path / "g.onnx")


def test_channel_chain_permutation_is_exact(tmp_path):
    from sparsify.analysis.channel_chain import find_chain
    from sparsify.analysis.index import GraphIndex
    from sparsify.analysis.targets import find_targets
    from sparsify.calibrate.session import InMemoryModel
    from sparsify.io.model import open_model
    from sparsify.pattern import parse_pattern

    path = _gelu_mlp(tmp_path)
    loaded = open_model(path)
    index = GraphIndex(loaded.skeleton)
    fc2 = next(t for t in find_targets(index, parse_pattern("2:4")) if t.target.layer == "fc2")
    chain = find_chain(index, fc2.target)
    assert chain.producer_weight == "W1" and sorted(n for n, _ in chain.channel_constants) == ["b1", "scale"]
    perm = np.random.default_rng(0).permutation(32)  # any permutation must be exact
    memory = InMemoryModel(path)
    for name, axis in (("W2", 0), ("W1", 1), ("b1", -1), ("scale", -1)):
        memory.set_bits(name, np.take(weights(path)[name], perm, axis=axis).view(np.uint32))
    x = rand([5, 16], 9)
    np.testing.assert_allclose(memory.session().run(None, {"x": x})[0], run(path, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_permute_end_to_end(tmp_path):
    path = _gelu_mlp(tmp_path)
    sparsify.prune(path, output=tmp_path / "a.onnx")
    permuted = sparsify.prune(path, output=tmp_path / "b.onnx", permute=True)
    rows = {t.target.layer: t for t in permuted.rows}
    assert rows["fc2"].outcome.permutation_gain and rows["fc2"].outcome.permutation_gain > 0
    assert "output channels permuted to match fc2" in rows["fc1"].outcome.notes
    out = weights(tmp_path / "b.onnx")
    assert is_nm(out["W2"], 0) and is_nm(out["W1"], 0)
    kept = lambda w: np.abs(w).sum()  # noqa: E731
    assert kept(out["W2"]) > kept(weights(tmp_path / "a.onnx")["W2"])  # more magnitude survives
    assert permuted.parity.verified
    assert "fc1" in rows and "permutation: the activation does not come from a MatMul/Gemm" in rows["fc1"].outcome.notes


def test_permute_refused_when_an_intermediate_has_other_users(tmp_path):
    report = sparsify.prune(_gelu_mlp(tmp_path, residual=True), output=tmp_path / "o.onnx", permute=True)
    fc2 = next(t for t in report.rows if t.target.layer == "fc2")
    assert fc2.outcome.permutation_gain is None and any("other users" in n for n in fc2.outcome.notes)


def test_budget_reports_final_accuracy(tmp_path):
    path = _mlp(tmp_path)
    evaluation, x, labels = _labelled(tmp_path, path)
    report = sparsify.prune(path, output=tmp_path / "o.onnx", max_accuracy_drop=0.5, eval_data=str(evaluation))
    b = report.budget
    assert b["dense_value"] == 1.0 and b["final_accuracy"] == pytest.approx(1.0 - b["final_loss"])
    measured = np.mean(np.argmax(run(tmp_path / "o.onnx", {"x": x})[0], 1) == labels)
    assert b["final_accuracy"] == pytest.approx(measured)
    assert "accuracy 1.0000 dense ->" in report.format_table()


def test_sparsegpt_with_permute_stays_as_good(tmp_path):
    """Permutation reorders the activations: the dense reference used for the refit and the
    bias correction must be permuted too, or the layer is fitted to scrambled targets."""
    path = _gelu_mlp(tmp_path)
    x = rand([400, 16], 3)
    np.savez(tmp_path / "c.npz", x=x)
    errors = {}
    for permute in (False, True):
        out = tmp_path / f"p{permute}.onnx"
        sparsify.prune(path, output=out, method="sparsegpt", calibration=[str(tmp_path / "c.npz")], permute=permute, verify=False)
        dense, sparse = run(path, {"x": x})[0], run(out, {"x": x})[0]
        errors[permute] = np.linalg.norm(dense - sparse) / np.linalg.norm(dense)
    assert errors[True] < 1.3 * errors[False], errors



def _residual_mlp(tmp_path, blocks=3, d=16, ff=32, rows=4, samples=6, scale=0.5, name="res.onnx"):
    """x -> [LayerNorm-free block: h = x + W2 relu(W1 x)] x blocks -> head: residuals make live
    tensors span the cuts between stages.  Calibration: ``samples`` inputs of [rows, d] in cal.npz."""
    nodes, inits, x = [], [], "x"
    for i in range(blocks):
        nodes += [helper.make_node("MatMul", [x, f"W1_{i}"], [f"a{i}"], name=f"up{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"W2_{i}"], [f"b{i}"], name=f"down{i}"),
                  helper.make_node("Add", [x, f"b{i}"], [f"h{i}"])]
        inits += [init(rand([d, ff], 10 + i) * scale, f"W1_{i}"), init(rand([ff, d], 20 + i) * scale, f"W2_{i}")]
        x = f"h{i}"
    nodes.append(helper.make_node("MatMul", [x, "Wh"], ["y"], name="head"))
    inits.append(init(rand([d, 8], 30), "Wh"))
    path = save(make_model(nodes, [vi("x", [rows, d])], [vi("y", None)], inits), tmp_path / name)
    np.savez(tmp_path / "cal.npz", x=rand([samples, rows, d], 40))
    return path


@pytest.mark.parametrize(("method", "ff"), [("wanda", 32), ("sparsegpt", 32), ("sparsegpt", 64)])
def test_segmented_calibration_matches_whole_model_runs(tmp_path, monkeypatch, method, ff):
    """The one-pass segmented calibration sees exactly the activations the whole-model runs
    see (same weights out), and a graph it cannot cut falls back to whole-model runs, saying so.
    With ff = 64 the down projections' drift is summed per weight on both paths."""
    from sparsify.calibrate.segments import SegmentedRun

    path = _residual_mlp(tmp_path, ff=ff)
    cal = {"method": method, "calibration": [str(tmp_path / "cal.npz")], "verify": False}
    if method == "sparsegpt":  # the fit of the kept weights, iterative on a rank-deficient H here, would
        cal["fit_iterations"] = 0  # magnify float32 round-off from Gram sums taken in another order
    advances = []
    real_advance = SegmentedRun.advance

    def counting(self):
        advances.append(self.segment)
        return real_advance(self)

    monkeypatch.setattr(SegmentedRun, "advance", counting)
    segmented = sparsify.prune(path, output=tmp_path / "seg.onnx", **cal)
    assert advances and not any("whole model" in n for r in segmented.rows for n in r.outcome.notes)

    def broken(_self):
        raise ValueError("injected")

    monkeypatch.setattr(SegmentedRun, "advance", broken)
    whole = sparsify.prune(path, output=tmp_path / "whole.onnx", **cal)
    assert any("whole model" in n for r in whole.rows for n in r.outcome.notes)
    a, b = weights(tmp_path / "seg.onnx"), weights(tmp_path / "whole.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name] != 0, b[name] != 0, err_msg=name)  # the same masks
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_data_aware_progress_names_the_stage(tmp_path):
    """Progress off a terminal: one whole line per weight, counted over all weights, with the
    calibration stage it belongs to (stage N/M), elapsed time and ETA."""
    import io

    from sparsify.progress import Progress

    path = _residual_mlp(tmp_path)
    stream = io.StringIO()
    progress = Progress("pruning weight", stream=stream, tty=False, interval=0)
    sparsify.prune(path, output=tmp_path / "o.onnx", method="wanda", calibration=[str(tmp_path / "cal.npz")],
                   verify=False, progress=progress)
    lines = stream.getvalue().splitlines()
    assert lines and all(" elapsed, ETA " in line for line in lines)
    stages = {line.split("stage ")[1].split(",")[0] for line in lines if "stage " in line}
    assert len(stages) >= 2 and all(s.split("/")[1] == next(iter(stages)).split("/")[1] for s in stages)
    assert lines[-1].startswith("pruning weight 7/7: ")  # 3 blocks x 2 + the head


@pytest.mark.parametrize("whole_model", [False, True])
def test_calibration_sessions_do_not_spin(tmp_path, monkeypatch, whole_model):
    """Every ONNX Runtime session calibration makes (segments, or whole-model runs where the
    graph cannot be cut) has the idle-worker spinning off: the process's own linear algebra
    runs between their runs."""
    from sparsify.calibrate.segments import SegmentedRun

    path = _residual_mlp(tmp_path)
    spinning = []
    real_session = ort.InferenceSession

    def recording(model, options=None, *args, **kwargs):
        spinning.append(None if options is None else options.get_session_config_entry("session.intra_op.allow_spinning"))
        return real_session(model, options, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    if whole_model:
        monkeypatch.setattr(SegmentedRun, "advance", lambda _self: (_ for _ in ()).throw(ValueError("injected")))
    report = sparsify.prune(path, output=tmp_path / "o.onnx", method="sparsegpt", calibration=[str(tmp_path / "cal.npz")],
                            verify=False)
    assert report.rows and len(spinning) >= 2
    assert set(spinning) == {"0"}


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_data_aware_pass_never_loads_the_whole_model(tmp_path, monkeypatch, method):
    """Calibration reads weights from the file segment by segment: with whole-model loading
    made impossible, wanda and sparsegpt still run, on embedded and external-data copies of the
    same model, and give the same weights."""
    from sparsify.calibrate import session as session_module

    path = _residual_mlp(tmp_path)
    external = tmp_path / "ext.onnx"
    onnx.save(onnx.load(path), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)

    def refuse(_self, _path):
        raise AssertionError("the whole model was loaded")

    monkeypatch.setattr(session_module.InMemoryModel, "__init__", refuse)
    cal = {"method": method, "calibration": [str(tmp_path / "cal.npz")], "verify": False}
    sparsify.prune(path, output=tmp_path / "a.onnx", **cal)
    sparsify.prune(external, output=tmp_path / "b.onnx", **cal)
    a, b = weights(tmp_path / "a.onnx"), weights(tmp_path / "b.onnx")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _activation_folders(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".sparsify-activations-"))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_activations_on_disk_give_the_same_weights(tmp_path, monkeypatch, method):
    """With no memory for activations every live tensor waits in a memory-mapped file beside the
    output: the statistics really read those files, the weights are bit for bit those of the
    in-memory run, the report says how much went to disk, and no file is left behind."""
    from sparsify.calibrate import pipeline

    path = _residual_mlp(tmp_path)
    cal = {"method": method, "calibration": [str(tmp_path / "cal.npz")], "verify": False}
    in_memory = sparsify.prune(path, output=tmp_path / "mem.onnx", **cal)
    seen = []
    real_accumulate = pipeline.accumulate

    def spying(stats, keys, hessian_for, samples, dense=None, drift_weights=None):
        seen.append((all(isinstance(v, np.memmap) for s in samples for v in s.values()),
                     len(list((tmp_path).glob(".sparsify-activations-*/segment-*")))))
        return real_accumulate(stats, keys, hessian_for, samples, dense, drift_weights)

    monkeypatch.setattr(pipeline, "accumulate", spying)
    on_disk = sparsify.prune(path, output=tmp_path / "disk.onnx", activation_memory=0, **cal)
    # the first stage reads the model inputs (the calibration file's arrays); every later one reads files
    assert seen[0] == (False, 0) and len(seen) > 3 and all(memmapped for memmapped, _ in seen[1:])
    runs = 2 if method == "sparsegpt" else 1  # sparsegpt also carries the dense model's activations
    assert all(runs <= folders <= 2 * runs for _, folders in seen[1:])  # a segment's inputs and outputs, no more
    a, b = weights(tmp_path / "mem.onnx"), weights(tmp_path / "disk.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert in_memory.calibration["activation_bytes_on_disk"] == 0
    assert on_disk.calibration["activation_bytes_on_disk"] >= on_disk.calibration["activation_bytes_peak"] > 0
    assert on_disk.calibration == {**on_disk.calibration, "samples": 6, "segmented": True,
                                   "activation_memory_limit_bytes": 0}
    assert _activation_folders(tmp_path) == []


def test_activation_files_are_removed_when_pruning_fails(tmp_path, monkeypatch):
    from sparsify.calibrate import pipeline

    path = _residual_mlp(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    real = pipeline.prune_with_method

    def failing(*args, **kwargs):
        calls.append(_activation_folders(out))
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prune_with_method", failing)
    with pytest.raises(RuntimeError, match="injected"):
        sparsify.prune(path, output=out / "m.onnx", method="sparsegpt", calibration=[str(tmp_path / "cal.npz")],
                       activation_memory=0, verify=False)
    assert calls[2], "the activations were on disk when the failure came"
    assert sorted(p.name for p in out.iterdir()) == []  # no activation file, no partial output


def test_cli_activation_memory(tmp_path):
    import json
    import subprocess
    import sys

    path = _residual_mlp(tmp_path)
    base = [sys.executable, "-m", "sparsify", str(path), "--method", "wanda", "--calibration", str(tmp_path / "cal.npz"),
            "--no-verify", "-q"]
    good = subprocess.run([*base, "--activation-memory", "0"], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    data = json.loads((tmp_path / "res.sparse.report.json").read_text())
    assert data["calibration"]["activation_bytes_on_disk"] > 0 and data["arguments"]["activation_memory"] == 0
    for value, message in (("-3", "--activation-memory must be an integer >= 0"), ("1e9", "invalid int value")):
        bad = subprocess.run([*base, "--activation-memory", value], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    wrong = subprocess.run([*base, "--fit-iterations", "3"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "--fit-iterations applies only to --method sparsegpt" in wrong.stderr
    sparsegpt = [*base[:4], "--method", "sparsegpt", *base[6:]]
    good = subprocess.run([*sparsegpt, "--fit-iterations", "0"], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert json.loads((tmp_path / "res.sparse.report.json").read_text())["arguments"]["fit_iterations"] == 0


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupt_removes_activation_files(tmp_path, sig, code):
    """Ctrl-C or SIGTERM while activations are on disk: exit 130/143, no activation file and no
    partial output left, the input untouched."""
    import hashlib
    import signal
    import subprocess
    import sys
    import time

    path = _residual_mlp(tmp_path, blocks=6, d=256, ff=1024, rows=64, samples=256, scale=0.05, name="m.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    proc = subprocess.Popen([sys.executable, "-m", "sparsify", str(path), "--method", "sparsegpt", "--calibration",
                             str(tmp_path / "cal.npz"), "--activation-memory", "0", "--no-verify", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".sparsify-activations-*/segment-*/*.npy")):
        time.sleep(0.002)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.npz", "m.onnx"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("options", [{"method": "sparsegpt"}, {"method": "wanda", "permute": True},
                                     {"method": "magnitude", "permute": True}])
def test_budget_sessions_read_the_file_and_match_the_in_memory_model(tmp_path, monkeypatch, options):
    """Budget evaluations make sessions of the model file with the changed weights passed in
    memory: the whole model is never loaded (embedded or external data), and every
    sensitivity, the kept-dense set and the written weights equal the in-memory model's."""
    from sparsify.calibrate import session as session_module
    from sparsify.calibrate import streamed

    path = _residual_mlp(tmp_path)
    external = tmp_path / "ext.onnx"
    onnx.save(onnx.load(path), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    np.savez(tmp_path / "in.npz", x=rand([8, 4, 16], 41))
    kwargs = {**options, "max_output_drift": 100.0, "inputs": str(tmp_path / "in.npz"), "verify": False}
    if options["method"] != "magnitude":
        kwargs["calibration"] = [str(tmp_path / "cal.npz")]
    monkeypatch.setattr(streamed, "file_model_or_none", lambda *_args: None)  # force the in-memory model
    loose = sparsify.prune(path, output=tmp_path / "ref.onnx", **kwargs)
    kwargs["max_output_drift"] = float(np.median(list(loose.budget["sensitivity"].values())))  # some stay dense
    reference = sparsify.prune(path, output=tmp_path / "ref.onnx", **kwargs)

    def refuse(_self, _path):
        raise AssertionError("the whole model was loaded")

    monkeypatch.undo()
    monkeypatch.setattr(session_module.InMemoryModel, "__init__", refuse)
    for source, out in ((path, "a.onnx"), (external, "b.onnx")):
        report = sparsify.prune(source, output=tmp_path / out, **kwargs)
        assert report.budget["kept_dense"] == reference.budget["kept_dense"]
        assert report.budget["sensitivity"] == pytest.approx(reference.budget["sensitivity"], rel=1e-5, abs=1e-7)
        assert report.budget["final_loss"] == pytest.approx(reference.budget["final_loss"], rel=1e-5, abs=1e-7)
        a, b = weights(tmp_path / "ref.onnx"), weights(tmp_path / out)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert 0 < len(reference.budget["kept_dense"]) < len(reference.budget["sensitivity"])  # the budget bit


def test_file_model_applies_only_to_plain_main_graph_initializers(tmp_path):
    from onnx import TensorProto

    from sparsify.calibrate.file_session import file_model_or_none

    floats = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    brain = helper.make_tensor("b", TensorProto.BFLOAT16, [1], [1.0])
    assert file_model_or_none(tmp_path / "m.onnx", [floats, brain], ["w"]) is not None
    assert file_model_or_none(tmp_path / "m.onnx", [floats, brain], ["w", "b"]) is None  # no numpy bfloat16
    assert file_model_or_none(tmp_path / "m.onnx", [floats], ["in_a_constant_node"]) is None


def test_a_down_projection_refit_from_its_own_drift_term_gives_the_same_weights(tmp_path, monkeypatch):
    """An MLP's down projection (few rows for a wide input) has its drift summed per weight during
    calibration; the weights must equal those from the K x K drift term, and the per-weight term
    must really be what its refit used."""
    from sparsify.masks.sparsegpt import Prepared

    path = _residual_mlp(tmp_path, blocks=1, ff=64, rows=16)
    cal = {"method": "sparsegpt", "calibration": [str(tmp_path / "cal.npz")], "verify": False, "fit_iterations": 0}
    used = []
    real_refit = Prepared.refit

    def recording(self, weight, projected=None):
        used.append((weight.shape, projected is not None))
        return real_refit(self, weight, projected)

    monkeypatch.setattr(Prepared, "refit", recording)
    sparsify.prune(path, output=tmp_path / "per_weight.onnx", **cal)
    # as [rows, K]: the head [8, 16] and the up projection [64, 16] (rows >= K / 2) keep the K x K term
    assert sorted(used) == [((8, 16), False), ((16, 64), True), ((64, 16), False)]
    used.clear()
    monkeypatch.setattr("sparsify.calibrate.pipeline.projects", lambda *_: False)
    sparsify.prune(path, output=tmp_path / "square.onnx", **cal)
    assert not any(projected for _, projected in used)
    a, b = weights(tmp_path / "per_weight.onnx"), weights(tmp_path / "square.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name] != 0, b[name] != 0, err_msg=name)
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
