"""``PruneOptions``: the one description of what ``prune`` accepts.

Each field is an API keyword of :func:`sparsify.prune`, and its metadata generates the matching
``sparsify prune`` flag (name, help, metavar, repeatable, ``--no-X`` for a default-on switch).
:meth:`PruneOptions.validate` is the one validation, its errors naming API parameters
(``calibration=``) or CLI flags (``--calibration``) by the caller's interface, and
:meth:`PruneOptions.arguments` is what the report records under ``arguments``.
"""

from __future__ import annotations

import argparse
import operator
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sparsify.analysis.profit import DEFAULT_MIN_CHANNELS
from sparsify.calibrate.options import DataAwareOptions
from sparsify.errors import UsageError
from sparsify.io.npz import ArraySource
from sparsify.masks.kept_fit import ITERATIONS as FIT_ITERATIONS
from sparsify.masks.registry import METHODS, NEEDS_CALIBRATION
from sparsify.pattern import NMPattern, parse_pattern

__all__ = ["Interface", "PruneOptions", "add_prune_arguments", "as_list"]

Interface = Literal["api", "cli"]

_DATA_AWARE = "better masks without retraining"


def _opt(default: Any = None, *flags: str, help: str = "", metavar: str | None = None, repeat: bool = False,
         negate: bool = False, choices: Sequence[str] | None = None, group: str | None = None,
         hidden: bool = False, kind: type | None = None) -> Any:
    meta = {"flags": flags, "help": help, "metavar": metavar, "repeat": repeat, "negate": negate,
            "choices": choices, "group": group, "hidden": hidden, "kind": kind}
    if repeat:
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PruneOptions:
    pattern: str | NMPattern = _opt("2:4", "--pattern", help="N:M pattern, 0 < N < M (default 2:4)")
    output: str | Path | None = _opt(None, "-o", "--output",
                                     help="output .onnx (default: <stem>.sparse.onnx beside the input)")
    report_path: str | Path | None = _opt(None, "--report", help="JSON report path (default: <output stem>.report.json)")
    include: list[str] = _opt(None, "--include", repeat=True, metavar="REGEX",
                              help="prune only layers/weights matching (repeatable)")
    exclude: list[str] = _opt(None, "--exclude", repeat=True, metavar="REGEX",
                              help="skip layers/weights matching (repeatable)")
    only_profitable: bool = _opt(False, "--only-profitable",
                                 help="skip layers too small for TensorRT to pick a sparse kernel (C_in·k² and C_out >= "
                                      f"{DEFAULT_MIN_CHANNELS}, k×k kernel)")
    min_channels: int = _opt(DEFAULT_MIN_CHANNELS, "--min-channels", hidden=True, kind=int)
    masks: ArraySource | None = _opt(None, "--masks", metavar="MASKS.npz",
                                     help="apply these 0/1 masks (keys = weight names as in the report) instead of "
                                          "computing masks")
    verify: bool = _opt(True, "--no-verify", negate=True, help="skip the ONNX Runtime parity check")
    input_shapes: list[str] | dict[str, list[int]] = _opt(None, "--input-shape", repeat=True, metavar="NAME:1x3x224x224",
                                                          help="shape for a dynamic input (repeatable)")
    inputs: ArraySource | None = _opt(None, "--inputs", metavar="DATA.npz",
                                      help="real inputs: keys = input names, samples along axis 0")
    seed: int = _opt(0, "--seed", kind=int, help="seed for random parity inputs (default 0)")
    max_rel_error: float | None = _opt(None, "--max-rel-error", kind=float, metavar="X",
                                       help="gate: exit 3 if any output's relative L2 error > X")
    min_top1_agreement: float | None = _opt(None, "--min-top1-agreement", kind=float, metavar="X",
                                            help="gate: exit 3 if top-1 agreement < X")
    method: str = _opt("magnitude", "--method", choices=METHODS, group=_DATA_AWARE,
                       help="magnitude (default); wanda: |W|*||X||; sparsegpt: OBS weight update (both need --calibration)")
    calibration: list[ArraySource] = _opt(None, "--calibration", repeat=True, metavar="FILE.npz", group=_DATA_AWARE,
                                          help="calibration inputs (keys = input names, samples along axis 0; repeatable)")
    bias_correction: bool = _opt(True, "--no-bias-correction", negate=True, group=_DATA_AWARE,
                                 help="with wanda/sparsegpt, leave biases untouched (default: shift each pruned layer's "
                                      "bias so its mean output on the calibration data matches the dense model's)")
    fit_iterations: int | None = _opt(None, "--fit-iterations", kind=int, metavar="N", group=_DATA_AWARE,
                                      help="sparsegpt: conjugate-gradient iterations fitting the kept weights to the "
                                           f"mask OBS chose (default {FIT_ITERATIONS}; 0: OBS's own weights, fastest)")
    permute: bool = _opt(False, "--permute", group=_DATA_AWARE,
                         help="permute input channels to raise the magnitude N:M keeps, where the producing layer and "
                              "the channel-wise ops between can be permuted to match (exact; gains in the report)")
    max_accuracy_drop: float | None = _opt(None, "--max-accuracy-drop", kind=float, metavar="X", group=_DATA_AWARE,
                                           help="keep the most sensitive layers dense until top-1 accuracy on --eval "
                                                "drops by at most X (0.01 = 1 point)")
    max_output_drift: float | None = _opt(None, "--max-output-drift", kind=float, metavar="X", group=_DATA_AWARE,
                                          help="keep the most sensitive layers dense until the outputs' relative L2 "
                                               "error is at most X")
    eval_data: ArraySource | None = _opt(None, "--eval", metavar="FILE.npz", group=_DATA_AWARE,
                                         help="labelled evaluation set: the inputs plus class indices under 'labels'")
    activation_memory: int | None = _opt(None, "--activation-memory", kind=int, metavar="BYTES", group=_DATA_AWARE,
                                         help="calibration activations held in memory, at most; beyond it they wait "
                                              "in memory-mapped files beside the output (default: a quarter of RAM; "
                                              "0: always on disk)")
    max_input_bytes: int | None = _opt(None, "--max-input-bytes", kind=int, metavar="N",
                                       help="refuse npz files whose arrays declare more than N bytes in total "
                                            "(default 8 GiB)")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any]) -> PruneOptions:
        """Options from API keywords; an unknown keyword is a usage error naming the known ones.
        A repeatable option also takes one string (one item, never its characters)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise UsageError(f"unknown parameter {unknown[0]!r} (known: {', '.join(known)})")
        values: dict[str, Any] = {}
        for name, value in keywords.items():
            if known[name].metadata["repeat"] and not isinstance(value, Mapping):
                value = as_list(value)
            values[name] = value
        return cls(**values)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> PruneOptions:
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(args, f.name)
            values[f.name] = (not value) if f.metadata["negate"] else value
            if f.metadata["repeat"] and value is None:
                values[f.name] = []
        return cls(**values)

    # -- validation -----------------------------------------------------------------------

    def name(self, option: str, interface: Interface) -> str:
        """How an error names ``option``: ``--flag`` on the command line, ``option=`` in the API."""
        if interface == "api":
            return f"{option}="
        return next(f.metadata["flags"][-1] for f in fields(self) if f.name == option)

    def nm(self) -> NMPattern:
        return self.pattern if isinstance(self.pattern, NMPattern) else parse_pattern(self.pattern)

    def validate(self, interface: Interface = "api") -> None:
        """Every check that needs no file: one usage error naming the option, before any work."""
        n = lambda option: self.name(option, interface)  # noqa: E731 - a short local alias
        self.nm()
        self._validate_numbers(n)
        if self.min_top1_agreement is not None and not 0 <= self.min_top1_agreement <= 1:
            raise UsageError(f"{n('min_top1_agreement')} must be in [0, 1], got {self.min_top1_agreement}")
        if not self.verify and (self.max_rel_error is not None or self.min_top1_agreement is not None):
            verify = "--no-verify" if interface == "cli" else "verify=False"
            raise UsageError(f"{verify} cannot be combined with a parity gate")
        if self.method not in METHODS:
            raise UsageError(f"unknown {n('method')} {self.method!r}: choose from {', '.join(METHODS)}")
        if not 0 <= self.seed < 2**63:
            raise UsageError(f"{n('seed')} must be a non-negative integer below 2**63, got {self.seed}")
        self._validate_data_aware(n)
        if self.masks is not None and self.data_aware().beyond_magnitude:
            raise UsageError(f"{n('masks')} applies given masks: it cannot be combined with {n('method')}, "
                             f"{n('permute')} or a budget")

    def _validate_numbers(self, n) -> None:
        """Numeric options become float / int (numpy scalars too); signs and ranges checked."""
        for option in ("max_rel_error", "min_top1_agreement", "max_accuracy_drop", "max_output_drift"):
            value = getattr(self, option)
            if value is None:
                continue
            try:
                setattr(self, option, float(value))  # numpy scalars too
            except (TypeError, ValueError):
                raise UsageError(f"{n(option)} must be a number, got {value!r}") from None
            if option != "min_top1_agreement" and not getattr(self, option) >= 0:
                raise UsageError(f"{n(option)} must be >= 0, got {value}")
        for option in ("max_input_bytes", "activation_memory", "fit_iterations"):
            value = getattr(self, option)
            if value is None:
                continue
            what = "a count" if option == "fit_iterations" else "a number of bytes"
            try:
                setattr(self, option, operator.index(value))  # numpy integers too, never a float or a bool
            except TypeError:
                raise UsageError(f"{n(option)} must be an integer ({what}), got {value!r}") from None
            if isinstance(value, bool) or getattr(self, option) < 0:
                raise UsageError(f"{n(option)} must be an integer >= 0, got {value!r}")

    def _validate_data_aware(self, n) -> None:
        calibrated = self.method in NEEDS_CALIBRATION
        budget = self.max_accuracy_drop is not None or self.max_output_drift is not None
        if calibrated and not self.calibration:
            raise UsageError(f"{n('method')} {self.method} needs {n('calibration')} FILE.npz (inputs it learns "
                             "activations from)")
        if self.calibration and not calibrated:
            raise UsageError(f"{n('calibration')} is used only by {n('method')} wanda or sparsegpt (give one, or drop "
                             f"{n('calibration')})")
        if not self.bias_correction and not calibrated:
            off = "--no-bias-correction" if n("method") == "--method" else "bias_correction=False"
            raise UsageError(f"{off} applies only to {n('method')} wanda or sparsegpt")
        if self.fit_iterations is not None and self.method != "sparsegpt":
            raise UsageError(f"{n('fit_iterations')} applies only to {n('method')} sparsegpt")
        if self.activation_memory is not None and not self.calibration:
            raise UsageError(f"{n('activation_memory')} applies only with {n('calibration')} data")
        if self.eval_data is not None and not budget:
            raise UsageError(f"{n('eval_data')} is used only by {n('max_accuracy_drop')} or {n('max_output_drift')}")
        if self.max_accuracy_drop is not None and self.max_output_drift is not None:
            raise UsageError(f"give {n('max_accuracy_drop')} or {n('max_output_drift')}, not both")
        if self.max_accuracy_drop is not None and self.eval_data is None:
            raise UsageError(f"{n('max_accuracy_drop')} needs {n('eval_data')} FILE.npz (inputs plus 'labels')")
        if self.max_output_drift is not None and self.eval_data is None and self.inputs is None:
            raise UsageError(f"{n('max_output_drift')} needs {n('eval_data')} or {n('inputs')} data")

    # -- views ----------------------------------------------------------------------------

    def data_aware(self) -> DataAwareOptions:
        return DataAwareOptions(self.method, list(self.calibration), self.max_accuracy_drop, self.max_output_drift,
                                self.eval_data, self.inputs, self.bias_correction, self.permute,
                                self.activation_memory, self.fit_iterations)

    def read_files(self) -> dict[str, list[Path]]:
        """The npz files these options read, by field (arrays given in memory are not files)."""
        files: dict[str, list[ArraySource | None]] = {
            "inputs": [self.inputs], "calibration": list(self.calibration), "eval_data": [self.eval_data],
            "masks": [self.masks]}
        return {label: [Path(v) for v in values if isinstance(v, str | Path)] for label, values in files.items()}

    def arguments(self) -> dict[str, Any]:
        """What the report records: every option, files as paths, arrays given in memory as a marker."""
        recorded: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            recorded[f.name] = _recordable(value)
        return recorded


def _recordable(value: Any) -> Any:
    if isinstance(value, NMPattern):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        if all(isinstance(v, list | tuple) and all(isinstance(d, int) for d in v) for v in value.values()):
            return {str(k): list(v) for k, v in value.items()}  # input shapes
        return "<arrays given in memory>"
    if isinstance(value, list | tuple):
        return [_recordable(v) for v in value]
    return value


def as_list(value: Any) -> list:
    """A repeatable option: one string (or path) is one item, never its characters."""
    if value is None:
        return []
    if isinstance(value, str | Path | Mapping):
        return [value]
    return list(value)


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """Generate ``sparsify prune``'s option flags from the fields of :class:`PruneOptions`."""
    groups: dict[str, Any] = {}
    for f in fields(PruneOptions):
        meta = f.metadata
        target: Any = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kwargs: dict[str, Any] = {"dest": f.name, "help": argparse.SUPPRESS if meta["hidden"] else meta["help"]}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = None if meta["repeat"] else (None if f.default is MISSING else f.default)
            if meta["repeat"]:
                kwargs["action"] = "append"
            if meta["kind"] is not None:
                kwargs["type"] = meta["kind"]
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
        target.add_argument(*meta["flags"], **kwargs)
