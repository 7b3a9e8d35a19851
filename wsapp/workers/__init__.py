"""
Several processes serving one port: ``twistd wsapp --workers N``.

- :mod:`~wsapp.workers.supervisor`: the process ``twistd`` runs; it opens the listening
  sockets, starts the workers with them, restarts a worker that dies and passes a
  shutdown on to every worker.
- :mod:`~wsapp.workers.sockets`: the listening sockets, and the endpoint a worker listens
  with on the socket it inherited.
- :mod:`~wsapp.workers.peers`: each worker's report on a private unix socket, and the
  ``/health`` and ``/metrics`` that gather every worker's report.
"""

__all__: list[str] = []
