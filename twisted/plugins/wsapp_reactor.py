from twisted.application.reactors import Reactor

wsapp = Reactor(
    "wsapp",
    "wsapp.reactor",
    "epoll, handling each I/O event without a logging context (twistd wsapp's default)",
)
