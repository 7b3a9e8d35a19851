"""
Listening sockets made once by the supervisor and inherited by its workers.

Each TCP worker gets a socket of its own, bound to the same address with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers; the supervisor
keeps every socket open, so connections arriving while a worker restarts wait in its
socket's queue instead of being refused. A unix socket is one socket shared by all.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from ..exceptions import ConfigError
from ..tls import _as_tcp

__all__ = ["AdoptedEndpoint", "listening_sockets"]

#: Every worker's TCP socket on one address, the kernel choosing (False: one shared socket).
REUSEPORT = True


def listening_sockets(
    description: str, count: int, source: str, key: str, *, reuseport: bool | None = None
) -> list[socket.socket]:
    """
    ``count`` listening sockets for the endpoint ``description`` (``tcp:``, ``ssl:`` in the
    form :func:`wsapp.tls.listening_endpoint` reads itself, or ``unix:``), one per worker;
    the same socket repeated where workers share one. Raises :class:`ConfigError` on ``key``.
    """
    from twisted.internet.endpoints import _parseServer

    described = description
    if description.startswith("ssl:"):
        tcp = _as_tcp(description)
        if tcp is None:
            raise ConfigError(
                source, key, f"with more than one worker, an ssl: endpoint takes only "
                f"interface, backlog, privateKey and certKey: {description!r}"
            )  # fmt: skip
        description = tcp[0]
    try:
        kind, args, options = _parseServer(description, None)
    except Exception as error:
        raise ConfigError(source, key, f"invalid endpoint {described!r}: {error}") from None
    try:
        if kind == "TCP":
            return _tcp(args[0], options, count, REUSEPORT if reuseport is None else reuseport)
        if kind == "UNIX":
            return [_unix(args[0], options)] * count
    except OSError as error:
        text = error.strerror or str(error)
        raise ConfigError(source, key, f"cannot listen on {described}: {text}") from None
    raise ConfigError(
        source, key, f"with more than one worker, endpoints are tcp:, ssl: or unix:, "
        f"not {described!r}"
    )  # fmt: skip


def _tcp(port: int, options: dict[str, Any], count: int, reuseport: bool) -> list[socket.socket]:
    interface = options.get("interface", "")
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuseport else 1):
            listening = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((interface, port))
            port = listening.getsockname()[1]  # port 0: the others take the one chosen
            listening.listen(options.get("backlog", 50))
            listening.setblocking(False)  # as Twisted's ports: a worker's accept must not block
    except OSError:
        for listening in sockets:
            listening.close()
        raise
    return sockets if reuseport else sockets * count


def _unix(path: str, options: dict[str, Any]) -> socket.socket:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            listening.bind(path)
        except OSError:
            if not _stale(path):
                raise
            os.unlink(path)
            listening.bind(path)
        os.chmod(path, options.get("mode", 0o666))
        listening.listen(options.get("backlog", 50))
        listening.setblocking(False)
    except OSError:
        listening.close()
        raise
    return listening


def _stale(path: str) -> bool:
    """Whether ``path`` is a unix socket nobody listens on any more."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """Listens on the listening socket at file descriptor ``fd`` (inherited, already bound)."""

    def __init__(self, reactor: Any, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        try:
            inherited = socket.socket(fileno=self.fd)
            family = inherited.family
            inherited.detach()
            os.set_blocking(self.fd, False)
            port = self.reactor.adoptStreamPort(self.fd, family, protocolFactory)
        except Exception:
            return fail()
        return succeed(port)
