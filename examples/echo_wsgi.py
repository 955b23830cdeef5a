"""An echo endpoint as a plain WSGI application, for any gevent server.

    gunicorn -c examples/gunicorn_conf.py examples.echo_wsgi:app
    python examples/echo_wsgi.py --port 8001          # gevent.pywsgi, stock handler

Connect with gws13's client::

    import gws13
    ws = gws13.connect("ws://127.0.0.1:8001/echo", subprotocols=["echo"])
    ws.send("hi"); print(ws.receive()); ws.close()

Plain HTTP requests to any other path get a short text page (the ``fallback``).
"""

import argparse

import gws13


def echo(ws):
    """Send every message back, with its type."""
    for message in ws:
        ws.send(message)


def index(environ, start_response):
    body = b"gws13 echo: open a WebSocket to /echo (subprotocol 'echo' optional)\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


echo_app = gws13.websocket_app(echo, subprotocols=["echo"])


def app(environ, start_response):
    """The WSGI application: /echo is the WebSocket endpoint, the rest is HTTP."""
    if environ.get("PATH_INFO") == "/echo":
        return echo_app(environ, start_response)
    return index(environ, start_response)


def main(argv=None):
    from gevent import pywsgi

    parser = argparse.ArgumentParser(description="gws13 echo on gevent.pywsgi's stock handler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    # no handler_class: the stock WSGIHandler; websocket_app takes the socket over
    server = pywsgi.WSGIServer((args.host, args.port), app)
    print(f"gws13 echo on ws://{args.host}:{args.port}/echo", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
