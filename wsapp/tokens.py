"""
Checking JSON Web Tokens: the keys of ``auth.jwt`` and the claims wsapp reads.

A :class:`TokenVerifier` checks a token's signature with the configured key (an HS* secret,
a PEM public key, or the keys of a JWKS document) and its ``exp``, ``nbf``, ``iat``,
``aud`` and ``iss`` claims, with PyJWT. Only the algorithms of the key (or
``auth.jwt.algorithms``) are accepted, never ``none``. A JWKS document is fetched with treq,
without blocking the reactor, kept for ``jwks_cache`` seconds, and fetched again (at most
every :data:`REFETCH_INTERVAL` seconds) when a token names a ``kid`` it does not hold.

Every refusal is a :class:`TokenError` whose message names the reason, never the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .config import JwtConfig
from .exceptions import WsappError

__all__ = ["REFETCH_INTERVAL", "TokenError", "TokenVerifier"]

log = Logger()

#: Fewest seconds between two fetches of a JWKS document for unknown ``kid`` values.
REFETCH_INTERVAL = 10.0
#: Seconds a JWKS request may take.
FETCH_TIMEOUT = 10.0
#: Longest token read, in characters; a longer one is refused unread.
MAX_TOKEN_LENGTH = 8192

_HMAC = ["HS256", "HS384", "HS512"]
_RSA = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_EC = ["ES256", "ES384", "ES512"]


class TokenError(WsappError):
    """A token was refused; the message says why (never the token itself)."""


def _key_algorithms(key: Any) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ["EdDSA"]
    raise ValueError(f"unsupported public key type {type(key).__name__}")


class TokenVerifier:
    """Checks tokens against the key ``config`` names (one of its key fields must be set)."""

    def __init__(self, config: JwtConfig, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self._key: Any = None
        self._algorithms: list[str] = []
        if config.secret or config.secret_file:
            secret = config.secret or Path(config.secret_file).read_text("utf-8").strip()
            self._key, self._algorithms = secret.encode(), _HMAC
        elif config.public_key_file:
            self._key = load_pem_public_key(Path(config.public_key_file).read_bytes())
            self._algorithms = _key_algorithms(self._key)
        elif not config.jwks_url:
            raise ValueError("auth.jwt names no key")
        if config.algorithms:
            self._algorithms = [name for name in self._algorithms if name in config.algorithms]
            if config.jwks_url:
                self._algorithms = list(config.algorithms)
        #: The JWKS document's usable keys, by ``kid`` ("" for a key without one).
        self.jwks: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._fetching: Deferred[None] | None = None
        self._waiting: list[Deferred[None]] = []

    def verify(self, token: object) -> Deferred[dict[str, Any]]:
        """Return the claims of ``token`` once checked; fail with :class:`TokenError`."""
        try:
            if not isinstance(token, str) or not token:
                raise TokenError("the token must be a non-empty string")
            if len(token) > MAX_TOKEN_LENGTH:
                raise TokenError(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as error:
                raise TokenError(f"malformed token: {error}") from None
            algorithm = header.get("alg")
            if not isinstance(algorithm, str) or algorithm.lower() == "none":
                raise TokenError("unsigned tokens (alg none) are not accepted")
            kid = header.get("kid", "")
            if not isinstance(kid, str):
                raise TokenError("the token's kid must be a string")
        except TokenError as error:
            return _failed(error)
        if not self.config.jwks_url:
            return _attempt(self._decode, token, self._key, self._algorithms)
        finding = self._jwks_key(kid)
        return finding.addCallback(self._decode_with_jwk, token)

    def _decode_with_jwk(self, jwk: jwt.PyJWK, token: str) -> dict[str, Any]:
        algorithm = getattr(jwk, "algorithm_name", "")
        algorithms = [algorithm] if algorithm else []
        if self.config.algorithms:
            algorithms = [name for name in algorithms if name in self.config.algorithms]
        return self._decode(token, jwk, algorithms)

    def _decode(self, token: str, key: Any, algorithms: list[str]) -> dict[str, Any]:
        config = self.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=config.audience or None,
                issuer=config.issuer or None,
                leeway=config.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.PyJWTError as error:
            raise TokenError(f"invalid token: {error}") from None
        except (ValueError, TypeError) as error:
            raise TokenError(f"invalid token: {error}") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenError("invalid token: 'sub' must be a non-empty string")
        return claims

    # --- JWKS ---

    def _jwks_key(self, kid: str) -> Deferred[jwt.PyJWK]:
        now = self.reactor.seconds()
        fresh = self._fetched_at is not None and now - self._fetched_at < self.config.jwks_cache
        may_refetch = self._fetched_at is None or now - self._fetched_at >= REFETCH_INTERVAL
        if fresh and (kid in self.jwks or not may_refetch):
            return _attempt(self._pick, kid)
        return self._refresh().addCallback(lambda _: self._pick(kid))

    def _pick(self, kid: str) -> jwt.PyJWK:
        key = self.jwks.get(kid)
        if key is None and not kid and len(self.jwks) == 1:
            key = next(iter(self.jwks.values()))
        if key is None:
            raise TokenError(f"no key {kid!r} in the JWKS" if kid else "the token names no kid")
        return key

    def _refresh(self) -> Deferred[None]:
        """Fetch the JWKS document (once for all callers at a time); keep the old on failure."""
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        if self._fetching is None:
            self._fetched_at = self.reactor.seconds()

            def done(result: object) -> None:
                self._fetching = None
                waiting, self._waiting = self._waiting, []
                for deferred in waiting:
                    deferred.callback(None)

            self._fetching = Deferred.fromCoroutine(self._fetch())
            self._fetching.addBoth(done)
        return waiter

    async def _fetch(self) -> None:
        import treq

        url = self.config.jwks_url
        try:
            response = await treq.get(url, timeout=FETCH_TIMEOUT)
            if response.code != 200:
                raise ValueError(f"HTTP {response.code}")
            document = await response.json()
            keys = document.get("keys") if isinstance(document, Mapping) else None
            if not isinstance(keys, list):
                raise ValueError("no 'keys' list")
        except Exception as error:
            log.warn("Cannot fetch the JWKS {url}: {error}", url=url, error=error)
            return
        found: dict[str, jwt.PyJWK] = {}
        for entry in keys:
            try:
                if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
                    continue
                key = jwt.PyJWK(dict(entry))
            except (jwt.PyJWTError, ValueError, TypeError) as error:
                log.warn("Skipped a JWKS key of {url}: {error}", url=url, error=error)
                continue
            found[str(entry.get("kid", ""))] = key
        self.jwks = found
        log.info("Fetched {count} keys from {url}", count=len(found), url=url)


def _failed(error: Exception) -> Deferred[Any]:
    failing: Deferred[Any] = Deferred()
    failing.errback(error)
    return failing


def _attempt(function: Any, *arguments: Any) -> Deferred[Any]:
    try:
        return succeed(function(*arguments))
    except TokenError as error:
        return _failed(error)
