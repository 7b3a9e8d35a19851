"""
Who a connection is: users from connection tokens, channel tokens, revocation and kicks.

A connection's ``user`` is None (anonymous) or a :class:`User` made from a connection token
(a JWT checked by :class:`~wsapp.tokens.TokenVerifier`): ``sub`` is the user id, ``info``
public data shown in presence, ``channels`` the patterns (``orders:*``) of the channels it
may use where a namespace asks for a ``capability``, ``jti`` the token id and ``exp`` when
it expires. A channel token is a JWT with ``sub`` (the user) and ``channel`` claims.

:class:`Identity` is shared by every app of a server: it checks tokens against the
deny-list of the backend, and :meth:`Identity.revoke` and :meth:`Identity.kick` close the
connections concerned on every process sharing the backend, through a notice on the server
channel :data:`NOTICES`.

Close codes a client may get (the reason says more):

- :data:`TOKEN_EXPIRED` (4001): the token's ``exp`` passed without a ``refresh``; fetch a
  new token and connect again;
- :data:`NOT_AUTHENTICATED` (4002): no valid ``authenticate`` message came within
  ``limits.open_handshake_timeout`` seconds of the opening handshake;
- :data:`REVOKED` (4003): the token was revoked or the user was kicked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .backends import Backend, PresenceChange
from .channels import Position, Publication
from .config import AuthConfig
from .tokens import TokenError, TokenVerifier

__all__ = [
    "NOTICES",
    "NOT_AUTHENTICATED",
    "REVOKED",
    "TOKEN_EXPIRED",
    "Identity",
    "TokenError",
    "User",
]

log = Logger()

#: Close code: the connection token expired.
TOKEN_EXPIRED = 4001
#: Close code: the connection did not authenticate in time (or with a valid token).
NOT_AUTHENTICATED = 4002
#: Close code: the token was revoked, or its user kicked.
REVOKED = 4003

#: The server channel carrying revocations and kicks to every process.
NOTICES = "$wsapp:identity"
#: Notices kept in the channel's history, so a process that missed some (a Redis
#: reconnection) gets them from there, in order; and for how many seconds.
NOTICE_HISTORY = 1000
NOTICE_TTL = 3600.0
#: Seconds between two attempts to listen to :data:`NOTICES` while the backend is down.
RETRY = 0.5


@dataclass(frozen=True)
class User:
    """A connection's user, from its token (or from an app's ``authenticate``)."""

    id: str
    #: Public data, shown in presence and join events.
    info: Mapping[str, Any] = field(default_factory=dict)
    #: Patterns of the channels this user may use where a namespace asks for a capability.
    capabilities: tuple[str, ...] = ()
    #: The token's ``jti``, by which it can be revoked.
    token_id: str | None = None
    #: Unix time the token expires (None: never, for users an app made).
    expires: float | None = None

    def may_use(self, channel: str) -> bool:
        """Whether one of :attr:`capabilities` matches ``channel`` (fnmatch patterns)."""
        return any(fnmatchcase(channel, pattern) for pattern in self.capabilities)


def user_from_claims(claims: Mapping[str, Any]) -> User:
    """The :class:`User` of a checked connection token's claims; :class:`TokenError` if odd."""
    info = claims.get("info", {})
    if not isinstance(info, Mapping):
        raise TokenError("invalid token: 'info' must be an object")
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(item, str) for item in channels):
        raise TokenError("invalid token: 'channels' must be a list of strings")
    token_id = claims.get("jti")
    if token_id is not None and not isinstance(token_id, str):
        raise TokenError("invalid token: 'jti' must be a string")
    expires = claims.get("exp")
    return User(
        claims["sub"],
        dict(info),
        tuple(channels),
        token_id,
        float(expires) if isinstance(expires, int | float) else None,
    )


