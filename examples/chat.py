"""A small chat room served by gws13 on gevent.pywsgi.

    python examples/chat.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000 in two browser tabs: every message typed in one
appears in all of them.  The page is served at ``/``, the WebSocket lives at
``/ws`` and ``/stats`` reports the open connections as JSON.
"""

import argparse
import itertools
import json

from gevent import pywsgi

import gws13

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gws13 chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; color: #222; }
  #log { list-style: none; padding: .5em; height: 20em; overflow-y: auto; border: 1px solid #ccc; }
  #log li.notice { color: #777; font-style: italic; }
  form { display: flex; gap: .5em; } #msg { flex: 1; padding: .4em; }
  small { color: #777; }
</style>
</head>
<body>
<h1>gws13 chat</h1>
<p>Status: <span id="status">connecting</span> <small>as <span id="me">?</span>;
   extensions: <span id="extensions">none</span></small></p>
<ul id="log"></ul>
<form id="form"><input id="msg" autocomplete="off" placeholder="Say something" autofocus>
<button id="send">Send</button></form>
<script>
const log = document.getElementById("log");
function show(text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
}
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
ws.onopen = () => {
  document.getElementById("status").textContent = "connected";
  document.getElementById("extensions").textContent = ws.extensions || "none";
};
ws.onclose = () => { document.getElementById("status").textContent = "closed"; };
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.type === "welcome") document.getElementById("me").textContent = msg.name;
  else if (msg.type === "notice") show(msg.text, "notice");
  else show(msg.name + ": " + msg.text);
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("msg");
  if (input.value && ws.readyState === WebSocket.OPEN) ws.send(input.value);
  input.value = "";
};
</script>
</body>
</html>
"""

clients = set()
names = itertools.count(1)


def broadcast(message):
    data = json.dumps(message)
    for ws in list(clients):
        try:
            ws.send(data)
        except gws13.ConnectionClosed:
            clients.discard(ws)


def chat(ws):
    name = f"guest-{next(names)}"
    ws.send(json.dumps({"type": "welcome", "name": name}))
    clients.add(ws)
    broadcast({"type": "notice", "text": f"{name} joined"})
    try:
        for text in ws:
            if isinstance(text, str) and text.strip():
                broadcast({"type": "message", "name": name, "text": text[:2000]})
    finally:
        clients.discard(ws)
        broadcast({"type": "notice", "text": f"{name} left"})


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/ws":
        return gws13.with_websocket(environ, start_response, chat)
    if path == "/stats":
        body = json.dumps({"connections": len(clients)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PAGE.encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def main(argv=None):
    parser = argparse.ArgumentParser(description="gws13 chat demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler)
    print(f"gws13 chat on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
