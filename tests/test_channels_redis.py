"""
The channels guarantee across ``twistd wsapp`` processes sharing one Redis.

Per channel, offsets increase by one with each publication, and a subscriber never sees a
gap or a duplicate without an ``unrecovered`` event: not when it comes back with ``since``
on another process, not when Redis restarts in the middle of a run (with its AOF the gap is
filled from history; without it the epoch changes), not when a process is killed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import RedisServer, Twistd, aio
from wsapp.backends.redis import HEARTBEAT, PRESENCE_TTL

#: Seconds within which the presence entries of a killed process are gone.
EXPIRY_BOUND = HEARTBEAT + PRESENCE_TTL + 2

CONFIG = """
apps:
  /channels:
    protocol: wsapp.apps.channels:ChannelsProtocol
limits:
  rate: 0
channels:
  namespaces:
    chat:
      publish: anyone
      history_size: 100
      presence: true
      join_leave: true
    short:
      publish: anyone
      history_size: 10
"""

_ids = itertools.count(1)


@pytest.fixture
def processes(tmp_path: Path, redis_server: RedisServer) -> Iterator[Any]:
    """Start ``twistd -n wsapp`` processes serving /channels on ``backend`` (the test's Redis)."""
    started: list[Twistd] = []

    def start(count: int, backend: str = redis_server.url) -> list[Twistd]:
        for _ in range(count):
            folder = tmp_path / f"twistd-{len(started)}"
            folder.mkdir()
            (folder / "config.yaml").write_text(CONFIG)
            port = "tcp:0:interface=127.0.0.1"
            started.append(Twistd(["--port", port, "--backend", backend], folder))
        return started[-count:]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


class Peer:
    """A ``websockets`` client of /channels that keeps every event it receives, in order."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.events: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, process: Twistd) -> Peer:
        return cls(await websockets.connect(process.url("/channels"), open_timeout=5))

    async def _read(self) -> None:
        try:
            async for message in self.websocket:
                self.events.append(json.loads(message))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._changed.set()

    async def wait(
        self, condition: Callable[[], object], timeout: float = 10, what: str = ""
    ) -> None:
        """Wait until ``condition()`` holds, checked after each event; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not within {timeout} s: {what or condition}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def request(self, action: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id and return the event that answers it."""
        request_id = next(_ids)
        await self.websocket.send(json.dumps({"action": action, "id": request_id, **fields}))
        found: list[dict[str, Any]] = []

        def answered() -> bool:
            found.extend(event for event in self.events if event.get("id") == request_id)
            return bool(found) or self.closed

        await self.wait(answered, timeout, f"the reply to {action}")
        assert found, f"closed before the reply to {action}"
        return found[0]

    async def subscribe(self, channel: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request("subscribe", channel=channel, **fields)
        assert reply["type"] == "subscribed", reply
        return reply

    async def publish(self, channel: str, data: Any) -> int:
        reply = await self.request("publish", channel=channel, data=data)
        assert reply["type"] == "published", reply
        return int(reply["offset"])

    def stream(self, channel: str) -> list[tuple[str, int, Any]]:
        """
        What this client got of ``channel`` since its last subscribe reply: ``("p", offset,
        data)`` per publication (those in the reply first), ``("u", offset, epoch)`` per
        ``unrecovered`` event.
        """
        steps: list[tuple[str, int, Any]] = []
        for event in self.events:
            if event.get("channel") != channel:
                continue
            if event["type"] == "subscribed":
                steps = [("p", item["offset"], item["data"]) for item in event["publications"]]
            elif event["type"] == "publication":
                steps.append(("p", event["offset"], event["data"]))
            elif event["type"] == "unrecovered":
                steps.append(("u", event["offset"], event["epoch"]))
        return steps

    def offsets(self, channel: str) -> list[int]:
        return [offset for kind, offset, _ in self.stream(channel) if kind == "p"]

    async def close(self) -> None:
        await self.websocket.close()
        await asyncio.wait_for(self._reader, 5)


def assert_gapless(steps: list[tuple[str, int, Any]], start: int) -> None:
    """Each publication's offset is the one after the last, unless an unrecovered came first."""
    offset = start
    for kind, number, _ in steps:
        if kind == "p":
            assert number == offset + 1, f"offset {number} after {offset}: {steps}"
        offset = number


def numsub(redis_server: RedisServer, channel: str) -> int:
    """How many Redis connections are subscribed to ``channel``'s pub/sub."""
    reply = redis_server.command("PUBSUB", "NUMSUB", f"wsapp:0:channel:{channel}")
    return int(reply.split(b"\r\n")[-2][1:])


def pubsub_channels(redis_server: RedisServer) -> list[str]:
    """
    The clients' channels some process is subscribed to (PUBSUB CHANNELS), without the
    server's own (``$...``, such as the identity notices every process listens to).
    """
    reply = redis_server.command("PUBSUB", "CHANNELS", "wsapp:0:channel:*").split(b"\r\n")
    names = (line.decode().removeprefix("wsapp:0:channel:") for line in reply[2:-1:2])
    return sorted(name for name in names if not name.startswith("$"))


async def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds, checking every 20 ms; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def publish_alternately(
    peers: list[Peer], channel: str, prefix: str, count: int
) -> list[int]:
    """Publish ``count`` numbered data through ``peers`` in turn; return the offsets."""
    return [await peers[n % len(peers)].publish(channel, f"{prefix} {n}") for n in range(count)]


@pytest.mark.parametrize("namespace", ["chat", "short"])
@pytest_twisted.ensureDeferred
async def test_a_subscriber_comes_back_on_either_process(processes: Any, namespace: str) -> None:
    """Back with since on A or B after 20 publications through both: those 20, then live ones."""
    a, b = processes(2)
    channel = f"{namespace}:room"

    async def scenario() -> None:
        through_a, through_b = await Peer.open(a), await Peer.open(b)
        leaving = [await Peer.open(a), await Peer.open(a)]
        epoch = (await leaving[0].subscribe(channel))["epoch"]
        await leaving[1].subscribe(channel)
        assert await publish_alternately([through_a, through_b], channel, "before", 2) == [1, 2]
        for peer in leaving:
            await peer.wait(lambda peer=peer: peer.offsets(channel) == [1, 2])
            await peer.close()
        since = {"offset": 2, "epoch": epoch}
        missed = await publish_alternately([through_a, through_b, through_b], channel, "missed", 20)
        assert missed == list(range(3, 23))
        back = [await Peer.open(a), await Peer.open(b)]
        # live publications race the two subscribes
        racing = asyncio.ensure_future(
            publish_alternately([through_b, through_a], channel, "live", 10)
        )
        replies = await asyncio.gather(*(peer.subscribe(channel, since=since) for peer in back))
        assert await racing == list(range(23, 33))
        expected = [f"missed {n}" for n in range(20)] + [f"live {n}" for n in range(10)]
        for peer, reply in zip(back, replies, strict=True):
            await peer.wait(lambda peer=peer: peer.offsets(channel)[-1:] == [32], what="live")
            steps = peer.stream(channel)
            assert {kind for kind, _, _ in steps} == {"p"}, steps
            if namespace == "chat":
                assert reply["recovered"] is True and reply["epoch"] == epoch
                assert reply["publications"][:20] == [
                    {"offset": 3 + n, "data": f"missed {n}"} for n in range(20)
                ]
                assert steps == [("p", 3 + n, data) for n, data in enumerate(expected)]
            else:
                assert (reply["recovered"], reply["publications"]) == (False, [])
                assert 22 <= reply["offset"] <= 32 and reply["epoch"] == epoch
                top = reply["offset"]
                assert steps == [("p", n, expected[n - 3]) for n in range(top + 1, 33)]
        for peer in [through_a, through_b, *back]:
            await peer.close()

    await aio(scenario())


#: Publications of the restart run, and seconds between two of them.
RUN, PACE = 300, 0.01


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
@pytest_twisted.ensureDeferred
async def test_redis_restart_in_a_publishing_run(
    processes: Any, redis_server: RedisServer, persistent: bool
) -> None:
    """Redis restarts mid-run: with AOF the gap is filled, without it one unrecovered event."""
    a, b = processes(2)
    channel = "chat:run"

    async def scenario() -> tuple[dict[str, Any], list[tuple[int, int, bool]], int, Peer]:
        loop = asyncio.get_running_loop()
        subscriber, publisher = await Peer.open(a), await Peer.open(b)
        reply = await subscriber.subscribe(channel)
        #: (data, offset, whether Redis had restarted) of each acknowledged publication
        acked: list[tuple[int, int, bool]] = []
        failures = [0]

        async def publish_run() -> None:
            for n in range(1, RUN + 1):
                for _ in range(1000):  # bounded retries: 1000 x PACE
                    answer = await publisher.request("publish", channel=channel, data=n)
                    if answer["type"] == "published":
                        acked.append((n, answer["offset"], failures[0] > 0))
                        break
                    assert answer.get("error") == "backend-unavailable", answer
                    failures[0] += 1
                    await asyncio.sleep(PACE)
                else:
                    raise AssertionError(f"publication {n} never accepted")
                await asyncio.sleep(PACE)

        async def restart() -> None:
            await eventually(lambda: len(acked) >= RUN // 3, 30, "a third of the run")
            await loop.run_in_executor(None, redis_server.kill)
            if not persistent:
                shutil.rmtree(redis_server.folder / "appendonlydir")
            await eventually(lambda: failures[0], 10, "a publication refused")
            await loop.run_in_executor(None, redis_server.start)

        await asyncio.gather(publish_run(), restart())
        last = acked[-1][1]
        await subscriber.wait(
            lambda: subscriber.stream(channel)[-1:] == [("p", last, RUN)], 20, "the last one"
        )
        return reply, acked, failures[0], subscriber

    reply, acked, failures, subscriber = await aio(scenario())
    assert failures > 0
    steps = subscriber.stream(channel)
    assert_gapless(steps, reply["offset"])
    lost = [step for step in steps if step[0] == "u"]
    if persistent:
        at = steps.index(lost[0]) if lost else 0
        assert lost == [], (steps[max(0, at - 3) : at + 4], [a for a in acked if a[2]][:3])
        delivered = {offset: data for _, offset, data in steps}
        assert [offset for _, offset, _ in steps] == list(range(1, acked[-1][1] + 1))
        assert all(delivered[offset] == n for n, offset, _ in acked)
    else:
        assert len(lost) == 1 and lost[0][2] != reply["epoch"], lost
        after = steps[steps.index(lost[0]) + 1 :]
        delivered = {offset: data for _, offset, data in after}
        missing = [(n, o) for n, o, restarted in acked if restarted and delivered.get(o) != n]
        assert not missing, (lost, missing[:5], len(missing))


def joined(peer: Peer, channel: str) -> list[str]:
    """The client ids ``peer`` was told joined ``channel``."""
    return [e["client"] for e in peer.events if e["type"] == "join" and e["channel"] == channel]


async def present(peer: Peer, channel: str) -> set[str]:
    reply = await peer.request("presence", channel=channel)
    assert reply["type"] == "presence", reply
    return {entry["client"] for entry in reply["clients"]}


@pytest_twisted.ensureDeferred
async def test_subscribers_of_a_killed_process_recover_on_the_survivor(processes: Any) -> None:
    """After kill -9 of A, its subscribers recover on B exactly; A's presence entries expire."""
    a, b = processes(2)
    channel = "chat:kill"

    async def scenario() -> None:
        watcher, publisher = await Peer.open(b), await Peer.open(b)
        await watcher.subscribe(channel)
        await watcher.wait(lambda: joined(watcher, channel), what="its own join")
        victims = [await Peer.open(a), await Peer.open(a)]
        epoch = ""
        for peer in victims:
            epoch = (await peer.subscribe(channel))["epoch"]
        await watcher.wait(lambda: len(joined(watcher, channel)) == 3, what="A's two joins")
        gone = set(joined(watcher, channel)[1:])
        assert gone <= await present(watcher, channel)
        assert await publish_alternately([publisher], channel, "before", 3) == [1, 2, 3]
        for peer in victims:
            await peer.wait(lambda peer=peer: peer.offsets(channel) == [1, 2, 3])
        a.process.kill()
        a.process.wait()
        killed = time.monotonic()
        for peer in victims:
            await peer.wait(lambda peer=peer: peer.closed, what="A's connections closed")
        missed = await publish_alternately([publisher], channel, "missed", 15)
        assert missed == list(range(4, 19))
        since = {"offset": 3, "epoch": epoch}
        back = [await Peer.open(b) for _ in victims]
        for peer in back:
            reply = await peer.subscribe(channel, since=since)
            assert reply["recovered"] is True and reply["offset"] == 18
            assert reply["publications"] == [
                {"offset": 4 + n, "data": f"missed {n}"} for n in range(15)
            ]
        assert await publisher.publish(channel, "live") == 19
        for peer in [*back, watcher]:
            await peer.wait(lambda peer=peer: peer.offsets(channel)[-1:] == [19], what="live")
        assert [step[1] for step in back[0].stream(channel)] == list(range(4, 20))
        assert watcher.offsets(channel) == list(range(1, 20))
        # the entries of A's clients expire; the survivor's lists drop them
        while gone & await present(watcher, channel):
            assert time.monotonic() - killed < EXPIRY_BOUND, "A's entries did not expire"
            await asyncio.sleep(0.1)
        assert len(await present(watcher, channel)) == 3  # the watcher and the two back on B
        for peer in [watcher, publisher, *back]:
            await peer.close()

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_a_process_listens_to_redis_only_while_it_has_subscribers(
    processes: Any, redis_server: RedisServer
) -> None:
    """A process is subscribed to a channel in Redis from its first local subscriber to its last."""
    a, b = processes(2)

    async def scenario() -> None:
        first, second, other = await Peer.open(a), await Peer.open(a), await Peer.open(b)
        await first.subscribe("chat:n")
        assert numsub(redis_server, "chat:n") == 1
        await second.subscribe("chat:n")
        await other.subscribe("chat:n")
        assert numsub(redis_server, "chat:n") == 2  # one subscription per process
        assert (await first.request("unsubscribe", channel="chat:n"))["type"] == "unsubscribed"
        await other.request("history", channel="chat:n")  # a round trip later: still there
        assert numsub(redis_server, "chat:n") == 2
        await second.close()  # A's last subscriber leaves by closing
        await eventually(lambda: numsub(redis_server, "chat:n") == 1, 5, "A unsubscribed")
        assert (await other.request("unsubscribe", channel="chat:n"))["type"] == "unsubscribed"
        await eventually(lambda: pubsub_channels(redis_server) == [], 5, "B unsubscribed")
        for peer in (first, other):
            await peer.close()

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_leaving_before_the_redis_subscription_is_made_leaves_it_too(
    processes: Any, redis_server: RedisServer
) -> None:
    """Unsubscribing or closing while the subscribe waits for Redis leaves no Redis subscription."""
    (a,) = processes(1)
    channels = [f"chat:quick{n}" for n in range(10)]

    async def scenario() -> None:
        peer = await Peer.open(a)
        for channel in channels:
            # both in one write: the unsubscribe arrives before Redis acknowledges SUBSCRIBE
            requests = [
                {"action": "subscribe", "channel": channel},
                {"action": "unsubscribe", "channel": channel, "id": channel},
            ]
            await peer.websocket.send(json.dumps(requests[0]))
            await peer.websocket.send(json.dumps(requests[1]))
            await peer.wait(
                lambda channel=channel: any(e.get("id") == channel for e in peer.events)
            )
        closing = await Peer.open(a)
        await closing.websocket.send(json.dumps({"action": "subscribe", "channel": "chat:closed"}))
        await closing.close()
        assert (await peer.request("history", channel="chat:n"))["type"] == "history"
        await eventually(lambda: pubsub_channels(redis_server) == [], 5, "no subscription left")
        await peer.close()

    await aio(scenario())


class Relay:
    """A TCP relay on a loopback port to Redis: the link of one process, cut and mended."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = True
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        upstream, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream, writer), return_exceptions=True
        )

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until :meth:`mend`."""
        self.open = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


async def backend_becomes(peer: Peer, channel: str, available: bool) -> None:
    """Ask for ``channel``'s history every 50 ms (400 times at most) until served, or refused."""
    for _ in range(400):
        reply = await peer.request("history", channel=channel, limit=0)
        if (reply["type"] == "history") == available:
            return
        assert reply.get("error") == "backend-unavailable", reply
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"the backend did not become {'available' if available else 'unavailable'}"
    )


@pytest.mark.parametrize("namespace", ["chat", "short"])
@pytest_twisted.ensureDeferred
async def test_a_process_cut_from_redis_fills_the_gap_when_back(
    processes: Any, redis_server: RedisServer, namespace: str
) -> None:
    """A cut from Redis while 15 are published: back, it delivers them unasked (or unrecovered)."""
    channel = f"{namespace}:cut"

    async def scenario() -> None:
        relay = Relay(redis_server.port)
        await relay.start()
        try:
            (a,) = processes(1, f"redis://127.0.0.1:{relay.port}/0")
            (b,) = processes(1)
            subscriber, publisher = await Peer.open(a), await Peer.open(b)
            await backend_becomes(subscriber, channel, True)
            epoch = (await subscriber.subscribe(channel))["epoch"]
            assert await publish_alternately([publisher], channel, "before", 3) == [1, 2, 3]
            await subscriber.wait(lambda: subscriber.offsets(channel) == [1, 2, 3])
            relay.cut()
            await backend_becomes(subscriber, channel, False)
            missed = await publish_alternately([publisher], channel, "missed", 15)
            assert missed == list(range(4, 19))
            relay.mend()
            # nothing more is published: only the resync after the reconnection can tell
            await subscriber.wait(
                lambda: subscriber.offsets(channel)[-1:] == [18], 20, "the missed ones"
            )
            assert await publisher.publish(channel, "live") == 19
            await subscriber.wait(lambda: subscriber.offsets(channel)[-1:] == [19], what="live")
            data = [f"before {n}" for n in range(3)] + [f"missed {n}" for n in range(15)]
            data.append("live")
            expected = [("p", n + 1, item) for n, item in enumerate(data)]
            if namespace == "short":  # 4 to 8 are no longer in history
                expected[3:8] = [("u", 8, epoch)]
            assert subscriber.stream(channel) == expected
            for peer in (subscriber, publisher):
                await peer.close()
        finally:
            relay.close()

    await aio(scenario())
