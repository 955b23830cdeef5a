#!/usr/bin/env python3
"""Run the Autobahn|Testsuite fuzzing client (wstest) against a WebSocket echo server.

    python scripts/autobahn.py --server "python examples/echo.py --port {port}"
    python scripts/autobahn.py --server "..." --cases '1.*,2.*' --exclude '' --strict
    python scripts/autobahn.py --url ws://127.0.0.1:9001          # server already running

With --server, a free port on 127.0.0.1 is picked and substituted for {port} in the command
({host} and {python} are substituted too: 127.0.0.1 and this interpreter). The command runs
through /bin/sh in its own process group, its output goes to REPORT_DIR/server.log, and it is
stopped (SIGTERM, then SIGKILL) when the run is over. The server must echo every message back
with the same opcode; for the 9.* cases its message/frame limits must allow 16 MiB.

wstest (Python 2.7 only) comes from --wstest, else $WSTEST, else scripts/install-wstest.sh,
which installs it once into ${WSTEST_HOME:-~/.cache/wstest} (Debian 12, ~40 s, needs root for
apt-get on a fresh machine) and afterwards only prints its path.

REPORT_DIR (default ./autobahn-reports) receives spec.json, wstest.log, server.log and
wstest's reports (index.html to browse, index.json + one JSON per case).

Output: a per-group table, every non-OK case with its reason, the wall time, and a last line
    autobahn: N passed, M failed, K non-strict, U unimplemented
where passed = OK + INFORMATIONAL and failed = FAILED (plus any unknown outcome).
Exit status: 0 = no failure; 1 = a FAILED case or the server died during the run (with
--strict also any NON-STRICT or UNIMPLEMENTED case); 2 = usage error; 3 = the run itself did
not work (wstest install, server start, no results); 130 = interrupted.
"""
import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

SCRIPTS = Path(__file__).resolve().parent
KINDS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
HOST = "127.0.0.1"


class RunError(Exception):
    """The harness could not produce results (exit status 3)."""


def log(msg):
    print("autobahn: " + msg, file=sys.stderr, flush=True)


def tail(path, n=20):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty)"


