"""Loading and validating config.yaml: values, defaults, and every kind of mistake."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import ROOT
from wsapp import config
from wsapp.config import AppConfig, CompressionConfig, Config
from wsapp.exceptions import ConfigError
from wsapp.service import build_site, load_protocol


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wsapp.yaml"
    path.write_text(text)
    return path


def effective(settings: Config) -> Config:
    """``settings`` with each app's options merged over its protocol's defaults."""
    apps = {}
    for path, app in settings.apps.items():
        protocol = load_protocol(app.protocol, "test", path)
        options = config.resolve_options(protocol.default_options, app.options, "test", path)
        apps[path] = replace(app, options=options)
    return replace(settings, apps=apps)


def test_shipped_config_yaml_states_the_defaults() -> None:
    """config.yaml documents exactly the built-in defaults."""
    assert effective(config.load(ROOT / "config.yaml")) == effective(Config())


def test_file_values_are_loaded(tmp_path: Path) -> None:
    """Values from a file replace the defaults; a bare port number becomes a tcp endpoint."""
    path = write(
        tmp_path,
        """
port: 9000
apps:
  /count: wsapp.apps.counter:CounterProtocol
  /deep/echo:
    protocol: wsapp.apps.echo:EchoProtocol
    max_message_size: 1024
    options: {}
compression: {level: 1, client_no_context_takeover: true}
""",
    )
    loaded = config.load(path)
    assert loaded.port == "tcp:9000"
    assert loaded.apps == {
        "/count": AppConfig("wsapp.apps.counter:CounterProtocol"),
        "/deep/echo": AppConfig("wsapp.apps.echo:EchoProtocol", max_message_size=1024),
    }
    assert loaded.compression == CompressionConfig(level=1, client_no_context_takeover=True)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    """An empty file (or one of comments only) gives the defaults."""
    assert config.load(write(tmp_path, "# nothing here\n")) == Config()


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            "prot: 80",
            "prot",
            "unknown key (expected one of: api, apps, auth, backend, channels, compression, "
            "dashboard, limits, origins, port, proxy, server_header, shutdown, state_file, "
            "state_interval, tls, workers)",
        ),
        ("port: [80]", "port", "expected a port number or endpoint string, got a list"),
        ("port: 70000", "port", "port 70000 is out of range (0-65535)"),
        ("port: localhost", "port", "neither a port number nor an endpoint string"),
        ("compression: yes", "compression", "expected a mapping, got a boolean"),
        ("compression: {level: 10}", "compression.level", "must be between 1 and 9, got 10"),
        ("compression: {level: '3'}", "compression.level", "expected an integer, got a string"),
        (
            "compression: {enabled: 1}",
            "compression.enabled",
            "expected true or false, got an integer",
        ),
        ("compression: {window: 9}", "compression.window", "unknown key"),
        ("apps: []", "apps", "expected a mapping of URL paths to apps, got a list"),
        ("apps: {counter: a.b:C}", "apps.counter", "an app path must look like /name"),
        (
            "apps: {/c: a.b.C}",
            "apps./c.protocol",
            "expected an import path like package.module:Class",
        ),
        ("apps: {/c: {max_message_size: 5}}", "apps./c.protocol", "required key is missing"),
        ("apps: {/c: {protocol: a:B, max_frame_size: 0}}", "apps./c.max_frame_size", "between"),
        ("apps: {/c: {protocol: a:B, options: 3}}", "apps./c.options", "expected a mapping"),
        ("apps: {/c: {protocol: a:B, limit: 3}}", "apps./c.limit", "unknown key"),
        ("- 1\n- 2", "(top level)", "expected a mapping, got a list"),
    ],
)
def test_invalid_values_name_file_and_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    """Every invalid value is refused with the file, the dotted key and what was expected."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert error.value.source == str(path)
    assert error.value.key == key
    assert message in error.value.message
    assert str(error.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda path: None, "cannot read file: No such file or directory"),
        (lambda path: path.mkdir(), "cannot read file: Is a directory"),
        (lambda path: path.write_bytes(b"port: \xff\n"), "cannot read file"),
        (
            lambda path: path.write_text("apps: {/c: [\n"),
            "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        ),
        (
            lambda path: path.write_text("port: 80\n  bad: 1\n"),
            "invalid YAML at line 2, column 6: mapping values are not allowed here",
        ),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, setup: object, message: str) -> None:
    """A missing, unreadable or malformed file is a ConfigError naming the file."""
    path = tmp_path / "broken.yaml"
    setup(path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("app", "key", "message"),
    [
        (AppConfig("no.such.module:App"), "apps./x.protocol", "cannot import 'no.such.module'"),
        (AppConfig("wsapp.apps.counter:Nope"), "apps./x.protocol", "is not a subclass"),
        (AppConfig("wsapp.config:Config"), "apps./x.protocol", "is not a subclass"),
        (
            AppConfig("wsapp.apps.clock:ClockProtocol", options={"intervall": 1}),
            "apps./x.options.intervall",
            "unknown option (expected one of: interval)",
        ),
        (
            AppConfig("wsapp.apps.clock:ClockProtocol", options={"interval": "1s"}),
            "apps./x.options.interval",
            "expected a number, got a string",
        ),
        (
            AppConfig("wsapp.apps.clock:ClockProtocol", options={"interval": 0}),
            "apps./x.options",
            "'interval' must be a positive number of seconds",
        ),
        (
            AppConfig("wsapp.apps.counter:CounterProtocol", options={"max_amount": 0}),
            "apps./x.options",
            "'max_amount' must be at least 1",
        ),
    ],
)
def test_apps_that_cannot_be_mounted_name_their_key(app: AppConfig, key: str, message: str) -> None:
    """Import paths and app options are checked when the site is built, naming the key."""
    with pytest.raises(ConfigError) as error:
        build_site(Config(apps={"/x": app}), source="site.yaml")
    assert (error.value.source, error.value.key) == ("site.yaml", key)
    assert message in error.value.message
