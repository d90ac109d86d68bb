"""The package is layered: each subpackage imports only the ones below it, no module imports itself back
through others, and no function-local import hides a cycle. Read from the source (every import
statement, at any depth), so the test cannot be fooled by import order. The tests folder mirrors the
layers: tests/<layer>/ holds the tests of medtl_jax/<layer>/."""

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


# tests/ mirrors the package: a folder per layer, one for the launch/ entry points and one for what tests share;
# only the set-up and the project-wide checks stand at its top.
TESTS = pathlib.Path(__file__).resolve().parent
TEST_FOLDERS_BESIDE_LAYERS = ("launch", "helpers")
TOP_LEVEL_TEST_FILES = ("__init__.py", "conftest.py", "test_dependencies.py", "test_layers.py")


def misplaced_test_files(tests: pathlib.Path, layers=LAYERS) -> list[str]:
    """Python files of the tests folder outside its mirror of the layers, and its folders that are not packages
    (without __init__.py two test modules of one name would clash)."""
    folders = (*layers, *TEST_FOLDERS_BESIDE_LAYERS)
    bad = []
    for path in sorted(tests.rglob("*.py")):
        parts, shown = path.relative_to(tests).parts, path.relative_to(tests.parent).as_posix()
        if len(parts) == 1 and parts[0] not in TOP_LEVEL_TEST_FILES:
            bad.append(f"{shown} stands at the top (only {', '.join(TOP_LEVEL_TEST_FILES)} do)")
        elif len(parts) > 1 and parts[0] not in folders:
            bad.append(f"{shown} is not in a folder of a layer or of {', '.join(TEST_FOLDERS_BESIDE_LAYERS)}")
        elif len(parts) > 2:
            bad.append(f"{shown} is more than one folder deep")
        elif parts[0] == "helpers" and parts[-1].startswith("test_"):
            bad.append(f"{shown} is a test module among the helpers")
    for folder in sorted({p.parent for p in tests.rglob("*.py")}):
        if not (folder / "__init__.py").is_file():
            bad.append(f"{folder.relative_to(tests.parent).as_posix()}/ has no __init__.py")
    return bad


def test_the_tests_folder_mirrors_the_layers():
    assert misplaced_test_files(TESTS) == []


def test_the_mirror_check_catches_loose_misfiled_and_unpackaged_tests(tmp_path):
    tests = tmp_path / "tests"
    files = ["__init__.py", "conftest.py", "test_layers.py", "test_loose.py", "shared.py",
             "train/__init__.py", "train/test_trainer.py", "launch/__init__.py", "launch/test_cli.py",
             "helpers/__init__.py", "helpers/tiny.py", "helpers/test_tiny.py", "trainer/__init__.py",
             "trainer/test_steps.py", "models/test_resnet.py", "train/deep/__init__.py", "train/deep/test_x.py"]
    for name in files:
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text("")
    top = "(only __init__.py, conftest.py, test_dependencies.py, test_layers.py do)"
    assert misplaced_test_files(tests) == [
        "tests/helpers/test_tiny.py is a test module among the helpers",
        f"tests/shared.py stands at the top {top}",
        f"tests/test_loose.py stands at the top {top}",
        "tests/train/deep/__init__.py is more than one folder deep",
        "tests/train/deep/test_x.py is more than one folder deep",
        "tests/trainer/__init__.py is not in a folder of a layer or of launch, helpers",
        "tests/trainer/test_steps.py is not in a folder of a layer or of launch, helpers",
        "tests/models/ has no __init__.py"]
    for name in ("test_loose.py", "shared.py", "helpers/test_tiny.py", "trainer/__init__.py", "trainer/test_steps.py",
                 "train/deep/__init__.py", "train/deep/test_x.py"):
        (tests / name).unlink()
    (tests / "models" / "__init__.py").write_text("")
    assert misplaced_test_files(tests) == []


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_is_a_documented_package(layer):
    init = PACKAGE / layer / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{init} needs a docstring"
