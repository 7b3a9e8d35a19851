"""
wsapp's reactor: Twisted's epoll reactor, handling each I/O event with one call.

Twisted's epoll reactor runs every read or write event through ``log.callWithLogger``, which
asks the connection for its ``logPrefix()`` and pushes it as the ``system`` of a new logging
context (``callWithContext``, a dictionary copy and two more calls) around
``_doReadOrWrite``: about a fifth of the server's time when many clients each send small
requests. This reactor handles the same events in the same order with the same outcome
(``doRead``/``doWrite``, disconnection with the same reason, errors logged with the
connection's ``logPrefix()`` as their ``system``), without the context: the one difference
is that legacy ``twisted.python.log.msg`` calls made while an event is handled show ``-`` as
their system instead of the connection's prefix. Events of ``twisted.logger`` loggers (all
of wsapp's, autobahn's and Twisted's own) never carried it.

``twistd wsapp`` installs it unless another reactor was chosen (``twistd -r epoll wsapp``
keeps Twisted's); ``twistd -r wsapp`` selects it for any twistd plugin.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import epollreactor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST, installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log

__all__ = ["WsappReactor", "install"]


class WsappReactor(epollreactor.EPollReactor):
    """An epoll reactor whose I/O events skip Twisted's per-event logging context."""

    def doPoll(self, timeout: float | None) -> None:
        """Poll for I/O events and handle each as ``EPollReactor`` does."""
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as error:
            if error.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                self._handle(selectable, fd, event)

    doIteration = doPoll

    def _handle(self, selectable: Any, fd: int, event: int) -> None:
        # EPollReactor's _doReadOrWrite, without callWithLogger around it.
        why: BaseException | None = None
        in_read = False
        try:
            if event & self._POLL_DISCONNECTED and not (event & self._POLL_IN):
                if fd in self._reads:
                    in_read = True
                    why = CONNECTION_DONE
                else:
                    why = CONNECTION_LOST
            else:
                try:
                    if selectable.fileno() == -1:
                        why = _NO_FILEDESC
                    else:
                        if event & self._POLL_IN:
                            why = selectable.doRead()
                            in_read = True
                        if not why and event & self._POLL_OUT:
                            why = selectable.doWrite()
                            in_read = False
                except BaseException as error:
                    if isinstance(error, KeyboardInterrupt):
                        raise
                    # Any exception from application code gets logged and will cause us
                    # to disconnect the selectable.
                    why = error
                    _log_error(selectable)
            if why:
                self._disconnectSelectable(selectable, why, in_read)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _log_error(selectable)


def _log_error(selectable: Any) -> None:
    """Log the exception being handled as ``callWithLogger`` would, with its system."""
    try:
        system = selectable.logPrefix()
    except BaseException:
        system = "(buggy logPrefix method)"
    log.err(system=system)


def install() -> WsappReactor:
    """Install a :class:`WsappReactor` as Twisted's global reactor and return it."""
    reactor = WsappReactor()
    installReactor(reactor)
    return reactor
