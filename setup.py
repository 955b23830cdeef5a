"""Build of gws13's optional C accelerator; all other metadata is in pyproject.toml.

``gws13._speedups`` is built when a C compiler and the Python headers are there.
When it cannot be built (or ``GWS13_NO_EXTENSIONS=1`` is set) the build goes on
in pure Python, says so in a warning, and the wheel is tagged ``py3-none-any``
(it holds no compiled code); at run time ``gws13.accelerated`` and
``python -m gws13`` tell which path is in use.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 70.1 has its own; before that it came with the wheel package
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:  # an old setuptools without wheel: `setup.py build_ext --inplace` still works
        bdist_wheel = None

NO_EXTENSIONS = bool(os.environ.get("GWS13_NO_EXTENSIONS"))


def _banner(lines):
    # Loud on purpose: pip shows a backend's output only with -v, `python -m build`
    # and `setup.py` always do, and a silent pure-Python build is slower by 1.5-3x.
    bar = "*" * 78
    sys.stderr.write("\n".join(["", bar, *("WARNING: " + line for line in lines), bar, ""]) + "\n")
    sys.stderr.flush()


class optional_build_ext(build_ext):
    """build_ext that never fails the install: a failed compile is reported and
    remembered (``self.failed``) so that the wheel is tagged as pure Python."""

    failed = None  # the error, when the accelerator could not be built

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (setuptools fails while setting it up)
            self._failed(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # a compiler error, missing Python headers...
            self._failed(exc)

    def _failed(self, exc):
        self.failed = exc
        _banner([f"gws13's C accelerator (gws13/_speedups.c) was not built: {exc}",
                 "gws13 is installed in pure Python: it works, only more slowly.",
                 "Install a C compiler and the Python headers (Debian: gcc python3-dev), then reinstall;",
                 "`python -m gws13` says which path an install uses."])


class wheel_pure_without_extension(bdist_wheel or object):
    """A wheel whose extension failed to build holds no compiled code: tag it
    py3-none-any instead of cpXY-cpXY-<platform>."""

    def run(self):
        if not self.skip_build:
            self.reinitialize_command("build_ext").inplace = False
            self.run_command("build")
            self.skip_build = True  # built once; bdist_wheel must not rebuild (and warn twice)
        if self.distribution.get_command_obj("build_ext").failed is not None:
            self.root_is_pure = True
            self.distribution.ext_modules = []  # so that `install` lays it out as purelib too
        super().run()


ext_modules = []
if NO_EXTENSIONS:
    _banner(["GWS13_NO_EXTENSIONS is set: gws13 is built without its C accelerator (pure Python)."])
else:
    ext_modules.append(Extension("gws13._speedups", ["gws13/_speedups.c"], optional=True))

cmdclass = {"build_ext": optional_build_ext}
if bdist_wheel is not None:
    cmdclass["bdist_wheel"] = wheel_pure_without_extension
setup(ext_modules=ext_modules, cmdclass=cmdclass)
