"""`sparsify prune MODEL.onnx` (also `sparsify MODEL.onnx`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sparsify.analysis.select import DEFAULT_MIN_CHANNELS
from sparsify.errors import EXIT_GATE, EXIT_OK

if TYPE_CHECKING:
    from sparsify.report import Report
from sparsify.report import Report


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune a model to N:M and check parity (default command)",
                       description="Prune every eligible Conv/MatMul/Gemm weight to N:M along the axis "
                                   "TensorRT needs, write the sparse ONNX, check parity with ONNX Runtime.")
    p.add_argument("model", help="input .onnx file (never modified), or a torch.export .pt2 archive "
                                 "(loading one runs its code: only trusted files)")
    p.add_argument("--pattern", default="2:4", help="N:M pattern, 0 < N < M (default 2:4)")
    p.add_argument("-o", "--output", help="output .onnx (default: <stem>.sparse.onnx beside the input)")
    p.add_argument("--report", help="JSON report path (default: <output stem>.report.json)")
    p.add_argument("--include", action="append", metavar="REGEX", help="prune only layers/weights matching (repeatable)")
    p.add_argument("--exclude", action="append", metavar="REGEX", help="skip layers/weights matching (repeatable)")
    p.add_argument("--only-profitable", action="store_true",
                   help=f"skip layers too small for TensorRT to pick a sparse kernel (C_in·k² and C_out >= {DEFAULT_MIN_CHANNELS}, k×k kernel)")
    p.add_argument("--min-channels", type=int, default=DEFAULT_MIN_CHANNELS, help=argparse.SUPPRESS)
    p.add_argument("--masks", metavar="MASKS.npz",
                   help="apply these 0/1 masks (keys = weight names as in the report) instead of computing masks")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--input-shape", action="append", metavar="NAME:1x3x224x224", help="shape for a dynamic input (repeatable)")
    p.add_argument("--inputs", metavar="DATA.npz", help="real inputs: keys = input names, samples along axis 0")
    p.add_argument("--seed", type=int, default=0, help="seed for random parity inputs (default 0)")
    p.add_argument("--max-rel-error", type=float, metavar="X", help="gate: exit 3 if any output's relative L2 error > X")
    p.add_argument("--min-top1-agreement", type=float, metavar="X", help="gate: exit 3 if top-1 agreement < X")
    g = p.add_argument_group("better masks without retraining")
    g.add_argument("--method", default="magnitude", choices=["magnitude", "wanda", "sparsegpt"],
                   help="magnitude (default); wanda: |W|*||X||; sparsegpt: OBS weight update (both need --calibration)")
    g.add_argument("--calibration", action="append", metavar="FILE.npz",
                   help="calibration inputs (keys = input names, samples along axis 0; repeatable)")
    g.add_argument("--no-bias-correction", action="store_true",
                   help="with wanda/sparsegpt, leave biases untouched (default: shift each pruned layer's bias "
                        "so its mean output on the calibration data matches the dense model's)")
    g.add_argument("--permute", action="store_true",
                   help="permute input channels to raise the magnitude N:M keeps, where the producing layer and the "
                        "channel-wise ops between can be permuted to match (exact; gains in the report)")
    g.add_argument("--max-accuracy-drop", type=float, metavar="X",
                   help="keep the most sensitive layers dense until top-1 accuracy on --eval drops by at most X (0.01 = 1 point)")
    g.add_argument("--max-output-drift", type=float, metavar="X",
                   help="keep the most sensitive layers dense until the outputs' relative L2 error is at most X")
    g.add_argument("--eval", metavar="FILE.npz", help="labelled evaluation set: the inputs plus class indices under 'labels'")
    p.add_argument("--max-input-bytes", type=int, default=None, metavar="N",
                   help="refuse npz files whose arrays declare more than N bytes in total (default 8 GiB)")
    p.add_argument("--wide", action="store_true", help="print full layer names (default: long names shortened in the middle)")
    p.add_argument("-q", "--quiet", action="store_true", help="print no table (errors still go to stderr)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.api import prune
    from sparsify.progress import Progress

    arguments = {k: v for k, v in vars(args).items() if k != "run"}
    front_end: Callable[..., Report] = prune
    if args.model.endswith(".pt2"):
        from sparsify.torch_import.prune_module import prune_pt2

        def front_end(model, pattern, output, **kw) -> Report:  # same call shape, .pt2 front end
            return prune_pt2(model, output, pattern=pattern, **kw)
    report = front_end(
        args.model, args.pattern, args.output, report_path=args.report, include=args.include,
        exclude=args.exclude, only_profitable=args.only_profitable, min_channels=args.min_channels,
        verify=not args.no_verify, input_shapes=args.input_shape, inputs=args.inputs, seed=args.seed,
        max_rel_error=args.max_rel_error, min_top1_agreement=args.min_top1_agreement,
        progress=None if args.quiet else Progress("pruning weight"), arguments=arguments,
        method=args.method, calibration=args.calibration, max_accuracy_drop=args.max_accuracy_drop,
        max_output_drift=args.max_output_drift, eval_data=args.eval, bias_correction=not args.no_bias_correction,
        permute=args.permute, masks=args.masks, max_input_bytes=args.max_input_bytes,
    )
    if not args.quiet:
        print(report.format_table(wide=args.wide))
    if report.parity is not None and not report.parity.gates_passed:
        failed = [g.name for g in report.parity.gates if not g.passed]
        print(f"sparsify: parity gate failed: {', '.join(failed)} (output and report were written)", file=sys.stderr)
        return EXIT_GATE
    return EXIT_OK
