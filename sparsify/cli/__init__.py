"""Command-line entry point: argument wiring and exit codes only; logic lives in api.py."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from sparsify.errors import EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, SparsifyError, Terminated

__all__ = ["main"]

_SUBCOMMANDS = ("prune", "check")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        raise SparsifyError(message) from None


def build_parser() -> argparse.ArgumentParser:
    from sparsify import __version__
    from sparsify.cli import check, prune

    parser = _Parser(prog="sparsify", description="Prune ONNX models to N:M (2:4) structured sparsity.")
    parser.add_argument("--version", action="version", version=f"sparsify {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    prune.add_parser(sub)
    check.add_parser(sub)
    return parser


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sparsify MODEL.onnx ...` is shorthand for `sparsify prune MODEL.onnx ...`.
    if argv and argv[0] not in _SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "prune")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SparsifyError as exc:
            print(f"sparsify: error: {exc} (see sparsify --help)", file=sys.stderr)
            return EXIT_USAGE
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.run(args)
    except SparsifyError as exc:
        print(f"sparsify: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sparsify: interrupted; no output was written", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("sparsify: terminated; no output was written", file=sys.stderr)
        return EXIT_SIGTERM
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so, exit 1
        if os.environ.get("SPARSIFY_DEBUG"):
            traceback.print_exc()
        print(f"sparsify: internal error: {type(exc).__name__}: {exc} (a bug; rerun with SPARSIFY_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
