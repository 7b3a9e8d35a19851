"""
A blocking client for code without an event loop::

    with wsapp.connect("ws://127.0.0.1:8000/counter") as ws:
        print(ws.recv(timeout=5))                        # {"type": "state", "value": 0}
        print(ws.request({"action": "get"}, timeout=5))  # the reply carrying our "id"

The Twisted reactor runs in one background thread shared by every blocking client of the
process (:func:`~wsapp.client.threads.shared_reactor`); if the process already runs a
reactor in another thread, that one is used. Each blocking call makes one hop into the
reactor thread and waits on a lock, so any number of threads may share a connection.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..config import CompressionConfig
from ..exceptions import ClientTimeoutError, ConnectionClosedError, MessageError
from ..messages import encode
from .connection import endpoint_for, open_connection
from .protocol import ClientFactory, ClientProtocol
from .threads import in_reactor, shared_reactor

__all__ = ["Connection", "connect"]

log = Logger()

#: Put in a connection's inbox and reply slots when it closes.
_CLOSED: Final = object()


class _Reply:
    """One awaited reply: the reactor thread sets it, the calling thread waits on the lock."""

    __slots__ = ("lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value
        self.lock.release()


class _BlockingProtocol(ClientProtocol):
    """Delivers messages to a request waiting for their ``id``, or else to the inbox."""

    def onOpen(self) -> None:
        super().onOpen()
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.pending: dict[str | int, _Reply] = {}
        self.close_error: ConnectionClosedError | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = _decode(payload, isBinary)
        if self.pending and isinstance(message, dict):
            key = message.get("id")
            if isinstance(key, (str, int)) and not isinstance(key, bool):
                reply = self.pending.pop(key, None)
                if reply is not None:
                    reply.set(message)
                    return
        self.inbox.put(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not hasattr(self, "inbox"):
            return  # never opened: connect() reports the failure
        self.close_error = ConnectionClosedError(code, reason)
        while self.pending:
            self.pending.popitem()[1].set(_CLOSED)
        self.inbox.put(_CLOSED)

    def send_payload(self, payload: bytes, binary: bool) -> None:
        """Send one message if the connection is still open (called in the reactor thread)."""
        if self.state != self.STATE_OPEN:
            return
        small = len(payload) < self.factory.compression.min_size
        if small and len(payload) < 126 and self._idle_sender():
            transport: Any = self.transport
            transport.write(_masked_frame(payload, binary))
        else:
            self.sendMessage(payload, binary, doNotCompress=small)

    def _idle_sender(self) -> bool:
        """True when no frame is half sent or queued, so one may go straight out."""
        return self.send_state == self.SEND_STATE_GROUND and not self.send_queue

    def close(self, code: int, reason: str | None, timeout: float) -> Deferred[None]:
        """Start the closing handshake; fire once closed, dropping TCP after ``timeout``."""
        done: Deferred[None] = Deferred()
        drop = self.factory.reactor.callLater(timeout, self.dropConnection, abort=True)

        def closed(result: object) -> object:
            if drop.active():
                drop.cancel()
            done.callback(None)
            return result

        self.is_closed.addBoth(closed)
        if self.state == self.STATE_OPEN:
            self.sendClose(code, reason)
        return done


def _masked_frame(payload: bytes, binary: bool) -> bytes:
    """
    Frame a message of under 126 bytes as one final, uncompressed, masked client frame.

    The same bytes as autobahn's ``sendMessage`` writes, in a tenth of its time: requests
    are usually this small, and ``sendMessage`` was the largest cost of a round trip.
    """
    size = len(payload)
    mask = os.urandom(4)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return bytes((0x82 if binary else 0x81, 0x80 | size)) + mask + masked


def _decode(payload: bytes, binary: bool) -> Any:
    if binary:
        return payload
    text = payload.decode("utf-8", errors="replace")
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

    def __init__(self, protocol: _BlockingProtocol, reactor: Any) -> None:
        self._protocol = protocol
        self._reactor = reactor
        self._ids = itertools.count(1)
        self._callbacks: list[Callable[[Any], object]] = []
        self._dispatcher: threading.Thread | None = None
        self._registering = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once the connection has closed."""
        return self._protocol.close_error is not None

    @property
    def deflate(self) -> bool:
        """True if permessage-deflate was negotiated."""
        return self._protocol._perMessageCompress is not None

    def send(self, message: Any) -> None:
        """Queue one message for sending; raises :class:`ConnectionClosedError` once closed."""
        self._check_open()
        payload, binary = _encode(message)
        self._reactor.callFromThread(self._protocol.send_payload, payload, binary)

    def recv(self, timeout: float | None = None) -> Any:
        """
        Return the next message that is not a reply to :meth:`request`.

        Raises :class:`ClientTimeoutError` after ``timeout`` seconds (``None``: wait forever)
        and :class:`ConnectionClosedError` once the connection has closed and nothing is left.
        """
        try:
            message = self._protocol.inbox.get(timeout=timeout)
        except queue.Empty:
            raise ClientTimeoutError(f"no message within {timeout} s") from None
        if message is _CLOSED:
            self._protocol.inbox.put(_CLOSED)  # wake the next waiting thread too
            raise self.close_error
        return message

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
        reply = _Reply()
        pending = self._protocol.pending
        if pending.setdefault(key, reply) is not reply:
            raise ValueError(f"a request with id {key!r} is already waiting for its reply")
        if self.closed:
            pending.pop(key, None)
            raise self.close_error
        self._reactor.callFromThread(self._protocol.send_payload, encode(request), False)
        if not reply.lock.acquire(timeout=timeout):
            if pending.pop(key, None) is reply:
                raise ClientTimeoutError(f"no reply to request {key!r} within {timeout} s")
            reply.lock.acquire()  # set just now by the reactor thread
        if reply.value is _CLOSED:
            raise self.close_error
        answer = reply.value
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
        if not self.closed and self._reactor.running:
            in_reactor(self._reactor, self._protocol.close, code, reason, timeout)
        if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout)

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
        error = self._protocol.close_error
        return ConnectionClosedError(error.code, error.reason) if error else ConnectionClosedError()

    def _check_open(self) -> None:
        if self.closed:
            raise self.close_error


def connect(
    url: str,
    *,
    timeout: float = 10,
    compression: CompressionConfig | bool = True,
    tls: Any = None,
    max_message_size: int = 16 << 20,
) -> Connection:
    """
    Open a blocking connection to ``url`` (``ws://`` or ``wss://``).

    ``compression`` offers permessage-deflate (``False``: none); ``tls`` is a trust root or
    connection creator for ``wss://`` (see :func:`~wsapp.client.connection.endpoint_for`).
    Raises :class:`~wsapp.exceptions.ConnectError` (or its subclass
    :class:`~wsapp.exceptions.HandshakeRefusedError`) when no connection opens within ``timeout``.
    """
    if isinstance(compression, bool):
        compression = CompressionConfig(enabled=compression)
    reactor = shared_reactor()

    def start() -> Deferred[_BlockingProtocol]:
        factory = ClientFactory(
            url,
            _BlockingProtocol,
            compression=compression,
            max_message_size=max_message_size,
            max_frame_size=max_message_size,
            reactor=reactor,
        )
        factory.setProtocolOptions(openHandshakeTimeout=timeout)
        return open_connection(factory, endpoint_for(url, reactor, tls=tls, timeout=timeout))

    protocol: _BlockingProtocol = in_reactor(reactor, start)
    return Connection(protocol, reactor)
