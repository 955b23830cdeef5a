"""Bottle + gws13: an echo socket and per-room chat sockets.

    python examples/bottle_app.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ (``--port 0`` picks a free port; the first line
printed says which).  Routes:

* ``/``              a small page that talks to the sockets below
* ``/echo``          WebSocket: every message comes back
* ``/rooms/<room>``  WebSocket: messages go to everyone in the room; a
  ``?name=`` query argument names the speaker
"""

from gevent import monkey

monkey.patch_all()  # first: Bottle's request/response become per-greenlet

import argparse  # noqa: E402
from typing import Dict, Optional, Set  # noqa: E402

import bottle  # noqa: E402
from gevent import pywsgi  # noqa: E402

import gws13  # noqa: E402
from gws13.bottle import websocket  # noqa: E402

app = bottle.Bottle()
# defaults for every WebSocket route of this app (gws13 parameter names)
app.config.load_dict({"gws13": {"ping_interval": 20, "max_message_size": 1 << 20}})
rooms: Dict[str, Set[gws13.WebSocket]] = {}

PAGE = """<!doctype html>
<meta charset="utf-8"><title>gws13 + Bottle</title>
<h1>gws13 + Bottle</h1>
<p>Name: <input id="name" value="guest"> Room: <input id="room" value="lobby">
   <button id="join">join</button></p>
<form id="form"><input id="msg" placeholder="message" autocomplete="off"> <button>send</button></form>
<ul id="log"></ul>
<script>
let ws = null;
const log = (text) => { const li = document.createElement("li"); li.textContent = text;
                         document.getElementById("log").appendChild(li); };
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const room = encodeURIComponent(document.getElementById("room").value || "lobby");
  const name = encodeURIComponent(document.getElementById("name").value || "guest");
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                     "/rooms/" + room + "?name=" + name);
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log("closed (" + event.code + ")");
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("msg");
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(input.value);
  input.value = "";
};
document.getElementById("join").click();
</script>
"""


@app.get("/")
def index() -> str:
    return PAGE


@app.route("/echo", apply=[websocket])
def echo(ws: gws13.WebSocket) -> None:
    """Send every message back, text as text and binary as binary."""
    for message in ws:
        ws.send(message)


@app.route("/rooms/<room>", apply=[websocket(max_message_size=64 * 1024)])
def chat(ws: gws13.WebSocket, room: str) -> None:
    """Fan each message out to everyone in ``room``."""
    members = rooms.setdefault(room, set())
    members.add(ws)
    ws.send(f"welcome to {room} ({len(members)} here)")
    try:
        for message in ws:
            # bottle.request is this connection's own (monkey-patched locals)
            name = bottle.request.query.get("name") or "guest"
            if isinstance(message, str):
                for member in list(members):
                    try:
                        member.send(f"[{room}] {name}: {message}")
                    except gws13.ConnectionClosed:
                        members.discard(member)
    finally:
        members.discard(ws)
        if not members:
            rooms.pop(room, None)


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description="gws13 + Bottle example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler)
    server.start()
    print(f"gws13 Bottle example on http://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
