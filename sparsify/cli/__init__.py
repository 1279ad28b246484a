"""Command-line entry point: argument wiring and exit codes only; logic lives in api.py."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from sparsify.errors import EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, SparsifyError, Terminated

__all__ = ["main"]

_CORE_SUBCOMMANDS = ("prune", "check", "plugins", "lottery")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        raise SparsifyError(message) from None


def build_parser() -> argparse.ArgumentParser:
    from sparsify import __version__
    from sparsify.cli import check, lottery, prune

    parser = _Parser(prog="sparsify", description="Prune ONNX models to N:M (2:4) structured sparsity.")
    parser.add_argument("--version", action="version", version=f"sparsify {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    prune.add_parser(sub)
    check.add_parser(sub)
    lottery.add_parser(sub)
    plugins_cmd = sub.add_parser("plugins", help="list deployment plugins and whether they are usable")
    plugins_cmd.set_defaults(run=_list_plugins)
    for info in _plugins():
        if info.plugin is not None:
            try:
                info.plugin.add_parser(sub, info)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the core CLI
                info.available, info.reason = False, f"its CLI failed to register: {exc}"
    return parser


_PLUGINS = None


def _plugins():
    """Discovered once per process; discovery problems never break the core commands."""
    global _PLUGINS
    if _PLUGINS is None:
        from sparsify.plugins import discover

        try:
            _PLUGINS = discover()
        except Exception:  # noqa: BLE001
            _PLUGINS = []
    return _PLUGINS


def _list_plugins(args) -> int:
    infos = _plugins()
    if not infos:
        print("no plugins installed (entry-point group 'sparsify.plugins')")
    for info in infos:
        state = "available" if info.available else f"unavailable ({info.reason})"
        print(f"{info.name:12} {state:40} {info.description}")
    return 0


def _is_plugin_command(word: str) -> bool:
    # A model path ends in .onnx (or exists); only then is it the shorthand for prune.
    if word.endswith((".onnx", ".pt2")) or os.path.isfile(word):
        return False
    return any(word in getattr(info.plugin, "commands", [info.name]) for info in _plugins())


def _on_sigterm(signum, frame):
    raise Terminated()


def _published_note() -> str:
    """What an interrupted run left: publication is all or nothing (see io/publish.py)."""
    from sparsify.io.publish import PUBLISHED

    if not PUBLISHED:
        return "no output was written"
    return "the outputs were already published: " + ", ".join(PUBLISHED)


class _QuietOnClosedPipe:
    """stdout that goes silent once its reader is gone (``sparsify ... | head -1``): the run
    still publishes its outputs and exits with its own code."""

    def __init__(self, stream):
        self._stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.closed_pipe = True
        try:  # later flushes (also at interpreter exit) go nowhere instead of failing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stdout = sys.stdout
    if stdout is not None and not isinstance(stdout, _QuietOnClosedPipe):
        sys.stdout = _QuietOnClosedPipe(stdout)  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _main(argv: list[str]) -> int:
    # `sparsify MODEL.onnx ...` is shorthand for `sparsify prune MODEL.onnx ...`.
    if argv and argv[0] not in _CORE_SUBCOMMANDS and not argv[0].startswith("-") and not _is_plugin_command(argv[0]):
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
        print(f"sparsify: interrupted; {_published_note()}", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print(f"sparsify: terminated; {_published_note()}", file=sys.stderr)
        return EXIT_SIGTERM
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: say so, exit 1
        if os.environ.get("SPARSIFY_DEBUG"):
            traceback.print_exc()
        print(f"sparsify: internal error: {type(exc).__name__}: {exc} (a bug; rerun with SPARSIFY_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
