"""Imports run one way: train.py / inference.py -> training/ -> models/, reasoning/, sandbox/.

A module that imports a layer above its own, even lazily inside a function,
cannot be used without that layer and invites import cycles.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIS = ("train", "inference")
# Each package and the top-level modules it must never import.
ABOVE = {
    "models": ("training",) + CLIS,
    "reasoning": ("training",) + CLIS,
    "sandbox": ("training",) + CLIS,
    "training": CLIS,
}


def _python_files(package: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return found


def _imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    """The absolute names an import statement reaches; `package` resolves relative ones."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = package[: len(package) - node.level + 1] if node.level else []
    if node.module:
        return [".".join(base + [node.module])]
    return [".".join(base + [alias.name]) for alias in node.names]  # from .. import x


def forbidden_imports(path: str, forbidden: tuple[str, ...], root: str = ROOT) -> list[str]:
    """`file:line: imports NAME` for every import in `path`, at any depth, that reaches a `forbidden` module."""
    rel = os.path.relpath(path, root)
    package = rel[: -len(".py")].split(os.sep)[:-1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        for module in _imported_modules(node, package):
            if module.split(".")[0] in forbidden:
                found.append((node.lineno, f"{rel}:{node.lineno}: imports {module}"))
    return [line for _, line in sorted(found)]


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_import_reaches_a_layer_above(package):
    files = _python_files(package)
    assert files, f"{package}/ holds no Python files"
    offending = [line for path in files for line in forbidden_imports(path, ABOVE[package])]
    assert not offending, f"{package}/ must not import {', '.join(ABOVE[package])}:\n" + "\n".join(offending)


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    lower = tmp_path / "lower"
    lower.mkdir()
    source = lower / "lazy.py"
    source.write_text(
        "import os\n"
        "from . import sibling\n"
        "\n"
        "def f():\n"
        "    from training.errors import UserError\n"
        "    import training.curriculum as c\n"
        "    from .. import training\n"
    )
    found = [line.split(": ", 1)[1] for line in forbidden_imports(str(source), ("training",), root=str(tmp_path))]
    assert found == ["imports training.errors", "imports training.curriculum", "imports training"]
