"""The Redis backend between processes: shared channels and presence, restarts, bad frames."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import maybeDeferred
from twisted.logger import LogLevel

from tests.conftest import ROOT, RecordingListener, RedisServer, sleep, the_reactor, until
from wsapp.backends import PresenceChange
from wsapp.backends.redis import HEARTBEAT, PRESENCE_TTL, RedisBackend
from wsapp.channels import Position, Publication
from wsapp.exceptions import BackendUnavailableError

#: Seconds within which the entries of a killed process leave the count.
EXPIRY_BOUND = HEARTBEAT + PRESENCE_TTL + 2

#: A process that enters one client in channel "room", then waits to be killed.
CHILD = """
import sys
from twisted.internet import reactor, task
from wsapp.backends.redis import RedisBackend

backend = RedisBackend("127.0.0.1", int(sys.argv[1]))
backend.startService()

def enter():
    if backend.available:
        entering.stop()
        backend.presence_add("room", "far", {"where": "child"}, announce=True)

entering = task.LoopingCall(enter)
entering.start(0.01)
reactor.run()
"""


@pytest.fixture
def backends(redis_server: RedisServer) -> Iterator[Any]:
    """Start RedisBackends (each one a process of its own) on the test's Redis."""
    started: list[RedisBackend] = []

    async def start() -> RedisBackend:
        backend = RedisBackend("127.0.0.1", redis_server.port, reactor=the_reactor())
        backend.listener = RecordingListener()
        backend.startService()
        started.append(backend)
        await until(lambda: backend.available, what="connected")
        return backend

    yield start
    for backend in started:
        if backend.running:
            pytest_twisted.blockon(maybeDeferred(backend.stopService))


def heard(backend: RedisBackend) -> RecordingListener:
    assert isinstance(backend.listener, RecordingListener)
    return backend.listener


@pytest_twisted.ensureDeferred
async def test_processes_share_publications_and_presence(backends: Any) -> None:
    """Two processes hear each other's publications and presence, and a clean stop leaves."""
    first, second = await backends(), await backends()
    await first.subscribe("room")
    await second.subscribe("room")
    position = await first.publish("room", "hello", tag="t")
    await until(lambda: heard(second).deliveries)
    assert heard(second).deliveries == [("room", position.epoch, Publication(1, "hello"), "t")]
    assert await second.presence_add("room", "b", {"n": 2}, announce=True) == 1
    assert await first.presence_add("room", "a", {"n": 1}) == 2
    assert await first.presence("room") == {"a": {"n": 1}, "b": {"n": 2}}
    await until(lambda: len(heard(first).changes) == 2)
    assert heard(first).changes == [
        ("room", PresenceChange(1, "b", {"n": 2}, True)),
        ("room", PresenceChange(2)),
    ]
    await second.stopService()
    await until(lambda: len(heard(first).changes) == 3)
    assert heard(first).changes[-1] == ("room", PresenceChange(1))
    assert await first.presence("room") == {"a": {"n": 1}}


@pytest_twisted.ensureDeferred
async def test_a_killed_process_leaves_presence_with_a_recount(
    backends: Any, redis_server: RedisServer
) -> None:
    """The entries of a kill -9'd process expire; a subscribed process publishes the recount."""
    watcher = await backends()
    await watcher.subscribe("room")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(redis_server.port)], env={"PYTHONPATH": str(ROOT)}
    )
    try:
        await until(lambda: heard(watcher).changes, what="the child's entry")
        assert heard(watcher).changes == [("room", PresenceChange(1, "far", {"where": "child"}))]
        child.kill()
        child.wait()
        await until(lambda: len(heard(watcher).changes) == 2, EXPIRY_BOUND, "the recount")
    finally:
        child.kill()
        child.wait()
    assert heard(watcher).changes[-1] == ("room", PresenceChange(0))
    assert await watcher.presence("room") == {}


@pytest_twisted.ensureDeferred
async def test_expired_entries_of_a_live_process_are_entered_again(
    backends: Any, redis_server: RedisServer
) -> None:
    """If a live process's entries expired (it stalled), its next heartbeat enters them again."""
    backend = await backends()
    await backend.presence_add("room", "c", {})
    redis_server.command("DEL", f"wsapp:0:clients:{backend.process}:room")
    assert await backend.presence_count("room") == 0
    deadline = time.monotonic() + HEARTBEAT * 3
    while await backend.presence_count("room") != 1:
        assert time.monotonic() < deadline, "not entered again by the heartbeat"
        await sleep(0.05)
    assert await backend.presence("room") == {"c": {}}


