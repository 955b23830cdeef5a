"""A Flask-SocketIO app (``async_mode="gevent"``) in the shape of its
documentation (events with acknowledgements, rooms, ``emit(..., to=room)``,
server-side ``disconnect()``), served the way docs/migration.md recommends:

    python app.py PORT [gws13|facade]   # pywsgi + gws13.WebSocketHandler, or the
                                        # gevent-websocket facade's handler
    gunicorn -k gws13.gunicorn.GeventWebSocketWorker -w 1 app:app

``/stats`` tells the tests whether gws13 carried the WebSocket traffic: a
WSGI middleware registers a close callback on every gws13.WebSocket the
server puts in ``environ["wsgi.websocket"]`` (or the one inside the facade's
socket); the callback runs only for a connection gws13 accepted and then
closed, with the close code.  ``HIDE_GEVENTWEBSOCKET=1`` makes ``import
geventwebsocket`` fail, so that engine.io falls back to simple-websocket (the
negative control: gws13 then carries nothing).
"""

import json
import os
import sys

from gevent import monkey
monkey.patch_all()

if os.environ.get("HIDE_GEVENTWEBSOCKET"):
    sys.modules["geventwebsocket"] = None  # engine.io's `import geventwebsocket` fails

from flask import Flask, request  # noqa: E402
from flask_socketio import SocketIO, disconnect, emit, join_room, leave_room  # noqa: E402

import gws13  # noqa: E402

flask_app = Flask(__name__)
socketio = SocketIO(flask_app, async_mode="gevent")

STATS = {"offered": 0, "closed": [], "connects": 0, "disconnects": 0}


@flask_app.route("/stats")
def stats():
    return json.dumps(STATS)


@socketio.on("connect")
def on_connect():
    STATS["connects"] += 1


@socketio.on("disconnect")
def on_disconnect(*reason):
    STATS["disconnects"] += 1


@socketio.on("echo")
def on_echo(data):
    return data  # the acknowledgement


@socketio.on("join")
def on_join(room):
    join_room(room)
    return room


@socketio.on("leave")
def on_leave(room):
    leave_room(room)
    return room


@socketio.on("say")
def on_say(message):
    emit("said", {"room": message["room"], "text": message["text"], "from": request.sid},
         to=message["room"])


@socketio.on("everyone")
def on_everyone(text):
    emit("all", text, broadcast=True)


@socketio.on("kick")
def on_kick():
    disconnect()


def counting(wsgi_app):
    def app(environ, start_response):
        ws = environ.get("wsgi.websocket")
        ws = getattr(ws, "gws13_websocket", ws)  # the facade's socket wraps one
        if isinstance(ws, gws13.WebSocket):
            STATS["offered"] += 1
            ws.add_close_callback(lambda closed: STATS["closed"].append(closed.close_code))
        return wsgi_app(environ, start_response)
    return app


app = counting(flask_app)

if __name__ == "__main__":
    from gevent import pywsgi

    if len(sys.argv) > 2 and sys.argv[2] == "facade":
        from gws13.compat.geventwebsocket.handler import WebSocketHandler
    else:
        WebSocketHandler = gws13.WebSocketHandler
    pywsgi.WSGIServer(("127.0.0.1", int(sys.argv[1])), app, handler_class=WebSocketHandler).serve_forever()
