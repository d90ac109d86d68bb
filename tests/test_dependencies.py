"""Every import in the repository is declared in setup.cfg, so a fresh `pip install -e '.[test]'` runs it.

A dependency installed by hand once hid an undeclared `pandas` import from CI; FawltyDeps compares the
imports of medtl_jax/, launch/, configs/, tests/ and benchmarks/ (configured in pyproject.toml) with
setup.cfg's install_requires and extras, resolving import names through this environment's metadata.
"""

import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fawltydeps(cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fawltydeps", "--pyenv", sys.prefix, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_every_import_is_declared_and_every_dependency_used():
    run = _fawltydeps(REPO)
    assert run.returncode == 0, f"undeclared or unused dependencies:\n{run.stdout}\n{run.stderr}"


def test_the_check_catches_an_undeclared_import(tmp_path):
    """The same check on a project whose code imports a package setup.cfg does not list."""
    (tmp_path / "setup.cfg").write_text("[options]\ninstall_requires =\n    numpy==2.4.6\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(textwrap.dedent("""
        import numpy
        import scipy.stats
    """))
    run = _fawltydeps(tmp_path, "--code", "pkg", "--deps", "setup.cfg", "--base-dir", ".")
    assert run.returncode != 0
    assert "'scipy'" in run.stdout
