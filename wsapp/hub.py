"""
This process's side of the channels: which connections listen to what, and delivery to them.

The :class:`Hub` is the one :class:`~wsapp.backends.BackendListener` of a server. It
subscribes the backend to a channel while at least one local connection listens to it,
keeps a :class:`~wsapp.channels.Feed` per such channel (so a gap in what the backend
delivers is filled from history, or reported as a loss), and hands each publication to the
factories of its listeners, which encode and frame it once for all of them.

A subscriber joins in three steps that keep its stream exact: the backend subscription is
made first, then history is read, and publications that arrive meanwhile are held for it
and released after the caller's ``reply`` (only those newer than what history returned).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .backends import Backend, PresenceChange
from .channels import Feed, HistoryResult, Lost, Position, Publication, Step

__all__ = ["ChannelListener", "Hub"]

log = Logger()


class ChannelListener(Protocol):
    """What the hub sends a channel's steps to: the factory of the listening connections."""

    def channel_publication(
        self, channel: str, publication: Publication, members: list[Any]
    ) -> None:
        """Send ``publication`` of ``channel`` to ``members`` (encoded once)."""

    def channel_lost(self, channel: str, position: Position, members: list[Any]) -> None:
        """Tell ``members`` that publications of ``channel`` up to ``position`` were lost."""

    def channel_presence(self, channel: str, change: PresenceChange, members: list[Any]) -> None:
        """``channel``'s presence changed; ``members`` listen to it here."""


@dataclass
class _Channel:
    """The local listeners of one channel and its feed."""

    feed: Feed = field(default_factory=Feed)
    members: dict[Any, None] = field(default_factory=dict)
    #: Connections between subscribing and their reply, with the steps held for them.
    joining: dict[Any, list[Step]] = field(default_factory=dict)
    #: Connections whose reply reached further than the feed has delivered, and how far.
    ahead: dict[Any, int] = field(default_factory=dict)
    subscribed: bool = False
    waiting: list[Deferred[None]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.members or self.joining)


@dataclass
class _Pending:
    """A publication whose sender waits for it, to reply in the channel's order."""

    done: Deferred[Any]
    channel: str
    exclude: Any
    position: Position | None = None
    #: The data delivered (an incremented value, for :meth:`Hub.increment`).
    data: Any = None


