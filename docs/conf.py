"""Sphinx configuration of gws13's documentation (`tox -e docs` builds it with -W).

Pages are Markdown (myst-parser). The API reference is autodoc on the installed
gws13; the parameter table and the benchmark charts are generated at build time
by the extensions in _ext/ from gws13.params._SPEC and benchmarks/results.json,
so neither can go stale.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import gws13  # noqa: E402

project = "gws13"
author = "the gws13 developers"
copyright = "2026, the gws13 developers"
release = gws13.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "gws13_params",
    "gws13_bench",
    "gws13_api_coverage",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every name is documented once, under gws13.<name> (or its integration module).
add_module_names = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"gws13 {release}"
html_theme_options = {
    "description": "RFC 6455 WebSockets for gevent WSGI servers",
    "fixed_sidebar": True,
}
html_static_path = []
