"""The channels app over loopback: subscribe, publish, recovery, history, presence, refusals."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
import pytest_twisted
import websockets

from tests.conftest import Server, aio, connect
from wsapp.config import AppConfig, ChannelsConfig, Config, LimitsConfig, NamespaceConfig

NAMESPACES = {
    "pub": NamespaceConfig(publish="anyone", history_size=1000),
    "short": NamespaceConfig(publish="anyone", history_size=10),
    "norec": NamespaceConfig(publish="anyone", history_size=100, recovery=False),
    "room": NamespaceConfig(presence=True, join_leave=True),
    "quiet": NamespaceConfig(presence=True),
    "closed": NamespaceConfig(subscribe="nobody", publish="anyone", history_size=10),
    "few": NamespaceConfig(max_subscriptions=2),
    "small": NamespaceConfig(publish="anyone", history_size=10, max_data_size=10),
}
_ids = itertools.count(1)


def channels_config(**channels: Any) -> Config:
    """/channels and /counter on one server, the namespaces above, no request rate limit."""
    return Config(
        apps={
            "/channels": AppConfig("wsapp.apps.channels:ChannelsProtocol"),
            "/counter": AppConfig("wsapp.apps.counter:CounterProtocol"),
        },
        channels=ChannelsConfig(namespaces=NAMESPACES, **channels),
        limits=LimitsConfig(rate=0.0),
    )


@pytest.fixture
def channels(start_server: Any) -> Server:
    return start_server(channels_config())  # type: ignore[no-any-return]


async def client(server: Server) -> Any:
    return await connect(server.url("/channels"))


async def call(connection: Any, action: str, **fields: Any) -> dict[str, Any]:
    """Send a request with a fresh id; return the next event, which must carry that id."""
    request_id = next(_ids)
    connection.send_action(action, id=request_id, **fields)
    event = await connection.next_event()
    assert event.get("id") == request_id, event
    return event  # type: ignore[no-any-return]


async def subscribed(connection: Any, channel: str, **fields: Any) -> dict[str, Any]:
    reply = await call(connection, "subscribe", channel=channel, **fields)
    assert reply["type"] == "subscribed", reply
    return reply


async def publish(connection: Any, channel: str, data: Any) -> int:
    """Publish from a connection not subscribed to ``channel``; return the offset."""
    reply = await call(connection, "publish", channel=channel, data=data)
    assert reply["type"] == "published", reply
    return int(reply["offset"])


def publication(channel: str, offset: int, data: Any) -> dict[str, Any]:
    return {"type": "publication", "channel": channel, "offset": offset, "data": data}


async def ws_request(websocket: Any, **request: Any) -> dict[str, Any]:
    await websocket.send(json.dumps(request))
    return json.loads(await asyncio.wait_for(websocket.recv(), 5))  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_subscribe_then_publish_reaches_every_subscriber(channels: Server) -> None:
    """Subscribers get each publication in offset order; the publisher also gets `published`."""
    first, second = await client(channels), await client(channels)
    reply = await subscribed(first, "pub:news")
    assert set(reply) == {"type", "channel", "offset", "epoch", "recovered", "publications", "id"}
    assert (reply["channel"], reply["offset"], reply["recovered"]) == ("pub:news", 0, False)
    assert reply["publications"] == [] and isinstance(reply["epoch"], str) and reply["epoch"]
    assert (await subscribed(second, "pub:news"))["epoch"] == reply["epoch"]
    for offset in (1, 2, 3):
        first.send_action("publish", channel="pub:news", data={"n": offset}, id=f"p{offset}")
        assert await first.next_event() == publication("pub:news", offset, {"n": offset})
        published = await first.next_event()
        assert published == {
            "type": "published",
            "channel": "pub:news",
            "offset": offset,
            "id": f"p{offset}",
        }
        assert await second.next_event() == publication("pub:news", offset, {"n": offset})


@pytest_twisted.ensureDeferred
async def test_resubscribing_with_since_recovers_exactly_what_was_missed(channels: Server) -> None:
    """After 20 publications missed, `since` brings back those 20 in order, then live ones."""
    publisher = await client(channels)
    for n in range(3):
        await publish(publisher, "pub:feed", n)
    history = await call(publisher, "history", channel="pub:feed", limit=0)
    since = {"offset": history["offset"], "epoch": history["epoch"]}
    assert since["offset"] == 3

    async def come_back() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        url = channels.url("/channels")
        async with websockets.connect(url) as websocket, websockets.connect(url) as other:
            reply = await ws_request(websocket, action="subscribe", channel="pub:feed", since=since)
            for n in range(5):
                request = {"action": "publish", "channel": "pub:feed", "data": f"live {n}"}
                assert (await ws_request(other, **request))["type"] == "published"
            live = [json.loads(await asyncio.wait_for(websocket.recv(), 5)) for _ in range(5)]
            marker = await ws_request(websocket, action="history", channel="pub:feed", limit=0)
            assert marker["type"] == "history"  # nothing more arrived before it
            return reply, live

    for n in range(20):
        await publish(publisher, "pub:feed", f"missed {n}")
    reply, live = await aio(come_back())
    assert (reply["recovered"], reply["offset"], reply["epoch"]) == (True, 23, since["epoch"])
    assert reply["publications"] == [{"offset": 4 + n, "data": f"missed {n}"} for n in range(20)]
    assert live == [publication("pub:feed", 24 + n, f"live {n}") for n in range(5)]


@pytest_twisted.ensureDeferred
async def test_recovery_fails_when_history_is_short_or_the_epoch_differs(channels: Server) -> None:
    """Too short a history, a wrong epoch or `recovery: false` give recovered false and []."""
    publisher, subscriber = await client(channels), await client(channels)
    for channel in ("short:a", "norec:a", "pub:a"):
        await publish(publisher, channel, "first")
        top = await call(publisher, "history", channel=channel, limit=0)
        for n in range(20):
            await publish(publisher, channel, n)
        if channel == "pub:a":
            since = {"offset": 1, "epoch": top["epoch"] + "x"}
        else:
            since = {"offset": 1, "epoch": top["epoch"]}
        reply = await subscribed(subscriber, channel, since=since)
        assert (reply["offset"], reply["epoch"]) == (21, top["epoch"]), channel
        assert (reply["recovered"], reply["publications"]) == (False, []), channel
    good = await subscribed(
        await client(channels), "pub:a", since={"offset": 1, "epoch": top["epoch"]}
    )
    assert good["recovered"] and len(good["publications"]) == 20


@pytest_twisted.ensureDeferred
async def test_publications_racing_a_subscribe_reach_it_once_each_in_order(
    channels: Server,
) -> None:
    """Publications sent while a client subscribes: its reply plus live ones are gapless."""

    async def race() -> tuple[dict[str, Any], list[int], int]:
        url = channels.url("/channels")
        async with websockets.connect(url) as pub, websockets.connect(url) as sub:
            await ws_request(pub, action="publish", channel="pub:race", data=0)
            top = await ws_request(pub, action="history", channel="pub:race", limit=0)
            since = {"offset": 1, "epoch": top["epoch"]}
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            async def read_sub() -> None:
                async for message in sub:
                    events.put_nowait(json.loads(message))

            reader = asyncio.create_task(read_sub())
            reply: dict[str, Any] = {}
            live: list[int] = []
            last = 1
            async with asyncio.timeout(30):
                # publish one by one until the reply is in and 50 more came after it
                while last < 2000 and not (reply and last >= reply["offset"] + 50):
                    request = {"action": "publish", "channel": "pub:race", "data": last}
                    await pub.send(json.dumps(request))
                    last = json.loads(await pub.recv())["offset"]
                    if last == 50:
                        request = {"action": "subscribe", "channel": "pub:race", "since": since}
                        await sub.send(json.dumps(request))
                    while not events.empty():
                        event = events.get_nowait()
                        if event["type"] == "subscribed":
                            reply = event
                        else:
                            live.append(event["offset"])
                while not live or live[-1] < last:
                    event = await events.get()
                    assert event["type"] == "publication", event
                    live.append(event["offset"])
            reader.cancel()
            return reply, live, last

    reply, live, last = await aio(race())
    assert reply["recovered"] and 50 <= reply["offset"] < last
    offsets = [item["offset"] for item in reply["publications"]]
    assert offsets == list(range(2, reply["offset"] + 1))
    assert [item["data"] for item in reply["publications"]] == [n - 1 for n in offsets]
    assert live == list(range(reply["offset"] + 1, last + 1))


@pytest_twisted.ensureDeferred
async def test_unsubscribed_client_gets_nothing_more(channels: Server) -> None:
    """After `unsubscribed`, publications of that channel stop; unsubscribing again is refused."""
    subscriber, publisher = await client(channels), await client(channels)
    await subscribed(subscriber, "pub:a")
    await subscribed(subscriber, "pub:b")
    reply = await call(subscriber, "unsubscribe", channel="pub:a")
    assert reply == {"type": "unsubscribed", "channel": "pub:a", "id": reply["id"]}
    await publish(publisher, "pub:a", "gone")
    await publish(publisher, "pub:b", "still here")
    assert await subscriber.next_event() == publication("pub:b", 1, "still here")
    again = await call(subscriber, "unsubscribe", channel="pub:a")
    assert (again["type"], again["error"]) == ("error", "invalid-argument")
    assert channels.factory("/channels").hub.listeners("pub:a") == 0


@pytest_twisted.ensureDeferred
async def test_history_returns_the_latest_publications_oldest_first(channels: Server) -> None:
    """`history` with `limit` K gives the latest K; without it all the namespace keeps."""
    publisher = await client(channels)
    for n in range(15):
        await publish(publisher, "short:h", n)
    reply = await call(publisher, "history", channel="short:h", limit=3)
    assert (reply["type"], reply["channel"], reply["offset"]) == ("history", "short:h", 15)
    assert reply["publications"] == [{"offset": 13 + n, "data": 12 + n} for n in range(3)]
    everything = await call(publisher, "history", channel="short:h")
    assert [item["offset"] for item in everything["publications"]] == list(range(6, 16))
    assert everything["epoch"] == reply["epoch"]
    too_many = await call(publisher, "history", channel="short:h", limit=11)
    assert too_many["error"] == "invalid-argument"


def present(reply: dict[str, Any]) -> set[str]:
    assert reply["type"] == "presence", reply
    assert all(entry["info"] == {} for entry in reply["clients"])
    return {entry["client"] for entry in reply["clients"]}


@pytest_twisted.ensureDeferred
async def test_presence_and_join_leave_follow_subscribers(channels: Server) -> None:
    """Presence lists subscribed clients; join and leave are announced; a closed client leaves."""
    first, second = await client(channels), await client(channels)
    await subscribed(first, "room:1")
    me = await first.next_event()  # a subscriber hears its own join, after its reply
    assert (me["type"], me["channel"], me["info"]) == ("join", "room:1", {})
    await subscribed(second, "room:1")
    joined = await first.next_event()
    assert (joined["type"], joined["channel"]) == ("join", "room:1")
    assert (await second.next_event())["client"] == joined["client"]
    ids = {connection.client_id for connection in channels.factory("/channels").registry}
    assert {me["client"], joined["client"]} == ids and len(ids) == 2
    assert present(await call(first, "presence", channel="room:1")) == ids
    second.sendClose()
    await second.factory.closed
    left = await first.next_event()
    assert left == {"type": "leave", "channel": "room:1", "client": joined["client"], "info": {}}
    assert present(await call(first, "presence", channel="room:1")) == {me["client"]}
    assert (await call(first, "unsubscribe", channel="room:1"))["type"] == "unsubscribed"
    assert present(await call(first, "presence", channel="room:1")) == set()
    refused = await call(first, "presence", channel="pub:x")
    assert refused["error"] == "invalid-argument"


@pytest_twisted.ensureDeferred
async def test_presence_without_join_leave_announces_nothing(channels: Server) -> None:
    """In a namespace with presence but not join_leave, subscribers get no join events."""
    first, second = await client(channels), await client(channels)
    await subscribed(first, "quiet:1")
    await subscribed(first, "pub:marker")
    await subscribed(second, "quiet:1")
    assert len(present(await call(second, "presence", channel="quiet:1"))) == 2
    channels.factory("/channels").publish("pub:marker", "after")
    assert await first.next_event() == publication("pub:marker", 1, "after")


@pytest_twisted.ensureDeferred
async def test_permissions_of_the_namespace_are_enforced(channels: Server) -> None:
    """Clients may not publish to the default namespace nor subscribe where it says nobody."""
    subscriber = await client(channels)
    await subscribed(subscriber, "news")
    refused = await call(subscriber, "publish", channel="news", data="spam")
    assert (refused["type"], refused["error"]) == ("error", "permission-denied")
    assert "news" in refused["detail"]
    refused = await call(subscriber, "subscribe", channel="closed:vip")
    assert refused["error"] == "permission-denied"
    assert (await call(subscriber, "history", channel="closed:vip"))["error"] == (
        "permission-denied"
    )
    factory = channels.factory("/channels")
    await factory.publish("closed:vip", "secret")
    await factory.publish("news", "server news")
    assert await subscriber.next_event() == publication("news", 1, "server news")
    assert factory.hub.listeners("closed:vip") == 0
    # a client may publish where it may not subscribe, if the namespace says so
    assert (await call(subscriber, "publish", channel="closed:vip", data="x"))["offset"] == 2


BAD_REQUESTS = [
    ({"action": "subscribe", "channel": ""}, "invalid-argument"),
    ({"action": "subscribe", "channel": "x" * 256}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:a\x00b"}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:a\nb"}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:a b"}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:a\u200bb"}, "invalid-argument"),
    ({"action": "subscribe", "channel": 42}, "invalid-argument"),
    ({"action": "subscribe", "channel": ["pub:a"]}, "invalid-argument"),
    ({"action": "subscribe"}, "invalid-argument"),
    ({"action": "subscribe", "channel": "nope:a"}, "unknown-namespace"),
    ({"action": "subscribe", "channel": "pub:s"}, "invalid-argument"),  # already subscribed
    ({"action": "subscribe", "channel": "pub:t", "since": "3"}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:t", "since": [3, "e"]}, "invalid-argument"),
    ({"action": "subscribe", "channel": "pub:t", "since": {"offset": 3}}, "invalid-argument"),
    (
        {"action": "subscribe", "channel": "pub:t", "since": {"offset": -1, "epoch": "e"}},
        "invalid-argument",
    ),
    (
        {"action": "subscribe", "channel": "pub:t", "since": {"offset": True, "epoch": "e"}},
        "invalid-argument",
    ),
    (
        {"action": "subscribe", "channel": "pub:t", "since": {"offset": 1, "epoch": 7}},
        "invalid-argument",
    ),
    ({"action": "publish", "channel": "pub:s"}, "invalid-argument"),  # no data
    ({"action": "publish", "channel": "small:x", "data": "123456789"}, "invalid-argument"),
    ({"action": "publish", "channel": 3, "data": 1}, "invalid-argument"),
    ({"action": "publish", "channel": "nope:x", "data": 1}, "unknown-namespace"),
    ({"action": "unsubscribe", "channel": "pub:t"}, "invalid-argument"),
    ({"action": "history", "channel": "pub:s", "limit": "3"}, "invalid-argument"),
    ({"action": "history", "channel": "pub:s", "limit": -1}, "invalid-argument"),
]


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_an_error_with_their_id_and_change_nothing(
    channels: Server,
) -> None:
    """Each bad request gets one clear error event with its id; no subscription or offset moves."""
    connection = await client(channels)
    await subscribed(connection, "pub:s")
    connection.send_action("publish", channel="pub:s", data="one")
    assert (await connection.next_event())["type"] == "publication"
    assert (await connection.next_event())["type"] == "published"
    server_side = next(iter(channels.factory("/channels").registry))
    backend = channels.factory("/channels").hub.backend
    for number, (request, code) in enumerate(BAD_REQUESTS):
        connection.sendMessage(json.dumps({**request, "id": f"bad{number}"}).encode())
        error = await connection.next_event()
        assert error["type"] == "error" and error["error"] == code, (request, error)
        assert error["id"] == f"bad{number}" and error["detail"], request
        marker = await call(connection, "history", channel="pub:s", limit=0)
        assert (marker["type"], marker["offset"]) == ("history", 1), request
        assert server_side.subscriptions == {"pub:s"}, request
    assert "small:x" not in backend.logs
    at_the_limit = await call(connection, "publish", channel="small:x", data="12345678")
    assert at_the_limit["offset"] == 1  # 10 bytes of JSON: max_data_size allows it
    assert (await subscribed(connection, "pub:t"))["recovered"] is False


@pytest_twisted.ensureDeferred
async def test_subscriptions_are_limited_per_namespace_and_per_connection(
    start_server: Any,
) -> None:
    """Past a namespace's or the connection's max_subscriptions, subscribe is limit-exceeded."""
    server = start_server(channels_config(max_subscriptions=4))
    connection = await client(server)
    for channel in ("few:1", "few:2", "pub:1", "pub:2"):
        await subscribed(connection, channel)
    in_namespace = await call(connection, "subscribe", channel="few:3")
    assert in_namespace["error"] == "limit-exceeded" and "namespace" in in_namespace["detail"]
    overall = await call(connection, "subscribe", channel="pub:3")
    assert overall["error"] == "limit-exceeded" and "connection" in overall["detail"]
    assert (await call(connection, "unsubscribe", channel="pub:2"))["type"] == "unsubscribed"
    await subscribed(connection, "pub:3")
    server_side = next(iter(server.factory("/channels").registry))
    assert server_side.subscriptions == {"few:1", "few:2", "pub:1", "pub:3"}


@pytest_twisted.ensureDeferred
async def test_default_namespace_counts_its_own_subscriptions(start_server: Any) -> None:
    """The default namespace's max_subscriptions holds, and counts no `few:` channel."""
    server = start_server(channels_config(default=NamespaceConfig(max_subscriptions=2)))
    connection = await client(server)
    for channel in ("few", "few:1", "few:2", "other"):
        await subscribed(connection, channel)
    refused = await call(connection, "subscribe", channel="third")
    assert refused["error"] == "limit-exceeded"


