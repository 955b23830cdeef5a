#!/usr/bin/env python3
"""Workload J (1 KiB JSON, 16 in flight, deflate as Chrome offers it) against gws13's
echo server under many permessage-deflate settings: msg/s, wire bytes per message and the
zlib memory one connection holds.  How gws13's Deflate defaults were chosen (README.md, J).

    python benchmarks/deflate_sweep.py                          # the grid below, 1 run of 3 s each
    python benchmarks/deflate_sweep.py --settings "level=6;level=1,server_max_window_bits=15" --repeats 3

Each setting is a fresh `examples/echo.py --deflate <setting>` (handler mode) measured with
the load client's -z mode, exactly as `run.py --workloads J` does; websockets with its default
compression is measured first and last as the same-run reference.  "zlib KiB" is
benchmarks/compression.py's state figure: what a fresh server connection's compressor and
decompressor hold after one message each way (tracemalloc), with the client compressing with
a 32 KiB window as Chrome does unless the setting limits it.
"""
import argparse
import json
import statistics
import sys
import time

import run

GRID = ([f"level={lv}" for lv in range(1, 7)]
        + [f"level={lv},mem_level={m}" for lv in (1, 3, 4, 6) for m in (8, 9)]
        + [f"level={lv},server_max_window_bits={b}" for lv in (1, 3, 4, 6) for b in (10, 13, 14, 15)]
        + [f"level={lv},server_max_window_bits=15,mem_level=8" for lv in (1, 4, 6)])

MEMORY = """
import json, sys
sys.path.insert(0, {here!r})
import compression
from gws13 import Deflate
msgs = compression.json_messages(200, 1024)
out = {{}}
for text in {settings!r}:
    kw = dict((k, int(v)) for k, v in (i.split("=") for i in text.split(","))) if text else {{}}
    out[text] = compression.codec_costs(Deflate(**kw), msgs)
print(json.dumps(out))
"""


def measure(name, cmd, cfg):
    run.wait_quiet(cfg.wait_quiet)
    srv = run.Server(name, cmd)
    try:
        return run.run_echo(srv, {"name": name}, "J", cfg, wl=run.J_WL, extra=["-z"])
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", help="';'-separated Deflate keyword lists (default: the built-in grid)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--wait-quiet", type=float, default=10.0)
    ap.add_argument("--json", help="also write every run here")
    cfg = ap.parse_args()
    settings = cfg.settings.split(";") if cfg.settings else GRID
    run.setup(False)
    mem = json.loads(run.sh([run.PY, "-c", MEMORY.format(here=str(run.HERE), settings=[""] + settings)],
                            check=True).stdout)
    ws_cmd = run.J_CMD["websockets"]
    runs = {"websockets": [], **{s: [] for s in settings}}
    for rep in range(cfg.repeats):
        order = ["websockets"] + settings + ["websockets"]
        for s in order:
            cmd = ws_cmd if s == "websockets" else (
                "{py} {repo}/examples/echo.py --port {port} --deflate " + s)
            rec = measure("sweep", cmd, cfg)
            if not rec.get("ok") or (s != "websockets" and not rec.get("deflate")):
                sys.exit(f"{s}: {rec.get('why') or 'not compressed'}")
            runs[s].append(rec)
            run.log(f"{s:<45} {rec['msg_per_s']:>9,.0f} msg/s {rec['wire_per_msg']:6.1f} B/msg "
                    f"server {rec['server_cpu'] * 100:3.0f} % client {rec['client_cpu'] * 100:3.0f} %"
                    f"{' (contended)' if (rec.get('others_cpu') or 0) > run.CONTENDED else ''}")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(dict(mem=mem, runs=runs), f, indent=1)

    def med(s, k):
        return statistics.median(r[k] for r in runs[s])

    base = med("websockets", "msg_per_s")
    print(f"\nJ: {cfg.repeats} run(s) of {cfg.duration} s per setting; websockets (default compression): "
          f"{base:,.0f} msg/s, {med('websockets', 'wire_per_msg'):.1f} B/msg\n")
    print("| gws13 Deflate(...) | msg/s | ÷ websockets | wire B/msg | server µs/msg | compress µs | "
          "inflate µs | zlib KiB/conn |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in settings:
        m, c = med(s, "msg_per_s"), mem[s]
        print(f"| {s or 'defaults'} | {m:,.0f} | {m / base:.2f} | {med(s, 'wire_per_msg'):.1f} | "
              f"{med(s, 'server_cpu') / m * 1e6:.1f} | {c['compress_us']:.1f} | {c['decompress_us']:.1f} | "
              f"{c['state'] / 1024:.0f} |")


if __name__ == "__main__":
    t = time.time()
    main()
    run.log(f"done in {(time.time() - t) / 60:.1f} min")
