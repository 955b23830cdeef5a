"""parameterize blocks are captured at spawn, like contextvars: a greenlet sees
the blocks open in its spawner when it was spawned, never one entered later
(nor one of an unrelated greenlet), and keeps them after its spawner leaves."""

import os
import queue
import subprocess
import sys
import textwrap
import threading

import gevent
import greenlet
import pytest
import websocket
from gevent.event import Event

import gws13
from gws13 import params

P = gws13.parameters
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_block_entered_after_the_spawn_is_not_seen():
    # row 16: the child was spawned (and is running) before the block
    go = Event()
    seen = []

    def child():
        go.wait()
        seen.append(P.ping_interval)

    g = gevent.spawn(child)
    gevent.sleep(0)  # the child runs and waits
    with gws13.parameterize(ping_interval=3):
        assert P.ping_interval == 3
        go.set()
        g.join()
    assert seen == [15]


def test_a_child_not_yet_started_when_the_block_opens_does_not_see_it():
    g = gevent.spawn(lambda: P.ping_interval)
    with gws13.parameterize(ping_interval=3):
        assert g.get(timeout=5) == 15
        assert gevent.spawn(lambda: P.ping_interval).get(timeout=5) == 3


def test_unrelated_greenlets_never_see_each_others_blocks():
    inside, done = Event(), Event()
    seen = {}

    def a():
        with gws13.parameterize(ping_interval=1):
            inside.set()
            done.wait()
            seen["a"] = P.ping_interval

    def b():  # a sibling: same spawner, same gevent spawn tree
        inside.wait()
        seen["b"] = P.ping_interval
        seen["b child"] = gevent.spawn(lambda: P.ping_interval).get()
        done.set()

    def c():  # spawned by the hub
        inside.wait()
        seen["c"] = P.ping_interval

    hub_spawned = []
    gevent.get_hub().loop.run_callback(lambda: hub_spawned.append(gevent.spawn(c)))
    gevent.joinall([gevent.spawn(a), gevent.spawn(b)], timeout=5, raise_error=True)
    while not hub_spawned:
        gevent.sleep(0.001)
    hub_spawned[0].join(timeout=5)
    assert seen == {"a": 1, "b": 15, "b child": 15, "c": 15}
    assert P.ping_interval == 15


def test_nested_blocks_and_what_each_child_takes():
    gws13.parameters.ping_interval = 7
    spawned = {}
    with gws13.parameterize(ping_interval=3, close_timeout=1):
        spawned["outer"] = gevent.spawn(lambda: (P.ping_interval, P.close_timeout))
        with gws13.parameterize(ping_interval=2):
            assert (P.ping_interval, P.close_timeout) == (2, 1)
            spawned["inner"] = gevent.spawn(lambda: (P.ping_interval, P.close_timeout))
            spawned["grandchild"] = gevent.spawn(
                lambda: gevent.spawn(lambda: (P.ping_interval, P.close_timeout)).get())
        assert (P.ping_interval, P.close_timeout) == (3, 1)
        spawned["after inner"] = gevent.spawn(lambda: (P.ping_interval, P.close_timeout))
    assert (P.ping_interval, P.close_timeout) == (7, 5)
    spawned["after"] = gevent.spawn(lambda: (P.ping_interval, P.close_timeout))
    got = {name: g.get(timeout=5) for name, g in spawned.items()}
    assert got == {"outer": (3, 1), "inner": (2, 1), "grandchild": (2, 1), "after inner": (3, 1),
                   "after": (7, 5)}


def test_a_child_keeps_its_snapshot_after_the_spawner_leaves_the_block():
    go = Event()

    def child():
        before = P.ping_interval
        go.wait()
        # the spawner has left the block: the child keeps what it was given
        return before, P.ping_interval, gevent.spawn(lambda: P.ping_interval).get()

    with gws13.parameterize(ping_interval=3):
        g = gevent.spawn(child)
        gevent.sleep(0)
    assert P.ping_interval == 15
    go.set()
    assert g.get(timeout=5) == (3, 3, 3)
    assert params.effective()["ping_interval"] == 15


def test_a_child_snapshot_is_what_effective_sees_too():
    with gws13.parameterize(max_queue=4):
        g = gevent.spawn(lambda: params.effective()["max_queue"])
    with gws13.parameterize(max_queue=9):
        assert g.get(timeout=5) == 4


def test_blocks_left_out_of_order():
    a = params.push("gws13.test.a", 1)
    b = params.push("gws13.test.b", 2)
    child_ab = gevent.spawn(lambda: (params.lookup("gws13.test.a"), params.lookup("gws13.test.b")))
    params.pop(a)
    assert (params.lookup("gws13.test.a"), params.lookup("gws13.test.b")) == (None, 2)
    c = params.push("gws13.test.a", 3)
    params.pop(b)
    assert (params.lookup("gws13.test.a"), params.lookup("gws13.test.b")) == (3, None)
    params.pop(c)
    params.pop(c)  # twice: a no-op
    assert (params.lookup("gws13.test.a"), params.lookup("gws13.test.b")) == (None, None)
    assert child_ab.get(timeout=5) == (1, 2)