@pytest_twisted.ensureDeferred
async def test_redis_restart_fails_calls_then_resubscribes(
    backends: Any, redis_server: RedisServer
) -> None:
    """Redis down: calls fail at once; back: resubscribed, reconnected() heard, flowing again."""
    backend = await backends()
    await backend.subscribe("room")
    first = await backend.publish("room", 1, history_size=10)
    # acknowledged is not delivered: a kill before the frame is read loses it from pub/sub
    await until(lambda: heard(backend).deliveries, what="the first delivery")
    redis_server.kill()
    await until(lambda: not backend.available, what="the loss noticed")
    calls = [
        backend.publish("room", 2),
        backend.history("room"),
        backend.subscribe("other"),
        backend.presence_add("room", "c", {}),
        backend.presence_count("room"),
        backend.increment("k", 1, limit=5),
    ]
    for call in calls:
        assert call.called, "failed at once"
        with pytest.raises(BackendUnavailableError):
            await call
    assert heard(backend).reconnections == 0
    redis_server.start()
    await until(lambda: heard(backend).reconnections == 1, 30, "reconnected() called")
    assert backend.available
    second = await backend.publish("room", 3)
    assert second == Position(2, first.epoch)  # the AOF kept the channel
    await until(lambda: len(heard(backend).deliveries) == 2)
    assert heard(backend).data("room") == [1, 3]


@pytest_twisted.ensureDeferred
async def test_lost_channel_metadata_starts_a_new_epoch(
    backends: Any, redis_server: RedisServer
) -> None:
    """When a channel's offset and epoch expire (or vanish), the next publication is a new epoch."""
    backend = await backends()
    old = [await backend.publish("a", n, history_size=10) for n in range(2)]
    redis_server.command("DEL", "wsapp:0:meta:a")
    new = await backend.publish("a", "again", history_size=10)
    assert new.offset == 1 and new.epoch != old[0].epoch
    result = await backend.history("a", since=old[-1])
    assert (result.position, result.publications, result.recovered) == (
        new,
        (Publication(1, "again"),),
        False,
    )
    assert 0 < int(redis_server.command("PTTL", "wsapp:0:meta:a")[1:-2]) <= 86400 * 1000


@pytest_twisted.ensureDeferred
async def test_history_of_an_unknown_channel_has_a_stable_epoch(backends: Any) -> None:
    """Reading history of a channel never published creates its epoch, kept by publications."""
    backend = await backends()
    first = await backend.history("new")
    assert first.position.offset == 0
    assert (await backend.history("new")).position == first.position
    assert await backend.publish("new", 1) == Position(1, first.position.epoch)


@pytest_twisted.ensureDeferred
async def test_scripts_are_loaded_again_after_a_flush(
    backends: Any, redis_server: RedisServer
) -> None:
    """After SCRIPT FLUSH (as after a restart without the cache), calls load the script again."""
    backend = await backends()
    assert (await backend.publish("a", 1)).offset == 1
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    assert (await backend.publish("a", 2)).offset == 2
    assert await backend.increment("k", 1, limit=5) == (1, None)


@pytest_twisted.ensureDeferred
async def test_malformed_frames_are_counted_and_ignored(
    backends: Any, redis_server: RedisServer, log_events: Any
) -> None:
    """Messages on a channel's pub/sub that are not frames are counted, logged, never delivered."""
    backend = await backends()
    await backend.subscribe("room")
    bad = ["garbage", "[]", '[2,"p",1,"e","",1]', '[1,"p",0,"e","",1]', '[1,"r",-1,null,null,true]']
    for message in bad:
        redis_server.command("PUBLISH", "wsapp:0:channel:room", message)
    await backend.publish("room", "good")
    await until(lambda: heard(backend).deliveries)
    assert heard(backend).data("room") == ["good"]
    assert backend.malformed == len(bad)
    warnings = [m for m in log_events.messages(LogLevel.warn) if "malformed" in m]
    assert len(warnings) == len(bad)


def test_replies_are_parsed_by_hiredis() -> None:
    """txredisapi's protocols parse with hiredis (its own parser takes a reactor pass a string)."""
    import txredisapi

    from wsapp.backends.redis_link import Subscriber

    assert txredisapi.RedisProtocol is txredisapi.HiredisProtocol
    assert issubclass(Subscriber, txredisapi.HiredisProtocol)
