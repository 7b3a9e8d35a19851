"""The counter page over https:// and its WebSocket over wss:// in Debian's Chromium."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.async_api import Browser

from tests.conftest import aio
from tests.test_page import CHROMIUM, chromium, open_page, shows
from wsapp.config import Config, TlsConfig

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@pytest.fixture
def issued(tmp_path: Path) -> tuple[Config, str]:
    """A TLS config with a certificate for 127.0.0.1 from a throwaway CA, and its SPKI hash."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certificate))
    cert.private_key_pem.write_to_path(str(key))
    public_key = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki_hash = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return Config(tls=TlsConfig(certificate=str(certificate), private_key=str(key))), spki_hash


@pytest.fixture
def pinned_browser(issued: tuple[Config, str]) -> Iterator[Browser]:
    """A headless Chromium accepting exactly the issued certificate's key, nothing else."""
    with chromium(f"--ignore-certificate-errors-spki-list={issued[1]}") as launched:
        yield launched


@pytest_twisted.ensureDeferred
async def test_counter_page_over_https_and_wss(
    pinned_browser: Browser, start_server: Any, issued: tuple[Config, str]
) -> None:
    """Chromium loads the page over https (ALPN offered), connects over wss and counts."""
    server = start_server(issued[0])
    page = await aio(open_page(pinned_browser, f"https://127.0.0.1:{server.port}/counter.html"))
    await aio(shows(page, "0", "1 user online"))
    await aio(page.click(".plus"))
    await aio(shows(page, "1", "1 user online"))
    assert server.factory("/counter").hub.backend.integers["/counter"] == 1
    protocol = await aio(
        page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    )
    assert protocol == "http/1.1"