def test_the_spawn_tree_is_given_back_when_the_block_ends():
    # gevent's spawn_tree_locals: a copy inside the block, the very same dict after
    def child():
        g = gevent.getcurrent()
        tree = g.spawn_tree_locals
        tree["app"] = "x"
        with gws13.parameterize(ping_interval=3):
            inside = g.spawn_tree_locals
            assert inside is not tree and inside["app"] == "x"
        return g.spawn_tree_locals is tree and tree == {"app": "x"}

    assert gevent.spawn(child).get(timeout=5) is True


def test_raw_greenlets_and_os_threads_see_the_defaults_and_their_own_blocks():
    def work():
        out = [P.ping_interval, params.lookup("gws13.current_websocket"), params.effective()["ping_interval"]]
        with gws13.parameterize(ping_interval=2):
            out.append(P.ping_interval)
        out.append(P.ping_interval)
        return out

    with gws13.parameterize(ping_interval=3):
        # a raw greenlet records no spawner: it inherits nothing (and does not crash)
        raw = greenlet.greenlet(work)
        assert raw.switch() == [15, None, 15, 2, 15]
        result = []
        t = threading.Thread(target=lambda: result.append(work()))
        t.start()
        t.join(10)
        assert result == [[15, None, 15, 2, 15]]
        assert P.ping_interval == 3


def test_a_block_object_nested_reused_and_as_a_decorator():
    block = gws13.parameterize(ping_interval=3)
    with block:
        with block:
            assert P.ping_interval == 3
        assert P.ping_interval == 3
    assert P.ping_interval == 15

    @gws13.parameterize(close_timeout=1)
    def f():
        gevent.sleep(0.01)
        return P.close_timeout

    assert [g.get(timeout=5) for g in [gevent.spawn(f), gevent.spawn(f)]] == [1, 1]
    assert P.close_timeout == 5


def test_unknown_names_and_methods():
    with pytest.raises(AttributeError, match="unknown gws13 parameter"):
        P.no_such_thing
    assert "ping_interval" in dir(P) and P.defaults()["ping_interval"] == 15


def test_a_binding_is_not_a_parameter_for_effective():
    token = params.push("gws13.current_websocket", object())
    try:
        # the current websocket alone keeps the shared snapshot
        assert params.effective() is params.effective()
        assert params.effective(max_queue=1) is params.effective(max_queue=1)
    finally:
        params.pop(token)


def _run(code, **env):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, **env))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_hub_made_inside_a_block_does_not_pass_it_on():
    # a fresh process: gevent's hub does not exist before the block
    out = _run("""
        import gevent, gws13
        with gws13.parameterize(ping_interval=3):
            made = []
            gevent.get_hub().loop.run_callback(
                lambda: made.append(gevent.spawn(lambda: gws13.parameters.ping_interval)))
            while not made:
                gevent.sleep(0.001)
            print(made[0].get(), gevent.spawn(lambda: gws13.parameters.ping_interval).get())
    """)
    assert out == ["15", "3"]


def test_monkey_patched_threads_inherit_at_start():
    out = _run("""
        from gevent import monkey; monkey.patch_all()
        import threading, gws13
        seen = []
        go = threading.Event()
        def read():
            go.wait()
            seen.append(gws13.parameters.ping_interval)
        early = threading.Thread(target=read); early.start()
        with gws13.parameterize(ping_interval=3):
            late = threading.Thread(target=read); late.start()
            go.set()
            early.join(); late.join()
        print(*sorted(seen))
    """)
    assert out == ["3", "15"]  # (sorted)


def test_without_gevent_tree_tracking_blocks_still_apply_in_their_greenlet():
    out = _run("""
        import gevent, gws13
        def work():
            with gws13.parameterize(ping_interval=3):
                return gws13.parameters.ping_interval, gevent.spawn(lambda: gws13.parameters.ping_interval).get()
        print(*gevent.spawn(work).get(), gws13.parameters.ping_interval)
    """, GEVENT_TRACK_GREENLET_TREE="0")
    assert out == ["3", "15", "15"]  # no tree: nothing is inherited


# -- current_websocket through a real server --------------------------------------------
def test_current_websocket_is_inherited_by_greenlets_spawned_in_the_proc(serve):
    out = queue.Queue()
    started = Event()

    def app(environ, start_response):
        # spawned by the handler before with_websocket: not inside it
        before = gevent.spawn(lambda: (started.wait(5), gws13.current_websocket())[1])

        def proc(ws):
            started.set()
            late = gevent.spawn(lambda: (gevent.sleep(0.01), gws13.current_websocket())[1])
            name = ws.receive()
            out.put((name, gws13.current_websocket() is ws,
                     gevent.spawn(gws13.current_websocket).get() is ws,
                     before.get() is None, late.get() is ws))
            ws.send(name)

        result = gws13.with_websocket(environ, start_response, proc)
        out.put(("after", gws13.current_websocket() is None))
        return result

    srv = serve(app)
    clients = [websocket.create_connection(srv.url, timeout=5) for _ in range(2)]
    for i, c in enumerate(clients):
        c.send(f"c{i}")
    for i, c in enumerate(clients):
        assert c.recv() == f"c{i}"
    results = sorted(out.get(timeout=5) for _ in range(2))
    assert results == [("c0", True, True, True, True), ("c1", True, True, True, True)]
    for c in clients:
        c.close()
    assert [out.get(timeout=5) for _ in range(2)] == [("after", True)] * 2
