"""
The access log: one line per opening handshake (namespace ``wsapp.server``).

An accepted handshake logs ``PEER GET PATH 101 user: USER extensions: EXTENSIONS``, a
refused one ``PEER GET PATH STATUS (REASON)``; every ``token`` query parameter is shown as
``REDACTED``. Each event also carries the line's parts as fields (``peer``, ``path``,
``status``, ``user``, ``extensions``, ``reason``) for structured observers.

A handshake costs the server well under a millisecond, and Twisted's text log observer
used to take a seventh of it for this line: it formats an event's ``log_format`` with
:class:`string.Formatter` (pure Python) and its timestamp with ``strftime`` and a time-zone
lookup. The line is therefore built here with f-strings and logged as literal text, and
:func:`install_timestamp_cache` (run when this module is imported) makes the observer
format each second's timestamp once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from twisted.logger import Logger
from twisted.logger import _file as twisted_file_log

from .guard import redacted_target

__all__ = ["accepted", "install_timestamp_cache", "refused"]

log = Logger(namespace="wsapp.server")
#: The system text observers show for these lines anyway, given so they need not build it.
_SYSTEM = "wsapp.server#info"


def _literal(text: str) -> str:
    """``text`` as a log format that formats to itself."""
    return text.replace("{", "{{").replace("}", "}}")


def logged_target(protocol: Any) -> str:
    """The handshake's path and query, with tokens redacted."""
    path = getattr(protocol, "http_request_path", "-")
    return redacted_target(path, getattr(protocol, "http_request_uri", "").partition("?")[2])


def accepted(protocol: Any, user: str, extensions: str) -> None:
    """Log the accepted handshake of ``protocol``."""
    _line(protocol, 101, f"user: {user} extensions: {extensions}", user=user, extensions=extensions)


def refused(protocol: Any, status: int, reason: str) -> None:
    """Log the handshake of ``protocol`` refused with HTTP ``status`` for ``reason``."""
    _line(protocol, status, f"({reason})", reason=reason)


def _line(protocol: Any, status: int, rest: str, **fields: Any) -> None:
    """Log ``PEER GET PATH STATUS REST`` as literal text, its parts as fields too."""
    peer, path = protocol.peer, logged_target(protocol)
    log.info(
        _literal(f"{peer} GET {path} {status} {rest}"),
        log_system=_SYSTEM,
        peer=peer,
        path=path,
        status=status,
        **fields,
    )


_format_time = twisted_file_log.formatTime  # type: ignore[attr-defined]


@lru_cache(maxsize=4)
def _second(second: int, time_format: str) -> str:
    return str(_format_time(second, time_format))


def _cached_format_time(
    when: float | None, timeFormat: str | None = None, default: str = "-"
) -> str:
    # The same text as Twisted's formatTime: a format without sub-second fields gives one
    # text per whole second (offsets from UTC change on whole seconds).
    if when is None or timeFormat is None or "%f" in timeFormat:
        return str(_format_time(when, timeFormat, default))
    second = int(when // 1)
    return _second(second, timeFormat)


def install_timestamp_cache() -> None:
    """
    Make Twisted's text log observers (twistd's log) format each second's timestamp once.

    ``textFileLogObserver`` looks ``formatTime`` up in its module for every event: this is
    the one place changed, and the text it produces is the same.
    """
    twisted_file_log.formatTime = _cached_format_time  # type: ignore[attr-defined]
