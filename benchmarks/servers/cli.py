"""The command line every benchmark server takes: ``--port N [--broadcast]``
(``--broadcast``: a text message "broadcast:<payload>" goes to every client; for workload E)."""

import argparse


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--broadcast", action="store_true")
    return ap.parse_args()
