#!/usr/bin/env python3
"""gws13 benchmark suite: gws13 against other Python WebSocket servers and raw ceilings.

    python benchmarks/run.py                          # full suite -> benchmarks/results.md/.json
    python benchmarks/run.py --quick                  # CI smoke: 1 repeat of 2 s, small D
    python benchmarks/run.py --servers gws13-handler,websockets --workloads A,B1

Each server runs in its own process pinned to SERVER_CPU (taskset -c 1); the C load client
(client/wsload.c, built here with gcc -O2) runs pinned to CLIENT_CPU (taskset -c 0).  The runner
creates benchmarks/.venv with the peers (requirements.txt) and gws13 (pip install -e <repo>).
Only the standard library is needed to run this script.  See README.md.
"""
import argparse
import atexit
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ.get("GWS13_REPO", HERE.parent)).resolve()  # the gws13 checkout under test
VENV = HERE / ".venv"
PY = VENV / "bin" / "python"
CLIENT = HERE / "client" / "wsload"
C_FLOOR = HERE / "servers" / "c_floor"
LOGS = HERE / "logs"
SERVER_CPU = os.environ.get("SERVER_CPU", "1")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "0")
CONTENDED = float(os.environ.get("CONTENDED", "0.15"))  # other processes' cores during a run => retry
TICK = os.sysconf("SC_CLK_TCK")

# ------------------------------------------------------------------ servers and workloads
ECHO_WL = {  # id: (connections, messages in flight, size, text, description)
    "A": (1, 1, 32, True, "ping-pong: 1 connection, 1 message in flight, 32 B text"),
    "B1": (1, 64, 32, False, "1 connection, 64 messages in flight, 32 B binary"),
    "B2": (1, 64, 1024, False, "1 connection, 64 in flight, 1 KiB binary"),
    "B3": (50, 64, 32, False, "50 connections x 64 in flight, 32 B binary"),
    "B4": (50, 64, 1024, False, "50 connections x 64 in flight, 1 KiB binary"),
    "C": (1, 4, 1 << 20, False, "1 connection, 1 MiB binary messages (4 in flight)"),
}
WORKLOADS = list(ECHO_WL) + ["D", "E", "H"]
ECHO_IDS = list(ECHO_WL)
BACKLOG = 1024  # H keeps up to 500 handshakes in flight: a shorter accept queue drops SYNs (1 s retries)
H_CONN_TIMEOUT = 15  # seconds one storm connection may take before it counts as failed
# J (issue 16): compressed JSON as a browser sends it.  Run on its own, after A-C, because a
# peer needs its compressing variant (J_CMD) and only these servers take part; picows and
# gevent-websocket do not implement permessage-deflate and run uncompressed, for reference.
J_WL = (1, 16, 1024, True, "1 connection, 16 in flight, 1 KiB JSON text, permessage-deflate offered as Chrome does")
J_CMD = {"gws13-handler": None, "gws13-with_websocket": None,  # examples/echo.py compresses by default
         "websockets": "{py} servers/websockets_echo.py --compression --port {port}",
         "picows": None, "gevent-websocket": None}  # None: the server's usual command
J_MUST_COMPRESS = {"gws13-handler", "gws13-with_websocket", "websockets"}
WORKLOADS += ["J"]
# T (issue 16): the echo over TLS (wss://), the client's -L mode, a self-signed ECDSA P-256
# certificate made here (TLS_CERT/TLS_KEY); only servers with a TLS command take part.
T_WL = {"TA": (1, 1, 32, True, "T(a) wss ping-pong: 1 connection, 1 message in flight, 32 B text"),
        "TB": (1, 8, 65536, False, "T(b) wss: 1 connection, 8 in flight, 64 KiB binary")}
TLS_CERT, TLS_KEY = LOGS / "tls-cert.pem", LOGS / "tls-key.pem"
T_TLS = f"--certfile {TLS_CERT} --keyfile {TLS_KEY}"
T_CMD = {"gws13-handler": f"{{py}} {{repo}}/examples/echo.py --port {{port}} --mode handler {T_TLS}",
         "gws13-with_websocket": f"{{py}} {{repo}}/examples/echo.py --port {{port}} --mode with_websocket {T_TLS}",
         "websockets": f"{{py}} servers/websockets_echo.py --port {{port}} {T_TLS}",
         "picows": f"{{py}} servers/picows_echo.py --port {{port}} {T_TLS}"}
T_REFS = ("websockets", "picows")  # the T ratio columns
WORKLOADS += list(T_WL)


def gws13(mode):
    return dict(name=f"gws13-{mode}", kind="gws13", mode=mode, needs="examples/echo.py",
                cmd=f"{{py}} {{repo}}/examples/echo.py --port {{port}} --mode {mode}",
                backlog_flag=True, fanout="{py} {repo}/examples/broadcast.py --port {port}")


SERVERS = [
    gws13("handler"),
    gws13("with_websocket"),
    # H only: the Flask pair and the C floor are there for connection setup, not the echo path
    dict(name="gws13-flask", kind="gws13", needs="gws13/flask.py", only={"H"},
         cmd="{py} servers/gws13_flask_echo.py --port {port}"),
    dict(name="gevent-websocket", kind="peer", cmd="{py} servers/gevent_websocket_echo.py --port {port}",
         fanout="{py} servers/gevent_websocket_echo.py --broadcast --port {port}"),
    dict(name="simple-websocket", kind="peer", cmd="{py} servers/simple_websocket_echo.py --port {port}"),
    dict(name="flask-sock", kind="peer", only={"H"}, cmd="{py} servers/flask_sock_echo.py --port {port}"),
    dict(name="websockets", kind="peer", cmd="{py} servers/websockets_echo.py --port {port}",
         fanout="{py} servers/websockets_echo.py --broadcast --port {port}"),
    dict(name="picows", kind="peer", cmd="{py} servers/picows_echo.py --port {port}",
         fanout="{py} servers/picows_echo.py --broadcast --port {port}"),
    dict(name="gevent-minimal-ws", kind="ceiling", skip={"D"},
         cmd="{py} servers/gevent_minimal_ws_echo.py --port {port}",
         fanout="{py} servers/gevent_minimal_ws_echo.py --broadcast --port {port}"),
    dict(name="c-floor", kind="ceiling", only={"H", "E"}, cmd=f"{C_FLOOR} --port {{port}}",
         fanout=f"{C_FLOOR} --broadcast --port {{port}}"),
    dict(name="gevent-tcp", kind="ceiling", raw=True, cmd="{py} servers/gevent_tcp_echo.py --port {port}"),
    dict(name="asyncio-tcp", kind="ceiling", raw=True, cmd="{py} servers/asyncio_tcp_echo.py --port {port}"),
]
BY_NAME = {s["name"]: s for s in SERVERS}
GROUPS = {k: [s["name"] for s in SERVERS if s["kind"] == k] for k in ("gws13", "peer", "ceiling")}
GROUPS["peers"], GROUPS["ceilings"] = GROUPS.pop("peer"), GROUPS.pop("ceiling")