@pytest_twisted.ensureDeferred
async def test_server_channels_are_out_of_clients_reach(start_server: Any) -> None:
    """A client cannot subscribe, publish to or read `$` channels such as the counter's."""
    config = channels_config(default=NamespaceConfig(publish="anyone"))
    server = start_server(config)
    counter = await connect(server.url("/counter"))
    assert (await counter.next_event())["type"] == "state"
    await counter.next_of("users")
    connection = await client(server)
    for action, fields in [
        ("subscribe", {}),
        ("publish", {"data": "not a number"}),
        ("history", {}),
    ]:
        refused = await call(connection, action, channel="$counter:/counter", **fields)
        assert refused["error"] == "invalid-argument", (action, refused)
    counter.send_action("plus")
    assert await counter.next_event() == {"type": "state", "value": 1}


async def chat_client(server: Server) -> tuple[Any, dict[str, Any]]:
    """A chat client and its `joined` event for the lobby (it hears its own join next)."""
    connection = await connect(server.url("/chat"))
    joined = await connection.next_event()
    assert joined["type"] == "joined" and joined["room"] == "lobby", joined
    own = await connection.next_event()
    assert own == {"type": "join", "room": "lobby", "client": joined["client"], "info": {}}
    return connection, joined


@pytest_twisted.ensureDeferred
async def test_chat_room_members_see_texts_joins_and_leaves(server: Server) -> None:
    """Two clients in a room see each other's texts and comings and goings; history on join."""
    first, one = await chat_client(server)
    assert (one["messages"], one["members"]) == ([], [])
    second, two = await chat_client(server)
    assert two["members"] == [{"client": one["client"], "info": {}}]
    assert await first.next_event() == {
        "type": "join",
        "room": "lobby",
        "client": two["client"],
        "info": {},
    }
    second.send_action("say", text="hello", id="s1")
    assert await second.next_event() == {"type": "sent", "room": "lobby", "offset": 1, "id": "s1"}
    assert await first.next_event() == {
        "type": "chat",
        "room": "lobby",
        "text": "hello",
        "client": two["client"],
    }
    first.send_action("say", text="hi")
    assert (await second.next_event())["text"] == "hi"
    second.send_action("leave", room="lobby", id="l")
    assert await second.next_event() == {"type": "left", "room": "lobby", "id": "l"}
    left = await first.next_event()
    assert (left["type"], left["client"]) == ("leave", two["client"])
    second.send_action("join", room="lobby", id="j")
    again = await second.next_event()
    assert again["id"] == "j" and again["members"] == [{"client": one["client"], "info": {}}]
    assert again["messages"] == [
        {"text": "hello", "client": two["client"], "offset": 1},
        {"text": "hi", "client": one["client"], "offset": 2},
    ]
    assert (await first.next_event())["type"] == "join"
    second.sendClose()
    await second.factory.closed
    assert (await first.next_event())["type"] == "leave"
    _, three = await chat_client(server)
    assert [message["text"] for message in three["messages"]] == ["hello", "hi"]


