"""The hub's counters at ``/metrics`` (Prometheus text format).

    python examples/metrics.py [--port 8002] [--redis redis://127.0.0.1:6379/0]

``/ws?room=NAME`` joins room NAME (default "demo"); every message a client
sends is published to its room.  ``/metrics`` shows open connections, members
per room, messages published and delivered, drops and closes by the
slow-client policy and the deepest queue seen; ``/stats`` the same as JSON.

    curl http://127.0.0.1:8002/metrics
"""

import argparse
import json
from urllib.parse import parse_qs

from gevent import pywsgi

import gws13

#: replaced by a Redis-backed hub with --redis
hub = gws13.Hub()


def member(ws):
    room = parse_qs(ws.environ.get("QUERY_STRING", "")).get("room", ["demo"])[0]
    hub.join(ws, room)
    for message in ws:
        hub.publish(room, message)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/ws":
        return gws13.with_websocket(environ, start_response, member)
    if path == "/metrics":
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
        return [hub.metrics_text().encode()]
    if path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(hub.stats(), indent=2).encode() + b"\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"try /metrics, /stats or a WebSocket at /ws?room=NAME\n"]


def main(argv=None):
    global hub
    parser = argparse.ArgumentParser(description="gws13 hub metrics demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--redis", metavar="URL", help="a Redis-backed hub (redis://host:port/db)")
    args = parser.parse_args(argv)
    if args.redis:
        hub = gws13.Hub(args.redis)
        hub.start()
    server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler)
    print(f"gws13 hub metrics on http://{args.host}:{args.port}/metrics", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
