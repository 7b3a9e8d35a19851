"""
The opening handshake of a blocking connection, done in the calling thread.

The WebSocket protocol itself is the ``websockets`` library's sans-I/O
:class:`websockets.client.ClientProtocol`: it builds the upgrade request, checks the
response, negotiates permessage-deflate, and frames and parses every message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri

from ..config import CompressionConfig
from ..exceptions import ConnectError, HandshakeRefusedError
from .transport import Transport, open_socket

__all__ = ["deflate_offer", "open_protocol"]


def deflate_offer(config: CompressionConfig) -> ClientPerMessageDeflateFactory:
    """The permessage-deflate offer for ``config``: what wsapp's Twisted client offers."""
    return ClientPerMessageDeflateFactory(
        server_no_context_takeover=config.server_no_context_takeover,
        client_no_context_takeover=config.client_no_context_takeover,
        server_max_window_bits=(
            config.server_max_window_bits if config.server_max_window_bits < 15 else None
        ),
        client_max_window_bits=(
            config.client_max_window_bits if config.client_max_window_bits < 15 else True
        ),
        compress_settings={"memLevel": config.memory_level, "level": config.level},
    )


def open_protocol(
    url: str,
    *,
    timeout: float,
    compression: CompressionConfig,
    tls: Any,
    max_message_size: int,
    headers: Mapping[str, str] | None,
    origin: str | None,
) -> tuple[Transport, ClientProtocol, bytes]:
    """
    Connect and complete the upgrade within ``timeout`` seconds.

    Return the transport, the open protocol and the bytes that arrived after the
    response (the start of the server's first frames). Raises :class:`ValueError` for a URL that is
    not ``ws://`` or ``wss://``, :class:`ConnectError` (or :class:`HandshakeRefusedError`)
    when no connection opens.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}") from None
    deadline = time.monotonic() + timeout
    protocol = ClientProtocol(
        uri,
        origin=Origin(origin) if origin is not None else None,
        extensions=[deflate_offer(compression)] if compression.enabled else None,
        max_size=max_message_size,
    )
    request = protocol.connect()
    for name, value in (headers or {}).items():
        request.headers[name] = value
    sock = open_socket(url, uri.host, uri.port, uri.secure, tls, deadline)
    transport = Transport(sock)
    try:
        protocol.send_request(request)
        if not transport.write(b"".join(protocol.data_to_send()), deadline):
            raise ConnectError("connection closed during the WebSocket handshake")
        events: list[Any] = []
        # The protocol gets the response's head only: what follows it (the server's first
        # frames) is returned for the connection to read from a frame boundary.
        tail, rest, cut = b"", b"", False
        while not events:
            data = transport.read(deadline)
            if data is None:
                raise ConnectError(f"timed out connecting to {url}")
            if data and not cut:
                end = (tail + data).find(b"\r\n\r\n")
                if end >= 0:
                    split = end + 4 - len(tail)
                    data, rest, cut = data[:split], data[split:], True
                tail = (tail + data)[-3:]
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()
            if cut and not events and rest:  # not a 101: the response has a body
                protocol.receive_data(rest)
                rest = b""
                events = protocol.events_received()
            if not data and not events:
                raise ConnectError("connection closed during the WebSocket handshake")
        (response,) = events
        assert isinstance(response, Response)
        if protocol.handshake_exc is not None:
            raise _refused(protocol.handshake_exc)
        return transport, protocol, rest
    except BaseException:
        transport.close()
        raise


def _refused(error: Exception) -> ConnectError:
    if isinstance(error, InvalidStatus):
        return HandshakeRefusedError(error.response.status_code, error.response.reason_phrase)
    return ConnectError(f"WebSocket handshake failed: {error}")
