"""The command line every benchmark server takes: ``--port N [--broadcast] [--compression]
[--certfile F --keyfile F]`` (``--broadcast``: a text message "broadcast:<payload>" goes to every
client; for workload E.  ``--compression``: permessage-deflate with the library's defaults, for
workload J; servers without it ignore the flag and do not negotiate.  ``--certfile``/``--keyfile``:
serve TLS, for workload T; servers without it refuse to start)."""

import argparse
import ssl


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--broadcast", action="store_true")
    ap.add_argument("--compression", action="store_true")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    return ap.parse_args()


def server_context(a: argparse.Namespace):
    """The server's TLS context, None without --certfile."""
    if not a.certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.certfile, a.keyfile)
    return context
