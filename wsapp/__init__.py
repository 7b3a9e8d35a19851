"""wsapp: real-time WebSocket apps on Autobahn and Twisted."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["connect"]


def __getattr__(name: str) -> Any:
    # ``wsapp.connect`` imports Twisted only when first used, so ``import wsapp`` stays light.
    if name == "connect":
        from .client.sync import connect

        return connect
    raise AttributeError(f"module 'wsapp' has no attribute {name!r}")
