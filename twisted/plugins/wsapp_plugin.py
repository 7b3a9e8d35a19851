from twisted.application.service import ServiceMaker

wsapp = ServiceMaker(
    "wsapp",
    "wsapp.tap",
    "Real-time WebSocket apps (counter, echo, chat, clock, your own) on one port",
    "wsapp",
)
