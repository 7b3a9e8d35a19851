"""TLS from config: wss:// and https:// on one port, checked against a throwaway CA."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
import websockets

from tests.conftest import aio
from wsapp.config import Config, TlsConfig


@pytest.fixture
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_config(tmp_path: Path, certificate_authority: trustme.CA) -> Config:
    """A config serving a certificate for 127.0.0.1 issued by the throwaway CA."""
    issued = certificate_authority.issue_cert("127.0.0.1")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    return Config(tls=TlsConfig(certificate=str(certificate), private_key=str(key)))


def trusting(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    certificate_authority.configure_trust(context)
    return context


@pytest_twisted.ensureDeferred
async def test_wss_with_certificate_checking(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """A websockets client that checks the certificate talks to the counter over wss://."""
    server = start_server(tls_config)
    url = f"wss://127.0.0.1:{server.port}/counter"

    async def talk() -> list[Any]:
        async with websockets.connect(url, ssl=trusting(certificate_authority)) as websocket:
            received = [json.loads(await websocket.recv()) for _ in range(2)]
            await websocket.send(json.dumps({"action": "plus", "id": 1}))
            return [*received, json.loads(await websocket.recv())]

    assert await aio(talk()) == [
        {"type": "state", "value": 0},
        {"type": "users", "count": 1},
        {"type": "state", "value": 1, "id": 1},
    ]


@pytest_twisted.ensureDeferred
async def test_untrusted_client_refuses_and_https_answers(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """A client not trusting the CA fails verification; a trusting one gets HTTP over TLS."""
    server = start_server(tls_config)

    async def untrusted() -> None:
        async with websockets.connect(
            f"wss://127.0.0.1:{server.port}/counter", ssl=ssl.create_default_context()
        ):
            pass

    with pytest.raises(ssl.SSLCertVerificationError):
        await aio(untrusted())

    async def https_status() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=trusting(certificate_authority)
        )
        writer.write(b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line

    assert (await aio(https_status())).startswith(b"HTTP/1.1 404")
