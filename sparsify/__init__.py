"""sparsify: prune ONNX models to N:M (2:4) sparsity for NVIDIA Sparse Tensor Cores,
and prove with ONNX Runtime that accuracy held."""

__version__ = "0.1.0"

from sparsify.masks.blas import shorten_idle_spin  # noqa: E402  (imports no NumPy)

shorten_idle_spin()  # before anything loads NumPy's BLAS (docs/methods.md, "BLAS threads")

from sparsify.analysis.targets import LayerRow, Outcome, Status, Target  # noqa: E402
from sparsify.api import check, prune  # noqa: E402
from sparsify.errors import (  # noqa: E402
    GateFailed,
    InputError,
    MissingComponent,
    OutputError,
    SparsifyError,
    UsageError,
)
from sparsify.options import PruneOptions  # noqa: E402
from sparsify.pattern import NMPattern, parse_pattern  # noqa: E402
from sparsify.report import Report  # noqa: E402
from sparsify.torch_import.prune_module import prune_torch  # noqa: E402  (imports torch lazily)

__all__ = ["GateFailed", "InputError", "LayerRow", "MissingComponent", "NMPattern", "Outcome", "OutputError",
           "PruneOptions", "Report", "SparsifyError", "Status", "Target", "UsageError", "__version__", "check",
           "parse_pattern", "prune", "prune_torch"]
