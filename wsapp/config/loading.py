"""
Reading ``config.yaml``, merging command-line overrides and checking every key and value.

Every error is a :class:`~wsapp.exceptions.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from ..exceptions import ConfigError
from .schema import (
    ApiConfig,
    AppConfig,
    ChannelsConfig,
    Config,
    JwtConfig,
    NamespaceConfig,
    ProxyConfig,
    TlsConfig,
)

__all__ = [
    "endpoint_description",
    "from_mapping",
    "load",
    "merge",
    "read",
    "redis_address",
    "resolve_options",
    "server_endpoint",
]

T = TypeVar("T")
_PORT_NUMBER = re.compile(r"\d+")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_APP_PATH = re.compile(r"(/[\w.~-]+)+")
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
        problem = getattr(error, "problem", None)
        reason = f": {problem}" if problem else ""
        raise ConfigError(source, "", f"invalid YAML{where}{reason}") from None
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
        elif cls is ApiConfig and name == "endpoint" and value != "":
            values[name] = _convert_port(value, source, key)
        elif cls is ChannelsConfig and name == "namespaces":
            values[name] = _convert_namespaces(value, source, key)
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
    elif cls is JwtConfig:
        _check_jwt(values, source, prefix)
    elif cls is ProxyConfig:
        for index, network in enumerate(values.get("trusted", ())):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    source, f"{prefix}.trusted[{index}]", f"not an address or network: {network!r}"
                ) from None
    if cls is ApiConfig:
        _check_api(values, source, prefix)
    return cls(**values)


#: JWT algorithms wsapp accepts (PyJWT's, without ``none``).
JWT_ALGORITHMS = frozenset(
    "HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA".split()
)


def _check_jwt(values: Mapping[str, Any], source: str, prefix: str) -> None:
    sources = [name for name in ("secret", "secret_file", "public_key_file", "jwks_url")]
    given = [name for name in sources if values.get(name)]
    if len(given) > 1:
        raise ConfigError(source, prefix, f"set only one of {', '.join(sources)}")
    for index, name in enumerate(values.get("algorithms", ())):
        if name not in JWT_ALGORITHMS:
            raise ConfigError(
                source,
                f"{prefix}.algorithms[{index}]",
                f"unknown algorithm {name!r} (expected: {', '.join(sorted(JWT_ALGORITHMS))})",
            )
    for name in ("secret_file", "public_key_file"):
        path = values.get(name)
        if not path:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(source, f"{prefix}.{name}", f"cannot read {path}: {reason}") from None
        if name == "secret_file" and not data.strip():
            raise ConfigError(source, f"{prefix}.{name}", f"{path} is empty")
        if name == "public_key_file":
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                load_pem_public_key(data)
            except (ValueError, TypeError):
                raise ConfigError(
                    source, f"{prefix}.{name}", f"{path} holds no PEM public key"
                ) from None
    url = urlsplit(values.get("jwks_url", ""))
    if values.get("jwks_url") and not (
        url.scheme == "https"
        or (url.scheme == "http" and url.hostname in ("127.0.0.1", "::1", "localhost"))
    ):
        raise ConfigError(
            source, f"{prefix}.jwks_url", "expected an https:// URL (http:// only on loopback)"
        )


def _check_tls(values: Mapping[str, Any], source: str, prefix: str) -> None:
    if bool(values.get("certificate")) != bool(values.get("private_key")):
        raise ConfigError(source, prefix, "set both certificate and private_key, or neither")
    for name in ("certificate", "private_key"):
        if values.get(name) and not os.path.isfile(values[name]):
            raise ConfigError(source, f"{prefix}.{name}", f"no such file: {values[name]}")


def _check_api(values: Mapping[str, Any], source: str, prefix: str) -> None:
    for index, key in enumerate(values.get("keys", ())):
        if len(key) < 16 or not key.isprintable() or key != key.strip():
            raise ConfigError(
                source, f"{prefix}.keys[{index}]", "a key has 16 or more printable characters"
            )
    keys_file = values.get("keys_file")
    if keys_file and not os.path.isfile(keys_file):
        raise ConfigError(source, f"{prefix}.keys_file", f"no such file: {keys_file}")


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


def _convert_namespaces(value: object, source: str, key: str) -> dict[str, NamespaceConfig]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            source, key, f"expected a mapping of names to namespaces, got {_type_name(value)}"
        )
    namespaces = {}
    for name, options in value.items():
        namespace_key = f"{key}.{name}"
        if not isinstance(name, str) or not _NAMESPACE.fullmatch(name):
            raise ConfigError(
                source, namespace_key, "a namespace name has 1-64 letters, digits, '_' or '-'"
            )
        namespaces[name] = _build(NamespaceConfig, options or {}, source, namespace_key)
    return namespaces


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
