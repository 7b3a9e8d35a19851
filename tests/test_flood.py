"""Flood with exactness: 50 clients sending 400 actions each as fast as they can."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest_twisted

from tests.conftest import LogCapture, aio
from tests.rawws import client_frame, open_raw, server_frames
from wsapp.config import Config, LimitsConfig

CLIENTS = 50
ACTIONS = 400


class FloodClient:
    """A raw client that sends all its actions in one write and keeps the last state it reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last: int | None = None
        self.replied = asyncio.Event()
        self.errors: list[Any] = []
        self.reading = asyncio.ensure_future(self._read())

    def send(self, actions: list[str]) -> None:
        requests = [{"action": action} for action in actions]
        requests[-1]["id"] = "last"  # its reply follows the replies to all earlier ones
        self.writer.write(b"".join(client_frame(json.dumps(r).encode()) for r in requests))

    async def _read(self) -> None:
        rest = b""
        while data := await self.reader.read(1 << 16):
            frames, rest = server_frames(rest + data)
            last_state = None
            for _, payload in frames:
                if b'"error"' in payload:
                    self.errors.append(payload)
                elif b'"id"' in payload:
                    self.replied.set()
                    last_state = payload
                elif payload.startswith(b'{"type":"state"'):
                    last_state = payload
            if last_state is not None:
                self.last = json.loads(last_state)["value"]


@pytest_twisted.ensureDeferred
async def test_flood_keeps_the_counter_exact(start_server: Any, log_events: LogCapture) -> None:
    """The final counter is the sum of all actions and every client's last state shows it."""
    server = start_server(Config(limits=LimitsConfig(rate=0)))  # the flood is the point here
    rng = random.Random(2026)
    plan = [[rng.choice(("plus", "minus")) for _ in range(ACTIONS)] for _ in range(CLIENTS)]
    expected = sum(1 if action == "plus" else -1 for actions in plan for action in actions)

    async def flood() -> list[FloodClient]:
        clients = []
        for _ in range(CLIENTS):
            status, reader, writer = await open_raw(server.port)
            assert status == 101
            clients.append(FloodClient(reader, writer))
        for client, actions in zip(clients, plan, strict=True):
            client.send(actions)
        async with asyncio.timeout(120):
            for client in clients:
                await client.replied.wait()
            assert server.factory("/counter").hub.backend.integers["/counter"] == expected
            while any(client.last != expected for client in clients):
                await asyncio.sleep(0.02)
        for client in clients:
            client.writer.close()
        return clients

    clients = await aio(flood())
    assert all(client.errors == [] for client in clients)
    assert log_events.errors() == []
