"""Load a RECIPE: ``file.py`` (its ``recipe()``), ``file.py:function`` or ``module:function``,
returning an object with ``model``, ``train(model, epochs)``, ``evaluate(model) -> float`` and
``example_inputs``.  Loading a recipe runs its code."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from sparsify.errors import UsageError

__all__ = ["load_recipe"]

REQUIRED = ("model", "train", "evaluate", "example_inputs")


def _function(spec: str):
    target, _, name = spec.partition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise UsageError(f"recipe {target}: no such file")
            module_spec = importlib.util.spec_from_file_location(f"sparsify_recipe_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise UsageError(f"recipe {target}: not a loadable Python file")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside the user's code is bad input
        raise UsageError(f"recipe {spec}: failed to import: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name or "recipe", None)
    if not callable(function):
        raise UsageError(f"recipe {spec}: no function {name or 'recipe'!r}")
    return function


def load_recipe(spec: str):
    function = _function(spec)
    try:
        recipe = function()
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"recipe {spec}: raised {type(exc).__name__}: {exc}") from None
    missing = [name for name in REQUIRED if not hasattr(recipe, name)]
    if missing:
        raise UsageError(f"recipe {spec}: the object it returned lacks {', '.join(missing)}")
    if not callable(recipe.train) or not callable(recipe.evaluate):
        raise UsageError(f"recipe {spec}: train and evaluate must be callables")
    if not hasattr(recipe.model, "named_parameters"):
        raise UsageError(f"recipe {spec}: model is not a torch.nn.Module")
    return recipe
