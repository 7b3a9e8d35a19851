"""The backend contract: the same tests on the memory backend and on Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, maybeDeferred

from tests.conftest import RecordingListener, sleep, the_reactor, until
from wsapp.backends import Backend, PresenceChange
from wsapp.backends.memory import MemoryBackend
from wsapp.backends.redis import RedisBackend
from wsapp.channels import Position, Publication
from wsapp.exceptions import StateError


def start_backend(backend: Backend, listener: RecordingListener) -> Backend:
    """Start ``backend`` with ``listener`` and wait until it can serve requests."""
    backend.listener = listener
    backend.startService()
    pytest_twisted.blockon(Deferred.fromCoroutine(until(lambda: backend.available)))
    return backend


@pytest.fixture(params=["memory", "redis"])
def backend(request: Any) -> Iterator[Backend]:
    """A started backend of each kind (Redis: on a redis-server of its own)."""
    if request.param == "memory":
        started = start_backend(MemoryBackend(reactor=the_reactor()), RecordingListener())
    else:
        server = request.getfixturevalue("redis_server")
        redis = RedisBackend("127.0.0.1", server.port, reactor=the_reactor())
        started = start_backend(redis, RecordingListener())
    yield started
    pytest_twisted.blockon(maybeDeferred(started.stopService))


def heard(backend: Backend) -> RecordingListener:
    assert isinstance(backend.listener, RecordingListener)
    return backend.listener


async def published(backend: Backend, channel: str, count: int, **options: Any) -> list[Position]:
    """Publish ``0 .. count - 1`` to ``channel``; return their positions."""
    return [await backend.publish(channel, number, **options) for number in range(count)]


@pytest_twisted.ensureDeferred
async def test_offsets_count_from_one_per_channel_in_a_stable_epoch(backend: Backend) -> None:
    """Each channel's publications get offsets 1, 2, 3 in one epoch; channels count apart."""
    first = await published(backend, "a", 3, history_size=10)
    other = await published(backend, "b", 2, history_size=10)
    assert [position.offset for position in first] == [1, 2, 3]
    assert [position.offset for position in other] == [1, 2]
    assert len({position.epoch for position in first}) == 1
    assert first[0].epoch != other[0].epoch


@pytest_twisted.ensureDeferred
async def test_subscribed_channels_are_delivered_in_order_with_tags(backend: Backend) -> None:
    """A subscribed channel's publications reach the listener in order with their tags."""
    await backend.subscribe("a")
    positions = [await backend.publish("a", {"n": n}, tag=f"t{n}") for n in range(3)]
    await until(lambda: len(heard(backend).deliveries) == 3)
    assert heard(backend).deliveries == [
        ("a", positions[n].epoch, Publication(n + 1, {"n": n}), f"t{n}") for n in range(3)
    ]


@pytest_twisted.ensureDeferred
async def test_unsubscribed_channels_are_not_delivered(backend: Backend) -> None:
    """Channels never subscribed or unsubscribed reach nothing; later ones still arrive."""
    await backend.subscribe("gone")
    await backend.unsubscribe("gone")
    await backend.subscribe("kept")
    await backend.publish("never", 1)
    await backend.publish("gone", 2)
    await backend.publish("kept", 3)
    await until(lambda: heard(backend).deliveries)
    assert [(name, p.data) for name, _, p, _ in heard(backend).deliveries] == [("kept", 3)]


@pytest_twisted.ensureDeferred
async def test_history_since_a_position_is_exactly_what_followed(backend: Backend) -> None:
    """History since publication 2 of 5 holds 3, 4, 5 and says they are all that followed."""
    positions = await published(backend, "a", 5, history_size=10)
    result = await backend.history("a", since=positions[1])
    assert result.position == positions[-1]
    assert result.publications == tuple(Publication(n + 1, n) for n in range(2, 5))
    assert result.recovered
    at_top = await backend.history("a", since=positions[-1])
    assert (at_top.publications, at_top.recovered) == ((), True)


@pytest_twisted.ensureDeferred
async def test_history_shorter_than_the_gap_is_not_recovered(backend: Backend) -> None:
    """With 10 kept of 20 published, history since offset 0 has the last 10, not recovered."""
    positions = await published(backend, "a", 20, history_size=10)
    result = await backend.history("a", since=Position(0, positions[0].epoch))
    assert result.publications == tuple(Publication(n + 1, n) for n in range(10, 20))
    assert not result.recovered


