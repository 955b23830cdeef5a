"""Broadcast server for the fan-out benchmark (workload E).

    python examples/broadcast.py --port 9002

Every client joins one room; a client that sends ``broadcast:<payload>`` has
<payload> sent to every connected client (itself included) through gws13.Hub.
"""

import argparse

from gevent import pywsgi

import gws13

hub = gws13.Hub()
PREFIX = "broadcast:"


def member(ws):
    hub.join(ws, "all")
    for message in ws:
        if isinstance(message, str) and message.startswith(PREFIX):
            hub.publish("all", message[len(PREFIX):])


def app(environ, start_response):
    return gws13.with_websocket(environ, start_response, member)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    args = parser.parse_args(argv)
    server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler,
                               log=None, backlog=2048)
    print(f"gws13 broadcast on ws://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
