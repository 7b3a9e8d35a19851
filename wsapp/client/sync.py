"""
A blocking client for code without an event loop::

    with wsapp.connect("ws://127.0.0.1:8000/counter") as ws:
        print(ws.recv(timeout=5))                        # {"type": "state", "value": 0}
        print(ws.request({"action": "get"}, timeout=5))  # the reply carrying our "id"

Each call does its socket I/O in the calling thread, through the ``websockets`` library's
sans-I/O protocol (:mod:`wsapp.client.handshake`); no reactor and no background thread are
involved. Any number of threads may share a connection: one of the threads waiting for a
message reads the socket at a time and hands replies and messages to the others
(:mod:`wsapp.client.link`).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from twisted.logger import Logger
from websockets.client import ClientProtocol
from websockets.protocol import OPEN

from ..config import CompressionConfig
from ..exceptions import ClientTimeoutError, ConnectionClosedError, MessageError
from ..messages import encode
from .handshake import open_protocol
from .link import WAITING, Link
from .transport import Transport

__all__ = ["Connection", "connect"]

log = Logger()


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
        first: bytes,
        compression: CompressionConfig,
    ) -> None:
        self._link = link = Link(transport, protocol, first, compression.min_size)
        self._protocol = protocol
        self._lock = link.lock
        self._inbox = link.inbox
        self._replies = link.replies
        self._ids = itertools.count(1)
        self._callbacks: list[Callable[[Any], object]] = []
        self._dispatcher: threading.Thread | None = None
        self._registering = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._protocol.state is not OPEN

    @property
    def deflate(self) -> bool:
        """True if permessage-deflate was negotiated."""
        return bool(self._protocol.extensions)

    def send(self, message: Any) -> None:
        """Send one message; raises :class:`ConnectionClosedError` once closed."""
        payload, binary = _encode(message)
        with self._lock:
            self._link.queue(payload, binary)
        self._link.flush()

    def recv(self, timeout: float | None = None) -> Any:
        """
        Return the next message that is not a reply to :meth:`request`.

        Raises :class:`ClientTimeoutError` after ``timeout`` seconds (``None``: wait forever)
        and :class:`ConnectionClosedError` once the connection has closed and nothing is left.
        """
        inbox = self._inbox
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if not self._link.wait(lambda: bool(inbox) or self._link.ended, deadline):
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
        link, replies = self._link, self._replies
        with self._lock:
            if key in replies:
                raise ValueError(f"a request with id {key!r} is already waiting for its reply")
            self._link.queue(payload, False)
            replies[key] = WAITING
        try:
            self._link.flush()
            with self._lock:
                arrived = link.wait(lambda: replies[key] is not WAITING or link.ended, deadline)
                answer = replies.pop(key)
        except BaseException:
            replies.pop(key, None)
            raise
        if answer is WAITING:
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
                self._link.outgoing.extend(self._protocol.data_to_send())
        self._link.flush(deadline=deadline)
        with self._lock:
            try:
                self._link.wait(lambda: self._link.ended, deadline)
            finally:
                self._link.end()
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
        return self._link.closed_error()


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
    transport, protocol, first = open_protocol(
        url,
        timeout=timeout,
        compression=compression,
        tls=tls,
        max_message_size=max_message_size,
        headers=headers,
        origin=origin,
    )
    return Connection(transport, protocol, first, compression)


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
