"""What an install is: the C accelerator really loads when it could be built
(a silent pure-Python fallback fails here), `python -m gws13` reports it, the
reasons given when it is off, and the metadata and files an install carries."""

from __future__ import annotations

import importlib.machinery
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import gevent
import pytest

import gws13

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(gws13.__file__).resolve().parent
DISABLED = bool(os.environ.get("GWS13_NO_EXTENSIONS"))


def compiler() -> str | None:
    """The C compiler setuptools would use, if it is on this machine."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "").split()
    return shutil.which(cc[0]) if cc else None


def run_report(*args, cwd):
    # `python -m` puts the working directory first on sys.path: run it where no
    # other gws13 is, so that it reports on the one this test imported
    return subprocess.run([sys.executable, "-m", "gws13", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60, cwd=str(cwd))


@pytest.mark.skipif(DISABLED, reason="GWS13_NO_EXTENSIONS is set: this install is pure Python on purpose")
def test_the_c_accelerator_is_in_use_when_a_compiler_is_there():
    # The point: a build that compiled the extension but cannot load it (as on
    # Python 3.9 before the Py_NewRef fallback) must not pass CI in pure Python.
    if compiler() is None:
        pytest.skip("no C compiler here: a pure-Python install is expected")
    assert gws13.accelerated, (
        f"a C compiler is here ({compiler()}) but gws13 runs in pure Python: {gws13.accelerator_reason} "
        "(from a source tree: `python setup.py build_ext --inplace`; set GWS13_NO_EXTENSIONS=1 "
        "to test the pure-Python path on purpose)")
    assert "is loaded" in gws13.accelerator_reason
    from gws13 import frames
    assert frames.apply_mask is not frames._py_apply_mask and frames.scan_small is not None


@pytest.mark.skipif(not DISABLED, reason="the pure-Python install is tested with GWS13_NO_EXTENSIONS=1 (tox -e nocext)")
def test_a_pure_python_install_says_so():
    assert not gws13.accelerated, (
        "GWS13_NO_EXTENSIONS is set but the C accelerator is in use: the variable acts when gws13 is "
        "built, not when it runs; reinstall with it set to test the pure-Python path")
    assert "not installed" in gws13.accelerator_reason
    assert not list(PACKAGE.glob("_speedups*.so")), "GWS13_NO_EXTENSIONS=1 at build time still built it"


def test_python_m_gws13_reports_versions_and_the_accelerator(tmp_path):
    result = run_report(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"gws13 {gws13.__version__} ({PACKAGE}" in out
    assert f"gevent {gevent.__version__}" in out
    assert f"Python {platform.python_version()}" in out
    state = "on" if gws13.accelerated else "off"
    assert f"C accelerator: {state}: {gws13.accelerator_reason}" in out

    required = run_report("--require-accelerated", cwd=tmp_path)
    assert required.returncode == (0 if gws13.accelerated else 1), required
    if not gws13.accelerated:
        assert "the C accelerator is required" in required.stderr


def _copy_package(tmp_path: Path) -> Path:
    """A copy of the imported gws13 without any compiled extension."""
    dest = tmp_path / "gws13"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return dest


def _probe(tmp_path: Path) -> subprocess.CompletedProcess:
    # (an editable install's finder would map gws13._speedups back to the
    # source tree's built extension: the copy is imported without it)
    code = ("import sys, warnings; warnings.simplefilter('always')\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, '__module__', '')).startswith('__editable__')]\n"
            "import gws13; print(gws13.accelerated); print(gws13.accelerator_reason)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60, env=env, cwd=str(tmp_path))


def test_reason_when_the_extension_is_not_installed(tmp_path):
    _copy_package(tmp_path)
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    accelerated, reason = result.stdout.splitlines()
    assert accelerated == "False"
    assert "gws13._speedups is not installed" in reason and "GWS13_NO_EXTENSIONS" in reason
    assert "RuntimeWarning" not in result.stderr  # not built is a choice, not an accident


def test_an_extension_that_does_not_load_is_named_and_warned_about(tmp_path):
    # What Python 3.9 did before the fix: the .so is there, importing it fails
    # ("undefined symbol: Py_NewRef"); here, a file that is not a shared object.
    package = _copy_package(tmp_path)
    (package / ("_speedups" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"not an ELF file")
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    accelerated, reason = result.stdout.splitlines()
    assert accelerated == "False"
    assert reason.startswith("the C extension gws13._speedups is there but does not load: ")
    assert "RuntimeWarning: gws13 runs in pure Python" in result.stderr


def test_py_typed_is_installed():
    # PEP 561: without it, users' type checkers treat gws13 as untyped
    assert (PACKAGE / "py.typed").is_file()


def test_installed_metadata():
    from importlib import metadata
    try:
        dist = metadata.distribution("gws13")
    except metadata.PackageNotFoundError:
        pytest.skip("gws13 is imported from a source tree, not installed")
    if str(getattr(dist, "_path", "")).endswith(".egg-info"):
        pytest.skip("metadata of a source-tree build (egg-info), not of an install")
    meta = dist.metadata
    assert meta["Version"] == gws13.__version__
    assert meta["Requires-Python"] == ">=3.9"
    assert meta["License-Expression"] == "BSD-3-Clause"
    classifiers = meta.get_all("Classifier")
    for minor in range(9, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Typing :: Typed" in classifiers
    files = [str(f) for f in dist.files or ()]
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files), files
    assert "gws13/py.typed" in files


def test_changelog_names_the_current_version():
    changelog = ROOT / "CHANGELOG.md"
    assert re.search(rf"^## {re.escape(gws13.__version__)}\b", changelog.read_text(), re.M), \
        f"CHANGELOG.md has no section for {gws13.__version__}"
