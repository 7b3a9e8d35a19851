"""
One connection's state shared by the threads that use it, and the reading and writing.

Threads take turns: one thread waiting for a message reads the socket at a time (outside
the lock) and feeds what arrives to the ``websockets`` protocol; replies go to the
requests waiting for their ``id``, other messages to the inbox, and the other waiting
threads are told. One thread writes to the socket at a time, taking every frame queued.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from ..exceptions import ConnectionClosedError
from .transport import Transport

__all__ = ["WAITING", "Link"]

#: A request's slot until its reply arrives.
WAITING: Final = object()


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
        self, transport: Transport, protocol: ClientProtocol, early: list[Any], min_size: int
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
        with self.lock:
            self._take(early)
            self.outgoing.extend(protocol.data_to_send())  # answers to early pings
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
        if len(payload) < self._min_size:
            # Too small to gain from deflate: one uncompressed frame (RSV1 clear).
            frame = Frame(Opcode.BINARY if binary else Opcode.TEXT, payload)
            self.outgoing.append(frame.serialize(mask=True, extensions=()))
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
        protocol = self._protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
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
        if not data:
            self.ended = True

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
            try:
                message = _decode(payload, binary)
            except UnicodeDecodeError as error:
                self._protocol.fail(1007, f"{error.reason} at position {error.start}")
                self.outgoing.extend(self._protocol.data_to_send())
                return
            if self.replies and isinstance(message, dict):
                key = message.get("id")
                if (
                    isinstance(key, (str, int))
                    and not isinstance(key, bool)
                    and self.replies.get(key, None) is WAITING
                ):
                    self.replies[key] = message
                    continue
            self.inbox.append(message)

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
