from gws13.compat.flask_sock import Sock  # was: from flask_sock import Sock

sock = Sock()


@sock.route("/echo")
def echo(ws):
    while True:
        data = ws.receive()
        if data == "close":
            break
        ws.send(data)
