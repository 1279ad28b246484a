"""The torch cuSPARSELt runtime plugin.  This machine has no GPU: the decisions, the chain finder,
the CLI's exit 5 and SparseLinear's own code (reshape, token padding, bias, output layouts) run
for real on the CPU — the last around a dense product, since the cuSPARSELt kernel itself needs a
GPU.  The GPU tests at the end run the real kernel and skip where there is none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sparsify_torch_runtime")
import torch.nn.functional as F  # noqa: E402
from sparsify_torch_runtime import SparseLinear, convert, cusparselt_unavailable_reason, format_decisions, is_2to4_rows  # noqa: E402
from sparsify_torch_runtime.chains import feature_major_chains  # noqa: E402
from sparsify_torch_runtime.convert import size_rule  # noqa: E402
from sparsify_torch_runtime.kernel import linear_ineligible_reason  # noqa: E402
from sparsify_torch_runtime.reference import EncoderBlock  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_REASON = cusparselt_unavailable_reason()
gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU with cuSPARSELt: {GPU_REASON}")


def prune24(weight: torch.Tensor) -> torch.Tensor:
    """Independent 2:4 along the last dim: keep the 2 largest |w| of every 4 (sort-based)."""
    groups = weight.reshape(-1, 4)
    order = groups.abs().float().argsort(dim=1, descending=True)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, :2], True)
    return (groups * keep).reshape(weight.shape)


def sparse_linear(in_f: int, out_f: int, bias: bool = True, dtype=torch.bfloat16, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=bias).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(prune24(layer.weight))
    return layer


class DenseProductSparseLinear(SparseLinear):
    """SparseLinear with the cuSPARSELt pack/product replaced by the same product in dense math
    (``W @ x_t + b``, contiguous ``[out, tokens]`` like the kernel's result), so its own reshape,
    padding, bias and layout code runs on a CPU."""

    def _pack(self, weight):
        return weight.clone()

    def _mm(self, x_t):
        self.seen_inputs = getattr(self, "seen_inputs", []) + [x_t]
        product = self.packed.float() @ x_t.float()
        return (product if self.bias is None else product + self.bias.float()[:, None]).to(x_t.dtype).contiguous()


def pruned(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(prune24(m.weight))
    return model


def test_ineligible_reasons():
    assert "float16 or bfloat16" in linear_ineligible_reason(nn.Linear(32, 32).weight)
    assert "1:2 TF32" in linear_ineligible_reason(nn.Linear(32, 32).weight)
    assert "multiples of 16" in linear_ineligible_reason(sparse_linear(32, 24).weight)
    assert "multiples of 16" in linear_ineligible_reason(sparse_linear(40, 32).weight)
    assert "not 2:4" in linear_ineligible_reason(nn.Linear(32, 32).to(torch.float16).weight)
    assert linear_ineligible_reason(sparse_linear(32, 48).weight) is None


def test_is_2to4_rows_checks_groups_along_the_input_dimension():
    w = prune24(torch.randn(16, 32))
    assert is_2to4_rows(w)
    assert not is_2to4_rows(w.t().contiguous())  # 2:4 along the other axis is not what the kernel packs
    w[3, 4:8] = 1.0
    assert not is_2to4_rows(w)
    assert not is_2to4_rows(torch.zeros(8, 6))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 8, 32), (3, 5, 32), (7, 32), (32,)])  # 15 and 7 tokens need padding
def test_sparse_linear_layout_code_matches_linear(shape, bias):
    layer = sparse_linear(32, 48, bias=bias)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    want = F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())
    for layout in ("row", "feature"):
        got = DenseProductSparseLinear(layer, layout)(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
        rows = got.reshape(-1, 48)
        assert rows.is_contiguous() if layout == "row" else (rows.stride(0) == 1 or rows.shape[0] == 1)  # column-major
        sent = DenseProductSparseLinear(layer, layout)
        sent(x)
        assert sent.seen_inputs[0].shape[1] % 8 == 0  # token count padded to the kernel's multiple


def test_feature_major_chain_hands_a_contiguous_transposed_input_to_the_next_layer():
    first, second = sparse_linear(32, 64, seed=1), sparse_linear(64, 32, seed=2)
    x = torch.randn(2, 8, 32, dtype=torch.bfloat16)
    head, tail = DenseProductSparseLinear(first, "feature"), DenseProductSparseLinear(second, "row")
    got = tail(F.gelu(head(x)))
    want = second(F.gelu(first(x)))
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    assert tail.seen_inputs[0].is_contiguous()  # no copy between the two layers
    assert got.is_contiguous()


def test_chains_found_only_through_elementwise_single_use_paths():
    block = EncoderBlock()
    names = {"qkv", "o", "f1", "f2"}
    chains, note = feature_major_chains(block, names)
    assert note is None and chains == [("f1", "f2")]
    assert feature_major_chains(block, {"qkv", "o", "f1"})[0] == []  # tail not a candidate

    class Branchy(nn.Module):  # f1's output also feeds a residual: must stay row-major
        def __init__(self):
            super().__init__()
            self.f1, self.f2 = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            h = self.f1(x)
            return self.f2(F.relu(h)) + h

    assert feature_major_chains(Branchy(), {"f1", "f2"})[0] == []

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.f1 = nn.Linear(16, 16)

        def forward(self, x):
            return self.f1(x) if x.sum() > 0 else x

    chains, note = feature_major_chains(Untraceable(), {"f1"})
    assert chains == [] and "could not trace" in note


def test_size_rule():
    assert size_rule(4096, 4096, 16384, "row")[0]
    assert size_rule(4096, 1024, 4096, "feature")[0]
    assert not size_rule(4096, 1024, 4096, "row")[0]  # the output copy would eat the gain
    assert "tokens" in size_rule(512, 4096, 4096, "row")[1]
    assert "1024" in size_rule(4096, 768, 4096, "feature")[1]


@pytest.mark.skipif(GPU_REASON is None, reason="checks the no-GPU path")
def test_convert_without_a_gpu_keeps_every_layer_dense_with_the_reason():
    model = pruned(nn.Sequential(EncoderBlock(), EncoderBlock())).to(torch.bfloat16).eval()
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        before = model(x)
    converted, decisions = convert(model, x)
    assert len(decisions) == 8 and not any(d.sparse for d in decisions)
    assert all("CUDA" in d.reason for d in decisions)
    assert {d.name: d.tokens for d in decisions}["0.f1"] == 16
    with torch.no_grad():
        torch.testing.assert_close(converted(x), before)
    table = format_decisions(decisions)
    assert "0 of 8 Linear layers run 2:4" in table and "0.qkv" in table


def test_cli_without_a_gpu_exits_5_with_the_reason(tmp_path):
    if GPU_REASON is None:
        pytest.skip("this machine has a GPU")
    result = subprocess.run([sys.executable, "-m", "sparsify", "torch-runtime", str(ROOT / "tests/recipes/tiny_mlp.py"),
                             "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "CUDA" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    for bad in (["missing_recipe.py"], [str(ROOT / "tests/recipes/tiny_mlp.py"), "--weights", str(tmp_path / "bad.pt")]):
        result = subprocess.run([sys.executable, "-m", "sparsify", "torch-runtime", *bad], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


# ---------------------------------------------------------------- GPU (real cuSPARSELt)

@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_sparse_linear_matches_dense(dtype):
    layer = sparse_linear(256, 512, dtype=dtype).cuda()
    x = torch.randn(4, 100, 256, device="cuda", dtype=dtype)  # 400 tokens: a multiple of 8; 3x33 below is not
    for inputs in (x, x[:3, :33]):
        for layout in ("row", "feature"):
            got = SparseLinear(layer, layout)(inputs)
            want = layer(inputs)
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
            assert got.is_contiguous() == (layout == "row")
    assert SparseLinear(layer).weight_bytes() / (layer.weight.numel() * layer.weight.element_size()) == pytest.approx(0.5625, abs=0.01)


@gpu
def test_gpu_convert_and_graph_keep_the_outputs():
    from sparsify_torch_runtime import GraphedModel

    model = pruned(nn.Sequential(*[EncoderBlock(256, 4, 1024) for _ in range(2)])).cuda().half().eval()
    x = torch.randn(8, 128, 256, device="cuda", dtype=torch.half)
    with torch.inference_mode():
        want = model(x).float()
    converted, decisions = convert(model, x, policy="all")
    assert all(d.sparse for d in decisions)
    assert {d.name: d.output_layout for d in decisions}["0.f1"] == "feature"
    with torch.inference_mode():
        got = GraphedModel(converted, x)(x).float()
    assert ((got - want).norm() / want.norm()).item() < 2e-2


def test_gpu_benchmark_script_smoke_run(tmp_path):
    """The GPU benchmark's plumbing (models, conversion, tables, Amdahl, JSON) on tiny shapes; on a
    CPU its numbers are not measurements, and its 2:4 columns stay empty."""
    import json
    import os

    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_sparse_runtime.py"), "--smoke"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_sparse_runtime.json").read_text())
    (row,) = data["models"]
    assert "error" not in row and 0 < row["linear_share"] < 1 and row["rel_err"] < 1e-2
    if GPU_REASON is not None:
        assert row["bound"] == 1.0 and row["sparse_layers"] == "0/8" and "not measurements" in result.stdout
    assert "## Amdahl bound" in result.stdout and all("error" not in g for g in data["gemm"])