def takes_part(spec, wid):
    """Whether a server can run a workload at all (otherwise its cell reads n/a)."""
    if wid in spec.get("skip", ()) or ("only" in spec and wid not in spec["only"]):
        return False
    if wid == "E":
        return bool(spec.get("fanout"))
    return not (wid == "H" and spec.get("raw"))  # a storm needs the upgrade and the close handshake


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ environment
def sh(cmd, **kw):  # cwd=HERE: a `python -c` in the repo root would import gws13 from the cwd
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=HERE, **kw)


def setup(no_setup):
    """venv with the peers + gws13 (editable), the C client, and the open-files limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by servers and client
    if not no_setup:
        if not PY.exists():
            log(f"creating {VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        req, stamp = HERE / "requirements.txt", VENV / ".requirements-installed"
        if not stamp.exists() or stamp.read_text() != req.read_text():
            log(f"pip install -r {req}")
            subprocess.run([PY, "-m", "pip", "install", "-q", "-r", req], check=True)
            stamp.write_text(req.read_text())
        install_gws13()
    for binary in (CLIENT, C_FLOOR):
        src = binary.with_suffix(".c")
        if not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
            libs = ["-lz", "-lssl", "-lcrypto"] if binary == CLIENT else []  # the client's -z and -L modes
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(src), *libs], check=True)
    r = sh([PY, "-c", "import websockets.frames as f, websockets.speedups as s; assert f.apply_mask is s.apply_mask"])
    if r.returncode:
        sys.exit("websockets C speedups are not active in the venv: " + r.stderr.strip()[-300:])
    return hard


GWS13_WHERE = "import gws13, os; print(os.path.realpath(gws13.__file__))"


def install_gws13():
    """pip install -e REPO when gws13 is not importable from REPO or its packaging changed since."""
    meta = [REPO / f for f in ("pyproject.toml", "setup.py", "setup.cfg") if (REPO / f).exists()]
    if not meta:
        return
    meta += list((REPO / "gws13").glob("**/*.c"))  # C sources: rebuild the extension when they change
    stamp = VENV / ".gws13-installed"
    r = sh([PY, "-c", GWS13_WHERE])
    fresh = stamp.exists() and stamp.read_text() == str(REPO) and all(
        m.stat().st_mtime < stamp.stat().st_mtime for m in meta)
    if r.returncode == 0 and r.stdout.strip().startswith(str(REPO) + os.sep) and fresh:
        return
    log(f"pip install -e {REPO}")
    r = sh([PY, "-m", "pip", "install", "-q", "-e", REPO])
    if r.returncode:
        log("gws13 did not install:", r.stderr.strip()[-400:])
    else:
        stamp.write_text(str(REPO))


HELP = {}


def script_help(script):
    """`script --help` of a gws13 example ('' if it fails): options an older checkout may lack."""
    if script not in HELP:
        r = sh([PY, REPO / script, "--help"], timeout=20)
        HELP[script] = "" if r.returncode else r.stdout
    return HELP[script]


def server_cmd(spec):
    cmd = spec["cmd"]
    if spec.get("backlog_flag") and "--backlog" in script_help(spec["needs"]):
        cmd += f" --backlog {BACKLOG}"
    return cmd


def gws13_status():
    """None if gws13 can be benchmarked, else why not (rows then read 'missing')."""
    r = sh([PY, "-c", GWS13_WHERE])
    if r.returncode:
        return "gws13 not importable in benchmarks/.venv: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    if not r.stdout.strip().startswith(str(REPO) + os.sep):
        return f"the venv imports gws13 from {r.stdout.strip()}, not from {REPO}"
    return None


def env_info(hard_nofile):
    r = sh([PY, "-c", "import importlib.metadata as m, json\nv = {}\n"
                      "for d in ('gws13', 'gevent', 'greenlet', 'gevent-websocket', 'simple-websocket', 'wsproto',"
                      " 'websockets', 'picows', 'flask', 'werkzeug', 'flask-sock'):\n"
                      "    try: v[d] = m.version(d)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(v))"])
    try:
        pkgs = ", ".join(f"{k} {v}" for k, v in json.loads(r.stdout).items())
    except ValueError:
        pkgs = "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"machine": f"{os.cpu_count()} vCPU ({cpu}), {platform.platform()}",
            "python": sh([PY, "-VV"]).stdout.strip().replace("\n", " "),
            "packages": pkgs,
            "gws13 C extension": "built" if sh([PY, "-c", "import gws13._speedups"]).returncode == 0 else "not built",
            "pinning": f"servers `taskset -c {SERVER_CPU}`, load client `taskset -c {CLIENT_CPU}`",
            "open-files limit": str(hard_nofile)}


# ------------------------------------------------------------------ /proc accounting
def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    return st[st.rindex(")") + 2:].split()


def cpu_s(pid):
    try:
        f = proc_stat(pid)
        return (int(f[11]) + int(f[12])) / TICK  # utime + stime, all threads
    except OSError:
        return 0.0


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def core_busy():
    """{cpuN: (busy, total)} jiffies from /proc/stat (busy includes softirq: loopback traffic)."""
    out = {}
    with open("/proc/stat") as f:
        for ln in f:
            if ln[:3] == "cpu" and ln[3].isdigit():
                v = [int(x) for x in ln.split()[1:9]]
                out[ln.split()[0]] = (sum(v) - v[3] - v[4], sum(v))
    return out


def others_ticks():
    """utime+stime of every user process that is not this runner or one of its children."""
    me, tot = os.getpid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            try:
                f = proc_stat(d)
                if int(f[1]) not in (me, 2) and d != "2":  # skip our children and kernel threads
                    tot += int(f[11]) + int(f[12])
            except (OSError, ValueError, IndexError):
                pass
    return tot


QUIET_BUDGET = [float(os.environ.get("QUIET_BUDGET", "600"))]  # total seconds a run may spend waiting


def wait_quiet(limit):
    """Wait (at most `limit` s, and QUIET_BUDGET s over the whole run) until other processes leave
    the machine alone for 0.5 s."""
    t0 = time.time()
    while time.time() - t0 < min(limit, QUIET_BUDGET[0]):
        o0 = others_ticks()
        time.sleep(0.5)
        if (others_ticks() - o0) / TICK / 0.5 <= CONTENDED / 2:
            break
    QUIET_BUDGET[0] -= time.time() - t0


class Window:
    """CPU accounting of one measured window."""

    def __init__(self, server_pid):
        self.pid, self.t0 = server_pid, time.time()
        self.srv0, self.cores0, self.oth0 = cpu_s(server_pid), core_busy(), others_ticks()

    def close(self):
        dt = max(time.time() - self.t0, 1e-3)
        c1 = core_busy()
        busy = {k: (c1[k][0] - self.cores0[k][0]) / max(c1[k][1] - self.cores0[k][1], 1) for k in c1}
        return dict(server_cpu=(cpu_s(self.pid) - self.srv0) / dt, client_core=busy.get("cpu" + CLIENT_CPU),
                    others_cpu=max(others_ticks() - self.oth0, 0) / TICK / dt)


# ------------------------------------------------------------------ server processes
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LIVE = set()


class Server:
    def __init__(self, name, template):
        self.port = free_port()
        cmd = template.format(py=PY, repo=REPO, port=self.port).split()
        LOGS.mkdir(exist_ok=True)
        self.logpath = LOGS / f"{name}.log"
        self.logf = open(self.logpath, "a")
        self.logf.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n")
        self.logf.flush()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, cwd=HERE, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        LIVE.add(self)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                self.logf.flush()
                tail = self.logpath.read_text().strip().splitlines()[-1:]
                raise RuntimeError(f"server exited with {self.proc.returncode}: {' '.join(tail)[-300:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("server did not listen within 20 s")
                time.sleep(0.05)
        time.sleep(0.2)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        LIVE.discard(self)
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()


def client(port, *args, raw=False):
    cmd = ["taskset", "-c", CLIENT_CPU, str(CLIENT), "-p", str(port)] + (["-r"] if raw else [])
    return cmd + [str(a) for a in args]


def last_json(lines):
    for ln in reversed(lines):
        if ln.startswith("{"):
            return json.loads(ln)
    return {}


# ------------------------------------------------------------------ one measurement each
def measured_client(srv, cmd):
    """Run the load client; the server's CPU is sampled between its "measure" and "end" lines.
    Returns the process (exited) and its last JSON line merged with that accounting."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    win, acct, lines = None, {}, []
    for ln in p.stdout:
        ln = ln.strip()
        if ln == '{"phase":"measure"}':
            win = Window(srv.pid)
        elif ln == '{"phase":"end"}' and win:
            acct = win.close()
        else:
            lines.append(ln)
    p.wait()
    return p, dict(last_json(lines), **acct)


