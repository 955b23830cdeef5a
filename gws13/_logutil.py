"""Logging helpers shared by gws13's modules (issue 13).

Each module logs on its own logger (``gws13.server``, ``gws13.client``,
``gws13.connection``, ``gws13.hub``, ``gws13.redis``); the package logger
``gws13`` has a :class:`logging.NullHandler`, so nothing is printed unless the
application configures :mod:`logging`.  Nothing here ever logs a message
payload.

:class:`RateLimiter` bounds what a burst of identical events can write: at
most ``burst`` records per key in each ``interval`` seconds, then one
"suppressed K similar messages" summary when the interval ends.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from gevent import monkey

__all__ = ["RateLimiter", "configured", "peer_of"]

_allocate_lock = monkey.get_original("_thread", "allocate_lock")


def configured(logger: logging.Logger, level: int = logging.ERROR) -> bool:
    """True when a record of ``level`` on ``logger`` reaches a handler other
    than a :class:`logging.NullHandler` (the application configured logging).
    Used to keep tracebacks visible by default: without configured logging an
    application's exception is left to the server's own error printer, as it
    was before gws13 logged."""
    if not logger.isEnabledFor(level):
        return False
    current: Optional[logging.Logger] = logger
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def peer_of(environ: Dict[str, Any]) -> str:
    """``host:port`` of the peer of a server-side request, ``?`` when unknown."""
    host = environ.get("REMOTE_ADDR")
    if not host:
        return "?"
    port = environ.get("REMOTE_PORT")
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


class RateLimiter:
    """At most ``burst`` records per key every ``interval`` seconds.

    The first ``burst`` events of a key in an interval are logged as they
    come; the rest are only counted, and the first event after the interval
    ends (or a timer, so that a burst followed by silence is reported too)
    writes one ``"... (suppressed K similar messages in the last T s)"``
    line.  A burst of any size therefore writes at most ``burst + 1`` lines
    per key and interval.  Keys are short tuples chosen by the caller (for
    example ``("refused", 403)``); the number of keys kept is bounded.
    """

    _MAX_KEYS = 256

    def __init__(self, logger: logging.Logger, burst: int = 10, interval: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        # a real lock even under monkey patching: events come from several threads
        self._lock = _allocate_lock()
        # key -> [window start, logged in this window, suppressed, level, summary text, timer armed]
        self._keys: Dict[Any, List[Any]] = {}

    def log(self, level: int, key: Any, msg: str, *args: Any) -> None:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its budget."""
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        summary = None
        arm = False
        with self._lock:
            state = self._keys.get(key)
            if state is None or now - state[0] >= self.interval:
                if state is not None and state[2]:
                    summary = (state[3], state[4], state[2])
                if state is None and len(self._keys) >= self._MAX_KEYS:
                    self._expire(now)
                state = self._keys[key] = [now, 0, 0, level, msg % args if args else msg, False]
            if state[1] < self.burst:
                state[1] += 1
                emit = True
            else:
                state[2] += 1
                state[3], state[4] = level, (msg % args if args else msg)
                emit = False
                arm = not state[5]
                state[5] = True
        if summary is not None:
            self._summary(*summary)
        if emit:
            self.logger.log(level, msg, *args)
        elif arm:
            self._arm(key, state[0])

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._keys.items() if now - s[0] >= self.interval and not s[2]]:
            del self._keys[key]
        if len(self._keys) >= self._MAX_KEYS:
            self._keys.clear()  # a flood of distinct keys: start over rather than grow

    def _summary(self, level: int, text: str, count: int) -> None:
        self.logger.log(level, "%s (suppressed %d similar messages in the last %g s)",
                        text, count, self.interval)

    def _arm(self, key: Any, start: float) -> None:
        # report a burst that is followed by silence, once its interval is over
        try:
            import gevent

            gevent.spawn_later(max(start + self.interval - time.monotonic(), 0.0) + 0.01,
                               self.flush, key)
        except Exception:  # no usable hub (interpreter shutting down): the next event reports it
            pass

    def flush(self, key: Any = None) -> None:
        """Write the pending summary of ``key`` (every key: None) if its interval is over."""
        now = time.monotonic()
        out = []
        with self._lock:
            for k in list(self._keys) if key is None else [key]:
                state = self._keys.get(k)
                if state is not None and state[2] and now - state[0] >= self.interval:
                    out.append((state[3], state[4], state[2]))
                    del self._keys[k]
        for item in out:
            self._summary(*item)
