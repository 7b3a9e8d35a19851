"""Public-key tokens: a PEM key file, and a JWKS served on loopback with key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet import endpoints
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.conftest import aio, the_reactor
from tests.rawws import status_of
from wsapp.config import AppConfig, AuthConfig, Config, JwtConfig
from wsapp.tokens import TokenError, TokenVerifier

APPS = {"/counter": AppConfig("wsapp.apps.counter:CounterProtocol")}


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time() + 60), **extra}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.parametrize(
    ("make_key", "algorithm"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_public_key_file_checks_its_algorithm_only(
    start_server: Any, tmp_path: Path, make_key: Any, algorithm: str
) -> None:
    """A PEM public key admits tokens it signed; an HS256 token keyed by its PEM text is refused."""
    key = make_key()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    auth = AuthConfig(jwt=JwtConfig(public_key_file=str(tmp_path / "key.pem")))
    server = start_server(Config(apps=APPS, auth=auth))
    good = jwt.encode(claims(), key, algorithm)
    assert await aio(status_of(server.port, "/counter", bearer(good))) == 101
    other = jwt.encode(claims(), make_key(), algorithm)
    assert await aio(status_of(server.port, "/counter", bearer(other))) == 401
    # algorithm confusion: the public key's text as an HMAC secret
    confused = hs256_by_hand(claims(), pem)
    assert await aio(status_of(server.port, "/counter", bearer(confused))) == 401


def hs256_by_hand(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 token built without PyJWT (which refuses a PEM key as a secret)."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = part(b'{"alg":"HS256","typ":"JWT"}') + b"." + part(json.dumps(payload).encode())
    signature = hmac.new(secret, signing, hashlib.sha256).digest()
    return (signing + b"." + part(signature)).decode()


class Jwks(Resource):
    """A JWKS document whose keys a test changes; counts the fetches."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0

    def render_GET(self, request: Any) -> bytes:
        self.fetches += 1
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"keys": self.keys}).encode()


def jwk_of(key: Any, kid: str) -> dict[str, Any]:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest_twisted.ensureDeferred
async def test_jwks_fetched_cached_and_refetched_for_a_new_kid(start_server: Any) -> None:
    """JWKS keys admit their tokens; a new kid is refetched once; unknown kids are rate-limited."""
    jwks = Jwks()
    endpoint = endpoints.TCP4ServerEndpoint(the_reactor(), 0, interface="127.0.0.1")
    port = await endpoint.listen(Site(jwks))
    try:
        first, second = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "12"
        )
        jwks.keys = [jwk_of(first, "k1")]
        url = f"http://127.0.0.1:{port.getHost().port}/jwks.json"
        auth = AuthConfig(jwt=JwtConfig(jwks_url=url))
        server = start_server(Config(apps=APPS, auth=auth))

        def signed(key: Any, kid: str) -> dict[str, str]:
            return bearer(jwt.encode(claims(), key, "RS256", headers={"kid": kid}))

        assert await aio(status_of(server.port, "/counter", signed(first, "k1"))) == 101
        assert await aio(status_of(server.port, "/counter", signed(first, "k1"))) == 101
        assert jwks.fetches == 1
        jwks.keys.append(jwk_of(second, "k2"))
        verifier = server.factory("/counter").guard.identity.verifier
        verifier._fetched_at -= 11  # the refetch interval has passed
        assert await aio(status_of(server.port, "/counter", signed(second, "k2"))) == 101
        assert jwks.fetches == 2
        for _ in range(3):  # unknown kids within the interval fetch nothing more
            assert await aio(status_of(server.port, "/counter", signed(second, "k3"))) == 401
        assert jwks.fetches == 2
        assert await aio(status_of(server.port, "/counter", signed(second, "k1"))) == 401
    finally:
        await port.stopListening()


def test_verifier_refuses_none_even_when_listed() -> None:
    """An unsigned token is refused whatever the configured algorithms."""
    verifier = TokenVerifier(JwtConfig(secret="s" * 32, algorithms=("HS256",)))
    outcome: list[Any] = []
    verifier.verify(jwt.encode(claims(), None, "none")).addBoth(outcome.append)
    assert outcome[0].check(TokenError) and "alg none" in outcome[0].getErrorMessage()
