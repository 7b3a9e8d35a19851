"""
The configuration's shape: frozen dataclasses, one per section of ``config.yaml``.

Each field's default is the production value; ranges and choices are in the field's
metadata, checked by :mod:`wsapp.config.loading`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
]

MiB = 1 << 20


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
    #: LZ77 window asked of clients that offer one, 9 to 15 bits: bounds each inflater.
    client_max_window_bits: int = _bounded(12, 9, 15)
    #: Server messages stand alone: one compressor per process, broadcasts compressed
    #: once. False: a compressor per connection (about 38 KiB), with history.
    server_no_context_takeover: bool = True
    #: Ask clients for standalone messages: each inflater is freed between messages.
    client_no_context_takeover: bool = False
    #: Messages the server sends shorter than this many bytes go uncompressed (RFC 7692
    #: lets a sender choose per message; broadcasts are then framed once for all):
    #: deflate gains nothing on them and costs CPU on both ends. 0: compress every one.
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
        "/channels": AppConfig("wsapp.apps.channels:ChannelsProtocol"),
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
class JwtConfig:
    """
    Connection and channel tokens (JWT): set one of ``secret``, ``secret_file``,
    ``public_key_file`` or ``jwks_url``; the others narrow what a token must say.
    """

    #: Shared secret of HS256/HS384/HS512 tokens.
    secret: str = ""
    #: File holding the shared secret (one line; surrounding whitespace is dropped).
    secret_file: str = ""
    #: PEM public key (RSA, EC or Ed25519) of RS*/PS*, ES* or EdDSA tokens.
    public_key_file: str = ""
    #: ``https://`` (or loopback ``http://``) URL of a JWKS document with the public keys.
    jwks_url: str = ""
    #: Seconds a JWKS document is used before it is fetched again.
    jwks_cache: float = _bounded(300.0, 1.0, 86400.0)
    #: Accepted algorithms; empty: those of the key (``none`` is never accepted).
    algorithms: tuple[str, ...] = ()
    #: The ``aud`` a token must name; empty: tokens with an ``aud`` are refused.
    audience: str = ""
    #: The ``iss`` a token must name; empty: not checked.
    issuer: str = ""
    #: Seconds of clock difference allowed on ``exp``, ``nbf`` and ``iat``.
    leeway: float = _bounded(0.0, 0.0, 3600.0)


@dataclass(frozen=True)
class AuthConfig:
    """Who a connection is: static tokens, or JWT connection tokens (``jwt``)."""

    #: Accepted static tokens; empty: no check (unless ``jwt`` is set or a protocol
    #: overrides ``authorize``). A connection admitted by one is anonymous.
    tokens: tuple[str, ...] = ()
    jwt: JwtConfig = field(default_factory=JwtConfig)
    #: With ``jwt``: whether a connection without a token is admitted as anonymous. If not,
    #: it must send ``{"action": "authenticate", "token": T}`` within
    #: ``limits.open_handshake_timeout`` seconds.
    anonymous: bool = False


@dataclass(frozen=True)
class ProxyConfig:
    """Load balancers in front of the server, whose forwarding headers are believed."""

    #: Networks of trusted proxies, e.g. ``10.0.0.0/8`` or ``127.0.0.1``; their
    #: ``Forwarded`` / ``X-Forwarded-For`` headers give the client address.
    trusted: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShutdownConfig:
    """What SIGTERM (or stopping the service) does."""

    #: Seconds clients get to answer the close (1001 going away) before they are dropped.
    grace_period: float = _bounded(5.0, 0.0, 3600.0)
    #: Seconds the port keeps listening first, answering ``/health`` and new WebSocket
    #: handshakes with 503, so a load balancer stops sending clients before they are refused.
    drain_period: float = _bounded(0.0, 0.0, 3600.0)


@dataclass(frozen=True)
class NamespaceConfig:
    """What the channels of one namespace keep, and who may use them."""

    #: Who may subscribe: ``anyone``, ``nobody`` (only the server subscribes connections),
    #: ``authenticated`` (connections with a user), ``capability`` (a user whose token's
    #: ``channels`` claim matches the channel, or with a channel token) or ``token`` (with a
    #: channel token naming the channel and the user).
    subscribe: str = _choice("anyone", "nobody", "authenticated", "capability", "token")
    #: Who may publish: ``nobody`` (only server code), ``anyone``, ``authenticated`` or
    #: ``capability`` (as for subscribe, from the connection token only).
    publish: str = _choice("nobody", "anyone", "authenticated", "capability")
    #: Publications kept per channel for history and recovery (0: none).
    history_size: int = _bounded(0, 0, 100_000)
    #: Seconds a publication stays in history (0: until pushed out by newer ones).
    history_ttl: float = _bounded(0.0, 0.0, 30 * 86400.0)
    #: Whether a subscriber coming back with ``since`` gets what it missed.
    recovery: bool = True
    #: Whether subscribers are listed in the channel's presence.
    presence: bool = False
    #: Whether subscribers get ``join`` and ``leave`` events (needs ``presence``).
    join_leave: bool = False
    #: Most channels of this namespace one connection may subscribe to.
    max_subscriptions: int = _bounded(128, 1, 1 << 20)
    #: Largest ``data`` of a client's publication, in bytes of JSON.
    max_data_size: int = _bounded(16384, 1, 1 << 31)


def _default_namespaces() -> dict[str, NamespaceConfig]:
    chat = NamespaceConfig(
        publish="anyone", history_size=100, history_ttl=300.0, presence=True, join_leave=True
    )
    return {"chat": chat}


@dataclass(frozen=True)
class ChannelsConfig:
    """Channels: options of channels without a namespace, and of each namespace by name."""

    #: Channels whose name has no ``namespace:`` prefix.
    default: NamespaceConfig = field(default_factory=NamespaceConfig)
    #: Namespaces by name: a channel ``chat:lobby`` uses ``chat``; others are unknown.
    namespaces: Mapping[str, NamespaceConfig] = field(default_factory=_default_namespaces)
    #: Longest channel name, in characters.
    max_name_length: int = _bounded(255, 1, 1024)
    #: Most channels one connection may subscribe to, over all namespaces.
    max_subscriptions: int = _bounded(256, 1, 1 << 20)


@dataclass(frozen=True)
class ApiConfig:
    """The HTTP API (``POST /api/METHOD``): off unless a key is configured."""

    #: Accepted keys, sent as ``Authorization: apikey KEY``; with none (here or in
    #: ``keys_file``) the API is off.
    keys: tuple[str, ...] = ()
    #: File of more keys, one a line (blank lines and lines starting with ``#`` skipped).
    keys_file: str = ""
    #: Own listening endpoint, e.g. ``tcp:8001:interface=127.0.0.1``; empty: ``/api/`` on
    #: ``port``.
    endpoint: str = ""
    #: Serve the API over plain HTTP on an interface other than loopback (keys travel in
    #: clear); without it such requests get 403 unless TLS is on.
    allow_insecure: bool = False
    #: Largest request body, in bytes (413 beyond).
    max_body_size: int = _bounded(1 << 20, 64, 1 << 30)
    #: Requests one key may send per second, on average (0: no limit; 429 beyond).
    rate: float = _bounded(1000.0, 0.0, 1e9)
    #: Requests one key may send at once before the rate applies.
    burst: int = _bounded(2000, 1, 1 << 31)
    #: Seconds a publish's ``idempotency_key`` is remembered with its result.
    idempotency_window: float = _bounded(300.0, 1.0, 86400.0)


@dataclass(frozen=True)
class DashboardConfig:
    """The live dashboard at ``/dashboard``."""

    #: The key its data asks for (``Authorization: Bearer KEY``); empty: no dashboard.
    key: str = ""


@dataclass(frozen=True)
class Config:
    """The whole server configuration; every field has a production default."""

    #: Listening endpoint: a port number or a Twisted endpoint string (``tcp:``, ``ssl:``).
    port: str = "tcp:8000"
    apps: Mapping[str, AppConfig] = field(default_factory=_default_apps)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    #: Where the shared state lives: ``memory`` (this process) or ``redis://host:port/db``.
    backend: str = "memory"
    #: Processes serving the port, restarted when they die; more than 1 needs Redis.
    workers: int = _bounded(1, 1, 256)
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
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    #: The ``Server`` header of every HTTP response and handshake; empty: none sent.
    server_header: str = "wsapp"
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
