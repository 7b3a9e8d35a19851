"""
Build the running server from a :class:`~wsapp.config.Config`.

One endpoint serves every mounted app and, beside them, the counter page, ``/health`` and
``/metrics`` (:mod:`wsapp.operations`). Its protocol is :class:`~wsapp.router.HeadReader`:
a WebSocket upgrade to an app's path goes straight to that app's autobahn protocol, and
every other request to one Twisted web :class:`~twisted.web.server.Site`, which answers
426 at the apps' paths. With ``tls`` set, TLS comes from :mod:`wsapp.tls`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.internet.tcp import Port
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from .api import build_api
from .backends import Backend, make_backend
from .config import Config, resolve_options, server_endpoint
from .exceptions import ConfigError
from .guard import Guard, HandshakeSite
from .hub import Hub
from .identity import Identity
from .limits import ConnectionLimiter
from .metrics import Metrics
from .operations import Folder, HealthResource, mount_operations
from .router import HandshakeRouter, UpgradeRequired
from .server import ServerFactory, ServerProtocol
from .shutdown import ShutdownHook, close_all
from .tls import listening_endpoint
from .workers import peers
from .workers.sockets import AdoptedEndpoint

__all__ = ["ServerService", "build_site", "load_protocol"]

log = Logger()


def load_protocol(import_path: str, source: str, key: str) -> type[ServerProtocol]:
    """Import ``"module:Class"`` and check that it is a :class:`ServerProtocol` subclass."""
    module_name, _, class_name = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError(source, key, f"cannot import {module_name!r}: {error}") from None
    protocol = getattr(module, class_name, None)
    if not (isinstance(protocol, type) and issubclass(protocol, ServerProtocol)):
        raise ConfigError(
            source, key, f"{import_path!r} is not a subclass of wsapp.server.ServerProtocol"
        )
    return protocol


def build_site(
    config: Config,
    *,
    source: str = "config",
    reactor: Any = None,
    metrics: Metrics | None = None,
    backend: Backend | None = None,
    identity: Identity | None = None,
) -> tuple[Site, dict[str, ServerFactory]]:
    """Return the web site serving ``config``'s apps and each app's factory by path."""
    metrics = metrics or Metrics()
    if backend is None:
        backend = make_backend(config, reactor=reactor)
    hub = Hub(backend)
    if identity is None:
        identity = Identity(config.auth, backend=backend, reactor=reactor)
    identity.hub = hub
    if not config.server_header.isprintable():
        raise ConfigError(source, "server_header", "must be printable text on one line")
    root = Folder()
    factories = {}
    limiter = ConnectionLimiter(
        config.limits.max_connections, config.limits.max_connections_per_address
    )
    for path, app in config.apps.items():
        key = f"apps.{path}"
        protocol = load_protocol(app.protocol, source, f"{key}.protocol")
        options = resolve_options(protocol.default_options, app.options, source, f"{key}.options")
        try:
            protocol.check_options(options)
        except ValueError as error:
            raise ConfigError(source, f"{key}.options", str(error)) from None
        guard = Guard(
            config, app=path, app_limit=app.max_connections, limiter=limiter, identity=identity
        )
        factory = protocol.factory_class(
            protocol,
            app=app,
            options=options,
            compression=config.compression,
            channels=config.channels,
            guard=guard,
            reactor=reactor,
            hub=hub,
            name=path,
        )
        factory.metrics = metrics.add_app(path, factory)
        identity.factories.append(factory)
        _mount(root, path, UpgradeRequired())
        factories[path] = factory
    site = HandshakeSite(
        root,
        deadline=config.limits.open_handshake_timeout,
        server_header=config.server_header,
        reactor=reactor,
    )
    return site, factories


def _mount(root: Resource, path: str, resource: Any) -> None:
    *parents, leaf = path.strip("/").encode().split(b"/")
    for name in parents:
        child = root.children.get(name)
        if child is None:
            child = Folder()
            root.putChild(name, cast(IResource, child))
        root = child
    root.putChild(leaf, resource)


class ServerService(MultiService):
    """
    The whole server as a Twisted service: the router and site listening on ``config.port``.

    Its first child is the state backend, so the backend starts before the site listens
    and stops (e.g. writes the state file) after the site stopped.

    Stopping it (SIGTERM under ``twistd``) stops accepting, closes every WebSocket with
    1001 (going away), waits up to ``shutdown.grace_period`` seconds for the clients, runs
    the hooks of :meth:`add_shutdown_hook` in order, then stops the backend.
    """

    def __init__(
        self,
        config: Config,
        *,
        source: str = "config",
        reactor: Any = None,
        worker: peers.WorkerSpec | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        #: Set in a worker of ``--workers N``: its sockets come from the supervisor.
        self.worker = worker
        self._report_port: Any = None
        self.reactor = reactor
        self.backend = make_backend(config, reactor=reactor)
        self.backend.setServiceParent(self)
        self.metrics = Metrics()
        self.shutdown_hooks: list[ShutdownHook] = []
        #: Tokens, revocation and kicks: :meth:`Identity.revoke`, :meth:`Identity.kick`.
        self.identity = Identity(config.auth, backend=self.backend, reactor=reactor)
        self.site, self.factories = build_site(
            config,
            source=source,
            reactor=reactor,
            metrics=self.metrics,
            backend=self.backend,
            identity=self.identity,
        )
        #: The dashboard's sampler (a child service); None while no dashboard.key is set.
        self.sampler = mount_operations(
            self.site.resource, self, self.metrics, source=source, reactor=reactor
        )
        if self.sampler is not None:
            self.sampler.setServiceParent(self)
        if worker is not None:
            health = HealthResource(self).report
            self._report = peers.mount(self.site.resource, reactor, worker, health, self.metrics)
        self.metrics.backend = self.backend
        #: The HTTP API (:mod:`wsapp.api`); None while no key is configured.
        self.api = build_api(
            config,
            cast(Hub, self.backend.listener),
            self,
            self.metrics,
            source=source,
            reactor=reactor,
            identity=self.identity,
        )
        if self.api is not None and not config.api.endpoint:
            self.site.resource.putChild(b"api", self.api.resource)
            self.site.requestFactory = self.api.limit(self.site.requestFactory)
        #: True once :meth:`stopService` has begun: ``/health`` and new handshakes get 503.
        self.stopping = False
        self._started: float | None = None
        description = config.port
        tls = config.tls
        endpoint = listening_endpoint(
            reactor, description, tls.certificate, tls.private_key, source, "port",
            inherited=self._inherited("port"),
        )  # fmt: skip
        #: What the endpoint listens with: upgrades to the apps, other requests to the site.
        self.router = HandshakeRouter(
            self.site,
            self.factories,
            deadline=config.limits.open_handshake_timeout,
            server_header=config.server_header,
            reactor=reactor,
        )
        self.listener = _ListeningService(
            endpoint, self.router, self._listening, description=description, source=source
        )
        self.listener.setServiceParent(self)
        #: The listening port, once the service has started.
        self.port: Port | None = None
        #: The API's own port (with ``api.endpoint``), once the service has started.
        self.api_port: Port | None = None
        if self.api is not None:
            self.api.cluster.setServiceParent(self)
            if config.api.endpoint:
                self._listen_api(config, source)

    def _listen_api(self, config: Config, source: str) -> None:
        assert self.api is not None
        description = config.api.endpoint
        tls = config.tls
        endpoint = listening_endpoint(
            self.reactor, description, tls.certificate, tls.private_key, source, "api.endpoint",
            inherited=self._inherited("api.endpoint"),
        )  # fmt: skip
        site = self.api.site(
            HandshakeSite,
            deadline=config.limits.open_handshake_timeout,
            server_header=config.server_header,
            reactor=self.reactor,
        )
        listener = _ListeningService(
            endpoint, site, self._api_listening, description=description, source=source
        )
        listener.key = "api.endpoint"
        listener.setServiceParent(self)

    def _inherited(self, key: str) -> Any:
        """The socket the supervisor opened for ``key``, in a worker; None otherwise."""
        if self.worker is None:
            return None
        return AdoptedEndpoint(self.reactor, self.worker.fds[key])

    def _api_listening(self, port: Port) -> None:
        self.api_port = port
        log.info("wsapp API serving {url}api/", url=_url(port.getHost(), "tcp:"))

    def startService(self) -> None:
        self.stopping = False
        self._started = self.reactor.seconds()
        super().startService()
        self.identity.start()
        if self.worker is not None:
            self._report_port = peers.serve(self.reactor, self.worker, self._report)

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Call ``hook()`` (it may return a Deferred or awaitable) when the server stops."""
        self.shutdown_hooks.append(hook)

    def stopService(self) -> Deferred[None]:
        self.stopping = True
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for factory in self.factories.values():
            factory.guard.draining = True
        drain = self.config.shutdown.drain_period
        if drain:
            log.info("shutting down: draining for {seconds} s", seconds=drain)
            await deferLater(self.reactor, drain)
        await maybeDeferred(self.listener.stopService)
        self.identity.stop()
        await close_all(self.factories.values(), self.config.shutdown.grace_period, self.reactor)
        for hook in self.shutdown_hooks:
            try:
                await maybeDeferred(hook)
            except Exception:
                log.failure("shutdown hook {hook!r} failed", hook=hook)
        await maybeDeferred(super().stopService)
        if self._report_port is not None:
            await maybeDeferred(self._report_port.stopListening)

    def uptime(self) -> float:
        """Seconds since the service started (0 before)."""
        return 0.0 if self._started is None else self.reactor.seconds() - self._started

    def _listening(self, port: Port) -> None:
        self.port = port
        log.info(
            "wsapp serving {url} (apps: {apps})",
            url=_url(port.getHost(), server_endpoint(self.config)),
            apps=", ".join(self.factories),
        )


