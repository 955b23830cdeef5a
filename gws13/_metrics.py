"""Process-wide WebSocket metrics (issue 13): what :func:`gws13.metrics` returns.

Cost model.  A connection counts its own traffic, with no lock, no dict and
no call.  The wire bytes received, the messages in and out, their
application bytes and the read queue's high-water mark are the protocol's
``counts`` (:class:`~gws13.frames.Counters`).  On the usual paths the C
extension's scanner (a read of small messages) and small-frame encoder (a
message out) add to them in C: no Python-level work per message at all.  The
other paths add per read or per message in Python.  The wire bytes sent are
an integer attribute of the :class:`~gws13.connection.WebSocket`, one
increment per socket write.  Nothing process-wide is touched per message:
:func:`metrics` sums the live connections (a
:class:`weakref.WeakSet` filled when a connection starts) and adds the totals
folded in here when each connection ended.  Per connection, not per message,
are: registering it, folding it in at the end (under a lock: connections of
several threads), the close code, side and bound that ended it.  The ping
round-trip histogram is updated per keepalive or :meth:`WebSocket.ping`
answer (at most one per ``ping_interval`` and connection).

Handshake refusals are counted by :mod:`gws13.server` (per refusal).
"""

from __future__ import annotations

import bisect
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from gevent import monkey

if TYPE_CHECKING:  # pragma: no cover
    from .connection import WebSocket

__all__ = ["metrics", "RTT_BUCKETS", "reset"]

_log = logging.getLogger("gws13.connection")

#: Upper bounds (seconds) of the ping round-trip histogram's buckets; the
#: last bucket (``+Inf``) takes the rest.
RTT_BUCKETS: Tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                  1.0, 2.5, 5.0, 10.0)

# the per-connection counters that metrics() sums (attribute -> key)
_SUMMED = (
    ("_n_min", "messages_received"), ("_n_mout", "messages_sent"),
    ("_n_bin", "bytes_received"), ("_n_bout", "bytes_sent"),
    ("_n_ain", "payload_bytes_received"), ("_n_aout", "payload_bytes_sent"),
    ("_n_pings", "pings_sent"), ("_n_late", "pongs_late"), ("_n_paused", "reads_paused"),
)

# a real lock even under monkey patching (as gws13.hub's): connections of
# several threads fold their figures in; the sections guarded never switch
_lock = monkey.get_original("_thread", "allocate_lock")()
_live: "weakref.WeakSet[WebSocket]" = weakref.WeakSet()


class _State:
    def __init__(self) -> None:
        self.totals: Dict[str, int] = {key: 0 for _, key in _SUMMED}
        self.opened = {"server": 0, "client": 0}
        self.refused: Dict[int, int] = {}
        self.closes_by_code: Dict[int, int] = {}
        self.closes_by_side: Dict[str, int] = {"local": 0, "remote": 0, "none": 0}
        self.dropped: Dict[str, int] = {}
        self.queue_high = 0
        self.buffer_high = 0
        self.rtt_counts: List[int] = [0] * (len(RTT_BUCKETS) + 1)
        self.rtt_sum = 0.0
        self.started = time.time()


_state = _State()


def reset() -> None:
    """Forget every count (tests); live connections keep theirs."""
    global _state
    with _lock:
        _state = _State()


def opened(ws: "WebSocket") -> None:
    """A connection started (called once, by ``WebSocket._start``)."""
    with _lock:
        _live.add(ws)
        _state.opened["client" if ws._client else "server"] += 1


def refused(status: int) -> None:
    """A handshake was answered with ``status`` instead of 101."""
    with _lock:
        _state.refused[status] = _state.refused.get(status, 0) + 1


def observe_rtt(seconds: float) -> None:
    """One ping round trip (per pong: rare)."""
    i = bisect.bisect_left(RTT_BUCKETS, seconds)
    with _lock:
        _state.rtt_counts[i] += 1
        _state.rtt_sum += seconds


def _bound(ws: "WebSocket") -> Optional[str]:
    """Which limit ended the connection, if one did."""
    failure = ws.failure
    name = failure.__class__.__name__ if failure is not None else ""
    if name == "MessageTooLarge":
        return "max_message_size"
    if name == "ConnectionTimeout" and failure is not None:
        return "write_timeout" if "took no data" in (failure.reason or "") else "idle_timeout"
    proto = ws._proto
    if proto is not None and proto.close_sent and not proto.close_received and not proto.eof:
        return "close_timeout"  # our close frame was never answered
    return None


def closed(ws: "WebSocket") -> None:
    """A connection ended (called once, by ``WebSocket._drop``): fold its
    counters into the totals and log the DEBUG "closed" line."""
    code = ws.close_code or 1006
    side = ws._n_closer or "none"
    bound = _bound(ws)
    with _lock:
        _live.discard(ws)
        totals = _state.totals
        for attr, key in _SUMMED:
            totals[key] += getattr(ws, attr)
        by_code = _state.closes_by_code
        by_code[code] = by_code.get(code, 0) + 1
        _state.closes_by_side[side] += 1
        if bound is not None:
            _state.dropped[bound] = _state.dropped.get(bound, 0) + 1
        if ws._n_qhigh > _state.queue_high:
            _state.queue_high = ws._n_qhigh
        if ws._n_whigh > _state.buffer_high:
            _state.buffer_high = ws._n_whigh
    if _log.isEnabledFor(logging.DEBUG):
        who = {"local": "by us", "remote": "by the peer", "none": "without a closing handshake"}[side]
        _log.debug("%s: %s WebSocket %s closed %s: code %d%s, after %.3f s, %d messages in, %d out%s",
                   _peer(ws), "client" if ws._client else "server", ws.path or "/", who, code,
                   f" reason {ws.close_reason!r}" if ws.close_reason else "",
                   time.monotonic() - ws._n_opened, ws._n_min, ws._n_mout,
                   f" ({bound} reached)" if bound else "")


