"""Flask + gws13: an echo socket and per-room chat sockets on a blueprint.

    python examples/flask_app.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ (``--port 0`` picks a free port; the first line
printed says which).  Routes:

* ``/``                 a small page that talks to the sockets below
* ``/login/<name>``     puts ``name`` in the Flask session (read by the chat)
* ``/echo``             WebSocket: every message comes back
* ``/rooms/<room>``     WebSocket (blueprint): messages go to everyone in the room
"""

from gevent import monkey

monkey.patch_all()  # first: lets blocking libraries in views cooperate with gevent

import argparse  # noqa: E402
from typing import Dict, Optional, Set  # noqa: E402

import flask  # noqa: E402
from gevent import pywsgi  # noqa: E402

import gws13  # noqa: E402
from gws13.flask import Sock  # noqa: E402

app = flask.Flask(__name__)
app.secret_key = "change me: demo only"
# defaults for every WebSocket route of this app (gws13 parameter names)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 20, "max_message_size": 1 << 20}
sock = Sock(app)
rooms_bp = flask.Blueprint("rooms", __name__, url_prefix="/rooms")
rooms: Dict[str, Set[gws13.WebSocket]] = {}

PAGE = """<!doctype html>
<meta charset="utf-8"><title>gws13 + Flask</title>
<h1>gws13 + Flask</h1>
<p>Signed in as <b>{{ user }}</b> (<a href="/login/alice">be alice</a>, <a href="/login/bob">be bob</a>)</p>
<p>Room: <input id="room" value="lobby"> <button id="join">join</button></p>
<form id="form"><input id="msg" placeholder="message" autocomplete="off"> <button>send</button></form>
<ul id="log"></ul>
<script>
let ws = null;
const log = (text) => { const li = document.createElement("li"); li.textContent = text;
                         document.getElementById("log").appendChild(li); };
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const room = encodeURIComponent(document.getElementById("room").value || "lobby");
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/rooms/" + room);
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


@app.route("/")
def index() -> str:
    return flask.render_template_string(PAGE, user=flask.session.get("user", "anonymous"))


@app.route("/login/<name>")
def login(name: str) -> flask.Response:
    flask.session["user"] = name
    return flask.redirect("/")


@sock.route("/echo")
def echo(ws: gws13.WebSocket) -> None:
    """Send every message back, text as text and binary as binary."""
    for message in ws:
        ws.send(message)


@sock.route("/<room>", bp=rooms_bp, max_message_size=64 * 1024)
def chat(ws: gws13.WebSocket, room: str) -> None:
    """Fan each message out to everyone in ``room``; the session says who speaks."""
    user: Optional[str] = flask.session.get("user")
    name = user or f"guest@{flask.request.remote_addr}"
    members = rooms.setdefault(room, set())
    members.add(ws)
    ws.send(f"welcome to {room}, {name} ({len(members)} here)")
    try:
        for message in ws:
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


app.register_blueprint(rooms_bp)


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description="gws13 + Flask example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = pywsgi.WSGIServer((args.host, args.port), app, handler_class=gws13.WebSocketHandler)
    server.start()
    print(f"gws13 Flask example on http://{args.host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
