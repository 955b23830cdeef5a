"""``python -m gws13``: what this install is (versions, C accelerator on or off and why).

``python -m gws13 --require-accelerated`` exits with status 1 when the C
accelerator is not in use: a deployment check that a build did not silently
fall back to pure Python.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import List, Optional

__all__ = ["report", "main"]


def report() -> str:
    """The report ``python -m gws13`` prints, as text."""
    import gevent
    import greenlet

    import gws13

    lines = [
        f"gws13 {gws13.__version__} ({gws13.__file__.rsplit('/', 1)[0]})",
        f"gevent {gevent.__version__}, greenlet {greenlet.__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()}, "
        f"{sys.executable}) on {platform.platform()}",
        f"C accelerator: {'on' if gws13.accelerated else 'off'}: {gws13.accelerator_reason}",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Print :func:`report`; return the exit status (1 when ``--require-accelerated``
    is given and the C accelerator is off)."""
    parser = argparse.ArgumentParser(prog="python -m gws13", description=__doc__.splitlines()[0])
    parser.add_argument("--require-accelerated", action="store_true",
                        help="exit with status 1 when the C accelerator is not in use")
    args = parser.parse_args(argv)
    print(report())
    import gws13
    if args.require_accelerated and not gws13.accelerated:
        print("error: the C accelerator is required (--require-accelerated) but is off", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
