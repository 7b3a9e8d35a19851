"""
The connection lifecycle of a server connection without autobahn's per-connection waste.

autobahn builds the arguments of its debug-log lines (highlighted function names, peer
strings, a list of ~40 option triples) on every connection, debug logging on or off. The
overrides here do the same work as autobahn's methods, in the same order, without those
arguments (with debug logging on, autobahn's own methods run, lines and all);
``tests/test_handshake.py`` fails when the autobahn code they mirror changes.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from collections import deque
from typing import Any
from urllib import parse

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.util import _is_tls_error, _maybe_tls_reason
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from autobahn.websocket.protocol import (
    TrafficStats,
    WebSocketProtocol,
    WebSocketServerProtocol,
    _is_same_origin,
    _url_to_origin,
    parseHttpHeader,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from .fastpath import FastServerProtocol

__all__ = ["MIRRORED", "HandshakeProtocol"]

_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_OPEN = WebSocketProtocol.STATE_OPEN
_MAGIC = WebSocketProtocol._WS_MAGIC
_GROUND = WebSocketProtocol.SEND_STATE_GROUND


_COPIED: dict[type, tuple[str, ...]] = {}


def _copied(cls: Any) -> tuple[str, ...]:
    """The options a connection of ``cls`` copies from its factory: those it does not set."""
    names = _COPIED.get(cls)
    if names is None:
        names = _COPIED[cls] = tuple(n for n in cls.CONFIG_ATTRS if not hasattr(cls, n))
    return names


#: A Sec-WebSocket-Key as autobahn accepts it: 22 base64 characters, then "==".
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")
#: Origin verdicts (and parsed extension headers) kept per factory before starting afresh.
_KEPT = 256


def _kept(factory: Any, name: str, basis: object = None) -> dict[Any, Any]:
    """
    The cache ``name`` kept on ``factory``, started afresh once it holds :data:`_KEPT`
    entries or when ``basis`` (what its entries were worked out from) is another object.
    """
    found = factory.__dict__.get(name)
    if found is None or found[0] is not basis or len(found[1]) >= _KEPT:
        found = (basis, {})
        setattr(factory, name, found)
    return found[1]  # type: ignore[no-any-return]


def _has_token(value: str, token: str) -> bool:
    """Whether the comma-separated header ``value`` lists ``token`` (lower case)."""
    lowered = value.lower()
    if lowered == token:
        return True
    return token in lowered and any(part.strip() == token for part in lowered.split(","))


def _debugging() -> bool:
    return txaio.get_global_log_level() in ("debug", "trace")  # type: ignore[attr-defined]


class _LazyValidator:
    """A connection's UTF-8 validator, made when first read (autobahn reads it to validate)."""

    def __get__(self, protocol: Any, owner: type | None = None) -> Any:
        if protocol is None:
            return self
        validator = protocol.__dict__["utf8validator"] = Utf8Validator()
        return validator