class Identity:
    """Token checks, the deny-list and the notices of one server's apps."""

    def __init__(self, config: AuthConfig, *, backend: Backend | None = None, reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.backend = backend
        jwt = config.jwt
        configured = jwt.secret or jwt.secret_file or jwt.public_key_file or jwt.jwks_url
        #: What checks tokens; None without ``auth.jwt``.
        self.verifier = TokenVerifier(jwt, reactor=reactor) if configured else None
        #: The factories whose connections notices concern.
        self.factories: list[Any] = []
        #: Fires once this process hears notices (every process started before a revocation
        #: closes its connections).
        self.ready: Deferred[None] = Deferred()
        #: The hub notices come through (set by :func:`wsapp.service.build_site`).
        self.hub: Any = None
        self._running = False

    @property
    def requires_user(self) -> bool:
        """Whether a connection must authenticate (JWT configured, anonymous not allowed)."""
        return self.verifier is not None and not self.config.anonymous

    # --- tokens ---

    def user(self, token: object) -> Deferred[User]:
        """The user of connection token ``token``; fails with :class:`TokenError`."""
        if self.verifier is None:
            return _failed(TokenError("no connection tokens are configured"))
        checking = self.verifier.verify(token).addCallback(user_from_claims)
        return checking.addCallback(self._not_revoked)

    def channel_claims(self, token: object, user: User | None, channel: str) -> Deferred[Any]:
        """Check a channel token for ``user`` and ``channel``; fails with :class:`TokenError`."""
        if self.verifier is None:
            return _failed(TokenError("no channel tokens are configured"))

        def check(claims: Mapping[str, Any]) -> Mapping[str, Any]:
            if claims.get("channel") != channel:
                raise TokenError(f"the channel token is not for {channel!r}")
            if user is None or claims["sub"] != user.id:
                raise TokenError("the channel token is for another user")
            return claims

        return self.verifier.verify(token).addCallback(check)

    def _not_revoked(self, user: User) -> Deferred[User]:
        if user.token_id is None or self.backend is None:
            return succeed(user)

        def check(revoked: bool) -> User:
            if revoked:
                raise TokenError("token revoked")
            return user

        return self.backend.denied(f"jti:{user.token_id}").addCallback(check)

    # --- revocation and kicks ---

    def revoke(self, token_id: str, until: float) -> Deferred[None]:
        """
        Refuse token ``token_id`` (a ``jti``) until Unix time ``until`` (its ``exp``) and
        close its connections with 4003, on every process sharing the backend.
        """
        backend = self._backend()
        denying = backend.deny(f"jti:{token_id}", until)
        denying.addCallback(lambda _: self._notify({"revoke": token_id}))
        return denying.addCallback(lambda _: None)

    def kick(self, user_id: str) -> Deferred[None]:
        """Close every connection of ``user_id`` with 4003, on every process."""
        return self._notify({"kick": user_id}).addCallback(lambda _: None)

    def _notify(self, notice: Mapping[str, Any]) -> Deferred[Any]:
        return self._backend().publish(
            NOTICES, notice, history_size=NOTICE_HISTORY, history_ttl=NOTICE_TTL
        )

    def _backend(self) -> Backend:
        if self.backend is None:
            raise RuntimeError("revocation needs the server's backend")
        return self.backend

    def closed_by(self, notice: Mapping[str, Any]) -> int:
        """Close this process's connections that ``notice`` names; return how many."""
        kick, revoke = notice.get("kick"), notice.get("revoke")
        closed = 0
        for factory in self.factories:
            for connection in list(factory.registry):
                user = connection.user
                if user is None:
                    continue
                if user.id == kick or (revoke is not None and user.token_id == revoke):
                    reason = "user kicked" if user.id == kick else "token revoked"
                    log.info("{peer}: closed: {why}", peer=connection.peer, why=reason)
                    connection.close_with(REVOKED, reason)
                    closed += 1
        return closed

    # --- listening to notices (the hub calls these as a channel listener) ---

    @property
    def factory(self) -> Identity:
        """The hub groups members by factory: this listener is its own."""
        return self

    def start(self) -> None:
        """Listen to :data:`NOTICES` through the hub, retrying while the backend is down."""
        self._running = self.hub is not None
        self._listen()

    def _listen(self) -> None:
        if not self._running:
            return

        def listening(_: object) -> None:
            if not self.ready.called:
                self.ready.callback(None)

        def failed(failure: Failure) -> None:
            deferLater(self.reactor, RETRY, self._listen).addErrback(lambda _: None)

        subscribing = Deferred.fromCoroutine(self.hub.subscribe(NOTICES, self))
        subscribing.addCallbacks(listening, failed)

    def stop(self) -> None:
        """Stop listening to notices."""
        self._running = False
        if self.hub is not None:
            self.hub.unsubscribe(NOTICES, self)

    def channel_publication(self, channel: str, publication: Publication, members: Any) -> None:
        if isinstance(publication.data, Mapping):
            self.closed_by(publication.data)

    def channel_lost(self, channel: str, position: Position, members: Any) -> None:
        log.warn("Missed revocation or kick notices: checking the open connections' tokens")
        self.recheck()

    def recheck(self) -> None:
        """Close this process's connections whose token is on the deny-list now."""
        if self.backend is None:
            return
        for factory in self.factories:
            for connection in list(factory.registry):
                user = connection.user
                if user is None or user.token_id is None:
                    continue
                checking = self.backend.denied(f"jti:{user.token_id}")
                checking.addCallback(self._close_if_denied, connection)
                checking.addErrback(lambda _: None)  # the next loss checks again

    def _close_if_denied(self, denied: bool, connection: Any) -> None:
        if denied and connection.state == connection.STATE_OPEN:
            log.info("{peer}: closed: token revoked", peer=connection.peer)
            connection.close_with(REVOKED, "token revoked")

    def channel_presence(self, channel: str, change: PresenceChange, members: Any) -> None:
        """Notices have no presence."""


def _failed(error: Exception) -> Deferred[Any]:
    failing: Deferred[Any] = Deferred()
    failing.errback(error)
    return failing
