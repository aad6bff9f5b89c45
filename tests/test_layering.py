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
        "    import training.data.curriculum as c\n"
        "    from .. import training\n"
    )
    found = [line.split(": ", 1)[1] for line in forbidden_imports(str(source), ("training",), root=str(tmp_path))]
    assert found == ["imports training.errors", "imports training.data.curriculum", "imports training"]


# Inside training/: the problems below the loop, the plumbing beside it, the evaluation above it.
# Each sub-package and the training modules (beyond itself) it may import.
INSIDE = {
    "training/data": ("training.errors", "training.data"),
    "training/runtime": ("training.errors", "training.config", "training.data", "training.runtime"),
}
LOOP = "training.adversarial_trainer"  # only the CLIs build the loop itself


def _training_imports(path: str) -> list:
    """(line, module) for every `training.*` module `path` imports, at any depth, outside `if __name__ == "__main__"`."""
    rel = os.path.relpath(path, ROOT)
    package = rel[: -len(".py")].split(os.sep)[:-1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    main_blocks = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    skipped = {id(n) for block in main_blocks for n in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        for module in _imported_modules(node, package):
            if module.split(".")[0] != "training":
                continue
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from training.runtime import checkpoint` imports training.runtime.checkpoint
                module = _resolve(module, [alias.name for alias in node.names])
            found.append((node.lineno, module))
    return found


def _resolve(module: str, names: list) -> str:
    for name in names:
        candidate = os.path.join(ROOT, *module.split("."), name)
        if os.path.isfile(candidate + ".py") or os.path.isdir(candidate):
            return f"{module}.{name}"
    return module


@pytest.mark.parametrize("package", sorted(INSIDE))
def test_training_sub_packages_import_only_what_lies_below_them(package):
    allowed = INSIDE[package]
    offending = [
        f"{os.path.relpath(path, ROOT)}:{line}: imports {module}"
        for path in _python_files(package) for line, module in _training_imports(path)
        if not any(module == a or module.startswith(a + ".") for a in allowed)
    ]
    assert not offending, f"{package}/ may import only {', '.join(allowed)} of training/:\n" + "\n".join(offending)


def test_only_the_command_lines_build_the_loop():
    offending = [
        f"{os.path.relpath(path, ROOT)}:{line}: imports {module}"
        for path in _python_files("training") for line, module in _training_imports(path)
        if module == LOOP and not path.endswith(os.path.join("training", "adversarial_trainer.py"))
    ]
    assert not offending, "\n".join(offending)


def _module_of(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def _cycle(graph: dict) -> list:
    """One cycle of `graph` (module -> modules it imports) as a list of modules, or [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycles_inside_training():
    """Lazy imports count: a cycle hidden inside a function is still a cycle between the modules."""
    graph = {}
    for path in _python_files("training"):
        me = _module_of(path)
        graph[me] = {m for _, m in _training_imports(path) if m != me and not me.startswith(m + ".")}
    # a package's __init__ is imported with each of its modules: an import of it is not a cycle back
    cycle = _cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_house_stays_small():
    """A module that grows a second job is split before it grows a third; the loop stays on one screen."""
    def lines(path):
        with open(path, encoding="utf-8") as f:
            return sum(1 for _ in f)

    data_modules = os.path.join("training", "data", "curriculum")  # the families' data, one module per kind
    long = [f"{os.path.relpath(p, ROOT)}: {lines(p)} lines" for p in _python_files("training")
            if data_modules not in p and lines(p) > 450]
    assert not long, "modules over 450 lines:\n" + "\n".join(long)
    assert lines(os.path.join(ROOT, "training", "adversarial_trainer.py")) <= 300
    assert lines(os.path.join(ROOT, "README.md")) <= 250