class Hub:
    """Delivers the backend's channels to this process's connections."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        backend.listener = self
        self.channels: dict[str, _Channel] = {}
        #: Tags of this process's publications start with this.
        self.origin = uuid.uuid4().hex[:12]
        self._tags = itertools.count(1)
        self._pending: dict[str, _Pending] = {}

    # --- what connections and apps call ---

    async def subscribe(
        self,
        channel: str,
        member: Any,
        *,
        since: Position | None = None,
        latest: int = 0,
        reply: Callable[[HistoryResult], None] | None = None,
    ) -> HistoryResult:
        """
        Make ``member`` (a connection) listen to ``channel`` and return the channel's
        history after ``since`` (or its ``latest`` publications); ``reply`` is called with
        it before any later publication reaches ``member``.
        """
        entry = self.channels.get(channel)
        fresh = entry is None
        if entry is None:
            entry = self.channels[channel] = _Channel()
        entry.joining[member] = []
        try:
            if not entry.subscribed:
                waiting: Deferred[None] = Deferred()
                entry.waiting.append(waiting)
                if fresh:  # after waiting is listed: a backend may fail at once
                    self._subscribe_backend(channel, entry)
                await waiting
            result = await self.backend.history(channel, since=since, limit=latest)
        except BaseException:
            entry.joining.pop(member, None)
            self._drop_if_empty(channel, entry)
            raise
        if member not in entry.joining:  # unsubscribed (or closed) meanwhile
            self._drop_if_empty(channel, entry)
            return result
        self._run(channel, entry, entry.feed.start(result.position))
        held = entry.joining.pop(member)
        entry.members[member] = None
        if reply is not None:
            reply(result)
        self._release(channel, entry, member, result.position, held)
        return result

    def unsubscribe(self, channel: str, member: Any) -> bool:
        """Stop ``member`` listening to ``channel``; return whether it was listening."""
        entry = self.channels.get(channel)
        if entry is None:
            return False
        found = entry.members.pop(member, False) is None
        found = entry.joining.pop(member, None) is not None or found
        entry.ahead.pop(member, None)
        self._drop_if_empty(channel, entry)
        return found

    def listeners(self, channel: str) -> int:
        """How many local connections listen to ``channel``."""
        entry = self.channels.get(channel)
        return 0 if entry is None else len(entry.members)

    def publish(
        self,
        channel: str,
        data: Any,
        *,
        history_size: int = 0,
        history_ttl: float = 0.0,
        exclude: Any = None,
    ) -> Deferred[Position]:
        """
        Publish ``data`` to ``channel`` on every process. With ``exclude`` (a local
        listener), that connection does not get it, and the Deferred fires when the others
        here did, so a reply to it keeps the channel's order.
        """
        tag, pending = self._expect(channel, exclude)
        publishing = self.backend.publish(
            channel, data, history_size=history_size, history_ttl=history_ttl, tag=tag
        )
        if pending is None:
            return publishing
        self._track(tag, pending, publishing)
        return pending.done

    def increment(
        self, key: str, amount: int, *, limit: int, channel: str, exclude: Any = None
    ) -> Deferred[tuple[int, Position | None]]:
        """Add ``amount`` to ``key`` and publish the new value on ``channel`` (see publish)."""
        tag, pending = self._expect(channel, exclude)
        changing = self.backend.increment(key, amount, limit=limit, channel=channel, tag=tag)
        if pending is None:
            return changing
        replied: dict[str, int] = {}

        def published(outcome: tuple[int, Position | None]) -> Position | None:
            replied["value"] = outcome[0]
            return outcome[1]

        self._track(tag, pending, changing.addCallback(published))
        return pending.done.addCallback(
            lambda position: (replied.get("value", pending.data), position)
        )

    # --- what the backend calls ---

    def deliver(self, channel: str, epoch: str, publication: Publication, tag: str) -> None:
        entry = self.channels.get(channel)
        if entry is None:
            return
        if tag and publication.tag != tag:
            publication = Publication(publication.offset, publication.data, tag)
        steps, gap = entry.feed.receive(epoch, publication)
        self._run(channel, entry, steps)
        if gap is not None:
            self._fill(channel, entry, gap)

    def presence_changed(self, channel: str, change: PresenceChange) -> None:
        entry = self.channels.get(channel)
        if entry is not None and entry.members:
            for factory, members in _by_factory(entry.members).items():
                factory.channel_presence(channel, change, members)

    def interrupted(self) -> None:
        # Senders waiting for their publication to come back would wait until Redis is:
        # those whose publication was made are answered now, the others when it fails.
        for tag, pending in list(self._pending.items()):
            if pending.position is not None:
                del self._pending[tag]
                pending.done.callback(pending.position)

    def reconnected(self) -> None:
        for channel, entry in list(self.channels.items()):
            since = entry.feed.resync()
            if since is not None:
                self._fill(channel, entry, since)

    # --- inside ---

    def _subscribe_backend(self, channel: str, entry: _Channel) -> None:
        def subscribed(_: object) -> None:
            entry.subscribed = True
            waiting, entry.waiting = entry.waiting, []
            for deferred in waiting:
                deferred.callback(None)

        def failed(failure: Failure) -> None:
            if self.channels.get(channel) is entry:
                del self.channels[channel]
            waiting, entry.waiting = entry.waiting, []
            for deferred in waiting:
                deferred.errback(failure)

        self.backend.subscribe(channel).addCallbacks(subscribed, failed)

    def _drop_if_empty(self, channel: str, entry: _Channel) -> None:
        if entry.empty() and self.channels.get(channel) is entry and not entry.waiting:
            del self.channels[channel]
            if entry.subscribed:
                self.backend.unsubscribe(channel).addErrback(_ignore)

    def _fill(self, channel: str, entry: _Channel, since: Position) -> None:
        def read(result: HistoryResult | None) -> None:
            if self.channels.get(channel) is entry:
                self._run(channel, entry, entry.feed.filled(result))

        def failed(failure: Failure) -> None:
            log.warn(
                "Could not read {channel}'s history after a gap: {error}",
                channel=channel,
                error=failure.getErrorMessage(),
            )
            read(None)

        self.backend.history(channel, since=since).addCallbacks(read, failed)

    def _run(self, channel: str, entry: _Channel, steps: Iterable[Step]) -> None:
        for step in steps:
            for buffer in entry.joining.values():
                buffer.append(step)
            if isinstance(step, Publication):
                self._publication(channel, entry, step)
            else:
                self._lost(channel, entry, step)

    def _publication(self, channel: str, entry: _Channel, publication: Publication) -> None:
        pending = self._pending.pop(publication.tag, None) if publication.tag else None
        exclude = None if pending is None else pending.exclude
        ahead = entry.ahead
        if ahead:
            for member, offset in list(ahead.items()):
                if publication.offset >= offset:
                    del ahead[member]
        members = [
            member
            for member in entry.members
            if member is not exclude and (not ahead or member not in ahead)
        ]
        if members:
            for factory, group in _by_factory(members).items():
                factory.channel_publication(channel, publication, group)
        if pending is not None:
            pending.data = publication.data
            pending.done.callback(entry.feed.position)
        elif self._pending:  # from history (untagged): answer senders it reached
            self._answer_reached(channel, entry.feed.position)

    def _answer_reached(self, channel: str, position: Position | None) -> None:
        for tag, pending in list(self._pending.items()):
            if pending.channel == channel and _reached(position, pending.position):
                del self._pending[tag]
                pending.done.callback(pending.position)

    def _lost(self, channel: str, entry: _Channel, lost: Lost) -> None:
        entry.ahead.clear()
        if entry.members:
            for factory, group in _by_factory(entry.members).items():
                factory.channel_lost(channel, lost.position, group)
        for tag, pending in list(self._pending.items()):
            if pending.channel == channel and _reached(lost.position, pending.position):
                del self._pending[tag]
                pending.done.callback(pending.position)

    def _release(
        self, channel: str, entry: _Channel, member: Any, position: Position, held: list[Step]
    ) -> None:
        """Send ``member`` the steps held while it joined, after ``position``."""
        factory = member.factory
        for step in held:
            if isinstance(step, Lost):
                if step.position.epoch != position.epoch or step.position.offset > position.offset:
                    factory.channel_lost(channel, step.position, [member])
                    position = step.position
            elif step.offset > position.offset or entry.feed.position is None:
                factory.channel_publication(channel, step, [member])
                position = Position(step.offset, position.epoch)
        fed = entry.feed.position
        if fed is not None and fed.epoch == position.epoch and fed.offset < position.offset:
            entry.ahead[member] = position.offset

    def _expect(self, channel: str, exclude: Any) -> tuple[str, _Pending | None]:
        entry = self.channels.get(channel)
        if exclude is None or entry is None or exclude not in entry.members:
            return "", None
        tag = f"{self.origin}:{next(self._tags)}"
        pending = self._pending[tag] = _Pending(Deferred(), channel, exclude)
        return tag, pending

    def _track(self, tag: str, pending: _Pending, publishing: Deferred[Any]) -> None:
        """Answer ``pending`` from the backend's reply if its delivery cannot come."""

        def published(position: Position | None) -> None:
            if self._pending.get(tag) is not pending:
                return  # delivered already
            pending.position = position
            entry = self.channels.get(pending.channel)
            fed = None if entry is None else entry.feed.position
            gone = entry is None or pending.exclude not in entry.members
            if gone or _reached(fed, position) or not self.backend.available:
                del self._pending[tag]
                pending.done.callback(position)

        def failed(failure: Failure) -> None:
            if self._pending.pop(tag, None) is pending:
                pending.done.errback(failure)

        publishing.addCallbacks(published, failed)


def _reached(position: Position | None, target: Position | None) -> bool:
    """Whether ``position`` is at or past ``target`` (never, across epochs)."""
    return (
        position is not None
        and target is not None
        and position.epoch == target.epoch
        and position.offset >= target.offset
    )


def _by_factory(members: Iterable[Any]) -> Mapping[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for member in members:
        factory = member.factory
        group = groups.get(factory)
        if group is None:
            groups[factory] = [member]
        else:
            group.append(member)
    return groups


def _ignore(failure: Failure) -> None:
    """Errback of an unsubscribe: the backend forgets the channel when it reconnects."""
