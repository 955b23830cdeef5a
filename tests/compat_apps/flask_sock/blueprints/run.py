"""Mirrors flask-sock's examples/blueprints/: ``create_app()`` registers a
``main`` blueprint, then ``sock.init_app(app)`` for a ``Sock()`` whose route
was declared before there was an app.  Upstream serves it with ``flask run``;
here gws13.WebSocketHandler on pywsgi (or gunicorn: ``run:app``).  Changed
besides the import line (blueprints/ws.py): that server and the port from argv.

    python run.py PORT
"""

import sys

from blueprints.app import create_app

app = create_app()

if __name__ == "__main__":
    from gevent import pywsgi

    import gws13

    pywsgi.WSGIServer(("127.0.0.1", int(sys.argv[1])), app,
                      handler_class=gws13.WebSocketHandler).serve_forever()
