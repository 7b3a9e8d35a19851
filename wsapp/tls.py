"""
TLS on the listening port from ``tls.certificate`` and ``tls.private_key`` (PEM files).

:func:`tls_endpoint` wraps a TCP endpoint so that each accepted connection speaks TLS, with
Twisted's :class:`~twisted.internet.ssl.CertificateOptions` (its protocol versions and
ciphers) holding the certificate and key as ``cryptography`` objects. ALPN offers what the
listening factory speaks (:class:`~twisted.internet.interfaces.IProtocolNegotiationFactory`);
a client offering none of it goes on without ALPN rather than being failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from .exceptions import ConfigError

__all__ = ["CAFile", "ServerTLS", "TLSServerEndpoint", "listening_endpoint", "load_tls"]

#: The options of an ``ssl:`` endpoint string read here; others go to Twisted's parser.
_SSL_OPTIONS = {"interface", "backlog", "privateKey", "certKey"}


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Makes the server side of each TLS connection, choosing among ``protocols`` by ALPN."""

    def __init__(self, options: CertificateOptions, protocols: Sequence[bytes]) -> None:
        self.protocols = tuple(protocols)
        self.context = options.getContext()
        self.context.set_alpn_select_callback(self._select)

    def _select(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        for protocol in self.protocols:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return SSL.Connection(self.context)


def load_tls(certificate: str, private_key: str, source: str = "config") -> CertificateOptions:
    """Server TLS options for a PEM certificate file (then its chain) and a PEM key file."""
    try:
        chain = x509.load_pem_x509_certificates(Path(certificate).read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(source, "tls.certificate", f"{certificate}: {error}") from None
    try:
        key = load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(source, "tls.private_key", f"{private_key}: {error}") from None
    try:
        # pyOpenSSL takes cryptography objects where Twisted's hints still say X509/PKey.
        options = CertificateOptions(
            privateKey=cast(Any, key),
            certificate=cast(Any, chain[0]),
            extraCertChain=cast(Any, chain[1:]),
        )
        options.getContext()  # checks that the key matches the certificate
    except SSL.Error as error:
        raise ConfigError(
            source, "tls.private_key", f"does not match the certificate: {error}"
        ) from None
    return options


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """``endpoint`` (TCP) with TLS from ``options`` in front of the factory it listens with."""

    def __init__(self, endpoint: IStreamServerEndpoint, options: CertificateOptions) -> None:
        self.endpoint = endpoint
        self.options = options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        negotiation: Any = IProtocolNegotiationFactory(protocolFactory, None)
        protocols = [] if negotiation is None else negotiation.acceptableProtocols()
        creator: Any = ServerTLS(self.options, protocols)
        endpoint: Any = self.endpoint
        listening: Deferred[IListeningPort] = endpoint.listen(
            TLSMemoryBIOFactory(creator, False, protocolFactory)
        )
        return listening


def listening_endpoint(
    reactor: Any,
    description: str,
    certificate: str,
    private_key: str,
    source: str,
    key: str,
    *,
    inherited: IStreamServerEndpoint | None = None,
) -> IStreamServerEndpoint:
    """
    The endpoint to listen on for ``description``: a ``tcp:`` one with TLS from the
    ``certificate`` and ``private_key`` files if they are set, an ``ssl:`` one (``certKey``,
    ``privateKey``, ``interface``, ``backlog``) with the same TLS as ``tls.*``, anything
    else as Twisted's endpoint parser makes it. Raises :class:`ConfigError` naming ``key``.
    With ``inherited`` (a worker's socket, already listening), that endpoint is listened
    on instead of a new one, with the TLS ``description`` asks for.
    """
    from twisted.internet.endpoints import serverFromString

    if description.startswith("ssl:"):
        tcp, certificate, private_key = _as_tcp(description) or (description, "", "")
        description = tcp
    try:
        endpoint: Any = inherited or serverFromString(reactor, description)
    except Exception as error:
        raise ConfigError(source, key, f"invalid endpoint {description!r}: {error}") from None
    if certificate and description.startswith("tcp:"):
        endpoint = TLSServerEndpoint(endpoint, load_tls(certificate, private_key, source))
    return cast(IStreamServerEndpoint, endpoint)


def _as_tcp(description: str) -> tuple[str, str, str] | None:
    """``ssl:PORT:options`` as ``(tcp:PORT:options, certificate, key)``, if it is that simple."""
    _, port, *rest = [*_fields(description), ""]
    options = dict(field.partition("=")[::2] for field in rest if field)
    if not port.isdigit() or not all("=" in field for field in rest if field):
        return None
    if set(options) - _SSL_OPTIONS or "privateKey" not in options:
        return None
    certificate = options.pop("certKey", options["privateKey"])
    private_key = options.pop("privateKey")
    listening = [f"{name}={_escape(value)}" for name, value in options.items()]
    return ":".join(["tcp", port, *listening]), certificate, private_key


def _fields(description: str) -> list[str]:
    """The fields of an endpoint string: split at ``:``, with ``\\`` escaping a character."""
    fields, current, escaped = [], [], False
    for character in description:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(character)
    fields.append("".join(current))
    return fields


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@implementer(IOpenSSLTrustRoot)
class CAFile:
    """
    Trust the certificates of a PEM file, as a client's ``trustRoot``.

    Twisted's own trust roots hand OpenSSL pyOpenSSL ``X509`` objects, which pyOpenSSL
    deprecates; this one lets OpenSSL read the file. Its interface is Twisted's (private by
    its docs: tests/test_fastpath.py checks it is where this expects).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _addCACertsToContext(self, context: Any) -> None:
        context.load_verify_locations(self.path)
