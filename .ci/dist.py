"""Checks of gws13's release artifacts, run by `tox -e package` (and the sdist
unpacking step of `tox -e nocext`).

    python .ci/dist.py check DIST    # DIST holds the sdist and wheel `python -m build` made
    python .ci/dist.py unpack DIST DEST   # DEST = the sdist's contents (the suite runs from there)

`check` verifies that the sdist holds what running the suite and building the
docs from it needs, that LICENSE and py.typed are in the wheel, that the wheel
holds the C extension when a compiler is there, and that a wheel built from the
sdist without a compiler warns in the build output and is tagged py3-none-any.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile

SDIST_MUST_HAVE = [
    "LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "setup.py", "tox.ini", "MANIFEST.in",
    "gws13/__init__.py", "gws13/__main__.py", "gws13/_speedups.c", "gws13/py.typed",
    "tests/conftest.py", "tests/test_packaging.py", "examples/echo.py", "examples/chat.py",
    "scripts/autobahn.py", "benchmarks/results.json", "docs/conf.py", "docs/index.md",
    "docs/_ext/gws13_params.py", "tests/test_docs.py",
]
DASHBOARD = ["gws13/dashboard/__init__.py", "gws13/dashboard/static/index.html",
             "gws13/dashboard/static/dashboard.js", "gws13/dashboard/static/dashboard.css",
             "gws13/dashboard/static/favicon.svg"]
SDIST_MUST_HAVE += DASHBOARD
WHEEL_MUST_HAVE = ["gws13/__init__.py", "gws13/__main__.py", "gws13/py.typed"] + DASHBOARD


def fail(message: str) -> None:
    sys.exit(f"dist check FAILED: {message}")


def one(dist: str, pattern: str) -> str:
    found = glob.glob(os.path.join(dist, pattern))
    if len(found) != 1:
        fail(f"expected one {pattern} in {dist}, found {found}")
    return found[0]


def sdist_names(path: str) -> list[str]:
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        return [name[len(top) + 1:] for name in tar.getnames() if name.startswith(top + "/")]


def unpack(dist: str, dest: str) -> str:
    sdist = one(dist, "gws13-*.tar.gz")
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        tar.extractall(tmp)
        (top,) = os.listdir(tmp)
        shutil.move(os.path.join(tmp, top), dest)
    return dest


def wheel_tag(path: str) -> str:
    # name-version-python-abi-platform.whl
    return "-".join(os.path.basename(path)[:-len(".whl")].split("-")[2:])


def compiler_available() -> bool:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def check(dist: str) -> None:
    sdist = one(dist, "gws13-*.tar.gz")
    wheel = one(dist, "gws13-*.whl")
    names = set(sdist_names(sdist))
    missing = [name for name in SDIST_MUST_HAVE if name not in names]
    if missing:
        fail(f"the sdist lacks {missing}")
    junk = sorted(n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n or "/_build/" in n)
    if junk:
        fail(f"the sdist holds build products: {junk[:10]}")
    print(f"sdist ok: {os.path.basename(sdist)}, {len(names)} entries")

    with zipfile.ZipFile(wheel) as whl:
        wnames = whl.namelist()
    missing = [name for name in WHEEL_MUST_HAVE if name not in wnames]
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in wnames):
        missing.append("*.dist-info/licenses/LICENSE")
    if missing:
        fail(f"the wheel lacks {missing}")
    extension = [n for n in wnames if n.startswith("gws13/_speedups") and n.endswith((".so", ".pyd"))]
    tag = wheel_tag(wheel)
    if compiler_available() and not os.environ.get("GWS13_NO_EXTENSIONS"):
        if not extension or tag.endswith("-any"):
            fail(f"a C compiler is here but the wheel has no C extension ({tag}, {extension})")
    print(f"wheel ok: {os.path.basename(wheel)} ({'with' if extension else 'without'} the C extension)")

    # Without a compiler: warned in the build output, pure wheel, no compiled code.
    with tempfile.TemporaryDirectory() as tmp:
        src = unpack(dist, os.path.join(tmp, "src"))
        out = os.path.join(tmp, "out")
        env = dict(os.environ, CC=os.path.join(tmp, "no-such-compiler"))
        env.pop("GWS13_NO_EXTENSIONS", None)
        run = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", out, src],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if run.returncode:
            fail(f"the build without a compiler failed:\n{run.stdout[-3000:]}")
        if "WARNING: gws13's C accelerator (gws13/_speedups.c) was not built" not in run.stdout:
            fail(f"the build without a compiler did not warn:\n{run.stdout[-3000:]}")
        pure = one(out, "gws13-*.whl")
        with zipfile.ZipFile(pure) as whl:
            compiled = [n for n in whl.namelist() if n.endswith((".so", ".pyd"))]
            wheel_meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
        if wheel_tag(pure) != "py3-none-any" or compiled or "Root-Is-Purelib: true" not in wheel_meta:
            fail(f"the build without a compiler gave {os.path.basename(pure)} holding {compiled}")
        print(f"no-compiler build ok: warned, {os.path.basename(pure)}")


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "check":
        check(argv[1])
    elif len(argv) == 3 and argv[0] == "unpack":
        print(unpack(argv[1], argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
