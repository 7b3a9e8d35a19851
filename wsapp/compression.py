"""
permessage-deflate (RFC 7692) negotiation from :class:`~wsapp.config.CompressionConfig`.

Autobahn leaves the zlib level fixed and the memory level and windows at their largest
(about 300 KiB per connection); these functions apply the configured values on both sides.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

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
    "apply_level",
    "client_offers",
    "client_response_accept",
    "server_accept",
]


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

    def start_compress_message(self) -> None:
        if self._is_server:
            renew, window = self.server_no_context_takeover, self.server_max_window_bits
        else:
            renew, window = self.client_no_context_takeover, self.client_max_window_bits
        if self._compressor is None or renew:
            self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -window, self.mem_level)


def apply_level(protocol: WebSocketProtocol, level: int) -> None:
    """Make a freshly opened connection compress at ``level``, if deflate was negotiated."""
    negotiated = protocol._perMessageCompress
    if isinstance(negotiated, PerMessageDeflate):
        protocol._perMessageCompress = LeveledPerMessageDeflate.from_negotiated(negotiated, level)


def server_accept(
    config: CompressionConfig,
) -> Callable[[Sequence[object]], PerMessageDeflateOfferAccept | None]:
    """Return the server's ``perMessageCompressionAccept`` function for ``config``."""

    def accept(offers: Sequence[object]) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if not isinstance(offer, PerMessageDeflateOffer):
                continue
            window = config.server_max_window_bits
            if offer.request_max_window_bits:
                window = min(window, offer.request_max_window_bits)
            return PerMessageDeflateOfferAccept(
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
        return None

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
