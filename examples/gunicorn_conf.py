"""gunicorn settings for gws13 apps.

    gunicorn -c examples/gunicorn_conf.py examples.echo_wsgi:app

Command-line options override these (``-b 0.0.0.0:8000 -w 8``).  Any WSGI
app works: ``environ["wsgi.websocket"]``, ``gws13.with_websocket``,
``gws13.websocket_app``, ``gws13.flask.Sock``, the Bottle plugin.
"""

import multiprocessing

# The gws13 worker: gevent pywsgi + gws13.WebSocketHandler; on SIGTERM every
# open WebSocket gets close 1001 and the worker exits within graceful_timeout.
worker_class = "gws13.gunicorn.GeventWebSocketWorker"

bind = "127.0.0.1:8001"
workers = min(multiprocessing.cpu_count(), 4)
# concurrent connections per worker: a WebSocket holds one for its lifetime
worker_connections = 10000
# seconds a worker gets to close its WebSockets (1001) and finish on SIGTERM
graceful_timeout = 10
# the arbiter's heartbeat check; unrelated to how long a WebSocket may live
timeout = 30
# HTTP keep-alive between requests; WebSockets are not affected
keepalive = 5
