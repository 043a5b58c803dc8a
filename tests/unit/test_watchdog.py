"""The watchdog's bookkeeping against a key-value store held in a dict (the real coordination service is in
tests/multihost/test_watchdog.py): beats count up, a silent peer is lost after the timeout, a done one is not."""

import pytest

from sovits2_jax.parallel import watchdog


class Store:
    def __init__(self):
        self.values, self.down = {}, False

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Socket closed\nmore detail")
        self.values[key] = value

    def key_value_dir_get(self, prefix):
        if self.down:
            raise RuntimeError("UNAVAILABLE: Socket closed")
        return [(k, v) for k, v in self.values.items() if k.startswith(prefix)]


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(watchdog.time, "monotonic", lambda: now[0])
    return now


def test_a_silent_peer_is_lost_after_the_timeout_and_a_beating_one_never(clock):
    store = Store()
    me, peer, silent = (watchdog.Watchdog(store, i, 3, timeout_s=5) for i in range(3))
    me._seen = {1: ("", clock[0]), 2: ("", clock[0])}
    silent._beat()  # process 2 beats once, then stops; process 1 keeps beating every 2 s
    for _ in range(3):
        peer._beat()
        assert me.check() is None
        clock[0] += 2
    peer._beat()
    message = me.check()  # 6 s since process 2's beat was first seen
    assert message.startswith("error: process 2 of 3 stopped answering (no beat for 6 s")
    assert "process 0 stops too" in message


def test_a_peer_that_is_done_is_never_lost(clock):
    store = Store()
    me, peer = watchdog.Watchdog(store, 0, 2, timeout_s=5), watchdog.Watchdog(store, 1, 2, timeout_s=5)
    me._seen = {1: ("", clock[0])}
    peer._beat()
    assert me.check() is None
    peer.stop()  # never started: stop() still marks it done
    clock[0] += 60
    assert me.check() is None


def test_losing_the_store_names_the_coordinator():
    store = Store()
    me = watchdog.Watchdog(store, 1, 2, timeout_s=5)
    store.down = True
    message = me.check()
    assert message.startswith("error: process 0 of 2 (the coordinator) stopped answering (UNAVAILABLE: Socket closed)")


def test_one_process_or_a_zero_timeout_starts_nothing():
    assert watchdog.start(Store(), 0, 1, env={}) is None
    assert watchdog.start(Store(), 0, 2, env={"SOVITS2_PEER_TIMEOUT": "0"}) is None
