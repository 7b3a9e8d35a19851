"""
The client side, three ways:

- :class:`ClientProtocol` / :class:`ClientFactory`: a Twisted protocol, for code on the reactor;
- :class:`ReconnectingClient`: a Twisted service keeping one connection alive;
- :func:`connect`: a blocking connection for code without an event loop.

``python -m wsapp.client URL`` is the command-line client (:mod:`wsapp.cli`).
"""

from .protocol import ClientFactory, ClientProtocol
from .service import ReconnectingClient, backoff
from .sync import Connection, connect

__all__ = [
    "ClientFactory",
    "ClientProtocol",
    "Connection",
    "ReconnectingClient",
    "backoff",
    "connect",
]
