"""wsapp: real-time WebSocket apps on Autobahn and Twisted."""

__version__ = "0.1.0"
