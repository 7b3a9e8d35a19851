"""The client's address behind trusted proxies: forwarding headers and the PROXY protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import LogCapture, aio, the_reactor
from tests.rawws import status_of, upgrade_request
from wsapp.config import Config, LimitsConfig, ProxyConfig
from wsapp.proxy import TrustedProxies
from wsapp.service import ServerService

PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.5"}, "203.0.113.5"),
        ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.5, 10.1.2.3"}, "203.0.113.5"),
        ("127.0.0.1", {"x-forwarded-for": "10.0.0.9, 10.1.2.3"}, "10.0.0.9"),
        ("127.0.0.1", {"x-forwarded-for": "garbage, 10.1.2.3"}, "10.1.2.3"),
        ("198.51.100.7", {"x-forwarded-for": "203.0.113.5"}, "198.51.100.7"),
        ("127.0.0.1", {"forwarded": 'for=6.6.6.6, for="[2001:db8::1]:4711"'}, "2001:db8::1"),
        ("127.0.0.1", {"forwarded": "for=203.0.113.5;proto=https", "x-forwarded-for": "1.1.1.1"},
         "203.0.113.5"),
        ("127.0.0.1", {"forwarded": "for=unknown"}, "127.0.0.1"),
        ("127.0.0.1", {}, "127.0.0.1"),
    ],
)  # fmt: skip
def test_rightmost_untrusted_hop_is_the_client(
    peer: str, headers: dict[str, str], client: str
) -> None:
    """Hops are read from the right; the first untrusted one is the client."""
    assert PROXIES.client_address(peer, headers) == client


@pytest_twisted.ensureDeferred
async def test_trusted_headers_give_per_address_limits_and_log(
    start_server: Any, log_events: LogCapture
) -> None:
    """Behind a trusted proxy each forwarded client has its own limit; untrusted headers don't."""
    limits = LimitsConfig(max_connections_per_address=1)
    trusted = start_server(Config(limits=limits, proxy=ProxyConfig(trusted=("127.0.0.0/8",))))
    untrusted = start_server(Config(limits=limits, proxy=ProxyConfig(trusted=("10.0.0.0/8",))))

    async def hold(port: int, address: str) -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request("/counter", {"X-Forwarded-For": address}))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return int(head.split()[1]), writer

    async def scenario() -> list[int]:
        statuses = []
        writers = []
        for server, address in [
            (trusted, "203.0.113.1"),
            (trusted, "203.0.113.2"),
            (trusted, "203.0.113.1"),
            (untrusted, "203.0.113.1"),
            (untrusted, "203.0.113.2"),
        ]:
            status, writer = await hold(server.port, address)
            statuses.append(status)
            writers.append(writer)
        for writer in writers:
            writer.close()
        return statuses

    assert await aio(scenario()) == [101, 101, 429, 101, 429]
    opened = [line for line in log_events.messages() if " 101 " in line]
    assert any(line.startswith("203.0.113.2 via tcp4:127.0.0.1:") for line in opened), opened


@pytest_twisted.ensureDeferred
async def test_haproxy_endpoint_gives_the_proxied_address() -> None:
    """On haproxy:tcp:…, a PROXY v1 line then an upgrade opens with the client's address."""
    config = Config(port="haproxy:tcp:0:interface=127.0.0.1", limits=LimitsConfig(rate=0.0))
    service = ServerService(config, source="test", reactor=the_reactor())
    service.startService()
    try:
        assert service.port is not None
        port = service.port.getHost().port
        factory = service.factories["/counter"]

        async def scenario() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 8000\r\n")
            writer.write(upgrade_request("/counter"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            for _ in range(100):
                if factory.registry:
                    break
                await asyncio.sleep(0.01)
            assert [c.peer for c in factory.registry] == ["tcp4:203.0.113.9:40000"]
            writer.close()
            return int(head.split()[1])

        assert await aio(scenario()) == 101
        # without the PROXY line the connection is dropped, nothing served
        with pytest.raises(asyncio.IncompleteReadError):
            await aio(status_of(port, "/counter"))
    finally:
        await service.stopService()
