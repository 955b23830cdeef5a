"""gevent-websocket's gunicorn worker (``gunicorn.workers.GeventWebSocketWorker``)."""
