"""
The identity side of a server connection: the ``authenticate`` first message, token expiry
and ``refresh`` (see :mod:`wsapp.server` for the wire format, :mod:`wsapp.identity` for the
close codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from .exceptions import MessageError
from .handshake import HandshakeProtocol
from .identity import NOT_AUTHENTICATED, TOKEN_EXPIRED, TokenError, User
from .messages import INVALID_REQUEST, INVALID_TOKEN, Request, parse_request, with_id
from .messages import NOT_AUTHENTICATED as NOT_AUTHENTICATED_ERROR

__all__ = ["IdentityMixin"]

log = Logger()


class IdentityMixin(HandshakeProtocol):
    """The base of :class:`wsapp.server.ServerProtocol`: what it does with its user."""

    # the ServerProtocol this is mixed into provides the rest
    factory: Any
    refuse: Any
    request_failed: Any
    send_event: Any
    close_with: Any
    _finish_open: Any

    #: Who this connection is (None: anonymous); set at the handshake, changed by refresh.
    user: User | None = None
    #: Whether this connection has yet to send its ``authenticate`` message.
    awaiting_authentication = False
    _authenticating = False
    _auth_timer: Any = None
    _expiry_timer: Any = None

    def _first_message(self, payload: bytes, isBinary: bool) -> None:
        """Before ``authenticate`` succeeded, only an ``authenticate`` request is served."""
        try:
            request = parse_request(payload, isBinary)
        except MessageError as error:
            self.refuse(error, None)
            return
        if request.action != "authenticate" or self._authenticating:
            detail = "send {'action': 'authenticate', 'token': T} first"
            self.refuse(MessageError(NOT_AUTHENTICATED_ERROR, detail), request)
            return
        self._authenticating = True
        checking = self.factory.guard.identity.user(request.fields.get("token"))
        checking.addCallbacks(
            self._authenticated,
            self._authentication_failed,
            callbackArgs=(request,),
            errbackArgs=(request,),
        )

    def _authenticated(self, user: User, request: Request) -> None:
        if self.state != self.STATE_OPEN or not self.awaiting_authentication:
            return
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self.user = user
        self.awaiting_authentication = False
        log.info("{peer}: authenticated as {user}", peer=self.peer, user=user.id)
        self.send_event(
            with_id({"type": "authenticated", "user": user.id, "expires": user.expires}, request.id)
        )
        self._finish_open()

    def _authentication_failed(self, failure: Failure, request: Request) -> None:
        self._authenticating = False
        if not failure.check(TokenError):
            self.request_failed(failure, request)
            return
        why = failure.getErrorMessage()
        log.info("{peer}: token refused: {why}", peer=self.peer, why=why)
        if self.state == self.STATE_OPEN:
            self.refuse(MessageError(INVALID_TOKEN, why), request)
            self.close_with(NOT_AUTHENTICATED, f"not authenticated: {why}"[:120])

    def _not_authenticated(self) -> None:
        self._auth_timer = None
        if self.state == self.STATE_OPEN and self.awaiting_authentication:
            log.info("{peer}: closed: not authenticated in time", peer=self.peer)
            self.close_with(NOT_AUTHENTICATED, "not authenticated in time")

    def _watch_expiry(self) -> None:
        """Close with 4001 when the user's token expires (unless refreshed first)."""
        if self._expiry_timer is not None and self._expiry_timer.active():
            self._expiry_timer.cancel()
        self._expiry_timer = None
        if self.user is None or self.user.expires is None:
            return
        reactor = self.factory.reactor
        leeway = self.factory.guard.identity.config.jwt.leeway
        delay = max(0.0, self.user.expires + leeway - reactor.seconds())
        self._expiry_timer = reactor.callLater(delay, self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        if self.state == self.STATE_OPEN:
            log.info("{peer}: closed: token expired", peer=self.peer)
            self.close_with(TOKEN_EXPIRED, "token expired")

    def action_authenticate(self, request: Request) -> None:
        raise MessageError(INVALID_REQUEST, "this connection is authenticated already")

    async def action_refresh(self, request: Request) -> Mapping[str, Any]:
        """Replace this connection's token with a newer one for the same user."""
        if self.user is None:
            raise MessageError(INVALID_REQUEST, "an anonymous connection has no token to refresh")
        try:
            user = await self.factory.guard.identity.user(request.fields.get("token"))
        except TokenError as error:
            raise MessageError(INVALID_TOKEN, str(error)) from None
        if user.id != self.user.id:
            raise MessageError(INVALID_TOKEN, "the new token is for another user")
        self.user = user
        self._watch_expiry()
        return {"type": "refreshed", "expires": user.expires}
