"""Drop-in facades for code written against other WebSocket libraries.

Each module mirrors one library's API over the one :class:`gws13.WebSocket`
(there is no second protocol implementation here), so that migrating is a
change of the import line:

======================================  ==========================================
before                                  after
======================================  ==========================================
``geventwebsocket``                     ``gws13.compat.geventwebsocket``
``flask_sock``                          ``gws13.compat.flask_sock``
``flask_sockets``                       ``gws13.compat.flask_sockets``
``bottle.ext.websocket``                ``gws13.compat.bottle_websocket``
======================================  ==========================================

The facades carry the foreign semantics (gevent-websocket's ``receive()``
returning ``None`` once and then raising, simple-websocket's
``receive(timeout)`` returning ``None`` on a timeout...); gws13's own API
keeps its own.  ``docs/migration.md`` lists what still differs, and why.

Nothing in gws13's core imports this package, and importing it imports no
framework: each module imports only gws13's public API and the framework it
mirrors (Flask, Bottle, gunicorn), when it is itself imported.
"""
