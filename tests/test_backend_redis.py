"""Several ``twistd wsapp`` processes sharing one Redis: one counter, one users count."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults

from tests.conftest import RedisServer, Twistd, connect, run_twistd, sleep
from wsapp.backends.redis import HEARTBEAT
from wsapp.backends.redis import PRESENCE_TTL as USERS_TTL
from wsapp.config import Config
from wsapp.state import SAFE_INTEGER

#: Seconds within which every process sees the users count of a killed one drop.
USERS_BOUND = HEARTBEAT + USERS_TTL + 1
#: Actions each client sends at once in the load test.
ACTIONS = 100


@pytest.fixture
def processes(tmp_path: Path, redis_server: RedisServer) -> Iterator[Any]:
    """Start ``twistd -n wsapp`` processes on the test's Redis, each in its own folder."""
    started: list[Twistd] = []

    def start(count: int, config: str = "") -> list[Twistd]:
        for _ in range(count):
            folder = tmp_path / f"twistd-{len(started)}"
            folder.mkdir()
            (folder / "config.yaml").write_text(config)
            port = "tcp:0:interface=127.0.0.1"
            started.append(Twistd(["--port", port, "--backend", redis_server.url], folder))
        return started[-count:]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


async def open_counter(process: Twistd) -> Any:
    """Connect to /counter and wait for the first state event."""
    client = await connect(process.url("/counter"))
    await client.next_of("state")
    return client


async def users_becomes(client: Any, count: int, timeout: float) -> None:
    """Wait until ``client`` is told that ``count`` users are connected."""
    deadline = time.monotonic() + timeout
    while (await client.next_of("users", max(0.1, deadline - time.monotonic())))["count"] != count:
        pass


async def reply_to(client: Any, request_id: int | str, timeout: float = 10) -> Any:
    """Return the event answering request ``request_id`` (its state or its error)."""
    while True:
        event = await client.next_event(timeout)
        if event.get("id") == request_id:
            return event


async def until_served(client: Any, action: str, attempts: int = 200) -> dict[str, Any]:
    """Repeat ``action`` every 0.1 s (bounded) until it is answered with a state event."""
    for number in range(attempts):
        client.send_action(action, id=f"retry-{number}")
        event = await reply_to(client, f"retry-{number}")
        if event["type"] == "state":
            return {"event": event, "tries": number + 1}
        assert event["error"] == "backend-unavailable", event
        await sleep(0.1)
    raise AssertionError(f"{action} was not served again within {attempts} attempts")


async def states_seen(client: Any, changes: int, quiet: float = 0.5) -> list[int]:
    """Collect ``client``'s state values until ``changes`` came and then ``quiet`` s of none."""
    states: list[int] = []
    while True:
        try:
            event = await client.next_event(quiet if len(states) >= changes else 30)
        except defer.TimeoutError:
            return states
        assert event["type"] != "error", event
        if event["type"] == "state":
            states.append(event["value"])


@pytest_twisted.ensureDeferred
async def test_concurrent_changes_are_exact_on_every_process(
    processes: Any, redis_server: RedisServer
) -> None:
    """20 clients on 3 processes x 100 plus/minus at once: all see every change, end exact."""
    servers = processes(3)
    redis_server.command("CONFIG", "SET", "appendfsync", "no")  # load, not durability, here
    clients = [await open_counter(servers[index % 3]) for index in range(20)]
    expected = 0
    for number, client in enumerate(clients):
        for action in range(ACTIONS):
            plus = (number + action) % 3 != 0
            expected += 1 if plus else -1
            client.send_action("plus" if plus else "minus", id=action)
    changes = len(clients) * ACTIONS
    finals = [Deferred.fromCoroutine(states_seen(client, changes)) for client in clients]
    for states in await gatherResults(finals):
        assert len(states) == changes, "every client sees every change exactly once"
        assert states[-1] == expected
    for client in clients:
        client.send_action("get", id="final")
        assert await reply_to(client, "final") == {
            "type": "state",
            "value": expected,
            "id": "final",
        }


@pytest_twisted.ensureDeferred
async def test_users_count_is_the_sum_and_drops_a_killed_process(processes: Any) -> None:
    """Users count the clients of all processes; a kill -9'd process stops counting in time."""
    first, second = processes(2)
    watcher = await open_counter(first)
    others = [await open_counter(second) for _ in range(3)]
    await users_becomes(watcher, 4, timeout=5)
    await users_becomes(others[0], 4, timeout=5)
    second.process.kill()
    second.process.wait()
    started = time.monotonic()
    await users_becomes(watcher, 1, timeout=USERS_BOUND + 2)
    assert time.monotonic() - started <= USERS_BOUND + 2