@pytest_twisted.ensureDeferred
async def test_history_limit(backend: Backend) -> None:
    """A limit cuts what followed (then not recovered); without since it takes the latest."""
    positions = await published(backend, "a", 6, history_size=10)
    epoch = positions[0].epoch
    cut = await backend.history("a", since=Position(1, epoch), limit=3)
    assert (cut.publications, cut.recovered) == (
        tuple(Publication(n, n - 1) for n in (2, 3, 4)),
        False,
    )
    enough = await backend.history("a", since=Position(3, epoch), limit=3)
    assert (enough.publications, enough.recovered) == (
        tuple(Publication(n, n - 1) for n in (4, 5, 6)),
        True,
    )
    latest = await backend.history("a", limit=2)
    assert (latest.position, latest.publications) == (
        positions[-1],
        (Publication(5, 4), Publication(6, 5)),
    )
    assert (await backend.history("a")).publications == ()


@pytest_twisted.ensureDeferred
async def test_history_of_another_epoch_is_not_recovered(backend: Backend) -> None:
    """A position from another epoch (or past the top) gets what history has, not recovered."""
    positions = await published(backend, "a", 3, history_size=10)
    kept = tuple(Publication(n + 1, n) for n in range(3))
    for since in (Position(1, "another"), Position(9, positions[0].epoch)):
        result = await backend.history("a", since=since)
        assert (result.position, result.publications, result.recovered) == (
            positions[-1],
            kept,
            False,
        )


@pytest_twisted.ensureDeferred
async def test_history_entries_expire_after_their_ttl(backend: Backend) -> None:
    """Publications leave history ``history_ttl`` seconds after they were published."""
    await backend.subscribe("a")
    positions = await published(backend, "a", 2, history_size=10, history_ttl=0.3)
    since = Position(0, positions[0].epoch)
    assert len((await backend.history("a", since=since)).publications) == 2
    deadline = time.monotonic() + 5
    while (result := await backend.history("a", since=since)).publications:
        assert time.monotonic() < deadline, "history still holds expired publications"
        await sleep(0.05)
    assert result.position == positions[-1] and not result.recovered


@pytest_twisted.ensureDeferred
async def test_increment_stays_within_its_limit(backend: Backend) -> None:
    """Increments reach ±limit exactly; one past it is out-of-range and changes nothing."""
    assert await backend.increment("k", 7, limit=10) == (7, None)
    assert await backend.increment("k", 3, limit=10) == (10, None)
    for amount in (1, -21):
        with pytest.raises(StateError) as refused:
            await backend.increment("k", amount, limit=10)
        assert refused.value.code == "out-of-range" and "10" in refused.value.detail
    assert await backend.increment("k", -20, limit=10) == (-10, None)
    assert await backend.increment("other", 0, limit=10) == (0, None)


@pytest_twisted.ensureDeferred
async def test_increment_with_a_channel_publishes_the_value(backend: Backend) -> None:
    """An increment with a channel publishes the new value there, kept as its history."""
    await backend.subscribe("c")
    value, position = await backend.increment("k", 3, limit=10, channel="c", tag="x")
    assert value == 3 and position is not None and position.offset == 1
    assert (await backend.increment("k", 2, limit=10, channel="c"))[1] == Position(
        2, position.epoch
    )
    await until(lambda: len(heard(backend).deliveries) == 2)
    assert heard(backend).deliveries == [
        ("c", position.epoch, Publication(1, 3), "x"),
        ("c", position.epoch, Publication(2, 5), ""),
    ]
    latest = await backend.history("c", limit=5)
    assert latest.publications == (Publication(2, 5),)


@pytest_twisted.ensureDeferred
async def test_presence_entries_and_their_changes(backend: Backend) -> None:
    """Presence lists and counts entries; subscribers hear each change, who only if announced."""
    await backend.subscribe("room")
    assert await backend.presence_add("room", "c1", {"name": "ann"}, announce=True) == 1
    assert await backend.presence_add("room", "c2", {"name": "bob"}) == 2
    assert await backend.presence_add("room", "c2", {"name": "bob"}) == 2  # no change
    assert await backend.presence("room") == {"c1": {"name": "ann"}, "c2": {"name": "bob"}}
    assert await backend.presence_count("room") == 2
    assert await backend.presence_count("elsewhere") == 0
    assert await backend.presence_remove("room", "c1", announce=True) == 1
    assert await backend.presence_remove("room", "nobody") == 1
    assert await backend.presence_remove("room", "c2") == 0
    assert await backend.presence("room") == {}
    expected = [
        ("room", PresenceChange(1, "c1", {"name": "ann"}, True)),
        ("room", PresenceChange(2)),
        ("room", PresenceChange(1, "c1", {"name": "ann"}, False)),
        ("room", PresenceChange(0)),
    ]
    await backend.publish("room", "marker")  # arrives after every change before it
    await until(lambda: heard(backend).deliveries)
    assert heard(backend).changes == expected
