"""
The HTTP side of the API: ``POST /api/METHOD`` with ``Authorization: apikey KEY``.

:class:`ApiResource` checks, in order: the transport (plain HTTP only on loopback, unless
TLS is on or ``api.allow_insecure``; else 403), the key (compared in constant time against
every configured key; else 401), the HTTP method (405), the API method (404), the key's
rate (429), the body (a JSON object, else 400), then runs the method. Every answer is JSON;
an error is ``{"error": CODE, "detail": TEXT}``. Bodies over ``api.max_body_size`` are
refused with 413 as soon as their length is known, before they are stored
(:func:`limited_request`). Keys are never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..config.schema import ApiConfig
from ..exceptions import BackendUnavailableError, MessageError
from ..limits import TokenBucket
from ..messages import INTERNAL_ERROR, INVALID_JSON, INVALID_REQUEST, RATE_LIMITED
from ..metrics import ApiMetrics

__all__ = ["ApiResource", "NotImplementedApiError", "limited_request", "transport_allowed"]

log = Logger()

Method = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]

STATUS = {
    "unauthorized": 401,
    "insecure-transport": 403,
    "unknown-method": 404,
    "method-not-allowed": 405,
    "too-large": 413,
    RATE_LIMITED: 429,
    INTERNAL_ERROR: 500,
    "not-implemented": 501,
    "backend-unavailable": 503,
}


class NotImplementedApiError(MessageError):
    """A known API method that this server cannot carry out (answered with 501)."""

    def __init__(self, detail: str) -> None:
        super().__init__("not-implemented", detail)


def transport_allowed(host: str | None, secure: bool, allow_insecure: bool) -> bool:
    """
    Whether a request that reached the local address ``host`` (None: a UNIX socket) may
    use the API: over TLS, on a loopback address, or anywhere with ``allow_insecure``.
    """
    if secure or allow_insecure or host is None:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _error_body(code: str, detail: str) -> bytes:
    return json.dumps({"error": code, "detail": detail}).encode() + b"\n"


def limited_request(base: type[Request], limit: int) -> type[Request]:
    """
    A subclass of ``base`` whose body may not exceed ``limit`` bytes: a larger one is
    answered with 413 and the connection closed, without storing more than ``limit``.
    """

    class LimitedRequest(base):  # type: ignore[misc, valid-type]
        _refused = False
        _received = 0

        def gotLength(self, length: int | None) -> None:
            super().gotLength(length)
            if length is not None and length > limit:
                self._refuse()

        def handleContentChunk(self, data: bytes) -> None:
            if self._refused:
                return
            self._received += len(data)
            if self._received > limit:
                self._refuse()
                return
            super().handleContentChunk(data)

        def process(self) -> None:
            if not self._refused:
                super().process()

        def _refuse(self) -> None:
            self._refused = True
            self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after this
            body = _error_body("too-large", f"the body is larger than {limit} bytes")
            head = (
                "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            transport: Any = self.channel.transport
            transport.write(head.encode() + body)
            transport.loseConnection()

    LimitedRequest.__name__ = LimitedRequest.__qualname__ = f"Limited{base.__name__}"
    return LimitedRequest


class ApiResource(Resource):
    """Serves ``POST /api/METHOD`` for the ``methods`` by name."""

    isLeaf = True

    def __init__(
        self,
        methods: Mapping[str, Method],
        keys: Sequence[str],
        config: ApiConfig,
        metrics: ApiMetrics,
        *,
        reactor: Any,
    ) -> None:
        super().__init__()
        self.methods = methods
        self._keys = [key.encode() for key in keys]
        self.config = config
        self.metrics = metrics
        self.reactor = reactor
        self._buckets: dict[int, TokenBucket] = {}

    def _key_index(self, request: Request) -> int | None:
        """The index of the request's key among the configured ones, or None."""
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"apikey":
            return None
        given = given.strip()
        found = None
        for index, key in enumerate(self._keys):  # every key, so the time tells nothing
            if hmac.compare_digest(given, key):
                found = index
        return found

    def render(self, request: Request) -> bytes | int:
        postpath = request.postpath or []
        name = postpath[0].decode(errors="replace") if len(postpath) == 1 else ""
        label = name if name in self.methods else "unknown"
        host = request.getHost()
        if not transport_allowed(
            getattr(host, "host", None), request.isSecure(), self.config.allow_insecure
        ):
            detail = "the API takes TLS, or plain HTTP on a loopback interface only"
            return self._fail(request, label, "insecure-transport", detail)
        index = self._key_index(request)
        if index is None:
            request.setHeader(b"www-authenticate", b"apikey")
            return self._fail(request, label, "unauthorized", "send Authorization: apikey KEY")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._fail(request, label, "method-not-allowed", "use POST")
        method = self.methods.get(name)
        if method is None:
            detail = f"no API method {name!r} (expected one of: {', '.join(self.methods)})"
            return self._fail(request, label, "unknown-method", detail)
        if not self._take(index):
            return self._fail(request, label, RATE_LIMITED, "too many requests for this key")
        try:
            params = json.loads(request.content.read() if request.content else b"")
        except ValueError as error:  # UnicodeDecodeError too
            return self._fail(request, label, INVALID_JSON, f"the body is not JSON: {error}")
        if not isinstance(params, dict):
            return self._fail(request, label, INVALID_REQUEST, "the body must be a JSON object")
        running = Deferred.fromCoroutine(self._run(method, params))
        running.addCallbacks(
            lambda result: self._answer(request, label, 200, result),
            lambda failure: self._failed(request, label, failure),
        )
        return NOT_DONE_YET

    def _take(self, index: int) -> bool:
        config = self.config
        if not config.rate:
            return True
        now = self.reactor.seconds()
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = TokenBucket(config.rate, config.burst, now)
        return bucket.take(now)

    async def _run(self, method: Method, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return await method(params)

    def _failed(self, request: Request, label: str, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, BackendUnavailableError):
            self._answer(request, label, 503, {"error": error.code, "detail": error.detail})
        elif isinstance(error, MessageError):
            status = STATUS.get(error.code, 400)
            self._answer(request, label, status, {"error": error.code, "detail": error.detail})
        else:
            log.failure("API method {method} failed", failure, method=label)
            detail = "the server could not carry out the call"
            self._answer(request, label, 500, {"error": INTERNAL_ERROR, "detail": detail})

    def _fail(self, request: Request, label: str, code: str, detail: str) -> bytes:
        return self._respond(request, label, STATUS.get(code, 400), _error_body(code, detail))

    def _answer(self, request: Request, label: str, status: int, body: Any) -> None:
        if request.finished or request._disconnected:
            return
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        request.write(self._respond(request, label, status, encoded))
        request.finish()

    def _respond(self, request: Request, label: str, status: int, body: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        self.metrics.count(label, status)
        return body
