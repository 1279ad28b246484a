"""``sparsify.prune_torch``: export a module, then prune it through the ONNX pass, either
by magnitude or with masks found in PyTorch (keyed by parameter name)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from sparsify.errors import UsageError
from sparsify.io.npz import ArraySource, read_arrays
from sparsify.options import Interface, PruneOptions
from sparsify.report import Report
from sparsify.torch_import.export import export_to_onnx, quiet_output, require_torch
from sparsify.torch_import.mapping import map_parameters

__all__ = ["prune_pt2", "prune_torch"]


def _as_array(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _place_masks(masks: dict, parameters: dict, dense: Path) -> dict[str, np.ndarray]:
    """{parameter name: mask} -> {ONNX weight name: mask}, placed by value (transposed where the
    export transposed the weight); a mask of the wrong shape is a UsageError."""
    arrays = {name: _as_array(parameters[name]) for name in masks}
    mapping = map_parameters(arrays, onnx.load(str(dense)))
    placed = {}
    for name, mask in masks.items():
        mask = _as_array(mask)
        if mask.shape != arrays[name].shape:
            raise UsageError(f"mask {name!r} has shape {list(mask.shape)}, the parameter {list(arrays[name].shape)}")
        place = mapping[name]
        placed[place.onnx_name] = mask.T if place.transposed else mask
    return placed


def _example_feeds(example_inputs, dense: Path) -> dict[str, np.ndarray] | None:
    """The module's example inputs keyed by the exported graph's input names (what parity
    then runs on), or None when they do not line up one to one."""
    args = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    arrays = [_as_array(a) for a in args if hasattr(a, "detach") or isinstance(a, np.ndarray)]
    graph = onnx.load(str(dense), load_external_data=False).graph
    stored = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in stored]
    if len(arrays) != len(args) or len(arrays) != len(names):
        return None
    return dict(zip(names, arrays, strict=True))


def _settle(options: PruneOptions | None, keywords: dict, output, interface: Interface) -> PruneOptions:
    if options is None:
        options = PruneOptions.from_keywords({**keywords, "output": output})
    elif keywords:
        raise UsageError(f"give options= or keywords, not both (got {', '.join(sorted(keywords))})")
    else:
        options = replace(options, output=output)
    options.validate(interface)
    return options


def _run_on_export(dense: Path, options: PruneOptions, interface: Interface, example_inputs, progress) -> Report:
    """The ONNX pass on the exported model; parity on the example inputs unless ``inputs`` says otherwise."""
    from sparsify.api import prune

    label = None
    if options.inputs is None and options.verify:
        feeds = _example_feeds(example_inputs, dense)
        if feeds is not None:
            options, label = replace(options, inputs=feeds), "example inputs"
    return prune(dense, options=options, record_input=False, inputs_label=label, interface=interface, progress=progress)


def prune_torch(module, example_inputs, output, *, masks: dict | None = None, exporter: str = "legacy",
                input_names: list[str] | None = None, output_names: list[str] | None = None,
                dynamic_axes: dict | None = None, options: PruneOptions | None = None, progress=None,
                interface: Interface = "api", **keywords) -> Report:
    """Export ``module`` with ``example_inputs`` and prune it into ``output`` (.onnx).

    ``masks``: {parameter name: 0/1 tensor of the parameter's shape}; each lands on the ONNX
    weight that holds that parameter (found by value, transposed as exported).  Parity runs on
    ``example_inputs`` (unless ``inputs=`` is given).  ``input_names``, ``output_names`` and
    ``dynamic_axes`` go to the exporter; every other keyword is a :class:`PruneOptions` field.
    Returns the Report of the ONNX pass (its ``input`` is null: the dense export lives in a
    temporary folder).
    """
    require_torch()
    options = _settle(options, keywords, output, interface)
    if masks is not None and options.masks is not None:
        raise UsageError("give masks= (keyed by parameter name) or options.masks, not both")
    with tempfile.TemporaryDirectory(prefix="sparsify-torch-") as workdir:
        dense = export_to_onnx(module, example_inputs, Path(workdir) / "dense.onnx", exporter,
                               input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)
        if masks is not None:
            parameters = dict(module.named_parameters())
            unknown = sorted(set(masks) - set(parameters))
            if unknown:
                raise UsageError(f"mask {unknown[0]!r} names no parameter of the module")
            options = replace(options, masks=_place_masks(masks, parameters, dense))
        return _run_on_export(dense, options, interface, example_inputs, progress)


def prune_pt2(path: str | Path, output: str | Path | None = None, *, options: PruneOptions | None = None,
              progress=None, interface: Interface = "api", **keywords) -> Report:
    """Prune a ``torch.export`` archive (``.pt2``).  Loading one runs code from it: only load
    archives you trust.  The archive's own example inputs drive the export and parity.
    ``masks`` may be keyed by the module's parameter names: they are placed by value like
    ``prune_torch``'s; keys that are not parameter names pass through as ONNX names."""
    torch = require_torch()
    from sparsify.api import default_output_path

    path = Path(path)
    output = Path(output) if output is not None else default_output_path(path.with_suffix(".onnx"))
    options = _settle(options, keywords, output, interface)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with quiet_output():
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure to load is bad input
        first = str(exc).strip().splitlines()
        raise UsageError(f"{path}: not a loadable torch.export archive ({type(exc).__name__}: "
                         f"{first[0][:200] if first else ''})") from None
    args = program.example_inputs[0] if program.example_inputs else ()
    with tempfile.TemporaryDirectory(prefix="sparsify-pt2-") as workdir:
        dense = Path(workdir) / f"{path.stem}.onnx"
        export_to_onnx(program, tuple(args), dense, exporter="dynamo")
        if options.masks is not None:
            options = replace(options, masks=_onnx_keyed_masks(options.masks, dict(program.module().named_parameters()),
                                                               dense))
        return _run_on_export(dense, options, interface, tuple(args), progress)


def _onnx_keyed_masks(source: ArraySource, parameters: dict, dense: Path) -> dict[str, np.ndarray]:
    masks = read_arrays(source, "masks")
    by_param = {k: v for k, v in masks.items() if k in parameters}
    keyed = {k: v for k, v in masks.items() if k not in by_param}
    keyed.update(_place_masks(by_param, parameters, dense) if by_param else {})
    return keyed
