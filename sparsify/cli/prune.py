"""`sparsify prune MODEL.onnx` (also `sparsify MODEL.onnx`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sparsify.errors import EXIT_GATE, EXIT_OK
from sparsify.options import PruneOptions, add_prune_arguments

if TYPE_CHECKING:
    pass


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune a model to N:M and check parity (default command)",
                       description="Prune every eligible Conv/MatMul/Gemm weight to N:M along the axis "
                                   "TensorRT needs, write the sparse ONNX, check parity with ONNX Runtime.")
    p.add_argument("model", help="input .onnx file (never modified), or a torch.export .pt2 archive "
                                 "(loading one runs its code: only trusted files)")
    add_prune_arguments(p)
    p.add_argument("--wide", action="store_true", help="print full layer names (default: long names shortened in the middle)")
    p.add_argument("-q", "--quiet", action="store_true", help="print no table (errors still go to stderr)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.api import prune
    from sparsify.progress import Progress

    options = PruneOptions.from_namespace(args)
    progress = None if args.quiet else Progress("pruning weight")
    if args.model.endswith(".pt2"):
        from sparsify.torch_import.prune_module import prune_pt2

        report = prune_pt2(args.model, options.output, options=options, interface="cli", progress=progress)
    else:
        report = prune(args.model, options=options, interface="cli", progress=progress)
    if not args.quiet:
        print(report.format_table(wide=args.wide))
    if report.parity is not None and not report.parity.gates_passed:
        failed = [g.name for g in report.parity.gates if not g.passed]
        print(f"sparsify: parity gate failed: {', '.join(failed)} (output and report were written)", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK
