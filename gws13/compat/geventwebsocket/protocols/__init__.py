"""gevent-websocket's protocol classes (``protocols.base.BaseProtocol``)."""
