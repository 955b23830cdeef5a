"""Echo server: every message comes back with its type.  The Autobahn testee
and the benchmark target.

    python examples/echo.py --port 9001 [--mode handler|with_websocket] [--backlog N] [--deflate SETTINGS]
                            [--certfile cert.pem --keyfile key.pem]

permessage-deflate is on with gws13's defaults; ``--deflate off`` turns it off and
``--deflate level=1,server_max_window_bits=15`` sets :class:`gws13.Deflate` keywords
(how benchmarks/deflate_sweep.py compares settings).  With ``--certfile``/``--keyfile`` it
serves ``wss://`` through :class:`gws13.server.WebSocketServer`.
"""

import argparse

from gevent import pywsgi

import gws13
from gws13.server import WebSocketServer

LIMIT = 16 * 2 ** 20  # Autobahn's 9.* cases send messages of up to 16 MiB


def handler_app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"gws13 echo: connect with a WebSocket client\n"]
    for message in ws:
        ws.send(message)
    return []


def echo(ws):
    while True:
        data, kind = gws13.receive_message()
        if kind in (None, "connection-close"):
            return
        gws13.send_message(data, kind)


def egg_app(environ, start_response):
    return gws13.with_websocket(environ, start_response, echo)


def deflate_setting(text):
    """``off`` or ``name=value,...`` (ints, ``none``, ``true``/``false``) -> the compression value."""
    if text == "off":
        return None
    words = {"none": None, "true": True, "false": False}
    try:
        return gws13.Deflate(**{k.strip(): words[v.lower()] if v.lower() in words else int(v)
                                for k, v in (item.split("=", 1) for item in text.split(","))})
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--deflate {text!r}: {exc}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--mode", choices=("handler", "with_websocket"), default="handler")
    # gevent's default (128) overflows when hundreds of clients connect at once (a reconnect
    # storm): the kernel then drops SYNs and the client retries after a second
    parser.add_argument("--backlog", type=int, default=None, help="listen backlog (default: gevent's)")
    parser.add_argument("--deflate", type=deflate_setting, default=gws13.Deflate(), metavar="SETTINGS")
    parser.add_argument("--certfile", help="serve TLS with this certificate (and --keyfile)")
    parser.add_argument("--keyfile")
    args = parser.parse_args(argv)
    gws13.parameters.compression = args.deflate
    gws13.parameters.max_message_size = LIMIT
    gws13.parameters.max_frame_size = LIMIT
    app = handler_app if args.mode == "handler" else egg_app
    if args.certfile:
        server = WebSocketServer((args.host, args.port), app, log=None, backlog=args.backlog,
                                 certfile=args.certfile, keyfile=args.keyfile)
    else:
        server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler,
                                   log=None, backlog=args.backlog)
    scheme = "wss" if args.certfile else "ws"
    print(f"gws13 echo ({args.mode}) on {scheme}://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
