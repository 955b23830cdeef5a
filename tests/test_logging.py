"""Logging (issue 13, point 1): the gws13.* loggers, what each level says,
rate limiting, the one ERROR record per application exception, and Redis
outages (one WARNING, one INFO).  Real servers on loopback, real clients."""

from __future__ import annotations

import logging
import shutil

import gevent
import pytest

import gws13
import gws13.server
from gws13._logutil import RateLimiter
from conftest import ErrorLog, RawClient, raw_connect, wait_until

SECRET = "secret-payload-7f3a"


def records(caplog, name=None, level=None, text=None):
    return [r for r in caplog.records
            if (name is None or r.name == name) and (level is None or r.levelno == level)
            and (text is None or text in r.getMessage())]


def echo(ws):
    for message in ws:
        ws.send(message)


def test_package_logger_has_a_null_handler_and_nothing_else():
    handlers = logging.getLogger("gws13").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    assert all(isinstance(h, logging.NullHandler) for h in handlers)


def test_a_connection_logs_opened_and_closed_at_debug_and_never_a_payload(serve, caplog):
    caplog.set_level(logging.DEBUG, logger="gws13")
    server = serve(gws13.websocket_app(echo, subprotocols=["chat"]))
    ws = gws13.connect(server.url + "/room?x=1", subprotocols=["chat"])
    ws.send(SECRET)
    assert ws.receive(timeout=5) == SECRET
    ws.send(SECRET.encode())
    assert ws.receive(timeout=5) == SECRET.encode()
    ws.close(1000, "bye")
    wait_until(lambda: len(records(caplog, "gws13.connection", logging.DEBUG, "closed")) >= 2, 5,
             "both sides' closed lines")
    opened = records(caplog, "gws13.connection", logging.DEBUG, "server WebSocket /room opened")
    assert len(opened) == 1, [r.getMessage() for r in caplog.records]
    assert "127.0.0.1:" in opened[0].getMessage() and "subprotocol chat" in opened[0].getMessage()
    closed = records(caplog, "gws13.connection", logging.DEBUG, "server WebSocket /room closed")
    assert len(closed) == 1
    line = closed[0].getMessage()
    assert "by the peer" in line and "code 1000" in line and "2 messages in, 2 out" in line, line
    assert " s," in line  # the duration
    client_closed = records(caplog, "gws13.connection", logging.DEBUG, "client WebSocket /room closed")
    assert len(client_closed) == 1 and "by us" in client_closed[0].getMessage()
    assert "reason 'bye'" in client_closed[0].getMessage()
    for record in caplog.records:
        assert SECRET not in record.getMessage()


def test_refused_handshakes_are_info_lines_with_status_and_why(serve, caplog):
    caplog.set_level(logging.INFO, logger="gws13")
    server = serve(gws13.websocket_app(echo, accept_connection=lambda origin: origin == "https://ok"))
    sock, status, _, _ = raw_connect(server.port, "/ws", version="8")
    sock.close()
    assert status == 426
    sock, status, _, _ = raw_connect(server.port, "/ws", headers={"Origin": "https://evil"})
    sock.close()
    assert status == 403
    wait_until(lambda: len(records(caplog, "gws13.server", logging.INFO, "refused")) >= 2, 5, "two lines")
    lines = [r.getMessage() for r in records(caplog, "gws13.server", logging.INFO, "refused")]
    assert any("426" in line and "Sec-WebSocket-Version" in line for line in lines), lines
    assert any("403" in line and "https://evil" in line for line in lines), lines


def test_a_burst_of_10000_refusals_logs_a_bounded_number_of_lines(caplog, monkeypatch):
    """At most ``burst`` lines per key and interval, then one summary line when
    the interval is over (a timer writes it even if the burst is followed by
    silence)."""
    caplog.set_level(logging.INFO, logger="gws13")
    limiter = RateLimiter(gws13.server._log, burst=10, interval=0.3)
    monkeypatch.setattr(gws13.server, "_refusals", limiter)
    environ = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000", "PATH_INFO": "/ws"}
    for _ in range(10_000):
        gws13.server.refused(environ, 400, "missing Sec-WebSocket-Key")
    assert len(records(caplog, "gws13.server")) == 10
    wait_until(lambda: records(caplog, "gws13.server", text="suppressed"), 5, "the summary line")
    summary = records(caplog, "gws13.server", text="suppressed")
    assert len(summary) == 1 and "suppressed 9990 similar messages" in summary[0].getMessage()
    assert len(records(caplog, "gws13.server")) == 11
    # a new interval logs again
    gws13.server.refused(environ, 400, "missing Sec-WebSocket-Key")
    assert len(records(caplog, "gws13.server")) == 12


def test_rate_limiter_keys_are_independent(caplog):
    caplog.set_level(logging.INFO, logger="gws13")
    log = logging.getLogger("gws13.server")
    limiter = RateLimiter(log, burst=2, interval=60)
    for _ in range(100):
        limiter.log(logging.INFO, "a", "event a")
        limiter.log(logging.INFO, "b", "event b")
    assert [r.getMessage() for r in caplog.records] == ["event a", "event b"] * 2


def raising(ws):
    ws.receive()
    raise ZeroDivisionError("handler bug")


