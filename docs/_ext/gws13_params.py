"""``{gws13-parameters}``: the table of every connection parameter, generated
from ``gws13.params._SPEC`` (the built-in ones and those that modules add with
``define``: ``compression``, ``require_subprotocol``).

Defaults and accepted values come from the spec itself; only the one-line
meanings live here.  A parameter without a meaning, or a meaning for a
parameter that no longer exists, is a build warning (an error under -W), so the
table cannot go stale.
"""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)

MEANINGS = {
    "ping_interval": "seconds between keepalive pings the server (or client) sends; 0 disables them",
    "close_timeout": "seconds the closing handshake may take once a close frame is queued (the peer's close frame, "
                     "and our own still in the write buffer) before TCP is dropped; 0: don't wait",
    "connection_timeout": "idle seconds (no frame of any kind from the peer), or seconds a write buffer that the peer "
                          "does not read makes no progress, before the connection is closed; 0 disables",
    "handshake_timeout": "seconds a connection may take to send a complete request head (the keep-alive wait for the "
                         "next request included) before it is closed without an answer; 0 disables",
    "write_limit": "bytes in a connection's write buffer above which `send` blocks, until it drains to a quarter "
                   "of that (high and low water marks)",
    "accept_connection": "called with the `Origin` header (or `\"\"`); a false result refuses the upgrade",
    "access_denied": "WSGI app that answers a refused origin",
    "drop_incoming_pings": "`True` restores the egg's behaviour of never answering pings",
    "propagate_common_errors": "re-raise library errors out of `with_websocket`",
    "max_frame_size": "largest incoming frame payload in bytes, inclusive; checked from the frame header, and on the "
                      "decompressed data of a compressed frame",
    "max_message_size": "largest incoming message in bytes (after decompression), inclusive; checked from the headers",
    "max_queue": "messages read ahead of the application before reading stops (TCP backpressure)",
    "subprotocols": "subprotocols the server speaks, in order of preference (a client: offers)",
    "select_subprotocol": "`hook(offered, environ)` returning one of `offered` or None; may raise `HandshakeError`",
    "require_subprotocol": "answer 400 to a client that offers none of `subprotocols`",
    "compression": "permessage-deflate settings; `None` turns it off (see the compression guide)",
}

# How each validator in gws13.params (and the modules that call define) checks a value.
ACCEPTS = {
    "_seconds": "seconds: int or float, >= 0 and finite",
    "_size": "int, 1 to 2**63-1",
    "_flag": "`True` or `False`",
    "_callable": "a callable",
    "_optional_callable": "a callable or `None`",
    "_protocols": "a list of non-empty strings, or `None`",
    "_validate_compression": "`None`/`False` (off), `True` (`Deflate()`) or a `gws13.Deflate`",
}


def _default_text(name, default):
    if name == "accept_connection":
        return "`lambda origin: True` (every origin)"
    if name == "access_denied":
        return "403 `<h1>Access denied</h1>`"
    if type(default).__name__ == "Deflate":
        return "`gws13.Deflate()` (its defaults)"
    if isinstance(default, int) and not isinstance(default, bool) and default >= 1024 and default & (default - 1) == 0:
        return f"`2**{default.bit_length() - 1}` ({default:,})"
    return f"`{default!r}`"


def _inline(text, state, lineno):
    """Markdown-ish inline text (only `code`) as docutils nodes."""
    para = nodes.paragraph()
    for i, part in enumerate(text.split("`")):
        if i % 2:
            para += nodes.literal(part, part)
        elif part:
            para += nodes.Text(part)
    return para


def rows():
    """(name, default text, accepts text, meaning) for every parameter, in _SPEC order."""
    import gws13  # noqa: F401  (the modules that call define are imported by gws13)
    from gws13 import params

    out = []
    for name, (default, validator) in params._SPEC.items():
        meaning = MEANINGS.get(name)
        if meaning is None:
            logger.warning(f"gws13 parameter {name!r} has no meaning in docs/_ext/gws13_params.py")
            meaning = ""
        accepts = ACCEPTS.get(validator.__name__)
        if accepts is None:
            logger.warning(f"gws13 parameter {name!r}: validator {validator.__name__} unknown to "
                           "docs/_ext/gws13_params.py")
            accepts = ""
        out.append((name, _default_text(name, default), accepts, meaning))
    for name in sorted(set(MEANINGS) - set(params._SPEC)):
        logger.warning(f"docs/_ext/gws13_params.py describes {name!r}, which is not a gws13 parameter")
    return out


class ParametersTable(Directive):
    has_content = False

    def run(self):
        table = nodes.table(classes=["gws13-parameters"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (18, 22, 25, 35):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        row = nodes.row()
        for title in ("parameter", "default", "accepts", "meaning"):
            row += nodes.entry("", nodes.paragraph(text=title))
        head += row
        body = nodes.tbody()
        group += body
        for name, default, accepts, meaning in rows():
            row = nodes.row(ids=[f"parameter-{name.replace('_', '-')}"])
            row += nodes.entry("", nodes.paragraph("", "", nodes.literal(name, name)))
            for text in (default, accepts, meaning):
                row += nodes.entry("", _inline(text, self.state, self.lineno))
            body += row
        return [table]


def setup(app):
    app.add_directive("gws13-parameters", ParametersTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