def _peer(ws: "WebSocket") -> str:
    env = ws.environ
    if ws._client:
        return str(env.get("HTTP_HOST") or "?")
    from ._logutil import peer_of

    return peer_of(env)


def log_opened(ws: "WebSocket") -> None:
    """The DEBUG "opened" line (only called when DEBUG is on)."""
    _log.debug("%s: %s WebSocket %s opened: subprotocol %s, extensions %s",
               _peer(ws), "client" if ws._client else "server", ws.path or "/",
               ws.subprotocol or "none", ws.extensions or "none")


def debug_enabled() -> bool:
    return _log.isEnabledFor(logging.DEBUG)


def connection_figures(ws: "WebSocket") -> Dict[str, Any]:
    out: Dict[str, Any] = {key: getattr(ws, attr) for attr, key in _SUMMED}
    out["read_queue_high_water"] = ws._n_qhigh
    # (the mark is taken when the buffer is flushed: a buffer that has not
    # been since it grew counts as it is now)
    out["write_buffer_high_water"] = max(ws._n_whigh, ws._wsize)
    out["duration"] = (time.monotonic() - ws._n_opened) if ws._n_opened else 0.0
    out["latency"] = ws.latency
    return out


def metrics() -> Dict[str, Any]:
    """Counters and gauges of every WebSocket this process served or opened,
    as a plain dict (a snapshot: safe to keep, change or serialize as JSON
    after turning the int keys into strings):

    ``connections_open``
        WebSockets open now (``server_connections_open``,
        ``client_connections_open``: by side)
    ``connections_total``
        WebSockets started since the process began (or :func:`reset`),
        ``handshakes_accepted``: the server side of it
    ``handshakes_refused``
        ``{HTTP status: count}`` of WebSocket handshakes answered without a 101
    ``closes_by_code`` / ``closes_by_side``
        ``{close code: count}`` (1006: no closing handshake) and
        ``{"local"|"remote"|"none": count}``: who sent the first close frame
    ``dropped_for_limit``
        ``{bound: count}``: connections ended by ``max_message_size``
        (``max_frame_size`` too), ``idle_timeout`` / ``write_timeout``
        (``connection_timeout``), ``close_timeout``
    ``messages_received``, ``messages_sent``
        messages (not frames) in and out; Hub broadcasts count as sent
    ``bytes_received``, ``bytes_sent``
        wire bytes after the handshake: frame headers and control frames
        included, compressed as sent
    ``payload_bytes_received``, ``payload_bytes_sent``
        application data of those messages, in bytes (UTF-8 for text) and
        decompressed: with
        permessage-deflate, ``bytes_*`` / ``payload_bytes_*`` is the ratio
    ``pings_sent``, ``pongs_late``
        pings sent (keepalive and :meth:`WebSocket.ping`); keepalive pings
        still unanswered when the next one was due
    ``ping_rtt``
        ``{"buckets": [(upper bound, cumulative count)...], "sum": s, "count": n}``
        (the last bound is ``float("inf")``)
    ``reads_paused``
        times a connection stopped reading because its ``max_queue`` was full
    ``read_queue_high_water``, ``write_buffer_high_water``
        the most messages a read queue held, the most bytes an outgoing
        buffer held (live and closed connections)
    ``started``
        when counting began (``time.time()``)
    """
    with _lock:
        live = list(_live)
        state = _state
        totals = dict(state.totals)
        opened = dict(state.opened)
        out: Dict[str, Any] = {
            "handshakes_refused": dict(state.refused),
            "closes_by_code": dict(state.closes_by_code),
            "closes_by_side": dict(state.closes_by_side),
            "dropped_for_limit": dict(state.dropped),
        }
        queue_high, buffer_high = state.queue_high, state.buffer_high
        counts, rtt_sum = list(state.rtt_counts), state.rtt_sum
        started = state.started
    # the snapshot is consistent: a connection is either in ``live`` (open) or
    # folded into ``totals`` and ``closes_by_code`` (closed() moves it under the
    # lock), never both.  A connection being dropped stays open until then:
    # _drop may switch greenlets between marking it dropped and calling closed().
    server_open = open_now = len(live)
    for ws in live:
        if ws._client:
            server_open -= 1
        for attr, key in _SUMMED:
            totals[key] += getattr(ws, attr)
        if ws._n_qhigh > queue_high:
            queue_high = ws._n_qhigh
        if ws._n_whigh > buffer_high:
            buffer_high = ws._n_whigh
        if ws._wsize > buffer_high:
            buffer_high = ws._wsize
    cumulative, buckets = 0, []
    for bound, count in zip(RTT_BUCKETS + (float("inf"),), counts):
        cumulative += count
        buckets.append((bound, cumulative))
    out.update(totals)
    out.update({
        "connections_open": open_now,
        "server_connections_open": server_open,
        "client_connections_open": open_now - server_open,
        "connections_total": opened["server"] + opened["client"],
        "handshakes_accepted": opened["server"],
        "ping_rtt": {"buckets": buckets, "sum": rtt_sum, "count": cumulative},
        "read_queue_high_water": queue_high,
        "write_buffer_high_water": buffer_high,
        "started": started,
    })
    return out
