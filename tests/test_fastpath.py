"""The server's fast paths send exactly the frames autobahn would, in order."""

from __future__ import annotations

import os
import socket
from pprint import pformat
from typing import Any

import pytest
import pytest_twisted
import txaio
import websockets
from autobahn.nvx._xormasker import create_xor_masker as nvx_masker
from autobahn.twisted.websocket import WebSocketAdapterProtocol
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.compress_deflate import PerMessageDeflate
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.threads import deferToThread

from tests.conftest import LogCapture, Server, aio, connect, sleep
from wsapp import fastpath
from wsapp.bench.wire import handshake_request, masked_frame
from wsapp.fastpath import SMALL_FRAME, _Pretty, _SmallFrameUnmasker


@pytest.mark.parametrize("size", [1, 3, 4, 5, 17, 125, 126, SMALL_FRAME - 1])
def test_small_frame_unmasker_matches_autobahn(size: int) -> None:
    """Unmasking in pieces gives the bytes autobahn's NVX masker gives."""
    for split in (0, 1, 2, 3, 5, size):
        mask, data = os.urandom(4), os.urandom(size)
        ours, theirs = _SmallFrameUnmasker(mask), nvx_masker(mask, size)
        assert ours.process(data[:split]) + ours.process(data[split:]) == theirs.process(
            data[:split]
        ) + theirs.process(data[split:])
        assert ours.pointer() == size


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest_twisted.ensureDeferred
async def test_echo_at_frame_length_boundaries(server: Server, compression: Any) -> None:
    """Messages around each frame-length encoding come back whole, with and without deflate."""
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 70000]
    # random bytes do not compress: deflated, they cross each boundary a little later
    messages = [b"\x01" * size for size in sizes] + [os.urandom(size) for size in sizes]

    async def echo_all() -> list[bytes]:
        url = server.url("/echo")
        async with websockets.connect(url, compression=compression, max_size=None) as ws:
            replies = []
            for message in messages:
                await ws.send(message)
                replies.append(await ws.recv())
            return replies

    assert await aio(echo_all()) == messages


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """Twenty frames in one TCP write get twenty replies, in the order they were sent."""
    frames = [masked_frame(f'{{"n":{n}}}'.encode()) for n in range(20)]
    expected = b"".join(
        bytes((0x81, len(f) - 6)) + f'{{"n":{n}}}'.encode() for n, f in enumerate(frames)
    )

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(handshake_request("/echo", deflate=False))
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(4096)
            received = received.partition(b"\r\n\r\n")[2]
            sock.sendall(b"".join(frames))
            while len(received) < len(expected):
                received += sock.recv(65536)
            return received

    assert await deferToThread(exchange) == expected


@pytest_twisted.ensureDeferred
async def test_connection_options_dump_is_formatted_only_when_logged(
    server: Server, log_events: LogCapture
) -> None:
    """With debug on, autobahn's options dump is still logged; pformat is restored after."""
    txaio.set_global_log_level("debug")
    try:
        client = await connect(server.url("/echo"))
    finally:
        txaio.set_global_log_level("info")
    assert autobahn_protocol.pformat is pformat  # type: ignore[attr-defined]
    dumps = [m for m in log_events.messages() if "('maxMessagePayloadSize', " in m]
    (served,) = [m for m in dumps if "'ServerFactory')" in m]
    assert served.strip().startswith("[('logOctets', False, 'ServerFactory'),\n")
    assert f"('maxMessagePayloadSize', {16 * 1024 * 1024}, 'ServerFactory')" in served
    assert str(_Pretty({"b": 1, "a": [2]})) == pformat({"b": 1, "a": [2]})
    client.sendClose()


@pytest_twisted.ensureDeferred
async def test_connection_count_follows_opens_and_closes(server: Server) -> None:
    """The factory's connection count, kept without autobahn's debug lines, returns to 0."""
    factory = server.factory("/echo")
    clients = [await connect(server.url("/echo")) for _ in range(3)]
    assert factory.countConnections == 3
    for client in clients:
        client.dropConnection(abort=True)
    for _ in range(100):
        if factory.countConnections == 0:
            break
        await sleep(0.02)
    assert factory.countConnections == 0


