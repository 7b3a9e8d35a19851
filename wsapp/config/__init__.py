"""
Configuration: frozen dataclasses loaded from ``config.yaml`` and validated.

Nothing here touches the network or Twisted, so the same objects come from a file, from
command-line overrides and from tests. Every validation error is a :class:`ConfigError`
naming the file and the dotted key. :mod:`~wsapp.config.schema` holds the dataclasses,
:mod:`~wsapp.config.loading` the reading and checking.
"""

from .loading import (
    endpoint_description,
    from_mapping,
    load,
    merge,
    read,
    redis_address,
    resolve_options,
    server_endpoint,
)
from .schema import (
    ApiConfig,
    AppConfig,
    AuthConfig,
    ChannelsConfig,
    CompressionConfig,
    Config,
    DashboardConfig,
    JwtConfig,
    LimitsConfig,
    NamespaceConfig,
    ProxyConfig,
    ShutdownConfig,
    TlsConfig,
)

__all__ = [
    "ApiConfig",
    "AppConfig",
    "AuthConfig",
    "ChannelsConfig",
    "CompressionConfig",
    "Config",
    "DashboardConfig",
    "JwtConfig",
    "LimitsConfig",
    "NamespaceConfig",
    "ProxyConfig",
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
