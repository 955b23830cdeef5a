"""The command line every benchmark server takes: ``--port N [--broadcast] [--compression]``
(``--broadcast``: a text message "broadcast:<payload>" goes to every client; for workload E.
``--compression``: permessage-deflate with the library's defaults, for workload J; servers
without it ignore the flag and do not negotiate)."""

import argparse


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--broadcast", action="store_true")
    ap.add_argument("--compression", action="store_true")
    return ap.parse_args()
