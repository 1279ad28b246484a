"""The package layout is the pipeline: each package imports only packages to its left.

io -> analysis -> masks -> verify -> calibrate -> report -> options -> api -> (torch_import, plugin_api,
lottery) -> cli.  Plugins import only ``sparsify.plugin_api``.
``errors``, ``pattern`` and ``progress`` are the foundation every layer may use.  Every import
statement counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sparsify"

LAYERS = {
    "errors": 0, "pattern": 0.5, "progress": 0.5, "table": 0.5,
    "io": 1, "analysis": 2, "masks": 3, "verify": 4, "calibrate": 5, "report": 6, "options": 6.5, "api": 7,
    "plugin_api": 8.7, "torch_import": 8, "lottery": 8.5, "plugins": 8.5, "cli": 9, "__main__": 10,
}


def _unit(module: str) -> str:
    """'sparsify.io.npz' -> 'io'; 'sparsify.api' -> 'api'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "sparsify" and [a.name for a in node.names] == ["__version__"]:
                continue  # the version string, defined before anything else in the package
            found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "sparsify" or name.startswith("sparsify.")]


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    own = _unit(_module_name(path, root))
    if own == "":  # sparsify/__init__.py re-exports the public API
        return []
    rank = LAYERS[own]
    bad = []
    for line, name in _imports(path, root):
        other = _unit(name)
        if other == own:
            continue
        if other not in LAYERS:
            bad.append(f"{path.relative_to(root.parent)}:{line} imports {name} (package not in the layer table)")
        elif LAYERS[other] >= rank:
            bad.append(f"{path.relative_to(root.parent)}:{line}: {own} (layer {rank}) imports {name} (layer {LAYERS[other]})")
    return bad


def test_every_module_belongs_to_a_layer():
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")} - {""}
    assert units <= set(LAYERS), units - set(LAYERS)


def test_each_package_imports_only_packages_to_its_left():
    bad = [v for path in sorted(ROOT.rglob("*.py")) for v in _violations(path)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("from sparsify.api import prune\n", "io (layer 1) imports sparsify.api"),
    ("def f():\n    from sparsify.calibrate import pipeline\n", "io (layer 1) imports sparsify.calibrate"),
    ("from ..masks import nm\n", "io (layer 1) imports sparsify.masks"),
])
def test_the_check_catches_an_upward_import(tmp_path, source, expected):
    fake_root = tmp_path / "sparsify"
    (fake_root / "io").mkdir(parents=True)
    module = fake_root / "io" / "bad.py"
    module.write_text(source)
    found = _violations(module, fake_root)
    assert any(expected in v for v in found), found


def test_plugins_import_only_the_plugin_api():
    """Plugins see sparsify only through sparsify.plugin_api (a stable surface)."""
    plugins = ROOT.parent / "plugins"
    bad = []
    for path in sorted(plugins.glob("*/sparsify_*/**/*.py")):
        if "/build/" in str(path):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(plugins)}:{node.lineno} imports {n}" for n in names
                    if (n == "sparsify" or n.startswith("sparsify.")) and n != "sparsify.plugin_api"]
    assert not bad, "\n".join(bad)
