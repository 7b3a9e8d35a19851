"""
``twistd wsapp``: command-line options over ``config.yaml``, and the service they build.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from . import config
from .accesslog import install_timestamp_cache
from .exceptions import ConfigError, StateFileError
from .service import ServerService
from .workers.peers import WorkerSpec
from .workers.supervisor import Supervisor, check_workers

__all__ = ["Options", "makeService"]

DEFAULT_CONFIG_FILE = "config.yaml"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve WebSocket apps (counter, echo, chat, clock, or your own) on one port. "
        "Settings come from the configuration file; options given here override it."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "YAML configuration file [default: ./config.yaml if it exists, else built-in defaults]",
        ],
        [
            "port",
            "p",
            None,
            "Port number or Twisted endpoint string to listen on, e.g. 8000, "
            "tcp:8000:interface=127.0.0.1 or ssl:8443:privateKey=key.pem:certKey=cert.pem "
            "[default: the config's port, tcp:8000]",
        ],
        ["compression-level", None, None, "zlib level of permessage-deflate, 1 to 9", int],
        [
            "backend",
            None,
            None,
            "Where shared state lives: memory, or redis://host:port/db to share the apps "
            "between several processes [default: the config's backend, memory]",
        ],
        ["state-file", None, None, "Memory backend: keep the counters in this JSON file"],
        ["app-dir", None, ".", "Folder put first on the import path, for your apps' modules"],
        [
            "workers",
            "w",
            None,
            "Processes serving the port, restarted when they die; more than 1 needs a "
            "redis:// backend [default: the config's workers, 1]",
            int,
        ],
    ]
    optFlags = [["no-compression", None, "Do not accept permessage-deflate"]]

    def __init__(self) -> None:
        super().__init__()
        self["mounts"] = []
        self["argv"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        # kept for the workers, which run with the same options
        self["argv"] = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_mount(self, mount: str) -> None:
        """Mount an app: PATH=package.module:ProtocolClass (repeatable; replaces that path)"""
        path, equals, protocol = mount.partition("=")
        if not equals:
            raise usage.UsageError(f"--mount takes PATH=package.module:Class, got {mount!r}")
        self["mounts"].append((path, protocol))

    def postOptions(self) -> None:
        overrides: dict[str, Any] = {}
        if self["port"] is not None:
            overrides["port"] = self["port"]
        if self["mounts"]:
            overrides["apps"] = dict(self["mounts"])
        if self["no-compression"]:
            overrides.setdefault("compression", {})["enabled"] = False
        if self["compression-level"] is not None:
            overrides.setdefault("compression", {})["level"] = self["compression-level"]
        for option in ("backend", "state-file", "workers"):
            if self[option] is not None:
                overrides[option.replace("-", "_")] = self[option]
        self["overrides"] = overrides
        path = self["config"]
        if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
            path = DEFAULT_CONFIG_FILE
        try:
            config.from_mapping(overrides, "command line")
            data = config.read(path) if path is not None else {}
            self["source"] = path or "built-in defaults"
            self["wsapp"] = config.from_mapping(config.merge(data, overrides), self["source"])
        except ConfigError as error:
            raise SystemExit(f"twistd wsapp: {error}") from None


def _exit(error: ConfigError | StateFileError, overrides: Mapping[str, Any]) -> SystemExit:
    """The one-line exit for ``error``, naming the command line if an option set its key."""
    if isinstance(error, ConfigError) and error.source != "command line":
        top, _, rest = error.key.partition(".")
        given = top in overrides
        if top == "apps":  # only the apps mounted by --mount
            mounted = overrides.get("apps", {})
            given = any(rest == path or rest.startswith(f"{path}.") for path in mounted)
        if given:
            error = ConfigError("command line", error.key, error.message)
    return SystemExit(f"twistd wsapp: {error}")


class _Twistd(MultiService):
    """The server under ``twistd``: failing to listen exits with one line, no traceback."""

    def __init__(self, server: Any, overrides: Mapping[str, Any]) -> None:
        super().__init__()
        self.server = server
        self.overrides = overrides
        server.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ConfigError as error:
            raise _exit(error, self.overrides) from None


def makeService(options: Options) -> MultiService:
    """
    Build the server from parsed options; a bad app or endpoint exits with one line. With
    more than one worker, the service is their :class:`~wsapp.workers.supervisor.Supervisor`.

    Installs :mod:`wsapp.reactor` unless twistd was given another reactor (``-r``), and
    has twistd's log format each second's timestamp once.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from .reactor import install

        install()
    install_timestamp_cache()
    sys.path.insert(0, os.path.abspath(options["app-dir"]))
    settings: config.Config = options["wsapp"]
    worker = WorkerSpec.from_environment()
    if worker is not None:
        _follow(worker.supervisor)
    try:
        if worker is None:
            check_workers(settings, options["source"])
        server = ServerService(settings, source=options["source"], worker=worker)
        if worker is None and settings.workers > 1:
            supervisor = Supervisor(settings, options["argv"], source=options["source"])
            return _Twistd(supervisor, options["overrides"])
    except (ConfigError, StateFileError) as error:
        raise _exit(error, options["overrides"]) from None
    return _Twistd(server, options["overrides"])


def _follow(supervisor: int) -> None:
    """In a worker: leave the terminal's signals to the supervisor, and end with it."""
    os.setpgrp()
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor:
        raise SystemExit("twistd wsapp: the supervisor of this worker has exited")
