"""Fail the docs build (a warning, an error under -W) when a name in
``gws13.__all__`` is not documented in the API reference."""

from __future__ import annotations

from sphinx.util import logging

logger = logging.getLogger(__name__)


def check(app, env):
    import gws13

    documented = set(env.get_domain("py").objects)
    missing = [name for name in gws13.__all__ if f"gws13.{name}" not in documented]
    for name in missing:
        logger.warning(f"gws13.{name} is in gws13.__all__ but not in the API reference (docs/api.md)")
    for name in ("accelerated", "accelerator_reason", "__version__"):
        if f"gws13.{name}" not in documented:
            logger.warning(f"gws13.{name} is not in the API reference (docs/api.md)")


def setup(app):
    app.connect("env-check-consistency", check)
    return {"version": "1", "parallel_read_safe": True}
