"""
Opening client connections: endpoints for ``ws://``/``wss://`` URLs and one-line failures.

Every way of connecting (the reconnecting service, the blocking client, the command line)
goes through :func:`endpoint_for` and :func:`when_open`, so they verify certificates and
report failures (:class:`~wsapp.exceptions.ConnectError`) the same way.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from autobahn.websocket.util import parse_url
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError, TimeoutError
from twisted.python.failure import Failure

from ..exceptions import ConnectError, HandshakeRefusedError
from .protocol import ClientFactory, ClientProtocol

__all__ = ["connect_failed", "endpoint_for", "open_connection", "when_open"]

P = TypeVar("P", bound=ClientProtocol)

_REFUSED = re.compile(r"upgrade failed \[(\d{3})\]:? ?(.*)")


def endpoint_for(url: str, reactor: Any, *, tls: Any = None, timeout: float = 10) -> Any:
    """
    Return a client endpoint (``IStreamClientEndpoint``) for a WebSocket URL.

    ``wss://`` URLs get TLS with the certificate checked against ``tls``, a Twisted
    ``IOpenSSLClientConnectionCreator`` or a trust root (``None``: the system's CAs).
    Raises :class:`ValueError` for anything that is not a ``ws://`` or ``wss://`` URL.
    """
    secure, host, port, _resource, _path, _params = parse_url(url)
    endpoint: Any = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if secure:
        from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
        from twisted.internet.ssl import optionsForClientTLS

        if not IOpenSSLClientConnectionCreator.providedBy(tls):
            tls = optionsForClientTLS(host, trustRoot=tls)
        endpoint = endpoints.wrapClientTLS(tls, endpoint)
    return endpoint


def when_open(protocol: P) -> Deferred[P]:
    """
    Fire with ``protocol`` once its WebSocket handshake completes.

    Fails with :class:`HandshakeRefusedError` or :class:`ConnectError` if the connection
    closes first; cancelling it drops the connection.
    """
    opened: Deferred[P] = Deferred(lambda _: protocol.dropConnection(abort=True))

    def on_open(_: object) -> None:
        if not opened.called:
            opened.callback(protocol)

    def on_closed(_: object) -> None:
        if not opened.called:
            opened.errback(Failure(handshake_failed(protocol)))

    protocol.is_open.addCallback(on_open)
    protocol.is_closed.addCallback(on_closed)
    return opened


def handshake_failed(protocol: ClientProtocol) -> ConnectError:
    """The error for a connection that closed before its WebSocket handshake completed."""
    lost = protocol.lost_reason
    if lost is not None and _is_tls_error(lost):
        return ConnectError(f"TLS handshake failed: {_tls_detail(lost)}")
    reason = str(protocol.wasNotCleanReason or "")
    refused = _REFUSED.search(reason)
    if refused:
        return HandshakeRefusedError(int(refused.group(1)), refused.group(2).strip())
    if reason:
        return ConnectError(f"WebSocket handshake failed: {reason}")
    return ConnectError("connection closed during the WebSocket handshake")


def connect_failed(url: str, failure: Failure) -> ConnectError:
    """Turn a failed endpoint connection (or handshake) into a one-line :class:`ConnectError`."""
    error = failure.value
    if isinstance(error, ConnectError):
        return error
    if isinstance(error, DNSLookupError):
        return ConnectError(f"cannot resolve the host of {url}")
    if isinstance(error, TimeoutError):
        return ConnectError(f"timed out connecting to {url}")
    return ConnectError(
        f"cannot connect to {url}: {str(error).rstrip('.') or type(error).__name__}"
    )


def open_connection(factory: ClientFactory, endpoint: Any) -> Deferred[Any]:
    """Connect once; fire with the open protocol or fail with :class:`ConnectError`."""
    connecting: Deferred[Any] = endpoint.connect(factory)
    connecting.addCallback(when_open)

    def failed(failure: Failure) -> Failure:
        return Failure(connect_failed(factory.url, failure))

    return connecting.addErrback(failed)


def _is_tls_error(failure: Failure) -> bool:
    try:
        from OpenSSL.SSL import Error
    except ImportError:  # pragma: no cover - TLS needs pyOpenSSL anyway
        return False
    return failure.check(Error) is not None


def _tls_detail(failure: Failure) -> str:
    args = failure.value.args if failure.value else ()
    if args and isinstance(args[0], list) and args[0]:
        entry = args[0][-1]
        if isinstance(entry, tuple) and len(entry) == 3:
            return str(entry[2])
    return str(failure.value) or type(failure.value).__name__
