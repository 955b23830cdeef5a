"""gws13 packaging.  The C accelerator is optional: without a compiler (or with
GWS13_NO_EXTENSIONS=1) the package installs and runs in pure Python."""

import os
import re
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: fall back
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc):
        sys.stderr.write(f"WARNING: gws13 C speedups not built ({exc}); using pure Python\n")


here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "gws13", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open(os.path.join(here, "README.md")) as f:
    long_description = f.read()

ext_modules = []
if not os.environ.get("GWS13_NO_EXTENSIONS"):
    ext_modules.append(Extension("gws13._speedups", ["gws13/_speedups.c"], optional=True))

setup(
    name="gws13",
    version=version,
    description="RFC 6455 WebSockets for gevent WSGI servers (pywsgi, gunicorn, Flask, Bottle)",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    packages=find_packages(include=["gws13", "gws13.*"]),
    ext_modules=ext_modules,
    cmdclass={"build_ext": optional_build_ext},
    python_requires=">=3.9",
    install_requires=["gevent>=24"],
    extras_require={
        # flask-socketio, python-socketio[client] and gevent-websocket: tests/test_socketio.py
        # (engine.io hands its WebSockets to environ["wsgi.websocket"] only when
        # gevent-websocket is importable)
        "test": ["pytest", "pytest-timeout", "hypothesis", "requests", "websocket-client", "websockets", "trustme",
                 "flask", "bottle", "gunicorn", "redis", "playwright",
                 "flask-socketio", "python-socketio[client]", "gevent-websocket"],
        "flask": ["flask"],
        "bottle": ["bottle"],
        "gunicorn": ["gunicorn"],
        "redis": ["redis"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Flask",
        "Topic :: Internet :: WWW/HTTP :: WSGI",
    ],
)