@pytest.mark.parametrize("style", ["websocket_app", "environ"])
def test_an_application_exception_is_one_error_record_and_not_printed_by_pywsgi(serve, caplog, capfd,
                                                                                  style):
    # pywsgi reports an application's exception through its hub's error
    # printer (stderr) and logs client errors to error_log: both are watched
    caplog.set_level(logging.DEBUG, logger="gws13")
    error_log = ErrorLog()

    def environ_app(environ, start_response):
        raising(environ["wsgi.websocket"])
        return []

    app = gws13.websocket_app(raising) if style == "websocket_app" else environ_app
    server = serve(app, error_log=error_log)
    client = RawClient(server.port, "/boom")
    client.send_frame(0x1, b"go")
    close = client.read_until_close()[-1]
    assert (close.code, close.reason) == (1011, "internal error")
    client.close()
    wait_until(lambda: records(caplog, "gws13.server", logging.ERROR), 5, "the ERROR record")
    server.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].name == "gws13.server" and errors[0].exc_info[0] is ZeroDivisionError
    assert "/boom" in errors[0].getMessage() and "1011" in errors[0].getMessage()
    assert "ZeroDivisionError" not in error_log.text and "Traceback" not in error_log.text, error_log.text
    err = capfd.readouterr().err
    assert "ZeroDivisionError" not in err and "Traceback" not in err, err


def test_without_logging_configured_the_exception_goes_to_pywsgi_once(serve, caplog, capfd, monkeypatch):
    # nothing would show a gws13 record (only the NullHandler): the traceback must not be lost
    monkeypatch.setattr(logging.getLogger("gws13"), "propagate", False)
    server = serve(gws13.websocket_app(raising))
    client = RawClient(server.port, "/boom")
    client.send_frame(0x1, b"go")
    assert client.read_until_close()[-1].code == 1011
    client.close()
    server.stop()
    err = capfd.readouterr().err
    assert err.count("Traceback") == 1, err
    assert err.count("ZeroDivisionError: handler bug") == 1, err
    assert not [r for r in caplog.records if r.name.startswith("gws13")]


# -- Redis ---------------------------------------------------------------------

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS is None or pytest.importorskip("redis") is None,
                                 reason="redis-server is not installed")


@needs_redis
def test_redis_outage_is_one_warning_and_its_end_one_info(caplog):
    from test_hub_redis import RedisServer

    caplog.set_level(logging.INFO, logger="gws13")
    redis = RedisServer()
    hub = gws13.Hub(redis.url, redis_options={"max_backoff": 0.05, "ping_interval": 0.2,
                                              "connect_timeout": 0.2})
    try:
        assert hub.wait_ready(10)
        assert len(records(caplog, "gws13.redis", logging.INFO, "connected to Redis")) == 1
        redis.kill()
        # many reconnection attempts fail: still one WARNING
        wait_until(lambda: hub.stats()["errors"] >= 10, 20, "failed reconnections")
        for i in range(20):
            hub.publish("room", f"during the outage {i}")
        gevent.sleep(0.2)
        warnings = records(caplog, "gws13.redis", logging.WARNING, "lost")
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        assert "127.0.0.1" in warnings[0].getMessage()
        redis.start()
        assert hub.wait_ready(20)
        wait_until(lambda: records(caplog, "gws13.redis", logging.INFO, "back after"), 10, "the INFO line")
        gevent.sleep(0.3)
        assert len(records(caplog, "gws13.redis", logging.INFO, "back after")) == 1
        assert len(records(caplog, "gws13.redis", logging.WARNING)) == 1
        # a second outage is a second WARNING
        redis.kill()
        wait_until(lambda: len(records(caplog, "gws13.redis", logging.WARNING, "lost")) == 2, 20,
                 "the second outage's WARNING")
    finally:
        hub.close(timeout=0)
        redis.stop()


@needs_redis
def test_10000_outbox_drops_log_a_bounded_number_of_warnings(caplog):
    import socket

    caplog.set_level(logging.INFO, logger="gws13")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    hub = gws13.Hub(f"redis://:hunter2@127.0.0.1:{port}/0",
                    redis_options={"outbox_size": 10, "max_backoff": 0.05, "connect_timeout": 0.2})
    try:
        for i in range(10_010):
            hub.publish("room", "x")
        assert hub.stats()["outbox_dropped"] == 10_000
        drops = records(caplog, "gws13.redis", logging.WARNING, "outbox full")
        assert 1 <= len(drops) <= 2, [r.getMessage() for r in drops]
        wait_until(lambda: records(caplog, "gws13.redis", logging.WARNING, "lost"), 10, "the outage WARNING")
        for record in caplog.records:
            assert "hunter2" not in record.getMessage()  # no credentials in the log
    finally:
        hub.close(timeout=0)


def test_slow_client_policy_actions_are_info_lines_bounded_in_a_burst(serve, caplog):
    from conftest import RawClient as Raw

    caplog.set_level(logging.INFO, logger="gws13")
    hub = gws13.Hub(queue_size=4, policy="drop-newest")
    joined = []

    def app(ws):
        hub.join(ws, "room")
        joined.append(ws)
        for _ in ws:
            pass

    server = serve(gws13.websocket_app(app, write_limit=1024, compression=None))
    client = Raw(server.port)  # never reads: its buffers fill, then the hub's queue
    wait_until(lambda: joined, 5, "the member")
    payload = b"p" * 65536
    done = []

    def flood():
        for _ in range(10_000):
            hub.publish("room", payload)
        done.append(True)

    server.call(flood)
    wait_until(lambda: done, 20, "the publishes")
    assert hub.stats()["dropped_newest"] > 9000
    lines = records(caplog, "gws13.hub", logging.INFO)
    assert 1 <= len(lines) <= 5, [r.getMessage() for r in lines]
    assert "too slow" in lines[0].getMessage() and "dropped a new message" in lines[0].getMessage()
    for record in caplog.records:
        assert "ppp" not in record.getMessage()
    client.close()