class HandshakeProtocol(FastServerProtocol):
    """autobahn's server protocol whose connections start without debug-log arguments."""

    utf8validator: Any = _LazyValidator()

    openHandshakeTimeout: float
    trackTimings: bool
    utf8validateIncoming: bool
    trustXForwardedFor: int
    versions: list[int]
    maxConnections: int
    allowedOriginsPatterns: list[Any]
    autoPingInterval: float
    perMessageCompressionAccept: Any

    def connectionMade(self) -> None:
        # autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionMade without its
        # debug line
        if _debugging():
            super().connectionMade()
            return
        transport: Any = self.transport
        details = self._transport_details = create_transport_details(transport, self.is_server)
        details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
        self.peer = details.peer
        try:
            transport.setTcpNoDelay(self.tcpNoDelay)  # type: ignore[attr-defined]
        except Exception:  # as autobahn: Unix sockets refuse the option, for one
            pass
        self._connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # WebSocketAdapterProtocol.connectionLost without its debug lines (their arguments
        # are built on every close)
        if _debugging():
            super().connectionLost(reason)
            return
        error = reason.value
        if not isinstance(error, ConnectionDone) and _is_tls_error(error):
            self.log.error(_maybe_tls_reason(error))
        self._connectionLost(reason)

    def _connectionMade(self) -> None:
        # WebSocketProtocol._connectionMade (a server's) without the option list it builds
        # for a debug line, then WebSocketServerProtocol's count.
        if _debugging():
            super()._connectionMade()
            return
        factory = self.factory
        own = self.__dict__
        own.update(
            (name, getattr(factory, name)) for name in _copied(type(self)) if name not in own
        )
        self._perMessageCompress = None
        self.trackedTimings = None  # type: ignore[assignment]
        self.setTrackTimings(self.trackTimings)
        self.trafficStats = TrafficStats()
        self.state = _CONNECTING
        self.send_state = _GROUND
        self.data = b""
        self.send_queue = deque()
        self.triggered = False
        if self.utf8validateIncoming:
            self.utf8validator = Utf8Validator()
        # else: made when first used (_LazyValidator)
        self.wasMaxFramePayloadSizeExceeded = False
        self.wasMaxMessagePayloadSizeExceeded = False
        self.closedByMe = False
        self.failedByMe = False
        self.droppedByMe = False
        self.wasClean = False
        self.wasNotCleanReason = None  # type: ignore[assignment]
        self.wasServerConnectionDropTimeout = False
        self.wasOpenHandshakeTimeout = False
        self.wasCloseHandshakeTimeout = False
        self.wasServingFlashSocketPolicyFile = False
        self.localCloseCode = None
        self.localCloseReason = None
        self.remoteCloseCode = None
        self.remoteCloseReason = None
        self.openHandshakeTimeoutCall = None
        self.closeHandshakeTimeoutCall = None
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        self.autoPingPendingCall = None
        self.autoPingPendingSeq = 0
        self.autoPingPendingSent = None
        if self.openHandshakeTimeout > 0:
            self.openHandshakeTimeoutCall = factory._batched_timer.call_later(
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout
            )
        factory.countConnections += 1

    def processHandshake(self) -> None:
        # WebSocketServerProtocol.processHandshake for a well-formed upgrade, without its
        # debug-log arguments, with onConnect called directly and each Origin's verdict
        # remembered. Any request it would refuse or treat specially (flash policy,
        # X-Forwarded-For, a header twice, a bad key...) goes to autobahn's own method,
        # which parses it again from the start and answers it as it always has.
        fallback = WebSocketServerProtocol.processHandshake
        data = self.data
        end = data.find(b"\r\n\r\n")
        if end < 0 or _debugging() or self.trustXForwardedFor:
            fallback(self)
            return
        head = data[: end + 4]
        try:
            status_line, headers, counts = parseHttpHeader(head)
            method, uri, version_text = status_line.split()
            _scheme, _netloc, path, _params, query, fragment = parse.urlparse(uri)
            params = parse.parse_qs(query)
        except Exception:
            fallback(self)
            return
        if method != "GET" or version_text != "HTTP/1.1" or fragment:
            fallback(self)
            return
        if counts.get("host") != 1 or counts.get("sec-websocket-version") != 1:
            fallback(self)
            return
        host = headers["host"].strip()
        if ":" in host and not host.endswith("]"):
            host, port_text = host.rsplit(":", 1)
            external = self.factory.externalPort
            try:
                port = int(port_text.strip())
            except ValueError:
                port = -1
            if port < 0 or (external and port != external):
                fallback(self)
                return
        if (
            not _has_token(headers.get("upgrade", ""), "websocket")
            or not _has_token(headers.get("connection", ""), "upgrade")
            or counts.get("sec-websocket-key") != 1
            or counts.get("sec-websocket-extensions", 1) != 1
        ):
            fallback(self)
            return
        try:
            version = int(headers["sec-websocket-version"])
        except ValueError:
            fallback(self)
            return
        if version not in self.versions:
            fallback(self)
            return
        offered = headers.get("sec-websocket-protocol")
        protocols = [] if offered is None else [str(p.strip()) for p in offered.split(",")]
        if len(set(protocols)) != len(protocols):
            fallback(self)
            return
        origin_key = "sec-websocket-origin" if version < 13 else "origin"
        origin = ""
        if origin_key in headers:
            origin = headers[origin_key].strip()
            if counts[origin_key] > 1 or not self._origin_allowed(origin):
                fallback(self)
                return
        key = headers["sec-websocket-key"].strip()
        if not _KEY.fullmatch(key):
            fallback(self)
            return
        extensions = headers.get("sec-websocket-extensions")
        self.http_request_data = head
        self.http_status_line = status_line
        self.http_headers = headers
        self.http_request_uri = uri
        self.http_request_path = path
        self.http_request_params = params
        self.http_request_host = host
        self.websocket_version = version
        self.websocket_protocols = protocols
        self.websocket_origin = origin
        self.websocket_extensions = [] if extensions is None else self._extensions(extensions)
        self.data = data[end + 4 :]
        self._wskey = key
        if self.maxConnections > 0 and self.factory.countConnections > self.maxConnections:
            self.failHandshake("maximum number of connections reached", code=503)
            return
        request = ConnectionRequest(
            self.peer, headers, host, path, params, version, origin, protocols,
            self.websocket_extensions,
        )  # fmt: skip
        try:
            answer = self.onConnect(request)
            if inspect.iscoroutine(answer):
                answer = ensureDeferred(answer)
        except Exception:
            self._onConnect_failed(Failure())
            return
        if isinstance(answer, Deferred):
            answer.addCallbacks(self.succeedHandshake, self._onConnect_failed)
            return
        try:
            self.succeedHandshake(answer)
        except Exception:
            # As from autobahn's Deferred callback: the error is logged, nothing else done
            # (autobahn's is logged once the Deferred is collected).
            self.log.failure("Unhandled error opening a connection")

    def succeedHandshake(self, res: Any) -> None:
        # WebSocketServerProtocol.succeedHandshake without its debug-log arguments, and
        # with the permessage-compression negotiation of an extensions header done once
        # per factory when its accept function says it depends on the offers alone.
        if _debugging():
            WebSocketServerProtocol.succeedHandshake(self, res)
            return
        protocol = None
        headers: Any = {}
        if type(res) == tuple:  # noqa: E721 - as autobahn: a tuple, not a subclass
            if len(res) > 0:
                protocol = res[0]
            if len(res) > 1:
                headers = res[1]
        else:
            protocol = res
        if protocol is not None and protocol not in self.websocket_protocols:
            raise Exception("protocol accepted must be from the list client sent or None")
        self.websocket_protocol_in_use = protocol
        self.websocket_extensions_in_use = []
        extension_response = None
        if self.websocket_extensions:
            negotiated = self._negotiated()
            if isinstance(negotiated, str):
                self.failHandshake(negotiated)
                return
            if negotiated is not None:
                compression: Any = PERMESSAGE_COMPRESSION_EXTENSION[negotiated.EXTENSION_NAME]
                self._perMessageCompress = compression["PMCE"].create_from_offer_accept(
                    self.factory.isServer, negotiated
                )
                self.websocket_extensions_in_use.append(self._perMessageCompress)
                extension_response = negotiated.get_extension_string()
        factory = self.factory
        response = "HTTP/1.1 101 Switching Protocols\r\n"
        if factory.server:
            response += f"Server: {factory.server}\r\n"
        response += "Upgrade: WebSocket\r\nConnection: Upgrade\r\n"
        for source in (factory.headers.items(), headers.items()):
            for name, value in source:
                if isinstance(value, str):
                    values: Any = [value]
                else:
                    try:
                        values = iter(value)
                    except TypeError:
                        values = [value]
                for one in values:
                    response += f"{name}: {one}\r\n"
        if protocol is not None:
            response += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        accept = base64.b64encode(hashlib.sha1(self._wskey.encode("utf8") + _MAGIC).digest())
        response += f"Sec-WebSocket-Accept: {accept.decode()}\r\n"
        if extension_response is not None:
            response += f"Sec-WebSocket-Extensions: {extension_response}\r\n"
        response += "\r\n"
        self.sendData(response.encode("utf8"))
        self.http_response_data = response
        self.state = _OPEN
        if self.openHandshakeTimeoutCall is not None:
            self.openHandshakeTimeoutCall.cancel()
            self.openHandshakeTimeoutCall = None
        self.inside_message = False
        self.current_frame = None  # type: ignore[assignment]
        if self.autoPingInterval:
            self.autoPingPendingCall = factory._batched_timer.call_later(
                self.autoPingInterval, self._sendAutoPing
            )
        if self.trackedTimings:
            self.trackedTimings.track("onOpen")
        self._onOpen()
        txaio.resolve(self.is_open, None)  # type: ignore[attr-defined]
        if len(self.data) > 0:
            self.consumeData()

    def _negotiated(self) -> Any:
        """
        The permessage-compression accept for this handshake's offers (None: none), or the
        reason to refuse it: an offer that does not parse.
        """
        choose = self.perMessageCompressionAccept
        header = self.http_headers.get("sec-websocket-extensions")
        made: dict[str, Any] | None = None
        if header is not None and getattr(choose, "depends_on_offers_only", False):
            made = _kept(self.factory, "_wsapp_negotiated", choose)
            if header in made:
                return made[header]
        offers = []
        outcome: Any = None
        for extension, params in self.websocket_extensions:
            compression: Any = PERMESSAGE_COMPRESSION_EXTENSION.get(extension)
            if compression is not None:
                try:
                    offers.append(compression["Offer"].parse(params))
                except Exception as error:
                    outcome = str(error)
                    break
        else:
            if offers:
                outcome = choose(offers)
        if made is not None and header is not None:
            made[header] = outcome
        return outcome

    def _extensions(self, header: str) -> list[Any]:
        """``header`` parsed as autobahn parses it, once per distinct header per factory."""
        parsed = _kept(self.factory, "_wsapp_extensions")
        found = parsed.get(header)
        if found is None:
            found = parsed[header] = self._parseExtensionsHeader(header)
        return list(found)

    def _onConnect_failed(self, failure: Failure) -> None:
        # processHandshake's forward_error
        error = failure.value
        if isinstance(error, ConnectionDeny):
            self.failHandshake(error.reason, error.code)  # type: ignore[arg-type]
            return
        self.log.warn("Unexpected exception in onConnect ['{err.value}']", err=failure)
        self.log.warn("{tb}", tb=txaio.failure_format_traceback(failure))  # type: ignore[attr-defined]
        self.failHandshake(f"Internal server error: {error}", ConnectionDeny.INTERNAL_SERVER_ERROR)

    def _origin_allowed(self, origin: str) -> bool:
        """
        Whether autobahn's Origin check admits ``origin``; False for an Origin it cannot
        parse (autobahn's method then refuses it with its own words).
        """
        factory = self.factory
        patterns = self.allowedOriginsPatterns
        verdicts = _kept(factory, "_wsapp_origins", patterns)
        scheme = "https" if factory.isSecure else "http"
        port = factory.externalPort or factory.port
        found = verdicts.get((origin, scheme, port))
        if found is None:
            try:
                parsed = _url_to_origin(origin)
            except ValueError:
                found = False
            else:
                found = (parsed == "null" and factory.allowNullOrigin) or _is_same_origin(
                    parsed, scheme, port, patterns
                )
            verdicts[(origin, scheme, port)] = found
        return bool(found)


