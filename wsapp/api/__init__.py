"""
The server API: publish and manage channels from outside a WebSocket.

Server side, :func:`build_api` turns ``config.api`` into an :class:`Api`: the resource
serving ``POST /api/METHOD`` (:mod:`wsapp.api.server`, :mod:`wsapp.api.methods`) and the
:class:`~wsapp.api.cluster.Cluster` service that keeps this process's report and hears
notices. Client side, :class:`Client` calls the API from code without a reactor (a Django
view, a Celery task, a cron job) and :class:`TwistedClient` from Twisted programs.

Methods (JSON in, JSON out): ``publish``, ``broadcast``, ``history``, ``presence``,
``presence_stats``, ``channels``, ``info``, ``disconnect``, ``unsubscribe`` and
``revoke_token``. The HTTP API is the only external way in: the Redis keys and pub/sub
frames are wsapp's own, and a message on wsapp's pub/sub channels that is not one of its
frames is ignored and counted in ``wsapp_backend_malformed_messages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from twisted.web.resource import IResource
from twisted.web.server import Site

from ..exceptions import ApiError, ConfigError
from .client import Client

if TYPE_CHECKING:
    from ..config import Config
    from ..hub import Hub
    from ..metrics import Metrics
    from .cluster import Cluster, Served
    from .txclient import TwistedClient

__all__ = ["Api", "ApiError", "Client", "TwistedClient", "build_api", "read_keys"]


def __getattr__(name: str) -> Any:
    if name == "TwistedClient":  # imported on use: treq needs no reactor before then
        from .txclient import TwistedClient

        return TwistedClient
    raise AttributeError(name)


def read_keys(config: Config, source: str) -> list[str]:
    """The API keys of ``config.api``: ``keys`` and the lines of ``keys_file``."""
    keys = list(config.api.keys)
    if config.api.keys_file:
        try:
            text = Path(config.api.keys_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ConfigError(source, "api.keys_file", f"cannot read file: {reason}") from None
        for number, line in enumerate(text.splitlines(), 1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            if len(key) < 16 or not key.isprintable():
                raise ConfigError(
                    source,
                    "api.keys_file",
                    f"line {number}: a key has 16 or more printable characters",
                )
            keys.append(key)
    return keys


@dataclass
class Api:
    """The HTTP API of one server: what to mount or listen with, and its cluster service."""

    resource: IResource
    cluster: Cluster
    max_body_size: int

    def site(self, base: type[Site] = Site, **options: Any) -> Site:
        """A site serving only ``/api/`` (for ``api.endpoint``)."""
        from ..operations import Folder

        root = Folder()
        root.putChild(b"api", self.resource)
        site = base(root, **options)
        site.requestFactory = self.limit(site.requestFactory)
        return site

    def limit(self, request_factory: Any) -> Any:
        """``request_factory`` with the API's body limit."""
        from .server import limited_request

        return limited_request(request_factory, self.max_body_size)


def build_api(
    config: Config,
    hub: Hub,
    server: Served,
    metrics: Metrics,
    *,
    source: str = "config",
    reactor: Any = None,
    identity: Any = None,
) -> Api | None:
    """
    The API of ``config`` over ``hub`` (revoking tokens through ``identity``, a
    :class:`wsapp.identity.Identity`); None while no key is configured.
    """
    keys = read_keys(config, source)
    if not keys:
        return None
    for path in config.apps:
        if path.strip("/").split("/")[0] == "api" and not config.api.endpoint:
            raise ConfigError(
                source, f"apps.{path}", "/api is the HTTP API's; mount the app elsewhere"
            )
    from .cluster import Cluster
    from .methods import Methods
    from .server import ApiResource

    if reactor is None:
        from twisted.internet import reactor
    cluster = Cluster(hub, server, reactor=reactor)
    methods = Methods(
        hub, config.channels, cluster, window=config.api.idempotency_window, identity=identity
    )
    resource = ApiResource(methods.by_name(), keys, config.api, metrics.api, reactor=reactor)
    return Api(cast(IResource, resource), cluster, config.api.max_body_size)
