"""Built-in apps, each a small :class:`wsapp.server.ServerProtocol` subclass."""
