"""The package is layered: each subpackage imports only the ones below it, no module imports itself back
through others, and no function-local import hides a cycle. Read from the source (every import
statement, at any depth), so the test cannot be fooled by import order."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "medtl_jax"
# Bottom first: a module may import its own layer and the layers before it.
LAYERS = ("runtime", "models", "weights", "data", "tasks", "transfer", "config", "train", "inference", "sweep",
          "report")


def _module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(root: pathlib.Path) -> dict[str, list[tuple[str, int, bool]]]:
    """module -> [(imported module, line, inside a function)] for imports of the package itself; an imported
    name that is a submodule counts as that module."""
    modules = {_module_name(root, p): p for p in root.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root.name:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    found.append((target if target in modules else node.module, node.lineno, id(node) in local))
            elif isinstance(node, ast.Import):
                found += [(a.name, node.lineno, id(node) in local) for a in node.names
                          if a.name.split(".")[0] == root.name]
        out[name] = found
    return out


def layer_violations(root: pathlib.Path, layers=LAYERS) -> list[str]:
    """'module:line imports target' for every import of a higher layer, and every loose module at the root."""
    def layer(module: str) -> int:
        parts = module.split(".")
        return layers.index(parts[1]) if len(parts) > 1 and parts[1] in layers else -1

    found = _imports(root)
    bad = [f"{m} is not in a layer ({', '.join(layers)})" for m in found if m != root.name and layer(m) < 0]
    for module, imports in found.items():
        for target, line, _ in imports:
            if layer(target) > layer(module) >= 0:
                bad.append(f"{module}:{line} imports {target} ({layers[layer(target)]} is above "
                           f"{layers[layer(module)]})")
    return bad


def local_imports(root: pathlib.Path) -> list[str]:
    """Imports of the package made inside a function (a way to hide a cycle)."""
    return [f"{m}:{line} imports {t} inside a function" for m, imports in _imports(root).items()
            for t, line, inside in imports if inside]


# Folders of the repository beside the package: the package must not import them (they sit above it).
REPO_FOLDERS = ("configs", "launch", "tests", "benchmarks")


def repo_imports(root: pathlib.Path) -> list[str]:
    """Imports of the repository's own folders (configs/, launch/, ...) from inside the package, at any depth."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad += [f"{_module_name(root, path)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in REPO_FOLDERS]
    return bad


def import_cycles(root: pathlib.Path) -> list[list[str]]:
    """Module cycles (each as the list of its modules), by depth-first search."""
    found = _imports(root)
    graph = {m: sorted({t for t, _, _ in imports if t != m and t in found}) for m, imports in found.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_module_imports_a_higher_layer():
    assert layer_violations(PACKAGE) == []


def test_no_import_cycles_and_no_function_local_imports():
    assert import_cycles(PACKAGE) == []
    assert local_imports(PACKAGE) == []


def test_the_package_imports_no_repository_folder():
    assert repo_imports(PACKAGE) == []


def test_the_checks_catch_an_upward_import_a_cycle_and_a_hidden_one(tmp_path):
    pkg = tmp_path / "medtl_jax"
    for sub in ("runtime", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime" / "io.py").write_text("from medtl_jax.train import loop\n")
    (pkg / "train" / "loop.py").write_text("def f():\n    from medtl_jax.runtime import io\n    from configs.base import x\n")
    (pkg / "loose.py").write_text("")
    assert layer_violations(pkg) == ["medtl_jax.loose is not in a layer (runtime, models, weights, data, tasks, "
                                     "transfer, config, train, inference, sweep, report)",
                                     "medtl_jax.runtime.io:1 imports medtl_jax.train.loop (train is above runtime)"]
    assert import_cycles(pkg) == [["medtl_jax.runtime.io", "medtl_jax.train.loop", "medtl_jax.runtime.io"]]
    assert local_imports(pkg) == ["medtl_jax.train.loop:2 imports medtl_jax.runtime.io inside a function"]
    assert repo_imports(pkg) == ["medtl_jax.train.loop:3 imports configs.base"]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_is_a_documented_package(layer):
    init = PACKAGE / layer / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{init} needs a docstring"
