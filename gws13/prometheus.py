"""Prometheus export of :func:`gws13.metrics` (``pip install gws13[prometheus]``).

One line in an application::

    gws13.prometheus.register()        # prometheus_client's default REGISTRY

then serve the registry as usual (``prometheus_client.make_wsgi_app()``,
``start_http_server``, or :func:`wsgi_app` here, which does both steps).
The collector reads :func:`gws13.metrics` at each scrape: nothing is
counted twice, nothing costs anything between scrapes.

Exported (``side`` is ``server`` or ``client``)::

    gws13_connections_open{side}                 gauge
    gws13_connections_total{side}                counter
    gws13_handshakes_refused_total{status}       counter
    gws13_closes_total{code}                     counter
    gws13_closes_initiated_total{side}           counter (local, remote, none)
    gws13_dropped_for_limit_total{limit}         counter
    gws13_messages_received_total                counter
    gws13_messages_sent_total                    counter
    gws13_received_bytes_total                   counter (wire)
    gws13_sent_bytes_total                       counter (wire)
    gws13_received_payload_bytes_total           counter (application data)
    gws13_sent_payload_bytes_total               counter (application data)
    gws13_pings_sent_total                       counter
    gws13_pongs_late_total                       counter
    gws13_ping_rtt_seconds                       histogram
    gws13_reads_paused_total                     counter
    gws13_read_queue_high_water_messages         gauge
    gws13_write_buffer_high_water_bytes          gauge

and, for each :class:`gws13.Hub` given (``hubs=``)::

    gws13_hub_room_members{room}                 gauge
    gws13_hub_redis_connected                    gauge (1 while subscribed; Redis hubs only)

Each gunicorn worker is its own process with its own figures: see
``docs/guide/observability.md`` for scraping several workers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

try:
    from prometheus_client.core import (REGISTRY, CollectorRegistry, CounterMetricFamily,
                                        GaugeMetricFamily, HistogramMetricFamily, Metric)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gws13.prometheus needs the prometheus_client package: "
                      "pip install gws13[prometheus]") from exc

from ._metrics import metrics

__all__ = ["Collector", "register", "wsgi_app"]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(family: Any, label: str, values: Dict[Any, int]) -> Any:
    for key, value in sorted(values.items(), key=lambda kv: str(kv[0])):
        family.add_metric([str(key)], value)
    return family


class Collector:
    """A prometheus_client custom collector for :func:`gws13.metrics` (and
    the rooms and Redis status of ``hubs``).  Register it once per process::

        prometheus_client.REGISTRY.register(gws13.prometheus.Collector())
    """

    def __init__(self, hubs: Sequence[Any] = ()) -> None:
        self.hubs = list(hubs)

    def describe(self) -> List[Metric]:
        # the names, so that a registry refuses a second gws13 collector
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        m = metrics()
        opened = GaugeMetricFamily("gws13_connections_open", "WebSockets open now", labels=["side"])
        opened.add_metric(["server"], m["server_connections_open"])
        opened.add_metric(["client"], m["client_connections_open"])
        yield opened
        total = CounterMetricFamily("gws13_connections", "WebSockets started", labels=["side"])
        total.add_metric(["server"], m["handshakes_accepted"])
        total.add_metric(["client"], m["connections_total"] - m["handshakes_accepted"])
        yield total
        yield _labelled(CounterMetricFamily("gws13_handshakes_refused", "WebSocket handshakes answered "
                                            "without a 101, by HTTP status", labels=["status"]),
                        "status", m["handshakes_refused"])
        yield _labelled(CounterMetricFamily("gws13_closes", "closed WebSockets by close code "
                                            "(1006: no closing handshake)", labels=["code"]),
                        "code", m["closes_by_code"])
        yield _labelled(CounterMetricFamily("gws13_closes_initiated", "closed WebSockets by who sent "
                                            "the first close frame", labels=["side"]),
                        "side", m["closes_by_side"])
        yield _labelled(CounterMetricFamily("gws13_dropped_for_limit", "WebSockets ended by a limit",
                                            labels=["limit"]), "limit", m["dropped_for_limit"])
        yield _counter("gws13_messages_received", "messages received", m["messages_received"])
        yield _counter("gws13_messages_sent", "messages sent", m["messages_sent"])
        yield _counter("gws13_received_bytes", "bytes received on the wire after the handshake",
                       m["bytes_received"])
        yield _counter("gws13_sent_bytes", "bytes sent on the wire after the handshake", m["bytes_sent"])
        yield _counter("gws13_received_payload_bytes", "application data received (decompressed)",
                       m["payload_bytes_received"])
        yield _counter("gws13_sent_payload_bytes", "application data sent (before compression)",
                       m["payload_bytes_sent"])
        yield _counter("gws13_pings_sent", "pings sent", m["pings_sent"])
        yield _counter("gws13_pongs_late", "keepalive pings unanswered when the next was due",
                       m["pongs_late"])
        rtt = m["ping_rtt"]
        yield HistogramMetricFamily(
            "gws13_ping_rtt_seconds", "ping round-trip time",
            buckets=[("+Inf" if b == float("inf") else repr(float(b)), c) for b, c in rtt["buckets"]],
            sum_value=rtt["sum"])
        yield _counter("gws13_reads_paused", "times a connection stopped reading (max_queue full)",
                       m["reads_paused"])
        yield GaugeMetricFamily("gws13_read_queue_high_water_messages", "most messages a read queue held",
                                value=m["read_queue_high_water"])
        yield GaugeMetricFamily("gws13_write_buffer_high_water_bytes", "most bytes an outgoing buffer held",
                                value=m["write_buffer_high_water"])
        if self.hubs:
            rooms = GaugeMetricFamily("gws13_hub_room_members", "members of each room in this process",
                                      labels=["room"])
            redis: Optional[bool] = None  # every Redis hub subscribed (None: no Redis hub)
            counts: Dict[str, int] = {}
            for hub in self.hubs:
                stats = hub.stats()
                for room, count in stats["rooms"].items():
                    counts[room] = counts.get(room, 0) + count
                if stats["backend"] == "redis":
                    up = bool(stats["connected"] and stats["subscribed"])
                    redis = up if redis is None else (redis and up)
            for room, count in sorted(counts.items()):
                rooms.add_metric([room], count)
            yield rooms
            if redis is not None:
                yield GaugeMetricFamily("gws13_hub_redis_connected", "1 while every Redis hub is subscribed",
                                        value=1 if redis else 0)


def register(registry: Optional[CollectorRegistry] = None, hubs: Sequence[Any] = ()) -> Collector:
    """Register a :class:`Collector` with ``registry`` (default:
    prometheus_client's ``REGISTRY``) and return it.  Raises ValueError
    (prometheus_client's) when one is already registered there."""
    collector = Collector(hubs)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


_WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(registry: Optional[CollectorRegistry] = None, hubs: Sequence[Any] = ()) -> _WSGIApp:
    """A WSGI app serving the Prometheus text format of a fresh registry that
    holds a :class:`Collector` (mount it at ``/metrics``).  Pass ``registry``
    to serve your own (the collector is added to it)."""
    from prometheus_client import make_wsgi_app

    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
    register(registry, hubs)
    app: _WSGIApp = make_wsgi_app(registry)
    return app
