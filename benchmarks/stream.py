"""Streaming benchmark (issue 15): memory and throughput of large messages.

Three workloads, each against a fresh gws13 server (gevent.pywsgi with
gws13's WebSocketHandler) in its own process, driven by a gws13 client in
this process:

``upload``
    the client sends SIZE bytes as one binary message (``ws.send`` of an
    iterator of CHUNK-byte chunks); the server reads it with
    ``ws.receive_stream(max_size=None)`` and writes each piece to a file.
``download``
    the server sends a SIZE-byte file as one message (``ws.send`` of an
    iterator over its CHUNK-byte blocks); the client reads it with
    ``receive_stream`` and drops it.
``echo``
    for comparison, whole messages: the client sends ECHO bytes as one
    message, the server (``max_message_size`` raised) ``receive()``s it and
    sends it back whole.

For each it prints MB/s (10**6 bytes per second of wall time, the message
in one direction) and the server's peak RSS above its idle RSS: the
server resets its peak (``/proc/self/clear_refs``) once it is idle after a
warm-up connection, and reports ``VmHWM - VmRSS(idle)`` from
``/proc/self/status`` when the workload is over.  permessage-deflate is off
(random data).  Linux only (``/proc``).

    python benchmarks/stream.py                  # 1 GiB streams, 64 MiB echo
    python benchmarks/stream.py --size 64M       # a quick run (echo: min(size, 64M))
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = 32 << 20  # the issue's target for the streams' peak RSS increase


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def serve(workdir: str, chunk: int, echo_size: int) -> None:
    """The server process: prints its port, then serves until stdin closes."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent import pywsgi

    import gws13
    from gws13.server import WebSocketHandler

    state = {"idle": 0, "reset": False}

    def upload(ws):
        path = os.path.join(workdir, "upload.bin")
        total = 0
        with open(path, "wb") as f:
            for piece in ws.receive_stream(max_size=None):
                f.write(piece)
                total += len(piece)
        os.unlink(path)
        ws.send(str(total))

    def download(ws):
        ws.receive()  # "go"
        with open(os.path.join(workdir, "download.bin"), "rb") as f:
            ws.send(iter(lambda: f.read(chunk), b""))
        ws.receive()  # the client's "done": it has read everything

    def echo(ws):
        ws.send(ws.receive())
        ws.receive()

    def control(ws):
        for message in ws:
            if message == "idle":
                state["idle"] = _status("VmRSS")
                state["reset"] = _reset_peak()
                ws.send(json.dumps(state))
            elif message == "peak":
                ws.send(json.dumps({"peak": _status("VmHWM"), "rss": _status("VmRSS"), **state}))

    routes = {
        "/upload": gws13.websocket_app(upload, compression=None),
        "/download": gws13.websocket_app(download, compression=None),
        "/echo": gws13.websocket_app(echo, compression=None, max_message_size=echo_size + 1,
                                     max_frame_size=echo_size + 1),
        "/control": gws13.websocket_app(control),
    }

    def app(environ, start_response):
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        return route(environ, start_response)

    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
    server.start()
    print(server.server_port, flush=True)
    gevent.get_hub().threadpool.spawn(sys.stdin.read).get()  # until the parent closes our stdin
    server.stop()


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def run(workload: str, size: int, chunk: int, echo_size: int, workdir: str) -> dict:
    import gws13

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", workdir,
                             "--chunk", str(chunk), "--echo-size", str(echo_size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        port = int(proc.stdout.readline())
        base = f"ws://127.0.0.1:{port}"
        control = gws13.connect(base + "/control")
        # warm-up: one small round trip on the workload's route, so that imports,
        # buffers and the first connection's allocations are in the idle figure
        if workload == "upload":
            ws = gws13.connect(base + "/upload", compression=None)
            ws.send(iter([b"x" * chunk]))
            ws.receive(timeout=30)
            ws.close()
        control.send("idle")
        idle = json.loads(control.receive(timeout=30))
        payload = os.urandom(1 << 20)
        blocks = size // len(payload)
        started = time.perf_counter()
        if workload == "upload":
            ws = gws13.connect(base + "/upload", compression=None)
            ws.send(payload[i:i + chunk] for _ in range(blocks) for i in range(0, len(payload), chunk))
            assert int(ws.receive(timeout=600)) == blocks * len(payload)
            moved = blocks * len(payload)
        elif workload == "download":
            ws = gws13.connect(base + "/download", compression=None)
            ws.send("go")
            moved = 0
            for piece in ws.receive_stream(max_size=None, timeout=600):
                moved += len(piece)
            ws.send("done")
        else:
            ws = gws13.connect(base + "/echo", compression=None, max_message_size=echo_size + 1,
                               max_frame_size=echo_size + 1)
            data = (payload * (echo_size // len(payload) + 1))[:echo_size]
            ws.send(data)
            assert len(ws.receive(timeout=600)) == echo_size
            moved = echo_size
        elapsed = time.perf_counter() - started
        ws.close()
        control.send("peak")
        figures = json.loads(control.receive(timeout=30))
        control.close()
        return {"workload": workload, "bytes": moved, "seconds": elapsed,
                "mb_per_s": moved / elapsed / 1e6, "idle_rss": idle["idle"],
                "peak_increase": figures["peak"] - idle["idle"], "peak_reset": idle["reset"]}
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes of each stream (1G; K/M/G suffixes)")
    parser.add_argument("--echo-size", default=None, help="bytes of the whole-message echo (min(size, 64M))")
    parser.add_argument("--chunk", default="64K", help="bytes per chunk (a frame per chunk) (64K)")
    parser.add_argument("--workloads", default="upload,download,echo")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size, chunk = _parse_size(args.size), _parse_size(args.chunk)
    echo_size = _parse_size(args.echo_size) if args.echo_size else min(size, 64 << 20)
    if args.serve:
        serve(args.serve, chunk, echo_size)
        return 0
    from gevent import monkey

    monkey.patch_all()
    results = []
    with tempfile.TemporaryDirectory(prefix="gws13-stream-") as workdir:
        if "download" in args.workloads:
            block = os.urandom(1 << 20)
            with open(os.path.join(workdir, "download.bin"), "wb") as f:
                for _ in range(size >> 20):
                    f.write(block)
        print(f"{'workload':<10} {'MiB':>6} {'seconds':>8} {'MB/s':>8} {'idle RSS MiB':>13} {'peak +MiB':>10}")
        for workload in args.workloads.split(","):
            r = run(workload, size, chunk, echo_size, workdir)
            results.append(r)
            flag = ""
            if workload != "echo":
                flag = "  ok" if r["peak_increase"] < TARGET else "  OVER +32 MiB"
            if not r["peak_reset"]:
                flag += "  (peak not reset: includes start-up)"
            print(f"{workload:<10} {r['bytes'] / (1 << 20):>6.0f} {r['seconds']:>8.2f} {r['mb_per_s']:>8.1f} "
                  f"{r['idle_rss'] / (1 << 20):>13.1f} {r['peak_increase'] / (1 << 20):>10.1f}{flag}",
                  flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    over = [r for r in results if r["workload"] != "echo" and r["peak_increase"] >= TARGET]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