#: The autobahn methods mirrored above, by qualified name, and the hash of the source each
#: was written from (``tests/test_handshake.py`` compares them with the installed one).
MIRRORED: dict[str, str] = {
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionMade": (
        "63ceb64088e44552f7a6d6e97d2d7b5449cfb3dd86484c5e009356a316c6f7fe"
    ),
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionLost": (
        "cf4d8aab057cd161dc6c415c3204dc0455d0444d7d1e19b2d28dbc5c88720c27"
    ),
    "autobahn.websocket.protocol.WebSocketProtocol._connectionMade": (
        "7ac58d8bb6c3c752dc6753e09d2358573a2a47da90275e962830af0600fdf077"
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol._connectionMade": (
        "213dadb6d12d3d482c041df7230067083cf5047489dadf823314ea96a0d1914f"
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol.succeedHandshake": (
        "fb43d387929cf20640844b409a55bdfc0a643b20bb987af9a96c795f9678a9e8"
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol.processHandshake": (
        "0055f4d3499376738a0a710fc56b499befa39d90e2060ee1dabefda36bedb483"
    ),
}


def source_digest(qualified: str) -> str:
    """The SHA-256 of the source of the function named ``qualified`` (module.Class.name)."""
    import hashlib
    import importlib
    import inspect

    module_name, class_name, name = qualified.rsplit(".", 2)
    function: Any = getattr(getattr(importlib.import_module(module_name), class_name), name)
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
