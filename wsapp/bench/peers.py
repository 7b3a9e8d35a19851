"""
The peers wsapp is measured against, each serving the counter on ``/counter``, echo on
``/echo`` and a chat room on ``/chat``: ``python -m wsapp.bench.peers autobahn|websockets PORT``.

Both speak wsapp's counter protocol (``{"action": "plus"}`` in; ``{"type": "state", ...}``
and ``{"type": "users", ...}`` out, broadcast to every client) and accept permessage-deflate
with their library's defaults. The chat room is wsapp's ``say``: ``{"action": "say",
"text": T}`` in, ``{"type": "chat", "room": "lobby", "text": T, "client": ID}`` to every
other member (autobahn: one prepared message; websockets: its ``broadcast``). They are
written the way each library's documentation shows.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["PEERS", "serve_autobahn", "serve_websockets"]


def state_event(value: int) -> str:
    return json.dumps({"type": "state", "value": value})


def users_event(count: int) -> str:
    return json.dumps({"type": "users", "count": count})


def chat_event(text: str, client: str) -> str:
    return json.dumps({"type": "chat", "room": "lobby", "text": text, "client": client})


def serve_autobahn(port: int) -> None:
    """A bare Autobahn/Twisted server: one factory, prepared messages for broadcasts."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
    from twisted.internet import reactor as installed

    reactor: Any = installed

    class Protocol(WebSocketServerProtocol):
        factory: Factory

        def onConnect(self, request: Any) -> None:
            self.path = request.path

        def onOpen(self) -> None:
            if self.path == "/chat":
                self.factory.members.add(self)
            elif self.path == "/counter":
                self.factory.clients.add(self)
                self.sendMessage(state_event(self.factory.value).encode())
                self.factory.broadcast(users_event(len(self.factory.clients)))

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if self.path == "/echo":
                self.sendMessage(payload, isBinary)
                return
            if self.path == "/chat":
                text = json.loads(payload)["text"]
                event = chat_event(text, str(self.peer)).encode()
                prepared = self.factory.prepareMessage(event)
                for member in self.factory.members:
                    if member is not self:
                        member.sendPreparedMessage(prepared)
                return
            action = json.loads(payload)["action"]
            self.factory.value += {"plus": 1, "minus": -1}[action]
            self.factory.broadcast(state_event(self.factory.value))

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            self.factory.members.discard(self)
            if self in self.factory.clients:
                self.factory.clients.discard(self)
                self.factory.broadcast(users_event(len(self.factory.clients)))

    class Factory(WebSocketServerFactory):
        protocol = Protocol  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.clients: set[Protocol] = set()
            self.members: set[Protocol] = set()
            self.value = 0

        def broadcast(self, message: str) -> None:
            prepared = self.prepareMessage(message.encode())
            for client in self.clients:
                client.sendPreparedMessage(prepared)

    def accept(offers: list[Any]) -> Any:
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer)
        return None

    factory = Factory()
    factory.setProtocolOptions(perMessageCompressionAccept=accept)
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


def serve_websockets(port: int) -> None:
    """The websockets library's counter (its synchronization example), plus echo."""
    import asyncio

    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: set[ServerConnection] = set()
    members: set[ServerConnection] = set()
    value = 0

    async def chat(websocket: ServerConnection) -> None:
        members.add(websocket)
        try:
            async for message in websocket:
                event = chat_event(json.loads(message)["text"], str(websocket.id))
                broadcast(members - {websocket}, event)
        finally:
            members.remove(websocket)

    async def counter(websocket: ServerConnection) -> None:
        nonlocal value
        try:
            clients.add(websocket)
            broadcast(clients, users_event(len(clients)))
            await websocket.send(state_event(value))
            async for message in websocket:
                event = json.loads(message)
                value += {"plus": 1, "minus": -1}[event["action"]]
                broadcast(clients, state_event(value))
        finally:
            clients.remove(websocket)
            broadcast(clients, users_event(len(clients)))

    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

    async def handler(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        path = websocket.request.path
        await {"/echo": echo, "/chat": chat}.get(path, counter)(websocket)

    async def main() -> None:
        # Keepalive pings and the opening-handshake timeout are off, as in the other servers:
        # while thousands of clients join, a handshake may wait its turn for seconds.
        async with serve(handler, "127.0.0.1", port, ping_interval=None, open_timeout=None):
            await asyncio.get_running_loop().create_future()

    asyncio.run(main())


PEERS = {"autobahn": serve_autobahn, "websockets": serve_websockets}

if __name__ == "__main__":
    PEERS[sys.argv[1]](int(sys.argv[2]))
