"""
The socket under a blocking connection: opened (TCP, then TLS) in the calling thread.

:func:`open_socket` connects with a deadline and turns failures into one-line
:class:`~wsapp.exceptions.ConnectError`\\ s worded like the Twisted clients' ones;
:class:`Transport` then reads and writes that socket without blocking the threads that
share it longer than they asked for.
"""

from __future__ import annotations

import math
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..exceptions import ConnectError

__all__ = ["Transport", "open_socket", "tls_context"]

#: The most bytes one read takes from the socket.
READ_SIZE = 256 * 1024


def tls_context(tls: Any) -> ssl.SSLContext:
    """
    The TLS settings for ``tls``: ``None`` (the system's CAs), an :class:`ssl.SSLContext`
    (used as is), or a PEM file of CAs to trust (a path, or a :class:`wsapp.tls.CAFile`).
    """
    if tls is None:
        return ssl.create_default_context()
    if isinstance(tls, ssl.SSLContext):
        return tls
    path = getattr(tls, "path", tls)
    if isinstance(path, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(path))
    raise TypeError(
        "tls= takes None, an ssl.SSLContext, or the path (or wsapp.tls.CAFile) of a PEM "
        f"file of CAs, not {type(tls).__name__}"
    )


def open_socket(
    url: str, host: str, port: int, secure: bool, tls: Any, deadline: float
) -> socket.socket:
    """Connect to ``host:port`` (with TLS when ``secure``) before ``deadline`` (monotonic)."""
    context = tls_context(tls) if secure else None
    try:
        sock = socket.create_connection((host, port), timeout=_left(deadline))
    except socket.gaierror:
        raise ConnectError(f"cannot resolve the host of {url}") from None
    except TimeoutError:
        raise ConnectError(f"timed out connecting to {url}") from None
    except OSError as error:
        raise ConnectError(f"cannot connect to {url}: {error.strerror or error}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is None:
        return sock
    try:
        sock.settimeout(_left(deadline))
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as error:
        sock.close()
        detail = error.verify_message or error.reason
        raise ConnectError(f"TLS handshake failed: certificate verify failed: {detail}") from None
    except TimeoutError:
        sock.close()
        raise ConnectError(f"timed out connecting to {url}") from None
    except (ssl.SSLError, OSError) as error:
        sock.close()
        reason = getattr(error, "reason", None) or error.strerror or str(error)
        raise ConnectError(f"TLS handshake failed: {reason}") from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class Transport:
    """
    A connected socket made non-blocking, read by one thread at a time and written by
    one thread at a time (the caller ensures both); a read and a write may overlap.

    Waiting is ``poll(2)`` with the caller's deadline, so no thread hops are involved.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(0.0)
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        # OpenSSL does not allow a read and a write on one connection at the same time.
        self._tls_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.tls else nullcontext()
        )
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(sock, select.POLLOUT)

    def read(self, deadline: float | None) -> bytes | None:
        """
        Return the next bytes (``b""`` at the end of the stream), or ``None`` if nothing
        arrived before ``deadline`` (monotonic; ``None``: wait as long as it takes).
        """
        sock, waiting = self.sock, self._readable
        buffered: Callable[[], int] = self._tls_pending if self.tls else _nothing
        while True:
            if not buffered() and not _wait(waiting, deadline):
                return None
            try:
                with self._tls_lock:
                    return sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                continue
            except ssl.SSLWantWriteError:
                waiting = self._writable
                continue
            except (ssl.SSLError, OSError):
                return b""

    def _tls_pending(self) -> int:
        """Bytes OpenSSL already decrypted: readable without waiting for the socket."""
        with self._tls_lock:
            return int(self.sock.pending())  # type: ignore[attr-defined]

    def write(self, data: bytes, deadline: float | None = None) -> bool:
        """Send all of ``data``; False if the connection broke or ``deadline`` passed first."""
        view = memoryview(data)
        while view:
            try:
                with self._tls_lock:
                    sent = self.sock.send(view)
                view = view[sent:]
                continue
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLWantReadError:
                # Rare (renegotiation): the reader's next read makes progress.
                time.sleep(0.001)
                continue
            except (ssl.SSLError, OSError):
                return False
            if not _wait(self._writable, deadline):
                return False
        return True

    def shutdown(self) -> None:
        """End the stream in both directions; a thread waiting to read sees its end."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()


def _nothing() -> int:
    return 0


def _wait(poller: Any, deadline: float | None) -> bool:
    """Poll until ready (True) or ``deadline`` (False)."""
    while True:
        if deadline is None:
            milliseconds = -1
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return bool(poller.poll(0))
            milliseconds = math.ceil(left * 1000)
        if poller.poll(milliseconds):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