def _url(address: Any, description: str) -> str:
    """Where ``address`` is served: ``http://0.0.0.0:8000/`` on every interface, say."""
    if isinstance(address, UNIXAddress):
        return f"unix:{os.fsdecode(address.name or b'')}"
    scheme = "https" if description.startswith("ssl:") else "http"
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{scheme}://{host}:{address.port}/"


class _ListeningService(StreamServerEndpointService):
    """
    Listens like strports' service; a failure to listen stops ``twistd`` at startup with a
    :class:`ConfigError` on ``port`` naming the endpoint and the system's reason.
    """

    _raiseSynchronously = True

    def __init__(
        self,
        endpoint: Any,
        factory: HandshakeRouter | Site,
        listening: Callable[[Port], None],
        *,
        description: str,
        source: str,
    ) -> None:
        super().__init__(endpoint, factory)
        self._on_listening = listening
        self.description = description
        self.source = source
        #: The configuration key named when listening fails.
        self.key = "port"

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError) as error:
            reason = error.socketError if isinstance(error, CannotListenError) else error
            text = getattr(reason, "strerror", None) or str(reason)
            raise ConfigError(
                self.source, self.key, f"cannot listen on {self.description}: {text}"
            ) from None
        if self._waitingForPort is not None:
            self._waitingForPort.addCallback(self._listening)

    def _listening(self, port: Port) -> Port:
        self._on_listening(port)
        return port
