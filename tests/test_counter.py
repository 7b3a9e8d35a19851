"""The counter app over real loopback sockets, with wsapp's client and the websockets library."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest_twisted
import websockets
from autobahn.twisted.websocket import connectWS
from twisted.internet.defer import Deferred, gatherResults

from tests.conftest import RecordingClient, Server, aio, connect, sleep, the_reactor
from wsapp.client import ClientFactory
from wsapp.config import AppConfig, Config

COUNTER = "wsapp.apps.counter:CounterProtocol"


async def open_counter(server: Server) -> Any:
    """Connect a wsapp client to /counter and read its initial state and users events."""
    client = await connect(server.url("/counter"))
    state = await client.next_event()
    assert state["type"] == "state"
    assert (await client.next_event())["type"] == "users"
    return client


@pytest_twisted.ensureDeferred
async def test_new_client_gets_state_then_users(server: Server) -> None:
    """On open a client gets the counter's state, then the number of users."""
    server.factory("/counter").hub.backend.integers["/counter"] = 41
    client = await connect(server.url("/counter"))
    assert await client.next_event() == {"type": "state", "value": 41}
    assert await client.next_event() == {"type": "users", "count": 1}


@pytest_twisted.ensureDeferred
async def test_clients_see_each_others_updates_in_order(server: Server) -> None:
    """Three clients see every plus, minus and add, in the order the server applied them."""
    clients = [await open_counter(server) for _ in range(3)]
    actions = [
        ("plus", {}),
        ("plus", {}),
        ("minus", {}),
        ("add", {"amount": 10}),
        ("add", {"amount": -3}),
    ]
    expected = [1, 2, 1, 11, 8]
    for index, (action, fields) in enumerate(actions):
        clients[index % 3].send_action(action, **fields)
        for client in clients:
            assert await client.next_of("state") == {"type": "state", "value": expected[index]}


@pytest_twisted.ensureDeferred
async def test_users_count_rises_and_falls(server: Server) -> None:
    """Joining and closing clients change the users count every client sees."""
    first = await open_counter(server)
    second = await open_counter(server)
    assert await first.next_of("users") == {"type": "users", "count": 2}
    second.sendClose()
    await second.factory.closed
    assert await first.next_of("users") == {"type": "users", "count": 1}


@pytest_twisted.ensureDeferred
async def test_change_during_a_slow_first_read_is_not_undone(server: Server) -> None:
    """A change broadcast while a new client's first state is read wins over that reading."""
    watcher = await open_counter(server)
    backend = server.factory("/counter").hub.backend
    increment = backend.increment

    def slow_read(key: str, amount: int, **options: Any) -> Deferred[Any]:
        if amount:
            return increment(key, amount, **options)
        reading: Deferred[Any] = Deferred()  # reads take a while on Redis
        the_reactor().callLater(0.3, lambda: increment(key, 0, **options).chainDeferred(reading))
        return reading

    backend.increment = slow_read
    newcomer = await connect(server.url("/counter"))
    watcher.send_action("plus")
    assert await newcomer.next_event() == {"type": "state", "value": 1}
    assert await newcomer.next_event() == {"type": "users", "count": 2}
    await sleep(0.3)
    assert newcomer.events.pending == []


@pytest_twisted.ensureDeferred
async def test_burst_of_joins_gets_few_users_events_with_the_final_count(start_server: Any) -> None:
    """Clients joining at once get a few merged users events, the last with the true count."""
    server = start_server(
        Config(apps={"/counter": AppConfig(COUNTER, options={"users_interval": 0.2})})
    )
    watcher = await open_counter(server)
    factory = server.factory("/counter")
    before = factory.metrics.broadcasts
    joining = [Deferred.fromCoroutine(connect(server.url("/counter"))) for _ in range(30)]
    clients = await gatherResults(joining)
    assert await watcher.next_of("users") == {"type": "users", "count": 31}
    for client in clients:
        assert (await client.next_event())["type"] == "state"
        while (await client.next_of("users"))["count"] != 31:
            pass
    # one broadcast per join without the throttle; a few per 0.2 s with it
    assert factory.metrics.broadcasts - before <= 10, factory.metrics.broadcasts - before


@pytest_twisted.ensureDeferred
async def test_users_interval_zero_sends_one_users_event_per_join(start_server: Any) -> None:
    """With users_interval 0 every join is announced to everyone already there."""
    server = start_server(
        Config(apps={"/counter": AppConfig(COUNTER, options={"users_interval": 0.0})})
    )
    first = await open_counter(server)
    for count in (2, 3, 4):
        await open_counter(server)
        assert await first.next_of("users") == {"type": "users", "count": count}


@pytest_twisted.ensureDeferred
async def test_vanished_peer_leaves_users_count(server: Server) -> None:
    """A client that drops its TCP connection without a close frame stops counting as a user."""
    watcher = await open_counter(server)
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(
        b"GET /counter HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert await watcher.next_of("users") == {"type": "users", "count": 2}
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # RST, no close frame
    assert await watcher.next_of("users") == {"type": "users", "count": 1}
    assert len(server.factory("/counter").registry) == 1


@pytest_twisted.ensureDeferred
async def test_request_id_is_echoed_to_its_sender_only(server: Server) -> None:
    """A request's id comes back in the sender's reply; other clients get the plain event."""
    sender = await open_counter(server)
    other = await open_counter(server)
    sender.send_action("plus", id="req-1")
    assert await sender.next_of("state") == {"type": "state", "value": 1, "id": "req-1"}
    assert await other.next_of("state") == {"type": "state", "value": 1}
    sender.send_action("get", id=7)
    assert await sender.next_of("state") == {"type": "state", "value": 1, "id": 7}


@pytest_twisted.ensureDeferred
async def test_add_amount_is_bounded_by_config(server: Server) -> None:
    """``add`` takes integers within max_amount; others are refused and change nothing."""
    client = await open_counter(server)
    for amount in [1001, -1001, 1.5, "3", True, None]:
        client.send_action("add", amount=amount)
        event = await client.next_event()
        assert event["type"] == "error" and event["error"] == "invalid-argument", amount
    client.send_action("add", amount=1000)
    assert await client.next_of("state") == {"type": "state", "value": 1000}


@pytest_twisted.ensureDeferred
async def test_websockets_library_client_syncs_with_wsapp_client(server: Server) -> None:
    """A third-party client (websockets) and wsapp's client share one counter."""
    ours = await open_counter(server)

    async def theirs() -> list[Any]:
        async with websockets.connect(server.url("/counter")) as websocket:
            received = [json.loads(await websocket.recv()) for _ in range(2)]
            await websocket.send(json.dumps({"action": "minus"}))
            while True:
                event = json.loads(await websocket.recv())
                if event["type"] == "state":
                    return [*received, event]

    received = await aio(theirs())
    assert received == [
        {"type": "state", "value": 0},
        {"type": "users", "count": 2},
        {"type": "state", "value": -1},
    ]
    assert await ours.next_of("state") == {"type": "state", "value": -1}
    assert isinstance(ours, RecordingClient)


@pytest_twisted.ensureDeferred
async def test_counter_client_protocol_tracks_state_in_a_few_lines(server: Server) -> None:
    """CounterClientProtocol keeps value and users current and sends the actions."""
    from tests.conftest import the_reactor
    from wsapp.apps.counter import CounterClientProtocol

    class Client(CounterClientProtocol):
        def event_state(self, event: dict[str, Any]) -> None:
            super().event_state(event)
            if self.value == -1:
                self.factory.reached.callback(self.users)

    client_factory = ClientFactory(server.url("/counter"), Client, reactor=the_reactor())
    client_factory.reached = Deferred()
    connectWS(client_factory)
    helper = await open_counter(server)
    for action in ["plus", "minus", "minus"]:
        helper.send_action(action)
    client_factory.reached.addTimeout(5, the_reactor())
    assert await client_factory.reached == 2


@pytest_twisted.ensureDeferred
async def test_unfinished_handshake_changes_nothing(server: Server) -> None:
    """A peer that leaves mid-handshake never counts as a user and breaks nothing."""
    watcher = await open_counter(server)
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(b"GET /counter HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    raw.close()
    watcher.send_action("plus")
    assert await watcher.next_event() == {"type": "state", "value": 1}
    assert len(server.factory("/counter").registry) == 1
