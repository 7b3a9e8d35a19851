"""
``python -m wsapp.bench``: wsapp measured beside bare Autobahn and the websockets library.

:mod:`.servers` starts each server as its own process, :mod:`.peers` holds the peers'
servers, :mod:`.load` is the load generator and :mod:`.report` formats the table.
"""

__all__: list[str] = []
