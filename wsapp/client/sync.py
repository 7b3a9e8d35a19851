"""
A blocking client for code without an event loop::

    with wsapp.connect("ws://127.0.0.1:8000/counter") as ws:
        print(ws.recv(timeout=5))                        # {"type": "state", "value": 0}
        print(ws.request({"action": "get"}, timeout=5))  # the reply carrying our "id"

Each call does its socket I/O in the calling thread, through the ``websockets`` library's
sans-I/O protocol (:mod:`wsapp.client.handshake`); no reactor and no background thread are
involved. Any number of threads may share a connection: one of the threads waiting for a
message reads the socket at a time and hands replies and messages to the others.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final

from twisted.logger import Logger
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from ..config import CompressionConfig
from ..exceptions import ClientTimeoutError, ConnectionClosedError, MessageError
from ..messages import encode
from .handshake import open_protocol
from .transport import Transport

__all__ = ["Connection", "connect"]

log = Logger()

#: A request's slot until its reply arrives.
_WAITING: Final = object()


def _decode(payload: bytes, binary: bool) -> Any:
    if binary:
        return payload
    text = payload.decode("utf-8")  # invalid UTF-8 fails the connection (1007)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _encode(message: Any) -> tuple[bytes, bool]:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), True
    if isinstance(message, str):
        return message.encode("utf-8"), False
    if isinstance(message, Mapping):
        return encode(message), False
    return json.dumps(message, separators=(",", ":")).encode("utf-8"), False


class Connection:
    """
    An open WebSocket connection used from ordinary threads; make one with :func:`connect`.

    Messages: ``bytes`` travel as binary frames, ``str`` as text as is, anything else as
    JSON text. Received text that parses as JSON comes back parsed, other text as ``str``,
    binary as ``bytes``. Messages that nobody reads wait in memory: read them, or register
    :meth:`on_message`, on connections that receive broadcasts.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: ClientProtocol,
        early: list[Any],
        compression: CompressionConfig,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._deflate = bool(protocol.extensions)
        self._min_size = compression.min_size if self._deflate else 0
        self._ids = itertools.count(1)
        self._callbacks: list[Callable[[Any], object]] = []
        self._dispatcher: threading.Thread | None = None
        self._registering = threading.Lock()
        # _lock guards the protocol, the inbox, the replies and the reader's role;
        # _write_lock is held by the one thread writing to the socket.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._outgoing: list[bytes] = []
        self._reading = False
        self._ended = False  # the stream has ended: nothing more will arrive
        self._inbox: deque[Any] = deque()
        self._replies: dict[str | int, Any] = {}
        self._fragments: list[bytes] = []
        self._fragmented_binary = False
        with self._lock:
            self._take(early)
            self._outgoing.extend(protocol.data_to_send())  # answers to early pings
        self._flush()

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._protocol.state is not OPEN

    @property
    def deflate(self) -> bool:
        """True if permessage-deflate was negotiated."""
        return self._deflate

    def send(self, message: Any) -> None:
        """Send one message; raises :class:`ConnectionClosedError` once closed."""
        payload, binary = _encode(message)
        with self._lock:
            self._queue(payload, binary)
        self._flush()

    def recv(self, timeout: float | None = None) -> Any:
        """
        Return the next message that is not a reply to :meth:`request`.

        Raises :class:`ClientTimeoutError` after ``timeout`` seconds (``None``: wait forever)
        and :class:`ConnectionClosedError` once the connection has closed and nothing is left.
        """
        inbox = self._inbox
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if not self._wait(lambda: bool(inbox) or self._ended, deadline):
                raise ClientTimeoutError(f"no message within {timeout} s")
            if inbox:
                return inbox.popleft()
        raise self.close_error

    def __iter__(self) -> Iterator[Any]:
        """Yield incoming messages until the connection closes."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosedError:
                return

    def request(self, message: Mapping[str, Any], timeout: float = 10) -> Any:
        """
        Send a request and return the reply that echoes its ``"id"``.

        An ``"id"`` is added when ``message`` has none. A ``{"type": "error"}`` reply raises
        :class:`~wsapp.exceptions.MessageError`; no reply within ``timeout`` seconds raises
        :class:`ClientTimeoutError`; a close while waiting raises :class:`ConnectionClosedError`.
        """
        request = dict(message)
        key = request.setdefault("id", next(self._ids))
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ValueError("a request's 'id' must be a string or an integer")
        payload = encode(request)
        deadline = time.monotonic() + timeout
        replies = self._replies
        with self._lock:
            if key in replies:
                raise ValueError(f"a request with id {key!r} is already waiting for its reply")
            self._queue(payload, False)
            replies[key] = _WAITING
        try:
            self._flush()
            with self._lock:
                arrived = self._wait(lambda: replies[key] is not _WAITING or self._ended, deadline)
                answer = replies.pop(key)
        except BaseException:
            replies.pop(key, None)
            raise
        if answer is _WAITING:
            if arrived:
                raise self.close_error
            raise ClientTimeoutError(f"no reply to request {key!r} within {timeout} s")
        if answer.get("type") == "error" and isinstance(answer.get("error"), str):
            raise MessageError(answer["error"], str(answer.get("detail", "")))
        return answer

    def on_message(self, callback: Callable[[Any], object]) -> Callable[[Any], object]:
        """
        Call ``callback(message)`` for each incoming message, in a thread of this connection.

        Use either callbacks or :meth:`recv`/iteration on one connection, not both. Usable
        as a decorator; exceptions from a callback are logged and dispatch goes on.
        """
        with self._registering:
            self._callbacks.append(callback)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="wsapp-on-message", daemon=True
                )
                self._dispatcher.start()
        return callback

    def _dispatch(self) -> None:
        for message in self:
            for callback in list(self._callbacks):
                try:
                    callback(message)
                except Exception:
                    log.failure("on_message callback {callback!r} failed", callback=callback)

    def close(self, code: int = 1000, reason: str | None = None, timeout: float = 5) -> None:
        """Close the connection and wait (at most ``timeout`` seconds) until it is closed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._protocol.state is OPEN:
                self._protocol.send_close(code, reason or "")
                self._outgoing.extend(self._protocol.data_to_send())
        self._flush(deadline=deadline)
        with self._lock:
            try:
                self._wait(lambda: self._ended, deadline)
            finally:
                self._end()
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def close_error(self) -> ConnectionClosedError:
        """The error that calls on this connection raise once it has closed (code, reason)."""
        # The peer's close frame, or else ours (a failure found here, e.g. 1009 or 1007).
        close = self._protocol.close_rcvd or self._protocol.close_sent
        if close is not None:
            return ConnectionClosedError(close.code, close.reason or None)
        if self._ended:
            return ConnectionClosedError(1006, "connection lost")
        return ConnectionClosedError()

    # Everything below runs with self._lock held, but for _flush.

    def _queue(self, payload: bytes, binary: bool) -> None:
        """Frame one message into the outgoing bytes."""
        protocol = self._protocol
        if protocol.state is not OPEN:
            raise self.close_error
        if len(payload) < self._min_size:
            # Too small to gain from deflate: one uncompressed frame (RSV1 clear).
            frame = Frame(Opcode.BINARY if binary else Opcode.TEXT, payload)
            self._outgoing.append(frame.serialize(mask=True, extensions=()))
        else:
            (protocol.send_binary if binary else protocol.send_text)(payload)
            self._outgoing.extend(protocol.data_to_send())

    def _wait(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """
        Read or wait until ``ready()``; False once ``deadline`` passed first.

        One waiting thread at a time reads the socket (outside the lock) and feeds what
        arrives to the protocol; the others wait for it to tell them something changed.
        """
        while not ready():
            if self._ended:
                return True
            if self._reading:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
                continue
            self._reading = True
            self._lock.release()
            try:
                data = self._transport.read(deadline)
            finally:
                self._lock.acquire()
                self._reading = False
                self._changed.notify_all()
            if data is None:
                return ready()
            self._receive(data)
            if self._outgoing:
                self._lock.release()
                try:
                    self._flush(block=False)
                finally:
                    self._lock.acquire()
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
                self._outgoing.extend(sent[:-1])
                self._ended = True
            else:
                self._outgoing.extend(sent)
        if not data:
            self._ended = True

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
                self._outgoing.extend(self._protocol.data_to_send())
                return
            if self._replies and isinstance(message, dict):
                key = message.get("id")
                if (
                    isinstance(key, (str, int))
                    and not isinstance(key, bool)
                    and self._replies.get(key, None) is _WAITING
                ):
                    self._replies[key] = message
                    continue
            self._inbox.append(message)

    def _end(self) -> None:
        """Close the socket; threads still waiting see the end."""
        self._ended = True
        self._transport.close()
        self._changed.notify_all()

    def _flush(self, block: bool = True, deadline: float | None = None) -> None:
        """Write the outgoing bytes (called without the lock); one thread writes at a time."""
        while self._outgoing:
            if not self._write_lock.acquire(block):
                return  # the thread writing now writes these too
            try:
                while True:
                    with self._lock:
                        if not self._outgoing:
                            break
                        data = b"".join(self._outgoing)
                        self._outgoing.clear()
                    if not self._transport.write(data, deadline):
                        with self._lock:
                            self._outgoing.clear()
                            self._end()
                        return
            finally:
                self._write_lock.release()


def connect(
    url: str,
    *,
    timeout: float = 10,
    compression: CompressionConfig | bool = True,
    tls: Any = None,
    max_message_size: int = 16 << 20,
    headers: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> Connection:
    """
    Open a blocking connection to ``url`` (``ws://`` or ``wss://``).

    ``compression`` offers permessage-deflate (``False``: none); ``tls`` says whom to
    trust on ``wss://``: ``None`` (the system's CAs), an :class:`ssl.SSLContext`, or a PEM
    file of CAs (a path or :class:`wsapp.tls.CAFile`). ``headers`` are added to the upgrade
    request (e.g. ``{"Authorization": "Bearer ..."}``), ``origin`` sets its ``Origin``.
    Raises :class:`~wsapp.exceptions.ConnectError` (or its subclass
    :class:`~wsapp.exceptions.HandshakeRefusedError`) when no connection opens within ``timeout``.
    """
    _refuse_in_reactor_thread()
    if isinstance(compression, bool):
        compression = CompressionConfig(enabled=compression)
    transport, protocol, early = open_protocol(
        url,
        timeout=timeout,
        compression=compression,
        tls=tls,
        max_message_size=max_message_size,
        headers=headers,
        origin=origin,
    )
    return Connection(transport, protocol, early, compression)


def _refuse_in_reactor_thread() -> None:
    """A blocking call in a running reactor's thread would stop it serving: refuse it."""
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor
    from twisted.python import threadable

    if getattr(reactor, "running", False) and threadable.isInIOThread():
        raise RuntimeError(
            "a blocking wsapp client cannot be used in the reactor's thread; "
            "call it from another thread (e.g. twisted.internet.threads.deferToThread)"
        )
