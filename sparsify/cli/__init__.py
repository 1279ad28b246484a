"""Command-line entry point: argument wiring and exit codes only; logic lives in api.py."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from sparsify.errors import (
    EXIT_INTERNAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    MissingComponent,
    SparsifyError,
    Terminated,
)

__all__ = ["main"]

_CORE_SUBCOMMANDS = ("prune", "check", "plugins", "lottery")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        raise SparsifyError(message) from None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI.  Plugin commands are listed from metadata; only ``command``'s plugin (the one
    about to run) is imported and registers its real parser."""
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
    parser.set_defaults(missing_plugin=None)
    for word in _plugin_commands():
        if word == command:
            missing = _register_plugin(sub, word)
            if missing is not None:
                parser.set_defaults(missing_plugin=(word, missing))
        else:
            _stub(sub, word, _command_help(word))
    return parser


def _plugin_commands() -> list[str]:
    """The project's plugin commands plus any other installed plugin's entry-point name."""
    from sparsify.plugins import PLUGIN_COMMANDS

    owned = {c.entry_point for c in PLUGIN_COMMANDS.values()}
    return [*PLUGIN_COMMANDS, *sorted(n for n in _entry_points() if n not in owned and n not in _CORE_SUBCOMMANDS)]


def _entry_points() -> dict:
    try:
        from sparsify.plugins import entry_points

        return entry_points()
    except Exception:  # noqa: BLE001 - broken metadata must not break the core commands
        return {}


def _command_help(word: str) -> str:
    from sparsify.plugins import PLUGIN_COMMANDS

    known = PLUGIN_COMMANDS.get(word)
    entry = known.entry_point if known else word
    text = known.help if known else f"plugin {word}"
    return text if entry in _entry_points() else f"{text} [plugin not installed: {known.package if known else word}]"


def _stub(sub, word: str, help_text: str) -> None:
    stub = sub.add_parser(word, help=help_text, add_help=False)
    stub.add_argument("rest", nargs=argparse.REMAINDER)
    stub.set_defaults(run=lambda _args: _missing_plugin(word))


def _missing_plugin(word: str, reason: str = "") -> int:
    from sparsify.plugins import PLUGIN_COMMANDS

    known = PLUGIN_COMMANDS.get(word)
    if known is None:
        raise MissingComponent(f"sparsify {word}: its plugin is unavailable ({reason})")
    how = f"pip install {known.package} (from the sparsify source: pip install ./{known.source})"
    detail = f" ({reason})" if reason else ""
    raise MissingComponent(f"sparsify {word} needs the {known.package} plugin{detail}: {how}")


def _register_plugin(sub, word: str) -> str | None:
    """Import the plugin providing ``word`` and let it add its parser.  A missing or broken
    plugin leaves a stub; returns why ("" when simply not installed), None when registered."""
    from sparsify.plugins import PLUGIN_COMMANDS, load

    known = PLUGIN_COMMANDS.get(word)
    entry = _entry_points().get(known.entry_point if known else word)
    if entry is None:
        _stub(sub, word, _command_help(word))
        return ""
    info = load(entry)
    if info.plugin is None:
        _stub(sub, word, info.reason)
        return info.reason
    try:
        info.plugin.add_parser(sub, info)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the core CLI
        _stub(sub, word, f"its CLI failed to register: {exc}")
        return f"its CLI failed to register: {exc}"
    return None


def _list_plugins(_args) -> int:
    from sparsify.plugins import discover

    try:
        infos = discover()
    except Exception:  # noqa: BLE001
        infos = []
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
    return word in _plugin_commands()


def _on_sigterm(_signum, _frame):
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
        parser = build_parser(argv[0] if argv else None)
        missing = parser.get_default("missing_plugin")
        if missing is not None and not {"-h", "--help"} & set(argv):
            return _missing_plugin(*missing)  # before parsing: the real parser is not there to accept its flags
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
