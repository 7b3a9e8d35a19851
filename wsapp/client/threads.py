"""
The reactor thread behind the blocking client, shared by every blocking connection.

A plain script has no running reactor: the first :func:`shared_reactor` call starts the
global one in a daemon thread (without signal handlers) and stops it at exit. A process
that already runs a reactor, in its main thread or another one, keeps it and the blocking
client uses it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

__all__ = ["in_reactor", "shared_reactor"]

_start_lock = threading.Lock()
_reactor_thread: threading.Thread | None = None


def shared_reactor() -> Any:
    """
    Return the global reactor, running: started in a daemon thread unless it already runs.

    Raises :class:`RuntimeError` in the reactor's own thread, where a blocking call would
    wait forever, and when the reactor has already run and stopped.
    """
    global _reactor_thread
    from twisted.internet import reactor as installed

    reactor: Any = installed
    with _start_lock:
        if not reactor.running and _reactor_thread is None:
            if getattr(reactor, "_startedBefore", False):
                raise RuntimeError("the Twisted reactor has stopped and cannot be restarted")
            started = threading.Event()
            reactor.callWhenRunning(started.set)
            _reactor_thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="wsapp-reactor",
                daemon=True,
            )
            _reactor_thread.start()
            if not started.wait(10):
                raise RuntimeError("the Twisted reactor did not start")
            atexit.register(_stop_reactor, reactor, _reactor_thread)
    if not reactor.running:
        raise RuntimeError("the Twisted reactor has stopped; blocking clients cannot run")
    if threadable.isInIOThread():
        raise RuntimeError(
            "a blocking wsapp client cannot be used in the reactor's thread; "
            "call it from another thread (e.g. twisted.internet.threads.deferToThread)"
        )
    return reactor


def _stop_reactor(reactor: Any, thread: threading.Thread) -> None:
    if reactor.running:
        reactor.callFromThread(reactor.stop)
        thread.join(5)


def in_reactor(reactor: Any, call: Callable[..., Any], *args: Any) -> Any:
    """Run ``call(*args)`` in the reactor thread; wait for its (Deferred) result."""
    return blockingCallFromThread(reactor, call, *args)
