"""
Hot-path overrides of autobahn's server protocol, each measured with ``python -m wsapp.bench``.

They change how bytes reach the socket and what work is skipped, never what is sent: frames
are byte-for-byte the ones autobahn builds, and every case autobahn handles specially
(fragmentation, compression, chopped or synchronous writes, octet and frame logging,
timings, ``message`` event listeners) still goes through autobahn's own code.
"""

from __future__ import annotations

from pprint import pformat
from typing import Any

from autobahn.exception import Disconnected
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.tcp import Connection

from .fastread import FastReceiveProtocol

__all__ = ["FastServerProtocol", "write_now"]


def write_now(transport: Any, data: bytes) -> None:
    """
    Send ``data`` on a plain TCP transport at once if nothing is queued before it.

    Twisted's ``write`` only queues, registers the socket for writability (one
    ``epoll_ctl``), and sends on a later reactor pass (another ``epoll_ctl`` to unregister).
    A broadcast to N clients paid that per client and reached the last one only after every
    write had been queued. Sending at once, as asyncio's transports do, costs one ``send``;
    whatever the kernel does not take is queued with ``write`` as before, keeping the order.
    TLS and other transports always use ``write``.
    """
    if (
        isinstance(transport, Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # would block, or failed: write() queues it and doWrite reports errors
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class _SmallFrameUnmasker:
    """
    Unmasks a client frame under :data:`SMALL_FRAME` bytes with Python integers.

    autobahn builds an NVX masker per frame through CFFI (about 6 us); for the short frames
    that make up most requests, one XOR of two integers is several times cheaper.
    """

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        size = len(data)
        if not size:
            return data
        shift = self._ptr & 3
        key = (self._mask[shift:] + self._mask[:shift]) * (size // 4 + 1)
        self._ptr += size
        mixed = int.from_bytes(data, "big") ^ int.from_bytes(key[:size], "big")
        return mixed.to_bytes(size, "big")


SMALL_FRAME = 1024
_create_xor_masker = autobahn_protocol.create_xor_masker  # type: ignore[attr-defined]


def create_xor_masker(mask: bytes, length: int | None = None) -> Any:
    """autobahn's masker factory, with :class:`_SmallFrameUnmasker` for small frames."""
    if length is not None and length < SMALL_FRAME:
        return _SmallFrameUnmasker(mask)
    return _create_xor_masker(mask, length)


# processData() looks the factory up in its module for every frame: this is the one place
# to change it. Large frames still get autobahn's SIMD masker.
autobahn_protocol.create_xor_masker = create_xor_masker  # type: ignore[attr-defined]


class _Pretty:
    """An object that is pretty-printed only when something formats it (a log line)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class FastServerProtocol(FastReceiveProtocol):
    """autobahn's server protocol without per-call overheads, one ``send`` per read."""

    #: Frames sent while handling one read, written together when it is handled.
    _batch: list[bytes] | None = None
    # Options autobahn copies from the factory onto each connection.
    logOctets: bool
    logFrames: bool
    autoFragmentSize: int
    maskServerFrames: bool
    maxMessagePayloadSize: int

    def _connectionMade(self) -> None:
        # autobahn pretty-prints its ~40 connection options for a debug log line on every
        # connection, debug logging on or off: about 40% of a handshake's CPU. Swap its
        # pformat for one that formats only if the line is logged, for this call only (the
        # same module's Timings.__str__ needs the real one). The server class's own debug
        # line (its arguments built eagerly too) is left out.
        autobahn_protocol.pformat = _Pretty  # type: ignore[attr-defined,assignment]
        try:
            WebSocketProtocol._connectionMade(self)
        finally:
            autobahn_protocol.pformat = pformat  # type: ignore[attr-defined]
        self.factory.countConnections += 1

    def _connectionLost(self, reason: Any) -> None:
        # As autobahn's, without the debug line whose arguments (the failure's traceback
        # as text) it builds on every close, debug logging on or off.
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def dataReceived(self, data: bytes) -> None:
        # autobahn's dataReceived formats debug-log arguments (about 2.6 us) on every call,
        # even with debug logging off. Replies to the frames of one read (a client with
        # several requests in flight) leave in one send instead of one each.
        batch: list[bytes] = []
        self._batch = batch
        try:
            self.receive(data)
        finally:
            self._batch = None
            if batch:
                write_now(self.transport, b"".join(batch))

    def _flush_batch(self) -> None:
        if self._batch:
            write_now(self.transport, b"".join(self._batch))
            self._batch.clear()

    def _closeConnection(self, abort: bool = False) -> None:
        self._flush_batch()
        super()._closeConnection(abort)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # The same as autobahn's sendData without its per-call debug log, writing at once.
        if chopsize or sync or self.send_queue or self.logOctets:
            self._flush_batch()
            super().sendData(data, sync, chopsize)
            return
        if self._batch is not None:
            self._batch.append(data)
        else:
            write_now(self.transport, data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        else:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)

    def onMessageEnd(self) -> None:
        # autobahn fires a "message" event after onMessage, building a Deferred per message
        # even when nothing listens; skip that when no listener was ever registered.
        if self._listeners is not None:
            super().onMessageEnd()
            return
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self.trackedTimings:
                self.trackedTimings.track("onMessage")
            self._onMessage(payload, self.message_is_binary)
        self.message_data = None

    _fast_message_end = onMessageEnd

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: int | None = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        # An unfragmented message under 64 KiB is one frame: build its header here instead
        # of going through sendMessage's checks and sendFrame's general framing. With
        # deflate, the payload is compressed by the same extension calls autobahn makes.
        size = len(payload)
        if (
            size > 0xFFFF
            or fragmentSize is not None
            or sync
            or self.autoFragmentSize
            or self.trackedTimings
            or self.logFrames
            or self.maskServerFrames
        ):
            # The size limits bound what a client may send (autobahn applies the message
            # limit to what the server sends as well): lift it for this call.
            limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
            try:
                super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            finally:
                self.maxMessagePayloadSize = limit
            return
        if self.state != self.STATE_OPEN:
            raise Disconnected("Attempt to send on a closed protocol")
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += size
        first = 0x82 if isBinary else 0x81
        compressor = self._perMessageCompress
        if compressor is not None and not doNotCompress:
            compressor.start_compress_message()
            payload = compressor.compress_message_data(payload) + compressor.end_compress_message()
            size = len(payload)
            first |= 0x40  # RSV1: a compressed message
        stats.outgoingOctetsWebSocketLevel += size
        if size < 126:
            header = bytes((first, size))
        elif size <= 0xFFFF:
            header = bytes((first, 126, size >> 8, size & 0xFF))
        else:  # incompressible data grows a little
            header = bytes((first, 127)) + size.to_bytes(8, "big")
        self.sendData(header + payload)