def patterns(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else 0 for p in case_id.split("."))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def can_connect(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_wstest(explicit):
    path = explicit or os.environ.get("WSTEST")
    if path:
        if not os.access(path, os.X_OK):
            raise RunError("wstest not executable: %s" % path)
        return path
    installer = SCRIPTS / "install-wstest.sh"
    proc = subprocess.run(["bash", str(installer)], stdout=subprocess.PIPE, universal_newlines=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RunError("%s failed (exit %d)" % (installer, proc.returncode))
    return lines[-1]


class Server:
    """The --server command, in its own process group, output to a log file."""

    def __init__(self, command, port, logfile):
        self.command = (command.replace("{port}", str(port)).replace("{host}", HOST)
                        .replace("{python}", shlex.quote(sys.executable)))
        self.port = port
        self.logfile = logfile
        self.proc = None

    def start(self, timeout):
        log("starting server: %s  (log: %s)" % (self.command, self.logfile))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen(self.command, shell=True, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError("server exited with status %s before listening on port %d; "
                               "server.log:\n%s" % (self.proc.returncode, self.port, tail(self.logfile)))
            if can_connect(HOST, self.port, timeout=0.5):
                log("server listening on %s:%d after %.1f s" % (HOST, self.port, time.monotonic() - t0))
                return
            time.sleep(0.1)
        raise RunError("server not listening on %s:%d after %.0f s; server.log:\n%s"
                       % (HOST, self.port, timeout, tail(self.logfile)))

    def crashed(self):
        """Exit status if the server died on its own, else None."""
        return self.proc.poll() if self.proc else None

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                pass
        log("warning: server process %d did not exit after SIGKILL" % self.proc.pid)


def run_wstest(wstest, report_dir, timeout):
    """Run the fuzzing client from report_dir; stream its output to wstest.log, show progress."""
    logpath = report_dir / "wstest.log"
    cmd = [wstest, "-m", "fuzzingclient", "-s", "spec.json"]
    proc = subprocess.Popen(cmd, cwd=str(report_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, errors="replace")
    timer = None
    timed_out = []
    if timeout:
        def kill():
            timed_out.append(True)
            proc.kill()
        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
    total, done, group, version = "?", 0, None, None
    t0 = time.monotonic()
    try:
        with open(logpath, "w") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                m = re.search(r"Autobahn Testsuite Version (\S+)", line)
                if m:
                    version = m.group(1)
                m = re.match(r"Ok, will run (\d+) test cases", line)
                if m:
                    total = m.group(1)
                    if total == "0":        # wstest would wait forever
                        raise RunError("no test case matches --cases/--exclude")
                m = re.match(r"Running test case ID (\S+)", line)
                if m:
                    done += 1
                    g = m.group(1).split(".")[0]
                    if g != group:
                        group = g
                        log("  running %s.*  (case %d of %s, %.0f s)" % (g, done, total, time.monotonic() - t0))
        proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if timed_out:
        raise RunError("wstest did not finish within %s s (see %s)" % (timeout, logpath))
    if proc.returncode != 0:
        raise RunError("wstest exited with status %d; wstest.log:\n%s" % (proc.returncode, tail(logpath)))
    return version, (int(total) if total.isdigit() else None)


def summarize(report_dir, agent):
    """Returns (counts per group, overall counts, non-OK case lines, summed case durations in s)."""
    try:
        index = json.loads((report_dir / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError("no usable index.json in %s (%s)" % (report_dir, e))
    cases = index.get(agent)
    if not cases:
        raise RunError("no results in index.json: wstest could not connect? wstest.log:\n%s"
                       % tail(report_dir / "wstest.log"))
    groups, total, notes, duration_ms = {}, dict.fromkeys(KINDS, 0), [], 0
    for cid in sorted(cases, key=case_key):
        r = cases[cid]
        behavior = r.get("behavior")
        kind = behavior if behavior in KINDS else "FAILED"     # unknown outcome counts as a failure
        groups.setdefault(cid.split(".")[0], dict.fromkeys(KINDS, 0))[kind] += 1
        total[kind] += 1
        ms = r.get("duration") or 0
        if 0 < ms < 3600 * 1000:      # a case that never connected gets a bogus epoch-sized duration
            duration_ms += ms
        if kind == "OK":
            continue
        try:
            detail = json.loads((report_dir / r["reportfile"]).read_text())
        except (OSError, ValueError, KeyError):
            detail = {}
        close = r.get("behaviorClose")
        line = "  %-9s %-13s close %-13s %s" % (cid, behavior, close, detail.get("result") or "")
        if close != "OK" and detail.get("resultClose"):
            line += " | " + detail["resultClose"]
        code = r.get("remoteCloseCode")
        if code is not None and close != "OK":
            reason = detail.get("remoteCloseReason")
            line += " | server closed with %s%s" % (code, ' "%s"' % reason if reason else "")
        expectation = " ".join((detail.get("expectation") or "").split())
        if expectation:
            line += "\n  %9s expectation: %s" % ("", expectation[:200] + ("..." if len(expectation) > 200 else ""))
        notes.append(line)
    return groups, total, notes, duration_ms / 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the top of %s for details." % Path(__file__).name)
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", metavar="CMD",
                        help='server command with a {port} placeholder, e.g. "python examples/echo.py --port {port}"')
    target.add_argument("--url", help="run against an already-running server, e.g. ws://127.0.0.1:9001")
    ap.add_argument("--cases", default="*", help="comma-separated case patterns (default: *)")
    ap.add_argument("--exclude", default="12.*,13.*",
                    help="comma-separated patterns to skip (default: 12.*,13.*, i.e. permessage-deflate); "
                         "'' runs everything")
    ap.add_argument("--report-dir", default="autobahn-reports", help="default: ./autobahn-reports")
    ap.add_argument("--strict", action="store_true", help="also fail on NON-STRICT and UNIMPLEMENTED cases")
    ap.add_argument("--agent", default="server", help="name of the server in the reports (default: server)")
    ap.add_argument("--wstest", help="wstest executable (default: $WSTEST, else scripts/install-wstest.sh)")
    ap.add_argument("--startup-timeout", type=float, default=20, metavar="S",
                    help="seconds to wait for the server's port (default: 20)")
    ap.add_argument("--timeout", type=float, default=0, metavar="S",
                    help="give up when wstest runs longer than this (default: no limit)")
    args = ap.parse_args()

    if args.server and "{port}" not in args.server:
        ap.error("--server command must contain {port}")
    if args.url:
        u = urlsplit(args.url)
        if u.scheme not in ("ws", "wss") or not u.hostname:
            ap.error("--url must look like ws://HOST:PORT[/PATH]")

    def terminated(signum, frame):      # clean up (server, wstest) on SIGTERM as on Ctrl-C
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)

    t_start = time.monotonic()
    report_dir = Path(args.report_dir).resolve()
    server = None
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("index.json", "index.html"):      # never summarize a previous run
            try:
                (report_dir / stale).unlink()
            except FileNotFoundError:
                pass
        wstest = find_wstest(args.wstest)

        if args.server:
            port = free_port()
            url = "ws://%s:%d" % (HOST, port)
            server = Server(args.server, port, report_dir / "server.log")
            server.start(args.startup_timeout)
        else:
            url = args.url
            u = urlsplit(url)
            port = u.port or (443 if u.scheme == "wss" else 80)
            if not can_connect(u.hostname, port, timeout=3):
                raise RunError("nothing accepts connections at %s:%d" % (u.hostname, port))

        spec = {
            "outdir": str(report_dir),
            "servers": [{"agent": args.agent, "url": url}],
            "cases": patterns(args.cases),
            "exclude-cases": patterns(args.exclude),
            "exclude-agent-cases": {},
        }
        (report_dir / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
        log("wstest fuzzingclient -> %s (cases: %s; exclude: %s); reports in %s"
            % (url, args.cases, args.exclude or "none", report_dir))
        t0 = time.monotonic()
        version, planned = run_wstest(wstest, report_dir, args.timeout)
        wall = time.monotonic() - t0
        crashed = server.crashed() if server else None
    except RunError as e:
        log("error: %s" % e)
        return 3
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if server:
            server.stop()

    try:
        groups, total, notes, case_secs = summarize(report_dir, args.agent)
    except RunError as e:
        log("error: %s" % e)
        if crashed is not None:
            log("the server exited with status %s during the run; server.log:\n%s"
                % (crashed, tail(report_dir / "server.log")))
        return 3

    heads = ["group"] + KINDS + ["total"]
    widths = [6] + [len(k) + 2 for k in KINDS] + [7]
    fmt = "".join("%-6s" if i == 0 else "%%%ds" % w for i, w in enumerate(widths))
    print("Autobahn|Testsuite %s fuzzingclient against %s" % (version or "?", url))
    print(fmt % tuple(heads))
    for g in sorted(groups, key=int):
        row = groups[g]
        print(fmt % tuple([g + ".*"] + [row[k] for k in KINDS] + [sum(row.values())]))
    print(fmt % tuple(["all"] + [total[k] for k in KINDS] + [sum(total.values())]))
    print()
    if notes:
        print("non-OK cases (case, behavior, close behavior, result):")
        print("\n".join(notes))
    else:
        print("non-OK cases: none")
    print("wall time: %.1f s for wstest (sum of case durations %.1f s), %.1f s in all"
          % (wall, case_secs, time.monotonic() - t_start))
    print("report: %s" % (report_dir / "index.html"))
    if crashed is not None:
        print("the server exited with status %s during the run; server.log:\n%s"
              % (crashed, tail(report_dir / "server.log")))
    # wstest stops at the first case it cannot connect for (e.g. the server died).
    not_run = max(0, (planned or 0) - sum(total.values()))
    if not_run:
        print("%d of %d cases did not run (wstest stops when it cannot connect; see wstest.log)"
              % (not_run, planned))
    passed = total["OK"] + total["INFORMATIONAL"]
    print("autobahn: %d passed, %d failed, %d non-strict, %d unimplemented%s"
          % (passed, total["FAILED"], total["NON-STRICT"], total["UNIMPLEMENTED"],
             ", %d not run" % not_run if not_run else ""))
    sys.stdout.flush()

    bad = total["FAILED"] or not_run or crashed is not None
    if args.strict:
        bad = bad or total["NON-STRICT"] or total["UNIMPLEMENTED"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
