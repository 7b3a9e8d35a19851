"""
One connection's state shared by the threads that use it, and the reading and writing.

Threads take turns: one thread waiting for a message reads the socket at a time (outside
the lock) and feeds what arrives to the ``websockets`` protocol; replies go to the
requests waiting for their ``id``, other messages to the inbox, and the other waiting
threads are told. One thread writes to the socket at a time, taking every frame queued.

The frames of most messages skip the protocol object: an open connection's complete,
unfragmented text or binary frame within the size limits is read here (a compressed one
inflated by the negotiated extension's own ``decode``, errors closing as the protocol
closes them), and an uncompressed outgoing message is framed here, as ``websockets``
frames it. Every other frame (control frames, fragments, oversized ones, anything once
closing) goes to the protocol whole, so it always stops at a frame boundary and its state
stays the one it would have had.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

from ..exceptions import ConnectionClosedError
from .transport import Transport

__all__ = ["WAITING", "Link"]

#: A request's slot until its reply arrives.
WAITING: Final = object()
#: What permessage-deflate strips from the end of each compressed message.
_TAIL: Final = b"\x00\x00\xff\xff"


def _decode(payload: bytes, binary: bool) -> Any:
    if binary:
        return payload
    text = payload.decode("utf-8")  # invalid UTF-8 fails the connection (1007)
    try:
        return json.loads(text)
    except ValueError:
        return text


class Link:
    """The socket, the protocol and what arrived, behind ``lock`` (a shared :class:`Connection`)."""

    def __init__(
        self, transport: Transport, protocol: ClientProtocol, first: bytes, min_size: int
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        #: Messages shorter than this go out uncompressed on a deflate connection.
        self._min_size = min_size if protocol.extensions else 0
        #: Guards the protocol, the inbox, the replies and the reader's role.
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self._write_lock = threading.Lock()  # held by the one thread writing
        self.outgoing: list[bytes] = []
        self._reading = False
        #: The stream has ended: nothing more will arrive.
        self.ended = False
        self.inbox: deque[Any] = deque()
        self.replies: dict[str | int, Any] = {}
        self._fragments: list[bytes] = []
        self._fragmented_binary = False
        #: Bytes read but not yet parsed: the start of a frame read here.
        self._unparsed = b""
        #: Bytes of the current frame still owed to the protocol, which is parsing it.
        self._owed = 0
        #: The protocol's size limit for a frame that starts a message (None: no limit).
        limits = [protocol.max_message_size, protocol.max_fragment_size]
        self._limit = min((n for n in limits if n is not None), default=None)
        #: With permessage-deflate where each server message stands alone, the window size
        #: of the one inflater they share (None: each goes through the extension's decode).
        self._window: int | None = None
        self._inflater: Any = None
        extensions = protocol.extensions
        if (
            len(extensions) == 1
            and isinstance(extensions[0], PerMessageDeflate)
            and extensions[0].remote_no_context_takeover
        ):
            self._window = extensions[0].remote_max_window_bits
        with self.lock:
            if first:  # frames that arrived with the handshake's response
                self._receive(first)
        self.flush()

    def closed_error(self) -> ConnectionClosedError:
        """The error for calls once closed: the peer's close code, or else ours."""
        close = self._protocol.close_rcvd or self._protocol.close_sent
        if close is not None:
            return ConnectionClosedError(close.code, close.reason or None)
        if self.ended:
            return ConnectionClosedError(1006, "connection lost")
        return ConnectionClosedError()

    # All but flush run with the lock held.

    def queue(self, payload: bytes, binary: bool) -> None:
        """Frame one message into the outgoing bytes."""
        protocol = self._protocol
        if protocol.state is not OPEN:
            raise self.closed_error()
        if not protocol.extensions or len(payload) < self._min_size:
            # Uncompressed (deflate gains nothing on small messages): one frame, RSV1 clear.
            self.outgoing.append(_masked_frame(0x82 if binary else 0x81, payload))
        else:
            (protocol.send_binary if binary else protocol.send_text)(payload)
            self.outgoing.extend(protocol.data_to_send())

    def wait(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """
        Read or wait until ``ready()``; False once ``deadline`` passed first.

        One waiting thread at a time reads the socket (outside the lock) and feeds what
        arrives to the protocol; the others wait for it to tell them something changed.
        """
        while not ready():
            if self.ended:
                return True
            if self._reading:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
                continue
            self._reading = True
            self.lock.release()
            try:
                data = self._transport.read(deadline)
            finally:
                self.lock.acquire()
                self._reading = False
                self._changed.notify_all()
            if self.ended:
                self._transport.close()
                return True
            if data is None:
                return ready()
            self._receive(data)
            if self.outgoing:
                self.lock.release()
                try:
                    self.flush(block=False)
                finally:
                    self.lock.acquire()
        return True

    def _receive(self, data: bytes) -> None:
        """Take what was read: read the plain frames here, feed the others to the protocol."""
        protocol = self._protocol
        if not data:
            if self._unparsed:
                self._feed(self._unparsed)
                self._unparsed = b""
            self._feed(b"")
            return
        if self._unparsed:
            data, self._unparsed = self._unparsed + data, b""
        end = len(data)
        position = 0
        if self._owed:
            position = min(self._owed, end)
            self._owed -= position
            self._feed(data[:position])
        while position < end:
            if protocol.state is not OPEN:
                self._feed(data[position:])
                return
            first, second = data[position], data[position + 1] if position + 1 < end else 0
            size, start = second & 0x7F, position + 2
            if size == 126:
                start += 2
                size = int.from_bytes(data[position + 2 : start], "big")
            elif size == 127:
                start += 8
                size = int.from_bytes(data[position + 2 : start], "big")
            if second & 0x80:
                start += 4  # masked: a protocol error the protocol reports
            if start > end:
                self._unparsed = data[position:]  # the header is incomplete
                return
            stop = start + size
            if (
                (first == 0x81 or first == 0x82 or (first in (0xC1, 0xC2) and protocol.extensions))
                and protocol.current_size is None
                and (self._limit is None or size <= self._limit)
                and not second & 0x80
            ):
                if stop > end:
                    self._unparsed = data[position:]
                    return
                position = stop
                binary = first & 0x0F == 0x02
                if first & 0x40:
                    payload = self._inflate(data[start:stop], binary)
                    if payload is None:
                        continue  # the connection failed: the rest goes to the protocol
                else:
                    payload = data[start:stop]
                self._message(payload, binary)
                continue
            taken = min(stop, end)
            self._owed = stop - taken
            self._feed(data[position:taken])
            position = taken

    def _inflate(self, payload: bytes, binary: bool) -> bytes | None:
        """
        A compressed frame's message, inflated as the negotiated extension inflates it;
        None if that failed the connection (1002, or 1009 when too large).

        Where the server's messages stand alone (``server_no_context_takeover``), one
        inflater serves them all instead of a new one per message: no message refers to
        an earlier one, and each ends on a block boundary.
        """
        protocol, limit = self._protocol, self._limit
        try:
            if self._window is None:
                frame = Frame(Opcode.BINARY if binary else Opcode.TEXT, payload, rsv1=True)
                for extension in reversed(protocol.extensions):
                    frame = extension.decode(frame, max_size=limit)
                frame.check()
                return bytes(frame.data)
            inflater = self._inflater
            if inflater is None or inflater.eof:  # a message may end the stream (BFINAL)
                inflater = self._inflater = zlib.decompressobj(wbits=-self._window)
            try:
                data: bytes = inflater.decompress(payload + _TAIL, limit or 0)
                if (
                    limit
                    and len(data) == limit
                    and (inflater.unconsumed_tail or inflater.decompress(b"", 1))
                ):
                    raise PayloadTooBig(None, limit)
            except zlib.error as error:
                raise ProtocolError("decompression failed") from error
            return data
        except ProtocolError as error:
            protocol.fail(1002, str(error))
            protocol.parser_exc = error
        except PayloadTooBig as error:
            error.set_current_size(protocol.current_size)
            protocol.fail(1009, str(error))
            protocol.parser_exc = error
        self._collect()
        return None

    def _feed(self, data: bytes) -> None:
        """Give bytes to the protocol (``b""``: the end of the stream) and take its output."""
        protocol = self._protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        self._collect()
        if not data:
            self.ended = True

    def _collect(self) -> None:
        """Take the protocol's events and the bytes it has to send."""
        protocol = self._protocol
        events = protocol.events_received()
        if events:
            self._take(events)
        sent = protocol.data_to_send()
        if sent:
            if sent[-1] == b"":  # the protocol is done: end the stream
                self.outgoing.extend(sent[:-1])
                self.ended = True
            else:
                self.outgoing.extend(sent)

    def _take(self, events: list[Any]) -> None:
        """Deliver the messages among ``events``: replies to their requests, others to the inbox."""
        for frame in events:
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if not frame.fin:
                    self._fragments = [frame.data]
                    self._fragmented_binary = opcode is Opcode.BINARY
                    continue
                payload, binary = frame.data, opcode is Opcode.BINARY
            elif opcode is Opcode.CONT:
                self._fragments.append(frame.data)
                if not frame.fin:
                    continue
                payload, binary = b"".join(self._fragments), self._fragmented_binary
                self._fragments = []
            else:
                continue
            if not self._message(payload, binary):
                return

    def _message(self, payload: bytes, binary: bool) -> bool:
        """Deliver one message: to the request waiting for its ``id``, else to the inbox."""
        try:
            message = _decode(payload, binary)
        except UnicodeDecodeError as error:
            self._protocol.fail(1007, f"{error.reason} at position {error.start}")
            self._collect()
            return False
        if self.replies and isinstance(message, dict):
            key = message.get("id")
            if (
                isinstance(key, (str, int))
                and not isinstance(key, bool)
                and self.replies.get(key, None) is WAITING
            ):
                self.replies[key] = message
                return True
        self.inbox.append(message)
        return True

    def end(self) -> None:
        """Close the socket; threads still waiting see the end."""
        self.ended = True
        # A thread reading now is woken by the shutdown and closes the socket itself, so
        # that it never waits on a file descriptor number already given to another one.
        self._transport.shutdown()
        if not self._reading:
            self._transport.close()
        self._changed.notify_all()

    def flush(self, block: bool = True, deadline: float | None = None) -> None:
        """Write the outgoing bytes (called without the lock); one thread writes at a time."""
        while self.outgoing:
            if not self._write_lock.acquire(block):
                return  # the thread writing now writes these too
            try:
                while True:
                    with self.lock:
                        if not self.outgoing:
                            break
                        data = b"".join(self.outgoing)
                        self.outgoing.clear()
                    if not self._transport.write(data, deadline):
                        with self.lock:
                            self.outgoing.clear()
                            self.end()
                        return
            finally:
                self._write_lock.release()


def _masked_frame(first: int, payload: bytes) -> bytes:
    """One client frame (``first``: FIN, RSV and opcode bits) as ``websockets`` builds it."""
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 0x10000:
        header = bytes((first, 0xFE)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0xFF)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)
