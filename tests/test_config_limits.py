"""The limits, tls, origins, auth and shutdown sections of config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsapp import config
from wsapp.config import Config, TlsConfig
from wsapp.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "wsapp.yaml"
    path.write_text(text)
    return config.load(path)


def test_shipped_config_holds_the_defaults() -> None:
    """config.yaml documents exactly the built-in defaults of the new sections."""
    shipped = config.load(ROOT / "config.yaml")
    defaults = Config()
    for section in ("limits", "tls", "origins", "auth", "shutdown"):
        assert getattr(shipped, section) == getattr(defaults, section), section
    assert {path: app.max_connections for path, app in shipped.apps.items()} == {
        path: app.max_connections for path, app in defaults.apps.items()
    }


def test_sections_are_read(tmp_path: Path) -> None:
    """Values in each section reach the frozen dataclasses."""
    loaded = load_text(
        tmp_path,
        "limits: {rate: 5, burst: 10, slow_consumer: close, max_connections_per_address: 3}\n"
        "origins: [https://app.example]\n"
        "auth: {tokens: [abc]}\n"
        "shutdown: {grace_period: 1.5}\n"
        "apps: {/counter: {protocol: 'wsapp.apps.counter:CounterProtocol', max_connections: 7}}\n",
    )
    assert (loaded.limits.rate, loaded.limits.burst, loaded.limits.slow_consumer) == (
        5.0,
        10,
        "close",
    )
    assert loaded.limits.max_connections_per_address == 3
    assert loaded.origins == ("https://app.example",)
    assert loaded.auth.tokens == ("abc",)
    assert loaded.shutdown.grace_period == 1.5
    assert loaded.apps["/counter"].max_connections == 7


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("limits: {rate: -1}", "limits.rate", "between"),
        ("limits: {burst: 0}", "limits.burst", "between"),
        ("limits: {burst: 1.5}", "limits.burst", "integer"),
        ("limits: {slow_consumer: drop}", "limits.slow_consumer", "one of: coalesce, close"),
        ("limits: {high_water_mark: 10}", "limits.high_water_mark", "between"),
        ("limits: {auto_ping_timeout: 0}", "limits.auto_ping_timeout", "between"),
        ("limits: {max_conections: 5}", "limits.max_conections", "unknown key"),
        ("limits: 5", "limits", "expected a mapping"),
        ("origins: https://app.example", "origins", "list of strings"),
        ("origins: [1, 2]", "origins", "list of strings"),
        ("auth: {tokens: abc}", "auth.tokens", "list of strings"),
        ("shutdown: {grace_period: never}", "shutdown.grace_period", "expected a number"),
        ("tls: {certificate: cert.pem}", "tls", "both certificate and private_key"),
        ("tls: {certificate: no.pem, private_key: no.key}", "tls.certificate", "no such file"),
        (
            "apps: {/chat: {protocol: 'wsapp.apps.chat:ChatProtocol', max_connections: -1}}",
            "apps./chat.max_connections",
            "between",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """An invalid value is refused with the file name, the dotted key and the problem."""
    with pytest.raises(ConfigError) as raised:
        load_text(tmp_path, text + "\n")
    assert raised.value.source == str(tmp_path / "wsapp.yaml")
    assert raised.value.key == key
    assert problem in raised.value.message
    assert str(tmp_path / "wsapp.yaml") in str(raised.value) and key in str(raised.value)


def test_tls_turns_a_tcp_port_into_an_ssl_endpoint(tmp_path: Path) -> None:
    """With a certificate and key, tcp:PORT:... becomes ssl:PORT:...:certKey=...:privateKey=..."""
    tls = TlsConfig(certificate="/etc/c:1.pem", private_key="k.pem")
    assert config.server_endpoint(Config(port="tcp:8443:interface=127.0.0.1", tls=tls)) == (
        r"ssl:8443:interface=127.0.0.1:certKey=/etc/c\:1.pem:privateKey=k.pem"
    )
    assert config.server_endpoint(Config(port="tcp:8000")) == "tcp:8000"
    assert config.server_endpoint(Config(port="unix:/tmp/s", tls=tls)) == "unix:/tmp/s"