@pytest_twisted.ensureDeferred
async def test_chat_say_to_a_room_not_joined_follows_the_namespace(start_server: Any) -> None:
    """Where `chat` lets anyone publish, a text reaches a room the sender is not in; else not."""
    server = start_server()
    outsider, _ = await chat_client(server)
    member, _ = await chat_client(server)
    await outsider.next_event()  # the member's join in the lobby
    member.send_action("join", room="side", id="j")
    assert (await member.next_event())["room"] == "side"
    assert (await member.next_event())["type"] == "join"  # its own, in the side room
    outsider.send_action("say", room="side", text="knock knock", id="k")
    assert await outsider.next_event() == {"type": "sent", "room": "side", "offset": 1, "id": "k"}
    text = await member.next_event()
    assert (text["type"], text["room"], text["text"]) == ("chat", "side", "knock knock")

    read_only = NamespaceConfig(publish="nobody", history_size=10, presence=True, join_leave=True)
    closed = start_server(Config(channels=ChannelsConfig(namespaces={"chat": read_only})))
    speaker, _ = await chat_client(closed)
    listener, _ = await chat_client(closed)
    assert (await speaker.next_event())["type"] == "join"
    for room in ("lobby", "side"):
        speaker.send_action("say", room=room, text="hello", id=room)
        refused = await speaker.next_event()
        assert (refused["error"], refused["id"]) == ("permission-denied", room)
    listener.send_action("say", text="me neither", id="m")
    assert (await listener.next_event())["error"] == "permission-denied"  # no text came first
