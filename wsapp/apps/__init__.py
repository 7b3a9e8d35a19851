"""Built-in apps, each a small :class:`wsapp.server.ServerProtocol` subclass."""

__all__: list[str] = []
