"""`sparsify check MODEL.onnx`: audit which eligible weights are N:M along the right axis."""

from __future__ import annotations

import argparse
import sys

from sparsify.errors import EXIT_OK, EXIT_STRICT


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="audit a model: which eligible weights are N:M",
                       description="Report, for every Conv/MatMul/Gemm weight, whether it is N:M along "
                                   "its reduction axis. Nothing is written unless --report is given.")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("--pattern", default="2:4", help="N:M pattern (default 2:4)")
    p.add_argument("--strict", action="store_true", help="exit 4 if any eligible weight is not N:M")
    p.add_argument("--report", help="also write the JSON report here")
    p.add_argument("--include", action="append", metavar="REGEX", help="audit only matching layers/weights")
    p.add_argument("--exclude", action="append", metavar="REGEX", help="ignore matching layers/weights")
    p.add_argument("--wide", action="store_true", help="print full layer names")
    p.add_argument("-q", "--quiet", action="store_true", help="print no table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sparsify.api import check

    arguments = {k: v for k, v in vars(args).items() if k != "run"}
    report = check(args.model, args.pattern, report_path=args.report, include=args.include,
                   exclude=args.exclude, arguments=arguments)
    if not args.quiet:
        print(report.format_table(wide=args.wide))
    bad = report.count("non_compliant")
    if args.strict and bad:
        print(f"sparsify: {bad} eligible target(s) are not {report.pattern}", file=sys.stderr)
        return EXIT_STRICT
    return EXIT_OK
