"""A small chat room served by gws13 on gevent.pywsgi.

    python examples/chat.py [--host 127.0.0.1] [--port 8000] [--redis redis://127.0.0.1:6379/0]

Open http://127.0.0.1:8000 in two browser tabs: every message typed in one
appears in all of them (``--port 0`` takes any free port: the first line
printed says which).  The page is served at ``/``, the WebSocket lives at
``/ws``, ``/stats`` reports the open connections as JSON, ``/metrics`` the
hub's counters as text, and the live dashboard (:mod:`gws13.dashboard`) is at
``/dashboard/``.  Restart the server and the page reconnects
by itself.  Ctrl-C stops it.

Fan-out goes through a :class:`gws13.Hub`: in-process by default; with
``--redis URL`` several chat processes (on one machine or many) share the
room, e.g. two of them on ports 8000 and 8001 with the same URL.
"""

import argparse
import itertools
import json
import os
import signal
import sys

import gevent
import gevent.event
from gevent import pywsgi

import gws13
import gws13.dashboard

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gws13 chat</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E\
%3Crect width='16' height='12' rx='3' fill='%23357'/%3E%3Cpath d='M4 12v4l4-4' fill='%23357'/%3E%3C/svg%3E">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; color: #222; }
  #log { list-style: none; padding: .5em; height: 20em; overflow-y: auto; border: 1px solid #ccc; }
  #log li { overflow-wrap: anywhere; }  /* one very long word must not widen the page */
  #log li.notice { color: #777; font-style: italic; }
  form { display: flex; gap: .5em; } #msg { flex: 1; padding: .4em; }
  small { color: #777; }
</style>
</head>
<body>
<h1>gws13 chat</h1>
<p>Status: <span id="status">connecting</span> <small>as <span id="me">?</span>;
   extensions: <span id="extensions">none</span>; <a href="/dashboard/">live dashboard</a></small></p>
<ul id="log"></ul>
<form id="form"><input id="msg" autocomplete="off" placeholder="Say something" autofocus disabled>
<button id="send" disabled>Send</button></form>
<script>
const log = document.getElementById("log");
const input = document.getElementById("msg");
const send = document.getElementById("send");
function show(text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
}
function setStatus(text, open) {
  document.getElementById("status").textContent = text;
  input.disabled = send.disabled = !open;  // what was typed stays in the box
  if (open) input.focus();
}
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
let ws, backoff = 0.5;  // seconds before the next attempt: doubles up to 10
function connect() {
  setStatus("connecting", false);
  ws = new WebSocket(url);
  ws.onopen = () => {
    backoff = 0.5;
    setStatus("connected", true);
    document.getElementById("extensions").textContent = ws.extensions || "none";
  };
  ws.onclose = () => {
    if (!navigator.onLine) {  // no network: try again when the browser has one
      setStatus("disconnected", false);
      addEventListener("online", connect, {once: true});
      return;
    }
    // jitter, so that the pages of a restarted server do not all come back at once
    const at = Date.now() + backoff * (0.5 + Math.random() / 2) * 1000;
    backoff = Math.min(backoff * 2, 10);
    (function countdown() {
      const left = Math.ceil((at - Date.now()) / 1000);
      if (left <= 0) return connect();
      setStatus(`reconnecting in ${left} s`, false);
      setTimeout(countdown, Math.min(at - Date.now(), 250));
    })();
  };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "welcome") document.getElementById("me").textContent = msg.name;
    else if (msg.type === "notice") show(msg.text, "notice");
    else show(msg.name + ": " + msg.text);
  };
}
connect();
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  if (input.value && ws.readyState === WebSocket.OPEN) {
    ws.send(input.value);
    input.value = "";
  }
};
</script>
</body>
</html>
"""

ROOM = "chat"
#: replaced by a Redis-backed hub with --redis
hub = gws13.Hub()
names = itertools.count(1)
# with Redis, several processes hand out names: tell theirs apart
name_suffix = ""


def broadcast(message):
    """Send ``message`` to everyone in the room (in every process, with Redis).
    Never blocks: a slow reader is closed by the hub (policy "close")."""
    hub.publish(ROOM, json.dumps(message))


def chat(ws):
    name = f"guest-{next(names)}{name_suffix}"
    ws.send(json.dumps({"type": "welcome", "name": name}))
    hub.join(ws, ROOM)  # left automatically when the connection closes
    broadcast({"type": "notice", "text": f"{name} joined"})
    try:
        for text in ws:
            if isinstance(text, str) and text.strip():
                broadcast({"type": "message", "name": name, "text": text[:2000]})
    finally:
        hub.leave(ws, ROOM)
        broadcast({"type": "notice", "text": f"{name} left"})


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/ws":
        return gws13.with_websocket(environ, start_response, chat)
    if path == "/stats":
        stats = hub.stats()
        body = json.dumps({"connections": stats["connections"], "hub": stats}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/metrics":
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
        return [hub.metrics_text().encode()]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PAGE.encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def main(argv=None):
    global hub, name_suffix
    parser = argparse.ArgumentParser(description="gws13 chat demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis", metavar="URL",
                        help="share the room with other chat processes through Redis "
                             "(redis://host:port/db)")
    args = parser.parse_args(argv)
    if args.redis:
        hub = gws13.Hub(args.redis)
        hub.start()
        name_suffix = f"@{os.getpid()}"
    # the dashboard shows this hub's rooms (and, with --redis, its Redis link)
    site = gws13.dashboard.mount("/dashboard", gws13.dashboard.app(hub=hub), app)
    server = pywsgi.WSGIServer((args.host, args.port), site, handler_class=gws13.WebSocketHandler)
    server.start()
    stop = gevent.event.Event()  # set by Ctrl-C (SIGINT) or SIGTERM
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    via = " (rooms shared through Redis)" if args.redis else ""
    print(f"gws13 chat on http://{args.host}:{server.server_port}/{via}", flush=True)
    stop.wait()
    server.stop()  # says 1001 "going away" to every open page, which then reconnects
    hub.close()  # with Redis: sends what was published first
    print("gws13 chat: stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
