"""
A worker's log, carried to the supervisor: the worker writes its events as JSON records
on its standard output (``twistd --logger``), and the supervisor logs each of them again,
named after the worker's pid, wherever its own log goes (a file, syslog, the terminal).
"""

from __future__ import annotations

import sys
import time
from typing import Any, cast

from twisted.logger import (
    ILogObserver,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
    jsonFileLogObserver,
)

__all__ = ["Relay", "observer"]

SEPARATOR = b"\x1e"


def observer() -> ILogObserver:
    """The worker's log observer: JSON records on standard output (``twistd --logger``)."""
    observer: Any = jsonFileLogObserver(sys.stdout, recordSeparator=SEPARATOR.decode())
    return cast(ILogObserver, observer)


class Relay:
    """Logs the records a worker writes (standard output) and its other lines (standard error)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._records = b""
        self._lines = b""

    def records(self, data: bytes) -> None:
        """Take bytes of the worker's standard output."""
        # each record is SEPARATOR, JSON (one line) and a newline: complete at its newline
        *complete, self._records = (self._records + data).split(b"\n")
        for record in complete:
            self._emit(record.lstrip(SEPARATOR))

    def lines(self, data: bytes) -> None:
        """Take bytes of the worker's standard error (tracebacks, exit messages)."""
        *complete, self._lines = (self._lines + data).split(b"\n")
        for line in complete:
            self._line(line)

    def flush(self) -> None:
        """Log what is left once the worker has exited."""
        self._emit(self._records.lstrip(SEPARATOR))
        if self._lines:
            self._line(self._lines)
        self._records = self._lines = b""

    def _emit(self, record: bytes) -> None:
        text = record.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event: dict[str, Any] = eventFromJSON(text)
        except ValueError:
            self._line(record)
            return
        event["wsapp_worker"] = self.pid
        event["log_format"] = "worker {wsapp_worker}: " + str(event.get("log_format") or "")
        flattened = event.get("log_flattened")
        if isinstance(flattened, dict):  # formatted from these, as the worker flattened them
            flattened["wsapp_worker!s:"] = flattened["wsapp_worker!:"] = self.pid
        globalLogPublisher(event)

    def _line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            globalLogPublisher(
                {
                    "log_format": "worker {wsapp_worker}: {line}",
                    "log_level": LogLevel.error,
                    "log_namespace": __name__,
                    "log_system": "-",
                    "log_time": time.time(),
                    "wsapp_worker": self.pid,
                    "line": text,
                }
            )
