"""
Configuration: frozen dataclasses loaded from ``config.yaml`` and validated.

Nothing here touches the network or Twisted, so the same objects come from a file, from
command-line overrides and from tests. Every validation error is a :class:`ConfigError`
naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from .exceptions import ConfigError

__all__ = [
    "AppConfig",
    "AuthConfig",
    "CompressionConfig",
    "Config",
    "LimitsConfig",
    "ShutdownConfig",
    "TlsConfig",
    "endpoint_description",
    "from_mapping",
    "load",
    "merge",
    "read",
    "redis_address",
    "resolve_options",
    "server_endpoint",
]

MiB = 1 << 20
T = TypeVar("T")


def _bounded(default: float, low: float, high: float) -> Any:
    return field(default=default, metadata={"range": (low, high)})


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": (default, *choices)})


@dataclass(frozen=True)
class CompressionConfig:
    """permessage-deflate (RFC 7692) settings, for the server's accepts and the client's offers."""

    enabled: bool = True
    #: zlib compression level, 1 (fastest) to 9 (smallest).
    level: int = _bounded(6, 1, 9)
    #: zlib memory level of each compressor, 1 to 9; 5 keeps a compressor near 64 KiB.
    memory_level: int = _bounded(5, 1, 9)
    #: LZ77 window of server-to-client messages, 9 to 15 bits.
    server_max_window_bits: int = _bounded(12, 9, 15)
    #: LZ77 window requested for client-to-server messages, 9 to 15 bits.
    client_max_window_bits: int = _bounded(15, 9, 15)
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    #: Messages shorter than this many bytes are sent uncompressed (and framed only once
    #: per broadcast): deflate gains nothing on them and costs a compressor each.
    min_size: int = _bounded(256, 0, 1 << 31)


@dataclass(frozen=True)
class AppConfig:
    """One WebSocket application mounted on a URL path."""

    #: ``"package.module:ProtocolClass"``, a :class:`wsapp.server.ServerProtocol` subclass.
    protocol: str
    #: Largest message accepted, after reassembly and decompression (bytes).
    max_message_size: int = _bounded(64 * 1024, 1, 1 << 31)
    #: Largest single frame accepted (bytes).
    max_frame_size: int = _bounded(64 * 1024, 1, 1 << 31)
    #: Most open connections of this app; 0: only ``limits.max_connections`` applies.
    max_connections: int = _bounded(0, 0, 1 << 31)
    #: Options of the protocol class, checked against its ``default_options``.
    options: Mapping[str, Any] = field(default_factory=dict)


def _default_apps() -> dict[str, AppConfig]:
    return {
        "/counter": AppConfig("wsapp.apps.counter:CounterProtocol"),
        "/echo": AppConfig(
            "wsapp.apps.echo:EchoProtocol", max_message_size=16 * MiB, max_frame_size=16 * MiB
        ),
        "/chat": AppConfig("wsapp.apps.chat:ChatProtocol"),
        "/clock": AppConfig("wsapp.apps.clock:ClockProtocol"),
    }


@dataclass(frozen=True)
class LimitsConfig:
    """Limits that keep one client from harming the others; see README "Limits and security"."""

    #: Most open WebSocket connections of the whole server (HTTP 503 beyond).
    max_connections: int = _bounded(10_000, 1, 1 << 31)
    #: Most open WebSocket connections from one client address (HTTP 429 beyond).
    max_connections_per_address: int = _bounded(256, 1, 1 << 31)
    #: Requests a connection may send per second, on average (0: no rate limit).
    rate: float = _bounded(100.0, 0.0, 1e9)
    #: Requests a connection may send at once before the rate applies.
    burst: int = _bounded(200, 1, 1 << 31)
    #: Requests refused beyond the rate before the connection is closed with 1008.
    abuse_limit: int = _bounded(200, 1, 1 << 31)
    #: Bytes queued to one client beyond which it counts as a slow consumer.
    high_water_mark: int = _bounded(256 * 1024, 1024, 1 << 31)
    #: What a slow consumer gets: ``coalesce`` keeps only the latest event of each type the
    #: app marks coalescible (``state``, ``users``, ``time``) until it drains, and closes
    #: with 1008 on any other event; ``close`` closes with 1008 at once.
    slow_consumer: str = _choice("coalesce", "close")
    #: Seconds a client has to send a complete opening handshake.
    open_handshake_timeout: float = _bounded(10.0, 0.01, 3600.0)
    #: Seconds to wait for the peer's close frame (and TCP close) after sending ours.
    close_handshake_timeout: float = _bounded(5.0, 0.01, 3600.0)
    #: Seconds between pings on a quiet connection (0: no pings).
    auto_ping_interval: float = _bounded(30.0, 0.0, 86400.0)
    #: Seconds to wait for the pong before dropping the connection.
    auto_ping_timeout: float = _bounded(10.0, 0.01, 86400.0)


@dataclass(frozen=True)
class TlsConfig:
    """TLS for a ``tcp:`` port: set both files to serve ``wss://`` and ``https://``."""

    #: PEM file with the certificate (and any intermediate certificates after it).
    certificate: str = ""
    #: PEM file with the private key.
    private_key: str = ""


