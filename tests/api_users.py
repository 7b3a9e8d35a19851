"""A channels app whose connections carry a ``user`` (its id from ``?user=``), for API tests."""

from __future__ import annotations

from typing import Any

from wsapp.apps.channels import ChannelsProtocol
from wsapp.identity import User


class UserProtocol(ChannelsProtocol):
    """Takes the user id from the query string, as an identity check would from a token."""

    def onConnect(self, request: Any) -> Any:
        self.user = User(id=request.params.get("user", [""])[0])
        return super().onConnect(request)
