"""
permessage-deflate (RFC 7692) negotiation from :class:`~wsapp.config.CompressionConfig`.

Autobahn leaves the zlib level fixed and the memory level and windows at their largest
(about 300 KiB per connection); these functions apply the configured values on both sides.

Where the server uses no context takeover, every message it compresses stands alone, so
one compressor per setting serves the whole process (:func:`shared_compressor`): a
connection keeps no compressor of its own between messages, and a broadcast is compressed
once for all its deflate recipients (:func:`compressed_frame`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol

from .config import CompressionConfig

__all__ = [
    "LeveledPerMessageDeflate",
    "SharedCompressor",
    "apply_level",
    "client_offers",
    "client_response_accept",
    "compressed_frame",
    "server_accept",
    "shared_compressor",
]


class SharedCompressor:
    """
    One zlib compressor whose messages each stand alone: every message ends with a full
    flush, so its output refers to nothing sent before it and decodes on any connection
    that negotiated the same or a larger window, with or without context takeover. The
    bytes are those of a fresh compressor's (autobahn's with no context takeover).
    """

    __slots__ = ("busy", "parameters", "zlib")

    def __init__(self, level: int, window_bits: int, memory_level: int) -> None:
        self.parameters = (level, zlib.DEFLATED, -window_bits, memory_level)
        self.zlib = zlib.compressobj(*self.parameters)
        #: Whether a message is being compressed with it (autobahn's streaming API).
        self.busy = False

    def compress(self, payload: bytes) -> bytes:
        """``payload`` compressed as one message, without the 4-octet tail."""
        compressor = zlib.compressobj(*self.parameters) if self.busy else self.zlib
        return (compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH))[:-4]

    def reset(self) -> None:
        """Drop a message that was started and never ended."""
        self.zlib = zlib.compressobj(*self.parameters)
        self.busy = False


_SHARED: dict[tuple[int, int, int], SharedCompressor] = {}


def shared_compressor(level: int, window_bits: int, memory_level: int) -> SharedCompressor:
    """The process's compressor for these zlib parameters (about 40 KiB at 12 bits, 5)."""
    key = (level, window_bits, memory_level)
    found = _SHARED.get(key)
    if found is None:
        found = _SHARED[key] = SharedCompressor(level, window_bits, memory_level)
    return found


def compressed_frame(payload: bytes, negotiated: LeveledPerMessageDeflate) -> tuple[bytes, int]:
    """
    A server's unmasked text frame of ``payload`` compressed once, standing alone, for any
    connection whose negotiated parameters equal ``negotiated``'s window and levels; and
    the size of its compressed payload.
    """
    data = shared_compressor(
        negotiated.level, negotiated.server_max_window_bits, negotiated.mem_level
    ).compress(payload)
    size = len(data)
    if size < 126:
        header = bytes((0xC1, size))
    elif size <= 0xFFFF:
        header = bytes((0xC1, 126, size >> 8, size & 0xFF))
    else:
        header = bytes((0xC1, 127)) + size.to_bytes(8, "big")
    return header + data, size


class LeveledPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate with a configurable zlib compression level."""

    level: int = zlib.Z_DEFAULT_COMPRESSION

    @classmethod
    def from_negotiated(cls, negotiated: PerMessageDeflate, level: int) -> LeveledPerMessageDeflate:
        """Copy the parameters autobahn negotiated and compress at ``level``."""
        copy = cls(
            negotiated._is_server,
            negotiated.server_no_context_takeover,
            negotiated.client_no_context_takeover,
            negotiated.server_max_window_bits,
            negotiated.client_max_window_bits,
            negotiated.mem_level,
            negotiated.max_message_size,
        )
        copy.level = level
        return copy

    #: The shared compressor of the message being compressed, if it has one.
    _shared: SharedCompressor | None = None

    def start_compress_message(self) -> None:
        if self._is_server:
            renew, window = self.server_no_context_takeover, self.server_max_window_bits
        else:
            renew, window = self.client_no_context_takeover, self.client_max_window_bits
        if self._shared is not None:  # a message that never ended
            self._shared.reset()
            self._shared = None
        if self._is_server and renew:
            shared = shared_compressor(self.level, window, self.mem_level)
            if not shared.busy:
                shared.busy = True
                self._shared = shared
                self._compressor = shared.zlib
                return
        if self._compressor is None or renew:
            self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -window, self.mem_level)

    def end_compress_message(self) -> bytes:
        compressor: Any = self._compressor
        shared = self._shared
        if shared is not None:
            data: bytes = compressor.flush(zlib.Z_FULL_FLUSH)
            shared.busy = False
            self._shared = None
            self._compressor = None
            return data[:-4]
        data = compressor.flush(zlib.Z_SYNC_FLUSH)
        if self._is_server and self.server_no_context_takeover:
            self._compressor = None  # nothing to keep between messages
        return data[:-4]

    def forget_context(self) -> None:
        """
        Start the next message from an empty window: the peer just received a message
        this connection's compressor did not see (a broadcast compressed once).
        """
        self._compressor = None

    def end_decompress_message(self) -> None:
        super().end_decompress_message()
        if self.client_no_context_takeover if self._is_server else self.server_no_context_takeover:
            self._decompressor = None  # the next message starts afresh: free the window


def apply_level(protocol: WebSocketProtocol, level: int) -> None:
    """Make a freshly opened connection compress at ``level``, if deflate was negotiated."""
    negotiated = protocol._perMessageCompress
    if isinstance(negotiated, PerMessageDeflate):
        protocol._perMessageCompress = LeveledPerMessageDeflate.from_negotiated(negotiated, level)


class _OfferAccept(PerMessageDeflateOfferAccept):
    """An accept whose response also states ``server_no_context_takeover`` when it holds."""

    _text: str | None = None

    def get_extension_string(self) -> str:
        if self._text is not None:
            return self._text
        text: str = super().get_extension_string()
        if self.no_context_takeover and not self.offer.request_no_context_takeover:
            # RFC 7692 7.1.1.1: a server may state it even if the offer did not ask
            name, _, rest = text.partition(";")
            text = f"{name}; server_no_context_takeover" + (f";{rest}" if rest else "")
        self._text = text
        return text


def server_accept(
    config: CompressionConfig,
) -> Callable[[Sequence[object]], PerMessageDeflateOfferAccept | None]:
    """
    Return the server's ``perMessageCompressionAccept`` function for ``config``.

    Offers with the same parameters get the same accept (read, never changed, by each
    connection's negotiation), so its response text is built once; the function's
    ``depends_on_offers_only`` tells the handshake it may reuse a header's outcome.
    """
    made: dict[tuple[bool, bool, bool, int], _OfferAccept] = {}

    def accept(offers: Sequence[object]) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            key = (
                offer.accept_no_context_takeover,
                offer.accept_max_window_bits,
                offer.request_no_context_takeover,
                offer.request_max_window_bits,
            )
            found = made.get(key)
            if found is not None:
                return found
            window = config.server_max_window_bits
            if offer.request_max_window_bits:
                window = min(window, offer.request_max_window_bits)
            found = made[key] = _OfferAccept(
                offer,
                request_no_context_takeover=(
                    config.client_no_context_takeover and offer.accept_no_context_takeover
                ),
                request_max_window_bits=(
                    config.client_max_window_bits
                    if offer.accept_max_window_bits and config.client_max_window_bits < 15
                    else 0
                ),
                no_context_takeover=(
                    config.server_no_context_takeover or offer.request_no_context_takeover
                ),
                window_bits=window,
                mem_level=config.memory_level,
            )
            return found
        return None

    accept.depends_on_offers_only = True  # type: ignore[attr-defined]
    return accept


def client_offers(config: CompressionConfig) -> list[PerMessageDeflateOffer]:
    """Return the permessage-deflate offer the client sends for ``config``."""
    return [
        PerMessageDeflateOffer(
            accept_no_context_takeover=True,
            accept_max_window_bits=True,
            request_no_context_takeover=config.server_no_context_takeover,
            request_max_window_bits=(
                config.server_max_window_bits if config.server_max_window_bits < 15 else 0
            ),
        )
    ]


def client_response_accept(
    config: CompressionConfig,
) -> Callable[[PerMessageDeflateResponse], PerMessageDeflateResponseAccept | None]:
    """Return the client's ``perMessageCompressionAccept`` function for ``config``."""

    def accept(response: PerMessageDeflateResponse) -> PerMessageDeflateResponseAccept | None:
        if not isinstance(response, PerMessageDeflateResponse):
            return None
        window = config.client_max_window_bits
        if response.client_max_window_bits:
            window = min(window, response.client_max_window_bits)
        return PerMessageDeflateResponseAccept(
            response,
            no_context_takeover=(
                config.client_no_context_takeover or response.client_no_context_takeover
            ),
            window_bits=window,
            mem_level=config.memory_level,
        )

    return accept
