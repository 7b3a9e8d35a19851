"""
The receive fast path: complete small data frames parsed straight from the bytes of a read.

autobahn parses every frame through a general state machine (``processData``,
``onFrameBegin``, ``onFrameData``, ``onFrameEnd`` and the message hooks, about twenty Python
calls for one short message). A request from a browser is nearly always one complete,
unfragmented, masked text or binary frame under 64 KiB: :meth:`FastReceiveProtocol.receive`
handles exactly those and hands everything else to autobahn, from the first byte it did not
handle, with autobahn's state as autobahn would have left it:

- fragments, control frames (ping, pong, close), reserved bits or opcodes, unmasked frames,
  64-bit lengths, non-minimal length encodings, frames past ``maxFramePayloadSize`` or
  ``maxMessagePayloadSize`` and partial frames all go to autobahn's parser;
- a text frame whose payload is not valid UTF-8 goes to autobahn's parser too, which fails
  the connection exactly as it always does (1007);
- a compressed frame (RSV1 with permessage-deflate negotiated) has its header parsed here;
  its payload goes through autobahn's own ``onFrameData``/``onFrameEnd``, so decompression
  (by the connection's negotiated ``_perMessageCompress``), its limits and its UTF-8 checks
  are autobahn's.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketAdapterProtocol, WebSocketServerProtocol
from autobahn.websocket.protocol import FrameHeader, WebSocketProtocol

__all__ = ["STREAMING_HOOKS", "FastReceiveProtocol"]

#: Methods autobahn calls while it parses a message; a class overriding any of them (the
#: streaming API) always gets autobahn's parser.
STREAMING_HOOKS = (
    "processData",
    "onFrameBegin",
    "onFrameData",
    "onFrameEnd",
    "onMessageBegin",
    "onMessageFrameBegin",
    "onMessageFrameData",
    "onMessageFrameEnd",
    "onMessageFrame",
    "_onMessageBegin",
    "_onMessageFrameBegin",
    "_onMessageFrameData",
    "_onMessageFrameEnd",
    "_onMessageFrame",
    "_onMessageEnd",
)
_ORIGINALS = {
    name: getattr(WebSocketAdapterProtocol, name, None) or getattr(WebSocketProtocol, name)
    for name in STREAMING_HOOKS
}
_STATE_OPEN = WebSocketProtocol.STATE_OPEN


class _Unmasked:
    """A masker that already unmasked ``length`` bytes: what autobahn reads after a frame."""

    __slots__ = ("_length",)

    def __init__(self, length: int) -> None:
        self._length = length

    def pointer(self) -> int:
        return self._length

    def reset(self) -> None:
        self._length = 0

    def process(self, data: bytes) -> bytes:
        return data


def _unmask(data: bytes, start: int, stop: int) -> bytes:
    """The payload ``data[start:stop]`` unmasked with the 4 mask bytes before ``start``."""
    size = stop - start
    if not size:
        return b""
    key = data[start - 4 : start] * (size // 4 + 1)
    mixed = int.from_bytes(data[start:stop], "big") ^ int.from_bytes(key[:size], "big")
    return mixed.to_bytes(size, "big")


class FastReceiveProtocol(WebSocketServerProtocol):
    """autobahn's server protocol parsing complete small data frames itself (module doc)."""

    #: Whether this class keeps autobahn's parsing hooks (computed once per class).
    _fast_receive_class: bool | None = None
    #: Whether this connection's options and class allow the fast path (known once open).
    _fast_receive: bool | None = None
    #: The ``onMessageEnd`` that delivers a message to ``_onMessage`` as this path does.
    _fast_message_end: Any = None
    # autobahn options copied from the factory onto each connection.
    logOctets: bool
    logFrames: bool
    applyMask: bool
    utf8validateIncoming: bool
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    autoPingRestartOnAnyTraffic: bool

    @classmethod
    def _keeps_autobahn_hooks(cls) -> bool:
        found = cls.__dict__.get("_fast_receive_class")
        if found is None:
            found = cls.onMessageEnd is cls._fast_message_end and all(
                getattr(cls, name) is _ORIGINALS[name] for name in STREAMING_HOOKS
            )
            cls._fast_receive_class = found
        return found

    def receive(self, data: bytes) -> None:
        """Handle the bytes of one read as autobahn's ``_dataReceived`` would."""
        if (
            self.state != _STATE_OPEN
            or self.data
            or self.current_frame is not None
            or self.inside_message
            or self.failedByMe
            or self.trackedTimings
            or self._listeners is not None
            or not (self._fast_receive or (self._fast_receive is None and self._allow_fast()))
        ):
            self._dataReceived(data)
            return
        self.trafficStats.incomingOctetsWireLevel += len(data)
        rest = self._frames(data)
        if rest:
            self.data = rest
            self.consumeData()

    def _allow_fast(self) -> bool:
        # Options fixed once the connection is open.
        allowed = (
            not self.logOctets
            and not self.logFrames
            and self.applyMask
            and self.websocket_version != 0
            and self._keeps_autobahn_hooks()
        )
        self._fast_receive = allowed
        return allowed

    def _frames(self, data: bytes) -> bytes:
        """Handle the complete small frames at the start of ``data``; return what is left."""
        end = len(data)
        pos = 0
        stats = self.trafficStats
        frame_limit = self.maxFramePayloadSize
        message_limit = self.maxMessagePayloadSize
        on_message = self._onMessage
        while pos < end:
            if end - pos < 6 or self.state != _STATE_OPEN:
                return data[pos:]
            first = data[pos]
            size = data[pos + 1]
            if size < 0x80:
                return data[pos:]  # unmasked
            size &= 0x7F
            if size < 126:
                start = pos + 6
            elif size == 126 and end - pos >= 8:
                size = (data[pos + 2] << 8) | data[pos + 3]
                if size < 126:
                    return data[pos:]  # not the minimal length encoding
                start = pos + 8
            else:
                return data[pos:]
            stop = start + size
            if stop > end or 0 < frame_limit < size or 0 < message_limit < size:
                return data[pos:]
            if first == 0x81 or first == 0x82:
                payload = _unmask(data, start, stop)
                text = first == 0x81
                if text and self.utf8validateIncoming:
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        return data[pos:]  # autobahn fails the connection (1007)
                pos = stop
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()
                stats.incomingOctetsWebSocketLevel += size
                stats.incomingOctetsAppLevel += size
                stats.incomingWebSocketFrames += 1
                stats.incomingWebSocketMessages += 1
                on_message(payload, not text)
            elif (first == 0xC1 or first == 0xC2) and self._perMessageCompress is not None:
                pos = stop
                self._compressed_frame(data[start - 4 : start], size, first == 0xC2)
                payload = _unmask(data, start, stop)
                if self.onFrameData(payload) is False or self.onFrameEnd() is False:
                    return data[pos:]
            else:
                return data[pos:]
        return b""

    def _compressed_frame(self, mask: bytes, size: int, binary: bool) -> None:
        """Set autobahn's state as its ``processData`` and ``onFrameBegin`` would."""
        self.current_frame = FrameHeader(2 if binary else 1, True, 4, size, mask)  # type: ignore[arg-type]
        self.current_frame_masker = _Unmasked(size)
        self.inside_message = True
        self._isMessageCompressed = True  # type: ignore[has-type]
        compression: Any = self._perMessageCompress  # negotiated: the caller checked
        compression.start_decompress_message()
        if not binary and self.utf8validateIncoming:
            self.utf8validator.reset()
            self.utf8validateIncomingCurrentMessage = True
            self.utf8validateLast = (True, True, 0, 0)
        else:
            self.utf8validateIncomingCurrentMessage = False
        self._onMessageBegin(binary)
        # within both size limits (checked before), so this does not fail the connection
        self._onMessageFrameBegin(size)
