"""A channels app whose connections carry a ``user`` (its id from ``?user=``), for API tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from wsapp.apps.channels import ChannelsProtocol


class UserProtocol(ChannelsProtocol):
    """Takes the user id from the query string, as an identity check would from a token."""

    def onConnect(self, request: Any) -> Any:
        self.user = SimpleNamespace(id=request.params.get("user", [""])[0], token_id=None)
        return super().onConnect(request)