#: (function, the global or method name it must look up): what the overrides depend on.
LOOKUPS = [
    (WebSocketProtocol.processData, "create_xor_masker"),
    (WebSocketProtocol._connectionMade, "pformat"),
    (WebSocketProtocol.onMessageEnd, "_onMessage"),
    (WebSocketAdapterProtocol._onMessageEnd, "onMessageEnd"),
    (WebSocketAdapterProtocol.dataReceived, "_dataReceived"),
    (WebSocketProtocol.onMessageBegin, "message_is_binary"),
]
#: Attributes of a server connection (autobahn) that the fast paths read or call.
PROTOCOL_ATTRIBUTES = [
    "_connectionMade",
    "_connectionLost",
    "_dataReceived",
    "_closeConnection",
    "_listeners",
    "_perMessageCompress",
    "send_queue",
    "send_state",
    "trafficStats",
    "trackedTimings",
    "failedByMe",
    "autoFragmentSize",
    "logOctets",
    "logFrames",
    "maskServerFrames",
    "maxMessagePayloadSize",
    "wasMaxMessagePayloadSizeExceeded",
]
#: Attributes of Twisted's TCP transport that write_now reads (and the slow-consumer gate:
#: it replaces ``_isSendBufferFull``, which ``_maybePauseProducer`` calls).
TRANSPORT_ATTRIBUTES = [
    "_isSendBufferFull",
    "socket",
    "connected",
    "disconnecting",
    "_tempDataLen",
    "offset",
    "dataBuffer",
]


@pytest_twisted.ensureDeferred
async def test_autobahn_and_twisted_internals_are_where_fastpath_expects(server: Server) -> None:
    """
    Every internal wsapp.fastpath replaces or reads exists in the installed versions (and the
    trust-root interface wsapp.tls.CAFile provides).
    """
    client = await connect(server.url("/echo"))
    client.send_action("ping")  # some attributes exist once a message was received
    await client.next_event()
    (connection,) = server.factory("/echo").registry
    moved = [
        f"{function.__qualname__} no longer uses {name!r}"
        for function, name in LOOKUPS
        if name not in function.__code__.co_names
    ]
    moved += [
        f"module autobahn.websocket.protocol has no {name!r}"
        for name in ("create_xor_masker", "pformat")
        if not hasattr(autobahn_protocol, name)
    ]
    moved += [
        f"autobahn server connections have no {name!r}"
        for name in PROTOCOL_ATTRIBUTES
        if not hasattr(connection, name)
    ]
    moved += [
        f"twisted.internet.tcp.Connection has no {name!r}"
        for name in TRANSPORT_ATTRIBUTES
        if not hasattr(connection.transport, name)
    ]
    from twisted.internet import _sslverify

    trust = getattr(_sslverify, "IOpenSSLTrustRoot", None)
    if trust is None or "_addCACertsToContext" not in trust.names():
        moved.append("twisted.internet._sslverify.IOpenSSLTrustRoot (wsapp.tls.CAFile) moved")
    moved += [
        f"PerMessageDeflate has no {name!r}"
        for name in ("start_compress_message", "compress_message_data", "end_compress_message")
        if not hasattr(PerMessageDeflate, name)
    ]
    client.sendClose()
    assert not moved, (
        "autobahn or Twisted changed internals that wsapp/fastpath.py relies on; adapt it "
        "before widening the pins in pyproject.toml: " + "; ".join(moved)
    )


@pytest_twisted.ensureDeferred
async def test_small_frames_are_unmasked_by_wsapps_masker(server: Server) -> None:
    """autobahn looks up wsapp's masker factory, which unmasks client frames under 1 KiB."""
    assert autobahn_protocol.create_xor_masker is fastpath.create_xor_masker  # type: ignore[attr-defined]
    assert isinstance(fastpath.create_xor_masker(b"abcd", SMALL_FRAME - 1), _SmallFrameUnmasker)
    assert not isinstance(fastpath.create_xor_masker(b"abcd", SMALL_FRAME), _SmallFrameUnmasker)
    messages = [os.urandom(size) for size in (1, 2, 3, 4, 5, 125, 126, 500, SMALL_FRAME - 1)]

    async def echo_all() -> list[bytes]:
        async with websockets.connect(server.url("/echo"), compression=None) as ws:
            replies = []
            for message in messages:
                await ws.send(message)
                replies.append(await ws.recv())
            return replies

    assert await aio(echo_all()) == messages
