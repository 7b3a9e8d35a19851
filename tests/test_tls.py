"""TLS from config: wss:// and https:// on one port, checked against a throwaway CA."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
import websockets

from tests.conftest import aio, the_reactor
from wsapp.config import Config, TlsConfig
from wsapp.exceptions import ConfigError
from wsapp.service import ServerService
from wsapp.tls import TLSServerEndpoint


@pytest.fixture
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_config(tmp_path: Path, certificate_authority: trustme.CA) -> Config:
    """A config serving a certificate for 127.0.0.1 and localhost issued by the throwaway CA."""
    issued = certificate_authority.issue_cert("127.0.0.1", "localhost")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    return Config(tls=TlsConfig(certificate=str(certificate), private_key=str(key)))


def trusting(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    certificate_authority.configure_trust(context)
    return context


@pytest_twisted.ensureDeferred
async def test_wss_with_certificate_checking(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """A websockets client that checks the certificate talks to the counter over wss://."""
    server = start_server(tls_config)
    url = f"wss://127.0.0.1:{server.port}/counter"

    async def talk() -> list[Any]:
        async with websockets.connect(url, ssl=trusting(certificate_authority)) as websocket:
            received = [json.loads(await websocket.recv()) for _ in range(2)]
            await websocket.send(json.dumps({"action": "plus", "id": 1}))
            return [*received, json.loads(await websocket.recv())]

    assert await aio(talk()) == [
        {"type": "state", "value": 0},
        {"type": "users", "count": 1},
        {"type": "state", "value": 1, "id": 1},
    ]


@pytest_twisted.ensureDeferred
async def test_untrusted_client_refuses_and_https_answers(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """A client not trusting the CA fails verification; a trusting one gets HTTP over TLS."""
    server = start_server(tls_config)

    async def untrusted() -> None:
        async with websockets.connect(
            f"wss://127.0.0.1:{server.port}/counter", ssl=ssl.create_default_context()
        ):
            pass

    with pytest.raises(ssl.SSLCertVerificationError):
        await aio(untrusted())

    async def https_status() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=trusting(certificate_authority)
        )
        writer.write(b"GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line

    assert (await aio(https_status())).startswith(b"HTTP/1.1 404")


async def https_get(port: int, context: ssl.SSLContext, path: str = "/health") -> tuple[bytes, Any]:
    """GET ``path`` over TLS with ``context``; the status line and the negotiated ALPN."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), 5)
        return line, writer.get_extra_info("ssl_object").selected_alpn_protocol()
    finally:
        writer.close()


async def curl(*args: str) -> tuple[int, str, str]:
    """Run curl (bounded to 10 s); its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
@pytest_twisted.ensureDeferred
async def test_curl_with_alpn_gets_health_over_http_1_1(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA, tmp_path: Path
) -> None:
    """curl offering ALPN h2 and http/1.1, checking the certificate, gets 200 over HTTP/1.1."""
    server = start_server(tls_config)
    ca = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca))
    url = f"https://localhost:{server.port}/health"
    code, out, err = await aio(
        curl("--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_code} %{http_version}", url)
    )
    assert (code, out, err) == (0, "200 1.1", "")


@pytest_twisted.ensureDeferred
async def test_alpn_picks_http_1_1_and_an_h2_only_client_still_gets_http(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """ALPN selects http/1.1 over h2; a client offering only h2 gets no ALPN and HTTP/1.1."""
    server = start_server(tls_config)
    for offered, selected in [(["h2", "http/1.1"], "http/1.1"), (["h2"], None), ([], None)]:
        context = trusting(certificate_authority)
        if offered:
            context.set_alpn_protocols(offered)
        line, alpn = await aio(https_get(server.port, context))
        assert (line[:12], alpn) == (b"HTTP/1.1 200", selected), offered


@pytest_twisted.ensureDeferred
async def test_tls_context_uses_no_deprecated_pyopenssl_objects(
    start_server: Any, tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """Serving TLS from tls.certificate/private_key warns nothing about X509 or PKey objects."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = start_server(tls_config)
        line, _ = await aio(https_get(server.port, trusting(certificate_authority)))
    assert line.startswith(b"HTTP/1.1 200")
    deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not [message for message in deprecated if "pyOpenSSL" in message], deprecated


@pytest.fixture
def services() -> Iterator[list[ServerService]]:
    """Services a test started itself; stopped afterwards."""
    started: list[ServerService] = []
    yield started
    for service in started:
        pytest_twisted.blockon(service.stopService())


@needs_curl
@pytest_twisted.ensureDeferred
async def test_ssl_endpoint_string_serves_browsers_too(
    services: list[ServerService],
    tls_config: Config,
    certificate_authority: trustme.CA,
    tmp_path: Path,
) -> None:
    """A port given as a Twisted ssl: endpoint string also answers curl, which offers ALPN."""
    files = f"certKey={tls_config.tls.certificate}:privateKey={tls_config.tls.private_key}"
    config = replace(Config(), port=f"ssl:0:interface=127.0.0.1:{files}")
    service = ServerService(config, source="test", reactor=the_reactor())
    service.startService()
    services.append(service)
    assert service.port is not None
    ca = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca))
    url = f"https://localhost:{service.port.getHost().port}/health"
    code, out, err = await aio(
        curl("--cacert", str(ca), "-o", "/dev/null", "-w", "%{http_code}", url)
    )
    assert (code, out, err) == (0, "200", "")


def test_unusable_certificate_or_key_names_the_key(tmp_path: Path, tls_config: Config) -> None:
    """A certificate file with no PEM certificate, or a key not matching it, names its key."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    other_key = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    for tls, key in [
        (replace(tls_config.tls, certificate=str(garbage)), "tls.certificate"),
        (replace(tls_config.tls, private_key=str(garbage)), "tls.private_key"),
        (replace(tls_config.tls, private_key=str(other_key)), "tls.private_key"),
    ]:
        config = replace(tls_config, tls=tls, port="tcp:0:interface=127.0.0.1")
        with pytest.raises(ConfigError) as error:
            ServerService(config, source="site.yaml", reactor=the_reactor())
        assert error.value.key == key and str(error.value).startswith(f"site.yaml: {key}: ")
        assert "\n" not in str(error.value)


@pytest_twisted.ensureDeferred
async def test_ssl_endpoint_string_uses_the_same_tls_as_the_tls_settings(
    services: list[ServerService], tls_config: Config, certificate_authority: trustme.CA
) -> None:
    """An ssl: port with certKey/privateKey is served by wsapp's TLS: no pyOpenSSL warnings."""
    files = f"certKey={tls_config.tls.certificate}:privateKey={tls_config.tls.private_key}"
    config = replace(Config(), port=f"ssl:0:interface=127.0.0.1:{files}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        service = ServerService(config, source="test", reactor=the_reactor())
        assert isinstance(service.listener.endpoint, TLSServerEndpoint)
        service.startService()
        services.append(service)