def run_echo(srv, spec, wid, cfg, wl=None, extra=()):
    conns, window, size, text, _ = wl or ECHO_WL[wid]
    p, rec = measured_client(srv, client(srv.port, "-c", conns, "-w", window, "-s", size, "-d", cfg.duration,
                                         "-W", cfg.warmup, *(["-t"] if text else []), *extra,
                                         raw=spec.get("raw")))
    rec["ok"] = p.returncode == 0 and "msg_per_s" in rec
    if not rec["ok"]:
        rec["why"] = rec.get("error") or (f"client rc={p.returncode}, dead connections={rec.get('errors')}, "
                                          f"corrupt/unexpected frames={rec.get('bad')}, last error "
                                          f"{rec.get('last_err')!r}, server alive={srv.alive()} "
                                          + p.stderr.read().strip()[-200:])
    return rec


def run_idle(spec, cfg):
    srv = Server(spec["name"], server_cmd(spec))
    try:
        time.sleep(0.2)
        rec = dict(conns=cfg.d_conns, rss_base_kib=rss_kib(srv.pid))
        p = subprocess.Popen(client(srv.port, "-m", "idle", "-c", cfg.d_conns, "-C", 64, "-T", 180,
                                    raw=spec.get("raw")),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = json.loads(p.stdout.readline() or "{}")
        rec.update(open=ready.get("open", 0), connect_secs=ready.get("connect_secs"), last_err=ready.get("last_err"))
        time.sleep(min(1.0, cfg.idle_secs / 4))  # let the server finish its per-connection setup
        win = Window(srv.pid)
        time.sleep(cfg.idle_secs)
        acct = win.close()
        rec.update(idle_cpu=acct["server_cpu"], others_cpu=acct["others_cpu"], rss_idle_kib=rss_kib(srv.pid))
        p.stdin.write("echo\n")
        p.stdin.flush()
        done = json.loads(p.stdout.readline() or "{}")
        rec.update(echoed=done.get("echoed", 0), bad=done.get("bad"), pings=done.get("pings"))
        rec["rss_echo_kib"] = rss_kib(srv.pid)
        p.stdin.close()
        p.wait(30)
        n = max(rec["open"], 1)
        rec["kib_per_conn"] = (rec["rss_idle_kib"] - rec["rss_base_kib"]) / n
        rec["kib_per_conn_echo"] = (rec["rss_echo_kib"] - rec["rss_base_kib"]) / n
        rec["ok"] = rec["open"] == cfg.d_conns and rec["echoed"] == cfg.d_conns and not rec["bad"]
        if not rec["ok"]:  # figures still shown (marked ⚠) when nearly all connections worked
            rec["partial"] = rec["open"] >= 0.95 * cfg.d_conns and rec["echoed"] == rec["open"]
            rec["why"] = (f"{rec['open']} of {cfg.d_conns} connections opened (last error {rec['last_err']!r}), "
                          f"{rec['echoed']} echoed after the idle period, server alive={srv.alive()}; the "
                          f"open-files limit per process is {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}")
        return rec
    finally:
        srv.stop()


def run_storm(spec, cfg):
    srv = Server(spec["name"] + ".H", server_cmd(spec))
    try:
        p, rec = measured_client(srv, client(srv.port, "-m", "storm", "-n", cfg.h_conns, "-c", cfg.h_concurrency,
                                             "-W", cfg.h_warmup, "-T", H_CONN_TIMEOUT))
        done = rec.get("completed") or 0
        if done and rec.get("server_cpu") is not None:
            rec["server_us_per_conn"] = rec["server_cpu"] * rec["secs"] * 1e6 / done
        clean = not rec.get("failures") and not rec.get("warmup_failures") and done == cfg.h_conns
        rec["ok"] = p.returncode == 0 and "conn_per_s" in rec and clean
        if not rec["ok"]:  # figures still shown (marked ⚠) for the connections that worked
            rec["partial"] = done > 0
            rec["why"] = (f"{rec.get('failures', '?')} of {cfg.h_conns} connections failed, "
                          f"{rec.get('warmup_failures', '?')} of {cfg.h_warmup} warm-up ones; by reason "
                          f"{rec.get('fail_reasons', {})}; client rc={p.returncode}, server alive={srv.alive()} "
                          + p.stderr.read().strip()[-200:])
        return rec
    finally:
        srv.stop()


def run_fanout(spec, cfg, fanout_cmd):
    srv = Server(spec["name"] + ".E", fanout_cmd)
    try:
        win = Window(srv.pid)
        p = sh(client(srv.port, "-m", "fanout", "-c", cfg.e_conns, "-s", 32, "-d", cfg.e_secs),
               timeout=cfg.e_secs + 300)
        rec = dict(last_json(p.stdout.strip().splitlines()), **win.close())
        rec["ok"] = p.returncode == 0 and "last_p50_us" in rec
        if not rec["ok"]:
            rec["why"] = rec.get("error") or f"client rc={p.returncode} {p.stderr.strip()[-200:]}"
        return rec
    finally:
        srv.stop()


def run_deflate(spec, cfg):
    """J on a fresh server: the client's -z mode (Chrome's offer, varied JSON, every echo inflated
    and checked); a server that must compress and did not negotiate fails the run."""
    srv = Server(spec["name"] + ".J", J_CMD[spec["name"]] or spec["cmd"])
    try:
        rec = run_echo(srv, spec, "J", cfg, wl=J_WL, extra=["-z"])
        if rec["ok"] and spec["name"] in J_MUST_COMPRESS and not rec.get("deflate"):
            rec.update(ok=False, why="permessage-deflate was not negotiated")
        return rec
    finally:
        srv.stop()


def tls_files():
    """The T servers' certificate and key (self-signed, made once with the openssl command)."""
    if not (TLS_CERT.exists() and TLS_KEY.exists()):
        LOGS.mkdir(exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1", "-keyout", TLS_KEY, "-out", TLS_CERT],
                       check=True, capture_output=True)


def run_tls(spec, wid, cfg):
    """One T workload on a fresh TLS server."""
    srv = Server(spec["name"] + "." + wid, T_CMD[spec["name"]])
    try:
        return run_echo(srv, spec, wid, cfg, wl=T_WL[wid], extra=["-L"])
    finally:
        srv.stop()


def run_t(order, rep, cfg, wls, record, measure, gws13_check):
    """One repeat of T: each T workload on every selected server that has a TLS command."""
    for wid in [w for w in T_WL if w in wls]:
        for name in order:
            spec = BY_NAME[name]
            why = gws13_check(spec, wid)
            if name not in T_CMD:
                record(name, wid, rep, dict(ok=False, status="n/a"))
            elif why:
                record(name, wid, rep, dict(ok=False, status="missing", why=why))
            else:
                try:
                    record(name, wid, rep, measure(lambda: run_tls(spec, wid, cfg)))
                except RuntimeError as e:
                    record(name, wid, rep, dict(ok=False, why=str(e)))


def t_detail(S, runs, names):
    """The T section of the report: throughput, CPU per message, ratios within each repeat."""
    L = ["## T detail: TLS (wss://)\n",
         "The echo over TLS: the C client (OpenSSL, read-ahead on) against each server's own TLS, a "
         "self-signed ECDSA P-256 certificate, TLS 1.3 as negotiated. T(a): 1 connection, 1 message of 32 B "
         "text in flight; T(b): 1 connection, 8 binary messages of 64 KiB in flight. Ratios are medians of "
         "the per-repeat ratios.\n"]
    rows = []
    for n in names:
        row = [n]
        for wid, key in (("TA", "msg_per_s"), ("TB", "mb_per_s")):
            e = S.get(n, {}).get(wid)
            if not e or e["status"]:
                row += [cell(S, n, wid, "")] + [""] * 4
                continue
            per = (e["server_cpu"] / e["msg_per_s"] * 1e6 if e.get("server_cpu") and e.get("msg_per_s")
                   else None)
            row += [cell(S, n, wid, key, 1 if key == "mb_per_s" else 0), fnum(per, 1),
                    fnum((e.get("client_cpu") or 0) * 100)]
            row += [ratio_cell(*per_repeat(runs, wid, key, n, ref)) for ref in T_REFS]
        if any(row[1:]):
            rows.append(row)
    L += table(["server", "T(a) msg/s", "T(a) server µs/msg", "T(a) client CPU %", "T(a) ÷ websockets",
                "T(a) ÷ picows", "T(b) MB/s", "T(b) server µs/msg", "T(b) client CPU %", "T(b) ÷ websockets",
                "T(b) ÷ picows"], rows)
    return L + [""]


def run_j(order, rep, cfg, record, measure, gws13_check):
    """One repeat of J: every selected server that takes part, back to back (same-run ratios)."""
    for name in order:
        spec = BY_NAME[name]
        why = gws13_check(spec, "J")
        if name not in J_CMD:
            record(name, "J", rep, dict(ok=False, status="n/a"))
        elif why:
            record(name, "J", rep, dict(ok=False, status="missing", why=why))
        else:
            try:
                record(name, "J", rep, measure(lambda: run_deflate(spec, cfg)))
            except RuntimeError as e:
                record(name, "J", rep, dict(ok=False, why=str(e)))


def j_detail(S, runs, names):
    """The J section of the report: throughput, bytes on the wire, CPU, ratios to websockets."""
    ext = {}
    for r in runs:
        if r["workload"] == "J" and r.get("ok"):
            ext.setdefault(r["server"], r.get("ext") or "none: sent and answered uncompressed")
    base = S.get("websockets", {}).get("J") or {}
    rows = []
    for n in names:
        e = S.get(n, {}).get("J")
        if not e or e["status"]:
            if e and e["status"] != "n/a":
                rows.append([n, cell(S, n, "J", "")] + [""] * 8)
            continue
        per = e.get("server_cpu") / e["msg_per_s"] * 1e6 if e.get("server_cpu") and e.get("msg_per_s") else None
        ratio = (lambda k: f"{e[k] / base[k]:.2f}" if e.get(k) and base.get(k) and not base["status"] else "–")
        rows.append([n, f"`{ext.get(n, '?')}`", cell(S, n, "J", "msg_per_s"), fnum(e.get("wire_per_msg"), 1),
                     fnum(e.get("wire_up_per_msg"), 1), fnum((e.get("server_cpu") or 0) * 100),
                     fnum(per, 1), fnum((e.get("client_cpu") or 0) * 100), ratio("msg_per_s"),
                     ratio("wire_per_msg")])
    L = ["## J detail: permessage-deflate, 1 KiB JSON\n",
         "1 connection, 16 messages in flight, JSON texts of 1,024 bytes (384 distinct documents), offered "
         "`permessage-deflate; client_max_window_bits` as Chrome does. Wire bytes are per message with frame "
         "headers: server → client (the echo, compressed by the server) and client → server.\n"]
    L += table(["server", "negotiated", "msg/s", "wire B/msg ↓", "client→server B/msg", "server CPU %",
                "server µs/msg", "client CPU %", "msg/s ÷ websockets ↑", "wire ÷ websockets ↓"], rows)
    return L + [""]


# ------------------------------------------------------------------ summary and report
METRICS = ("msg_per_s", "mb_per_s", "p50_us", "p99_us", "client_cpu", "client_core", "server_cpu", "kib_per_conn",
           "kib_per_conn_echo", "idle_cpu", "rss_base_kib", "rss_idle_kib", "rss_echo_kib", "connect_secs",
           "last_p50_us", "last_p90_us", "last_max_us", "first_p50_us", "rounds", "pings", "conn_per_s", "max_us",
           "client_us_per_conn", "server_us_per_conn")
METRICS += ("wire_per_msg", "wire_up_per_msg")


def summarize(runs):
    S = {}
    for r in runs:
        S.setdefault(r["server"], {}).setdefault(r["workload"], []).append(r)
    out = {}
    for name, per in S.items():
        for wid, rs in per.items():
            ok = [r for r in rs if r.get("ok")]
            part = [] if ok else [r for r in rs if r.get("partial")]
            statuses = {r.get("status") for r in rs}  # n/a, missing, see ... (same for every run)
            e = dict(n=len(rs), n_ok=len(ok), partial=bool(part), status=None)
            ok = ok or part
            if not ok:
                e["status"] = statuses.pop() if len(statuses) == 1 and None not in statuses else "FAIL"
                e["why"] = next((r.get("why") for r in rs if r.get("why") and not r.get("status")), "")
            rs = [r for r in rs if not r.get("status")]  # e.g. 'missing' in the first repeat only
            e["n"] = len(rs)
            for k in METRICS:
                vals = [r[k] for r in ok if r.get(k) is not None]
                if vals:
                    e[k] = statistics.median(vals)
            e["contended"] = any((r.get("others_cpu") or 0) > CONTENDED for r in ok)
            out.setdefault(name, {})[wid] = e
    return out


def fnum(v, nd=0):
    return "–" if v is None else f"{v:,.{nd}f}"


# (column title, workload, metric, digits, scale, higher is better)
COLUMNS = [("A msg/s", "A", "msg_per_s", 0, 1, True), ("A p50 µs", "A", "p50_us", 0, 1, False),
           ("A p99 µs", "A", "p99_us", 0, 1, False), ("B1 msg/s", "B1", "msg_per_s", 0, 1, True),
           ("B2 msg/s", "B2", "msg_per_s", 0, 1, True), ("B3 msg/s", "B3", "msg_per_s", 0, 1, True),
           ("B4 msg/s", "B4", "msg_per_s", 0, 1, True), ("C MB/s", "C", "mb_per_s", 1, 1, True),
           ("D KiB/conn", "D", "kib_per_conn", 1, 1, False), ("D idle CPU %", "D", "idle_cpu", 2, 100, False),
           ("E last ms", "E", "last_p50_us", 2, 1e-3, False), ("H conn/s", "H", "conn_per_s", 0, 1, True),
           ("H p99 ms", "H", "p99_us", 1, 1e-3, False)]
COLUMNS += [("J msg/s", "J", "msg_per_s", 0, 1, True), ("J wire B/msg", "J", "wire_per_msg", 0, 1, False)]
COLUMNS += [("T(a) msg/s", "TA", "msg_per_s", 0, 1, True), ("T(b) MB/s", "TB", "mb_per_s", 1, 1, True)]


def cell(S, name, wid, key, nd=0, scale=1):
    e = S.get(name, {}).get(wid)
    if e is None:
        return ""
    if e["status"]:
        return e["status"] if e["status"] != "FAIL" else "**FAIL**"
    v = e.get(key)
    s = fnum(None if v is None else v * scale, nd)
    if e["partial"]:
        s += " ⚠"
    elif e["n_ok"] < e["n"]:
        s += f" ({e['n_ok']}/{e['n']} ok)"
    return s + (" †" if e["contended"] else "")


def table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


H_REFS = ("websockets", "picows")  # the H ratio columns: every server against these two


def per_repeat(runs, wid, key, name, ref):
    """name's figure ÷ ref's, one ratio per repeat in which both have one; and whether any of those
    runs had failures (then the ratio is for the connections that worked)."""
    by = {}
    for r in runs:
        if r["workload"] == wid and r["server"] in (name, ref) and r.get(key) and (r.get("ok") or r.get("partial")):
            by.setdefault(r["rep"], {})[r["server"]] = r
    pairs = [v for v in by.values() if name in v and ref in v]
    return [v[name][key] / v[ref][key] for v in pairs], any(not x.get("ok") for v in pairs for x in v.values())


def ratio_cell(vals, partial):
    if not vals:
        return "–"
    s = f"{statistics.median(vals):.2f}"
    if len(vals) > 1:
        s += " (" + " / ".join(f"{v:.2f}" for v in vals) + ")"
    return s + (" ⚠" if partial else "")


def h_detail(meta, runs, names, S):
    refs = [r for r in H_REFS if r in names]
    L = ["## H detail: reconnect storm\n",
         f"{meta.get('h_conns', 0):,} connections, at most {meta.get('h_concurrency', 0):,} at once, each: "
         "connect, upgrade, one 32 B text message and its echo, close handshake (1000), abortive close. "
         "conn/s = completed connections ÷ the storm's seconds; latency = connect() → the echo, over every "
         "measured connection. CPU in % of one core over the storm (client process / client core / server "
         "process) and per completed connection. Failures: all failed connections of all repeats, warm-up "
         "included (reasons under Failures). Ratio columns: this server ÷ the reference, computed within "
         "each repeat (the median, then the repeats in order); conn/s ↑, p99 ↓.\n"]
    rows = []
    for n in names:
        e = S.get(n, {}).get("H")
        if not e or e["status"]:
            rows.append([n, cell(S, n, "H", "")] + [""] * (7 + 2 * len(refs)))
            continue
        fails = sum((r.get("failures") or 0) + (r.get("warmup_failures") or 0) for r in runs
                    if r["server"] == n and r["workload"] == "H" and not r.get("status"))
        row = [n, cell(S, n, "H", "conn_per_s"), fnum(e.get("p50_us", 0) / 1e3, 1), fnum(e.get("p99_us", 0) / 1e3, 1),
               fnum(e.get("max_us", 0) / 1e3, 1), f"**{fails:,}**" if fails else "0",
               " / ".join("?" if e.get(k) is None else f"{e[k] * 100:.0f}"
                          for k in ("client_cpu", "client_core", "server_cpu")),
               fnum(e.get("client_us_per_conn")), fnum(e.get("server_us_per_conn"))]
        for key in ("conn_per_s", "p99_us"):
            row += [ratio_cell(*per_repeat(runs, "H", key, n, ref)) if n != ref else "1.00" for ref in refs]
        rows.append(row)
    L += table(["server", "conn/s", "p50 ms", "p99 ms", "max ms", "failures", "CPU % client / core / server",
                "client µs/conn", "server µs/conn"] + [f"conn/s ÷ {r} ↑" for r in refs]
               + [f"p99 ÷ {r} ↓" for r in refs], rows)
    return L + [""]


def report(meta, runs, names, wls):
    S = summarize(runs)
    cols = [c for c in COLUMNS if c[1] in wls]
    L = ["# gws13 benchmark results\n",
         f"Generated {meta['finished']} by `{meta['command']}` in {meta['elapsed_s'] / 60:.1f} min. "
         f"Raw runs: `{meta['json']}`. How to read this: `README.md`.\n"]
    L += [f"- **{k}**: {v}" for k, v in meta["env"].items()]
    L += [f"- **settings**: {meta['repeats']} repeat(s), {meta['duration']} s measured after {meta['warmup']} s "
          f"warm-up (A–C); D: {meta['d_conns']:,} idle connections, idle CPU over {meta['idle_secs']} s; "
          f"E: {meta['e_conns']:,} clients, broadcast rounds for {meta['e_secs']} s"
          + (f"; H: {meta['h_conns']:,} connections, at most {meta['h_concurrency']:,} at once, after "
             f"{meta['h_warmup']:,} warm-up ones" if "h_conns" in meta else ""), ""]
    L += ["## Results (median of the repeats)\n"]
    L += table(["server"] + [c[0] for c in cols],
               [[n] + [cell(S, n, c[1], c[2], c[3], c[4]) for c in cols] for n in names])
    L += ["", "`n/a` = the server does not take part in this workload; `missing` = gws13 example or package not "
          "there yet; **FAIL** = no run succeeded (see Failures); ⚠ = only most of the D connections "
          "worked, or some H connections failed (see Failures), figures are for those that worked; † = other "
          f"processes used more than {CONTENDED} core during the run. E last ms = median over broadcast rounds "
          "of the time until the last client had the message. H: completed connections per second and p99 "
          "of connect → first echo.\n"]

    # ---- ratios
    gw = [n for n in names if BY_NAME[n]["kind"] == "gws13"]
    others = [n for n in names if BY_NAME[n]["kind"] != "gws13"]
    rcols = [c for c in cols if c[0] not in ("A p50 µs", "D idle CPU %")]  # idle CPU is ~0 everywhere
    if gw and others:
        L += ["## gws13 ratios (gws13 ÷ other, same run)\n",
              "Each cell is gws13's median divided by the other server's median. ↑ columns: higher is better "
              "(> 1.00 = gws13 faster); ↓ columns: lower is better (< 1.00 = gws13 lower latency, less memory, "
              "quicker fan-out). Idle CPU is compared in the D detail table only (near 0 for every server).\n"]
        rows = []
        for g in gw:
            for o in others:
                row = [g, o + (" [ceiling]" if BY_NAME[o]["kind"] == "ceiling" else "")]
                for c in rcols:
                    a, b = S.get(g, {}).get(c[1]), S.get(o, {}).get(c[1])
                    va, vb = (a or {}).get(c[2]), (b or {}).get(c[2])
                    ok = a and b and not a["status"] and not b["status"] and va is not None and vb
                    row.append(f"{va / vb:.2f}" if ok else (a or {}).get("status") or "–")
                rows.append(row)
        L += table(["gws13", "vs"] + [c[0] + (" ↑" if c[5] else " ↓") for c in rcols], rows) + [""]

    # ---- latency / fairness
    bws = [w for w in ("B1", "B2", "B3", "B4") if w in wls]
    if bws:
        L += ["## Latency under load and fairness (B)\n",
              "p50 / p99 round trip in µs (pipelined: includes queueing behind the 63 other messages). "
              "Fairness = p99 ÷ p50 in B3/B4 (50 connections): near 1–2 means every connection is served "
              "evenly; a large value means some connections wait while others are served.\n"]
        fair = [w for w in ("B3", "B4") if w in wls]
        rows = []
        for n in names:
            row = [n]
            for w in bws:
                e = S.get(n, {}).get(w)
                row.append(cell(S, n, w, "") if not e or e["status"]
                           else f"{fnum(e.get('p50_us'))} / {fnum(e.get('p99_us'))}")
            for w in fair:
                e = S.get(n, {}).get(w)
                ok = e and not e["status"] and e.get("p50_us")
                row.append(f"{e['p99_us'] / e['p50_us']:.1f}" if ok else cell(S, n, w, ""))
            rows.append(row)
        L += table(["server"] + [f"{w} p50/p99 µs" for w in bws] + [f"{w} fairness p99/p50" for w in fair], rows)
        L += [""]

    # ---- client headroom
    ews = [w for w in ECHO_IDS if w in wls]
    if ews:
        L += ["## Is the load client the bottleneck?\n",
              f"CPU during the measured window, in % of one core: `client process / client core {CLIENT_CPU} "
              f"busy / server process`. The client core figure also counts the kernel's loopback (softirq) work. "
              f"A server-bound run shows the server near 100 % while the client has room left.\n"]
        rows = []
        for n in names:
            row = [n]
            for w in ews:
                e = S.get(n, {}).get(w)
                if not e or e["status"]:
                    row.append(cell(S, n, w, ""))
                else:
                    row.append(" / ".join("?" if e.get(k) is None else f"{e[k] * 100:.0f}"
                                          for k in ("client_cpu", "client_core", "server_cpu")))
            rows.append(row)
        L += table(["server"] + ews, rows) + [""]
        raw = [n for n in names if BY_NAME[n].get("raw")]
        ws = [n for n in names if not BY_NAME[n].get("raw")]
        if raw and ws:
            L += ["Headroom: the same client drives the raw TCP echo (it parses and verifies the bounced frames "
                  "exactly like WebSocket replies) far faster than any WebSocket server is driven.\n"]
            rows = []
            for w in [w for w in ews if w != "A"]:  # A is latency-bound: neither side saturates
                key, nd = ("mb_per_s", 1) if w == "C" else ("msg_per_s", 0)
                best = max(((S.get(n, {}).get(w, {}).get(key) or 0, n) for n in ws), default=(0, None))
                top = max(((S.get(n, {}).get(w, {}).get(key) or 0, n) for n in raw), default=(0, None))
                if not best[0] or not top[0]:
                    continue
                eb, et = S[best[1]][w], S[top[1]][w]
                cap = top[0] / et["client_cpu"] if et.get("client_cpu") else None
                rows.append([w, f"{best[1]}: {fnum(best[0], nd)}", f"{(eb.get('client_cpu') or 0) * 100:.0f} %",
                             f"{top[1]}: {fnum(top[0], nd)}",
                             f"{(et.get('client_cpu') or 0) * 100:.0f} % / {(et.get('server_cpu') or 0) * 100:.0f} %",
                             f"{top[0] / best[0]:.1f}×", fnum(cap, nd)])
            L += table(["workload", "fastest WS server (msg/s; C: MB/s)", "its client CPU", "fastest raw TCP echo",
                        "client / server CPU", "raw ÷ best WS", "client capacity at 100 % CPU (est.)"], rows)
            L += ["", "Capacity = raw-echo rate ÷ the client's CPU share in that run. A (one message in flight) is "
                  "latency-bound and left out. C moves 1 MiB messages: there the kernel's loopback copies, not "
                  "either process, set the ceiling.\n"]

    # ---- D / E detail
    if "D" in wls:
        L += ["## D detail: idle connections\n"]
        rows = []
        for n in names:
            e = S.get(n, {}).get("D")
            if not e or e["status"]:
                rows.append([n, cell(S, n, "D", "")] + [""] * 6)
                continue
            rows.append([n, fnum(e.get("connect_secs"), 2), fnum(e["rss_base_kib"] / 1024, 1),
                         fnum(e["rss_idle_kib"] / 1024, 1), fnum(e["kib_per_conn"], 1),
                         fnum(e["kib_per_conn_echo"], 1), fnum(e["idle_cpu"] * 100, 2), fnum(e.get("pings"))])
        L += table(["server", "connect s", "RSS before MiB", "RSS idle MiB", "KiB/conn idle",
                    "KiB/conn after 1 echo", "idle CPU %", "pings seen"], rows)
        L += ["", f"KiB/conn = (server RSS after {meta['idle_secs']} s idle − RSS before connecting) ÷ "
              "connections; kernel socket buffers are not in RSS. Idle CPU includes the server's default "
              "keepalive (e.g. websockets pings every 20 s; 'pings seen' counts pings the client answered "
              "during the run).\n"]
    if "E" in wls:
        L += ["## E detail: broadcast fan-out\n"]
        rows = []
        for n in names:
            e = S.get(n, {}).get("E")
            if not e or e["status"]:
                rows.append([n, cell(S, n, "E", "")] + [""] * 4)
                continue
            rows.append([n, fnum(e.get("rounds")), fnum(e["last_p50_us"] / 1e3, 2), fnum(e["last_p90_us"] / 1e3, 2),
                         fnum(e["last_max_us"] / 1e3, 2), fnum(e["first_p50_us"] / 1e3, 3)])
        L += table(["server", "rounds", "last p50 ms", "last p90 ms", "last max ms", "first p50 ms"], rows)
        L += ["", f"One of {meta['e_conns']:,} connected clients sends `broadcast:<32 B>`; time from that send "
              "until the last client (first client) received the payload.\n"]

    if "H" in wls:
        L += h_detail(meta, runs, names, S)

    if "J" in wls:
        L += j_detail(S, runs, names)

    if any(w in wls for w in T_WL):
        L += t_detail(S, runs, names)
    # ---- failures
    L += ["## Failures\n"]
    seen = []
    for r in runs:
        if not r.get("ok") and not r.get("status") and (r["server"], r["workload"]) not in seen:
            seen.append((r["server"], r["workload"]))
            L.append(f"- **{r['server']} / {r['workload']}**: {r.get('why')}")
    if meta.get("missing"):
        L.append(f"- gws13 rows `missing`: {meta['missing']}")
    if len(L) and L[-1] == "## Failures\n":
        L.append("None.")
    L += ["", "## Profile notes\n", "See README.md (section *Profile notes*).", ""]
    return "\n".join(L)


# ------------------------------------------------------------------ main
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="", help="comma list of server names or groups "
                    f"(gws13, peers, ceilings); default all: {', '.join(BY_NAME)}")
    ap.add_argument("--workloads", default="", help=f"comma list from {','.join(WORKLOADS)} (T: TA and TB; "
                    "default all)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: 1 repeat of 2 s, 0.25 s warm-up, "
                    "D with 1,000 conns / 1.5 s idle, E for 1 s, H with 2,000 conns, no waiting for a quiet machine")
    ap.add_argument("--repeats", type=int, help="runs per cell, median reported (env REPEATS, default 3)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (env DURATION, default 5)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds before measuring (env WARMUP, default 1)")
    ap.add_argument("--d-conns", type=int, help="idle connections in D (env D_CONNS, default 10000)")
    ap.add_argument("--idle-secs", type=float, help="idle CPU window in D (env IDLE_SECS, default 10)")
    ap.add_argument("--e-conns", type=int, help="clients in E (env E_CONNS, default 1000)")
    ap.add_argument("--e-secs", type=float, help="seconds of broadcast rounds in E (env E_SECS, default 5)")
    ap.add_argument("--h-conns", type=int, help="connections of the reconnect storm H, warm-up not counted "
                    "(env H_CONNS, default 5000; 2000 in --quick)")
    ap.add_argument("--h-concurrency", type=int, help="H connections in flight at once (env H_CONCURRENCY, "
                    "default 500)")
    ap.add_argument("--h-warmup", type=int, help="H warm-up connections before measuring (env H_WARMUP, "
                    "default 200)")
    ap.add_argument("--retries", type=int, help="re-runs of a measurement disturbed by other processes "
                    "(env RETRIES, default 1; 0 in --quick)")
    ap.add_argument("--wait-quiet", type=float, help="before each measurement wait up to this many seconds "
                    "for other processes to go idle (env WAIT_QUIET, default 30; 0 in --quick; at most "
                    "QUIET_BUDGET=600 s in total)")
    ap.add_argument("--out", default=str(HERE / "results.md"), help="markdown report (JSON next to it)")
    ap.add_argument("--no-setup", action="store_true", help="do not create/update benchmarks/.venv")
    ap.add_argument("--list", action="store_true", help="list servers and workloads, then exit")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the JSON next to --out "
                    "without measuring")
    a = ap.parse_args()
    quick = dict(repeats=1, duration=2.0, warmup=0.25, d_conns=1000, idle_secs=1.5, e_conns=1000, e_secs=1.0,
                 h_conns=2000, h_concurrency=500, h_warmup=200, retries=0,
                 wait_quiet=0.0)
    full = dict(repeats=3, duration=5.0, warmup=1.0, d_conns=10000, idle_secs=10.0, e_conns=1000, e_secs=5.0,
                h_conns=5000, h_concurrency=500, h_warmup=200, retries=1,
                wait_quiet=30.0)
    for k, v in full.items():
        if getattr(a, k) is None:
            env = os.environ.get(k.upper())  # flag > environment > --quick/full default
            setattr(a, k, type(v)(env) if env else (quick if a.quick else full)[k])
    return a


