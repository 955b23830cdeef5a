"""Server instructions per message, counted by valgrind's callgrind.

    python benchmarks/instructions.py                                  # gws13 and the TCP ceiling, A and B1
    python benchmarks/instructions.py --servers gws13-handler,picows --workloads A,B2

Throughput on a shared 2-core machine moves by 2x from one minute to the next;
the number of instructions the server executes per echoed message does not.
Each server runs twice under callgrind while the C load client (run.py's
``wsload``) drives it for a short and a long window; the difference of the two
totals divided by the difference of the message counts cancels start-up and
shutdown.  System calls are not counted (they run in the kernel), so this
measures the per-message work of the server's own code and the interpreter.

Needs valgrind (``apt-get install valgrind``); uses (and if needed creates)
run.py's venv and client.  Each figure takes ~30 s.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import run


def count(spec, wid, secs):
    """(messages echoed, instructions executed) for one server run of ``secs``."""
    conns, window, size, text, _ = run.ECHO_WL[wid]
    port = run.free_port()
    with tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False) as f:
        out = f.name
    cmd = spec["cmd"].format(py=run.PY, repo=run.REPO, port=port).split()
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
                            cwd=run.HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120  # start-up under valgrind takes a while
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{spec['name']} did not start under valgrind")
                time.sleep(0.2)
        args = ["-c", conns, "-w", window, "-s", size, "-d", secs, "-W", 0.3] + (["-t"] if text else [])
        res = subprocess.run(run.client(port, *args, raw=spec.get("raw")), capture_output=True, text=True,
                             timeout=secs + 120)
        msgs = json.loads(res.stdout.strip().splitlines()[-1])["msgs"]
    finally:
        proc.send_signal(signal.SIGTERM)  # callgrind writes its totals on the way out
        proc.wait(120)
    with open(out) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
    os.unlink(out)
    return msgs, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="gws13-handler,gws13-with_websocket,gevent-tcp")
    ap.add_argument("--workloads", default="A,B1")
    ap.add_argument("--short", type=float, default=3.0, help="seconds of the short window")
    ap.add_argument("--long", type=float, default=9.0, help="seconds of the long window")
    a = ap.parse_args()
    run.setup(no_setup=False)
    print("| server | workload | instructions per message |\n|---|---|---|")
    for name in a.servers.split(","):
        spec = run.BY_NAME[name]
        for wid in a.workloads.split(","):
            m1, i1 = count(spec, wid, a.short)
            m2, i2 = count(spec, wid, a.long)
            if m2 <= m1:
                print(f"| {name} | {wid} | (no difference in messages: {m1}, {m2}) |")
                continue
            print(f"| {name} | {wid} | {(i2 - i1) / (m2 - m1):,.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