@dataclass(frozen=True)
class AuthConfig:
    """Token check at the opening handshake (``?token=`` or ``Authorization: Bearer``)."""

    #: Accepted tokens; empty: no check (unless a protocol overrides ``authorize``).
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShutdownConfig:
    """What SIGTERM (or stopping the service) does."""

    #: Seconds clients get to answer the close (1001 going away) before they are dropped.
    grace_period: float = _bounded(5.0, 0.0, 3600.0)


@dataclass(frozen=True)
class Config:
    """The whole server configuration; every field has a production default."""

    #: Listening endpoint: a port number or a Twisted endpoint string (``tcp:``, ``ssl:``).
    port: str = "tcp:8000"
    apps: Mapping[str, AppConfig] = field(default_factory=_default_apps)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    #: Where the shared state lives: ``memory`` (this process) or ``redis://host:port/db``.
    backend: str = "memory"
    #: Memory backend: JSON file keeping the counters across restarts; empty: not kept.
    state_file: str = ""
    #: Memory backend: seconds between two writes of a changed state file.
    state_interval: float = field(default=1.0, metadata={"range": (0.01, 3600.0)})
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: Browser origins allowed to connect, e.g. ``https://example.com`` or
    #: ``https://*.example.com``; empty: any. Clients sending no Origin are always allowed.
    origins: tuple[str, ...] = ()
    auth: AuthConfig = field(default_factory=AuthConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)


_PORT_NUMBER = re.compile(r"\d+")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_APP_PATH = re.compile(r"(/[\w.~-]+)+")


def endpoint_description(port: str | int) -> str:
    """
    Return a Twisted server endpoint string for ``port``.

    A bare number becomes ``tcp:NUMBER``; anything else is taken as an endpoint string.
    """
    text = str(port).strip()
    if _PORT_NUMBER.fullmatch(text):
        number = int(text)
        if number > 65535:
            raise ValueError(f"port {number} is out of range (0-65535)")
        return f"tcp:{number}"
    if ":" not in text:
        raise ValueError(f"{text!r} is neither a port number nor an endpoint string like tcp:8000")
    return text


def server_endpoint(config: Config) -> str:
    """
    Return the endpoint string to listen on: ``config.port``, or its ``ssl:`` form when
    ``config.tls`` names a certificate and key and the port is a ``tcp:`` endpoint.
    """
    tls = config.tls
    if not (tls.certificate and config.port.startswith("tcp:")):
        return config.port
    files = f"certKey={_quote(tls.certificate)}:privateKey={_quote(tls.private_key)}"
    return f"ssl:{config.port[len('tcp:') :]}:{files}"


def _quote(argument: str) -> str:
    return argument.replace("\\", "\\\\").replace(":", "\\:")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML configuration file."""
    return from_mapping(read(path), str(path))


def read(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """Read a YAML configuration file without validating its keys."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(source, "", f"cannot read file: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, "(top level)", f"expected a mapping, got {_type_name(data)}")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in, mapping by mapping."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_mapping(data: object, source: str) -> Config:
    """Build a :class:`Config` from parsed YAML, checking every key and value."""
    return _build(Config, data, source, "")