def select(a):
    names = []
    for tok in filter(None, (t.strip() for t in a.servers.split(","))):
        if tok in GROUPS:
            names += GROUPS[tok]
        elif tok in BY_NAME:
            names.append(tok)
        else:
            sys.exit(f"unknown server {tok!r}; choose from {', '.join(list(BY_NAME) + list(GROUPS))}")
    names = [n for n in BY_NAME if n in names] or list(BY_NAME)
    wls = [w.strip().upper() for w in a.workloads.split(",") if w.strip()] or WORKLOADS
    wls = [t for w in wls for t in (T_WL if w == "T" else [w])]  # T: both TLS workloads
    for w in wls:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return names, [w for w in WORKLOADS if w in wls]


def main():
    a = parse_args()
    names, wls = select(a)
    if a.list:
        for s in SERVERS:
            print(f"{s['name']:<22} {s['kind']:<8} {s['cmd']}")
        for w, (c, win, size, text, desc) in ECHO_WL.items():
            print(f"{w:<3} {desc}")
        print("D   idle connections: server RSS per connection and idle CPU")
        print("E   broadcast fan-out to 1,000 clients: time until the last one has it")
        print("H   reconnect storm: connect, upgrade, one 32 B echo, close; conn/s and p99 connect -> echo")
        print(f"J   {J_WL[4]}")
        for w, wl in T_WL.items():
            print(f"{w:<3} {wl[4]}")
        return
    if a.report_only:
        data = json.loads(Path(a.out).with_suffix(".json").read_text())
        have = {r["server"] for r in data["runs"]}, {r["workload"] for r in data["runs"]}
        Path(a.out).write_text(report(data["meta"], data["runs"], [n for n in BY_NAME if n in have[0]],
                                      [w for w in WORKLOADS if w in have[1]]))
        log(f"rebuilt {a.out}")
        return
    t_start = time.time()
    atexit.register(lambda: [s.stop() for s in list(LIVE)])  # servers run in their own session
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # keep the runner off the server's core
    hard = setup(a.no_setup)
    if "D" in wls and hard < a.d_conns + 200:
        log(f"open-files hard limit is {hard}: D reduced from {a.d_conns} to {hard - 200} connections")
        a.d_conns = hard - 200
    missing = gws13_status()
    if any(w in wls for w in T_WL):
        tls_files()

    def gws13_check(spec, what):
        if spec["kind"] != "gws13":
            return None
        if missing:
            return missing
        need = "examples/broadcast.py" if what == "E" else spec["needs"]
        return None if (REPO / need).exists() else f"{need} does not exist yet"

    def fanout_cmd(spec):
        cmd = spec["fanout"]
        if spec["kind"] == "gws13" and "--mode" in script_help("examples/broadcast.py"):  # pass --mode too
            cmd += f" --mode {spec['mode']}"
        return cmd

    meta = dict(command="python benchmarks/run.py " + " ".join(sys.argv[1:]), repeats=a.repeats,
                duration=a.duration, warmup=a.warmup, d_conns=a.d_conns, idle_secs=a.idle_secs,
                e_conns=a.e_conns, e_secs=a.e_secs, h_conns=a.h_conns, h_concurrency=a.h_concurrency,
                h_warmup=a.h_warmup, json=Path(a.out).with_suffix(".json").name, missing=missing,
                started=datetime.now(timezone.utc).isoformat(timespec="seconds"), env=env_info(hard))
    if missing:
        log("gws13:", missing)
    runs = []

    def record(name, wid, rep, rec):
        rec.update(server=name, workload=wid, rep=rep)
        runs.append(rec)
        if rec.get("status"):
            return
        brief = {k: round(rec[k], 3 if k.endswith("cpu") else 1) for k in ("msg_per_s", "mb_per_s", "conn_per_s",
                 "p50_us", "p99_us", "client_cpu", "server_cpu", "kib_per_conn", "idle_cpu", "last_p50_us", "failures")
                 if rec.get(k) is not None}
        figures = " ".join(f"{k}={v:,}" for k, v in brief.items())
        log(f"rep {rep} {name:<21} {wid:<3}", figures if rec["ok"] else
            f"PARTIAL: {figures}; {rec.get('why')}" if rec.get("partial") else f"FAIL: {rec.get('why')}")

    def measure(fn):
        for attempt in range(a.retries + 1):
            wait_quiet(a.wait_quiet)
            rec = fn()
            if (rec.get("others_cpu") or 0) <= CONTENDED or attempt == a.retries:
                return rec
            log(f"other processes used {rec['others_cpu']:.2f} cores during the run: measuring again")

    def run_cell(name, wid, rep, fn):
        """One fresh-server measurement, or the reason there is none."""
        why = gws13_check(BY_NAME[name], wid)
        if not takes_part(BY_NAME[name], wid):
            record(name, wid, rep, dict(ok=False, status="n/a"))
        elif why:
            record(name, wid, rep, dict(ok=False, status="missing", why=why))
        else:
            try:
                record(name, wid, rep, measure(fn))
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                record(name, wid, rep, dict(ok=False, why=repr(e)))

    ews = [w for w in wls if w in ECHO_WL]
    for rep in range(1, a.repeats + 1):
        # a different server goes first in each repeat
        order = names[(rep - 1) % len(names):] + names[:(rep - 1) % len(names)]
        live = {}
        for name in order:
            why = gws13_check(BY_NAME[name], "echo")
            mine = [w for w in ews if takes_part(BY_NAME[name], w)]
            for w in ews:
                if w not in mine:
                    record(name, w, rep, dict(ok=False, status="n/a"))
                elif why:
                    record(name, w, rep, dict(ok=False, status="missing", why=why))
            if mine and not why:
                live[name] = None  # started when first measured, kept for the repeat
        # Each workload runs on every server before the next workload starts, so the
        # figures a ratio compares are taken within a minute or so of each other (the
        # machine's speed drifts over the half hour of a full run).
        for w in ews:
            for name, srv in live.items():
                spec = BY_NAME[name]
                if not takes_part(spec, w):
                    continue
                try:
                    if srv is None or not srv.alive():
                        srv = live[name] = Server(name, server_cmd(spec))
                    record(name, w, rep, measure(lambda: run_echo(srv, spec, w, a)))
                except RuntimeError as e:
                    record(name, w, rep, dict(ok=False, why=str(e)))
                time.sleep(0.1)
        for srv in live.values():
            if srv:
                srv.stop()
        # H right after the echo workloads, on every server in turn (a fresh process each): the
        # figures of one repeat, which its ratios compare, are a minute apart at most
        for name in order if "H" in wls else []:
            run_cell(name, "H", rep, lambda: run_storm(BY_NAME[name], a))
        if "J" in wls:
            run_j(order, rep, a, record, measure, gws13_check)
        if any(w in wls for w in T_WL):
            run_t(order, rep, a, wls, record, measure, gws13_check)
        for name in order:
            spec = BY_NAME[name]
            if "D" in wls:
                run_cell(name, "D", rep, lambda: run_idle(spec, a))
            if "E" in wls:
                shared = (spec["kind"] == "gws13" and takes_part(spec, "E") and "--mode" not in fanout_cmd(spec)
                          and next((n for n in names if BY_NAME[n]["kind"] == "gws13" and n != name
                                    and takes_part(BY_NAME[n], "E")), None))
                if shared and names.index(shared) < names.index(name):  # one broadcast.py for both rows
                    record(name, "E", rep, dict(ok=False, status=f"see {shared}"))
                else:
                    run_cell(name, "E", rep, lambda: run_fanout(spec, a, fanout_cmd(spec)))

    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["elapsed_s"] = round(time.time() - t_start, 1)
    md = report(meta, runs, names, wls)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, runs=runs, summary=summarize(runs)), indent=1))
    print(md.split("## gws13 ratios")[0].split("## Latency")[0])
    log(f"wrote {out} and {out.with_suffix('.json')} in {meta['elapsed_s'] / 60:.1f} min")
    # D's partial rows are the open-files limit, not gws13; a storm connection that failed is gws13's
    failed = sorted({f"{r['server']}/{r['workload']}" for r in runs if BY_NAME[r["server"]]["kind"] == "gws13"
                     and not r.get("ok") and not r.get("status") and (not r.get("partial") or r["workload"] == "H")})
    if failed:  # a broken gws13 must not pass as a benchmark run (peers' failures are only reported)
        sys.exit(f"gws13 runs failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