@pytest_twisted.ensureDeferred
async def test_redis_restart_errors_then_resumes_without_losing_acknowledged_changes(
    processes: Any, redis_server: RedisServer
) -> None:
    """Redis killed: actions get backend-unavailable; restarted: all resume, acked plus kept."""
    first, second = processes(2)
    sender = await open_counter(first)
    other = await open_counter(second)
    for number in range(200):
        sender.send_action("plus", id=number)
    answers: dict[int, str] = {}
    while len(answers) < 200:  # Redis dies (usually) while this batch is being applied
        event = await sender.next_event()
        if "id" in event:
            answers[event["id"]] = event.get("error", event["type"])
            if len(answers) == 1:
                redis_server.kill()
    errors = [number for number, answer in answers.items() if answer != "state"]
    assert {answers[number] for number in errors} <= {"backend-unavailable"}
    acknowledged, sent = len(answers) - len(errors), 200
    for number in range(200, 300):  # bounded: until an error shows, if none did yet
        if errors:
            break
        sender.send_action("plus", id=number)
        sent += 1
        event = await reply_to(sender, number)
        if event["type"] == "error":
            assert event["error"] == "backend-unavailable", event
            errors.append(number)
        else:
            acknowledged += 1
        await sleep(0.05)
    assert errors
    assert sender.state == sender.STATE_OPEN and other.state == other.STATE_OPEN
    redis_server.start()
    resumed = await until_served(sender, "plus")
    sent += resumed["tries"]
    value = resumed["event"]["value"]
    assert acknowledged + 1 <= value <= sent
    assert (await until_served(other, "get"))["event"]["value"] == value


@pytest_twisted.ensureDeferred
async def test_counter_range_is_enforced_atomically_in_redis(
    processes: Any, redis_server: RedisServer
) -> None:
    """At the edge of the safe range a plus is refused with out-of-range and changes nothing."""
    (server,) = processes(1)
    redis_server.command("SET", "wsapp:0:integer:/counter", str(SAFE_INTEGER - 1))
    client = await open_counter(server)
    client.send_action("plus", id=1)
    assert await reply_to(client, 1) == {"type": "state", "value": SAFE_INTEGER, "id": 1}
    client.send_action("plus", id=2)
    assert (await reply_to(client, 2))["error"] == "out-of-range"
    assert (
        redis_server.command("GET", "wsapp:0:integer:/counter").split()[-1] == b"9007199254740991"
    )


def test_bad_backend_is_one_line_naming_the_option(tmp_path: Path) -> None:
    """An unusable --backend stops twistd with one line naming the option and the problem."""
    result = run_twistd(tmp_path, "--backend", "redis://host:port", timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "twistd wsapp: command line: backend: invalid port in 'redis://host:port'"
    ]


@pytest_twisted.ensureDeferred
async def test_in_process_server_on_the_asyncio_reactor(
    start_server: Any, redis_server: RedisServer
) -> None:
    """The Redis backend also runs in-process on Twisted's asyncio reactor (as the tests do)."""
    server = start_server(Config(backend=redis_server.url))
    first = await connect(server.url("/counter"))
    second = await connect(server.url("/chat"))
    third = await connect(server.url("/chat"))
    assert (await until_served(first, "plus"))["event"]["value"] == 1
    await second.next_of("joined")
    await third.next_of("joined")
    second.send_action("say", text="héllo", id="s")
    assert await reply_to(second, "s") == {"type": "sent", "room": "lobby", "offset": 1, "id": "s"}
    chat = await third.next_of("chat")
    assert (chat["room"], chat["text"]) == ("lobby", "héllo")


#: Rounds of joins in the ordering test: one client on one process, two on the other.
TRIES = 20
#: A config.yaml where each join and leave reports the users count at once.
EVERY_JOIN = """
apps:
  /counter: {protocol: wsapp.apps.counter:CounterProtocol, options: {users_interval: 0}}
"""


def repeats(counts: list[int]) -> list[int]:
    """The users counts that came twice in a row."""
    return [count for before, count in pairwise(counts) if before == count]


async def users_until(client: Any, count: int, seen: list[dict[str, Any]]) -> None:
    """Record ``client``'s events in ``seen`` until it is told ``count`` users, then the rest."""
    while not (seen and seen[-1] == {"type": "users", "count": count}):
        seen.append(await client.next_event(10))
    while client.events.pending:
        seen.append(client.events.pending.pop(0))


@pytest_twisted.ensureDeferred
async def test_new_clients_get_state_before_users_and_no_count_twice(processes: Any) -> None:
    """Clients joining while others join both processes get state first; no count comes twice."""
    servers = processes(2, EVERY_JOIN)
    watchers = [await open_counter(server) for server in servers]
    joined: list[list[dict[str, Any]]] = []
    for attempt in range(TRIES):
        await open_counter(servers[(attempt + 1) % 2])  # its users report is on its way
        url = servers[attempt % 2].url("/counter")
        pair = await gatherResults([Deferred.fromCoroutine(connect(url)) for _ in range(2)])
        total = len(watchers) + 3 * attempt + 3
        for client in pair:
            joined.append([])
            await users_until(client, total, joined[-1])
    for attempt, events in enumerate(joined):
        assert events[0]["type"] == "state", (attempt, events)
        assert not repeats([e["count"] for e in events if e["type"] == "users"]), (attempt, events)
    for watcher in watchers:
        seen: list[dict[str, Any]] = []
        await users_until(watcher, len(watchers) + 3 * TRIES, seen)
        assert not repeats([e["count"] for e in seen if e["type"] == "users"]), seen