def resolve_options(
    defaults: Mapping[str, Any], given: Mapping[str, Any], source: str, key: str
) -> dict[str, Any]:
    """Merge an app's ``options`` over its protocol's defaults, checking names and types."""
    options = dict(defaults)
    for name, value in given.items():
        option_key = f"{key}.{name}"
        if name not in defaults:
            raise ConfigError(
                source, option_key, f"unknown option (expected one of: {_names(defaults)})"
            )
        options[name] = _convert(type(defaults[name]), value, source, option_key)
    return options


def _build(cls: type[T], data: object, source: str, prefix: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, prefix or "(top level)", f"expected a mapping, got {_type_name(data)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise ConfigError(source, key, f"unknown key (expected one of: {_names(fields)})")
        if cls is Config and name == "port":
            values[name] = _convert_port(value, source, key)
        elif cls is Config and name == "backend":
            values[name] = _convert_backend(value, source, key)
        elif cls is Config and name == "apps":
            values[name] = _convert_apps(value, source, key)
        else:
            values[name] = _convert(hints[name], value, source, key)
        low_high = fields[name].metadata.get("range")
        if low_high and not low_high[0] <= values[name] <= low_high[1]:
            raise ConfigError(
                source, key, f"must be between {low_high[0]} and {low_high[1]}, got {value}"
            )
        choices = fields[name].metadata.get("choices")
        if choices and values[name] not in choices:
            raise ConfigError(source, key, f"must be one of: {', '.join(choices)}; got {value!r}")
    missing = [
        f.name for f in fields.values() if f.default is f.default_factory is dataclasses.MISSING
    ]
    for name in missing:
        if name not in values:
            raise ConfigError(
                source, f"{prefix}.{name}" if prefix else name, "required key is missing"
            )
    if cls is TlsConfig:
        _check_tls(values, source, prefix)
    return cls(**values)


def _check_tls(values: Mapping[str, Any], source: str, prefix: str) -> None:
    if bool(values.get("certificate")) != bool(values.get("private_key")):
        raise ConfigError(source, prefix, "set both certificate and private_key, or neither")
    for name in ("certificate", "private_key"):
        if values.get(name) and not os.path.isfile(values[name]):
            raise ConfigError(source, f"{prefix}.{name}", f"no such file: {values[name]}")


def _convert(hint: Any, value: object, source: str, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(source, key, f"expected a list of strings, got {_type_name(value)}")
        return tuple(value)
    if typing.get_origin(hint) is Mapping or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, f"expected a mapping, got {_type_name(value)}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(source, key, f"expected an integer, got {_type_name(value)}")
    if not isinstance(value, hint):
        raise ConfigError(source, key, f"expected {_hint_name(hint)}, got {_type_name(value)}")
    return value


def _convert_port(value: object, source: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(
            source, key, f"expected a port number or endpoint string, got {_type_name(value)}"
        )
    try:
        return endpoint_description(value)
    except ValueError as error:
        raise ConfigError(source, key, str(error)) from None


def redis_address(url: str) -> tuple[str, int, int]:
    """Return ``(host, port, db)`` of a ``redis://host[:port][/db]`` URL, or raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"expected memory or redis://host:port/db, got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("a redis URL takes only host, port and database number")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the database must be a number, got {db!r}")
    return parts.hostname, port, int(db)


def _convert_backend(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(source, key, f"expected memory or a redis URL, got {_type_name(value)}")
    if value != "memory":
        try:
            redis_address(value)
        except ValueError as error:
            raise ConfigError(source, key, str(error)) from None
    return value


def _convert_apps(value: object, source: str, key: str) -> dict[str, AppConfig]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            source, key, f"expected a mapping of URL paths to apps, got {_type_name(value)}"
        )
    apps = {}
    for path, app in value.items():
        app_key = f"{key}.{path}"
        if not isinstance(path, str) or not _APP_PATH.fullmatch(path):
            raise ConfigError(source, app_key, "an app path must look like /name or /name/sub")
        if isinstance(app, str):
            app = {"protocol": app}
        apps[path] = _build(AppConfig, app, source, app_key)
        if not _IMPORT_PATH.fullmatch(apps[path].protocol):
            raise ConfigError(
                source, f"{app_key}.protocol", "expected an import path like package.module:Class"
            )
    return apps


def _names(names: Mapping[str, Any]) -> str:
    return ", ".join(sorted(names))


def _hint_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )
