"""
Channels as pure state: names, positions, bounded history and the gapless feed of one channel.

A channel is a named stream of publications. Each publication gets the next ``offset``
(1, 2, 3, ...); the stream's ``epoch`` names one life of it, and changes when the stream is
lost (a restarted memory backend, an expired Redis stream). A client that saw up to
``Position(offset, epoch)`` can recover exactly what it missed, or learn that it cannot.

Nothing here does I/O: the backends keep a :class:`ChannelLog` (memory) or its Redis
equivalent, and the hub keeps a :class:`Feed` per channel with local subscribers.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import MessageError
from .messages import INVALID_ARGUMENT

__all__ = [
    "ChannelLog",
    "Feed",
    "HistoryResult",
    "Lost",
    "Position",
    "Publication",
    "check_channel_name",
    "namespace_of",
    "position_from",
    "recover",
]

#: Longest channel name, in characters, unless configured otherwise.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Position:
    """Where a channel's stream stands: the offset of its last publication, and its epoch."""

    offset: int
    epoch: str

    def as_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "epoch": self.epoch}


@dataclass(frozen=True)
class Publication:
    """
    One publication in a channel: its offset and its JSON data; ``tag`` is what its
    publisher attached to it (for this process to recognise its own), not shown to clients.
    """

    offset: int
    data: Any
    tag: str = field(default="", compare=False)


@dataclass(frozen=True)
class HistoryResult:
    """
    A channel's ``position`` and the publications after a requested one, oldest first.

    ``recovered`` says whether ``publications`` are all that followed the requested position
    in the same epoch (True), or whether some are missing (history too short, a new epoch).
    """

    position: Position
    publications: tuple[Publication, ...] = ()
    recovered: bool = True


@dataclass(frozen=True)
class Lost:
    """A step of a :class:`Feed`: publications before ``position`` were lost for good."""

    position: Position


Step = Publication | Lost


def check_channel_name(name: object, max_length: int = MAX_NAME_LENGTH) -> str:
    """
    Return ``name`` if it is a usable channel name, else raise ``invalid-argument``.

    A name has 1 to ``max_length`` characters, none of them white space or control or other
    invisible characters, and does not start with ``$`` (kept for the server's own channels).
    """
    if not isinstance(name, str):
        raise MessageError(INVALID_ARGUMENT, "'channel' must be a string")
    if not name:
        raise MessageError(INVALID_ARGUMENT, "'channel' must not be empty")
    if len(name) > max_length:
        raise MessageError(INVALID_ARGUMENT, f"'channel' is longer than {max_length} characters")
    if name.startswith("$"):
        raise MessageError(INVALID_ARGUMENT, "channel names starting with '$' are reserved")
    for character in name:
        if character.isspace() or unicodedata.category(character)[0] in "CZ":
            raise MessageError(
                INVALID_ARGUMENT, "'channel' must not contain spaces or control characters"
            )
    return name


def position_from(value: object) -> Position:
    """
    Read a client's ``{"offset": N, "epoch": E}`` (a ``since``), or raise
    ``invalid-argument`` saying what is wrong with it.
    """
    if not isinstance(value, Mapping) or set(value) != {"offset", "epoch"}:
        raise MessageError(INVALID_ARGUMENT, '\'since\' must be {"offset": N, "epoch": E}')
    offset, epoch = value["offset"], value["epoch"]
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise MessageError(INVALID_ARGUMENT, "'since.offset' must be an integer of 0 or more")
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise MessageError(INVALID_ARGUMENT, "'since.epoch' must be a string")
    return Position(offset, epoch)


def namespace_of(channel: str) -> str:
    """The namespace of ``channel``: the part before its first ``:``, or ``""``."""
    namespace, colon, _ = channel.partition(":")
    return namespace if colon else ""


def recover(
    since: Position, top: Position, available: Sequence[Publication]
) -> tuple[tuple[Publication, ...], bool]:
    """
    Decide what a subscriber at ``since`` gets, from the channel at ``top`` whose history
    holds ``available`` (oldest first): the publications after ``since`` that history has,
    and whether they are complete (same epoch, nothing trimmed before them).
    """
    if since.epoch != top.epoch or since.offset > top.offset:
        return tuple(available), False
    after = tuple(publication for publication in available if publication.offset > since.offset)
    complete = len(after) == top.offset - since.offset and (
        not after or after[0].offset == since.offset + 1
    )
    return after, complete


@dataclass
class _Entry:
    publication: Publication
    time: float


class ChannelLog:
    """
    One channel's stream in a process: the offset counter and a bounded, expiring history.

    ``size`` publications are kept (0: none), each for ``ttl`` seconds (0: until pushed out).
    """

    def __init__(self, epoch: str, *, size: int = 0, ttl: float = 0.0, offset: int = 0) -> None:
        self.epoch = epoch
        self.offset = offset
        self.size = size
        self.ttl = ttl
        self._entries: deque[_Entry] = deque(maxlen=size or 1)

    @property
    def position(self) -> Position:
        return Position(self.offset, self.epoch)

    def configure(self, size: int, ttl: float) -> None:
        """Apply the channel's current history options (keeping what still fits)."""
        if size != self.size:
            self._entries = deque(self._entries if size else (), maxlen=size or 1)
        self.size, self.ttl = size, ttl

    def append(self, data: Any, now: float, tag: str = "") -> Publication:
        """Publish ``data``: return the publication with the next offset."""
        self.offset += 1
        publication = Publication(self.offset, data, tag)
        if self.size:
            self._entries.append(_Entry(publication, now))
        return publication

    def _expire(self, now: float) -> None:
        if self.ttl:
            while self._entries and self._entries[0].time + self.ttl <= now:
                self._entries.popleft()

    def kept(self, now: float) -> list[Publication]:
        """The publications history still holds, oldest first."""
        self._expire(now)
        return [entry.publication for entry in self._entries]

    def is_empty(self, now: float) -> bool:
        """Whether history holds nothing (the log can be forgotten, with its epoch)."""
        self._expire(now)
        return not self._entries

    def read(self, now: float, since: Position | None = None, limit: int = 0) -> HistoryResult:
        """
        With ``since``: what followed it (see :func:`recover`); without: the latest ``limit``
        publications (0: none), recovered.
        """
        kept = self.kept(now)
        top = self.position
        if since is None:
            latest = kept[-limit:] if limit else []
            return HistoryResult(top, tuple(latest), True)
        publications, recovered = recover(since, top, kept)
        if limit and len(publications) > limit:
            publications, recovered = publications[:limit], False
        return HistoryResult(top, publications, recovered)


@dataclass
class Feed:
    """
    What this process delivers of one channel: each publication once, in offset order, or
    a :class:`Lost` step saying which were lost.

    Publications arrive from the backend (:meth:`receive`), possibly with gaps (a lost
    pub/sub message), duplicates (history and pub/sub overlapping) or a new epoch. A gap,
    or a new epoch's publication after its first, makes the feed hold what arrives and ask
    for history (``filling``); :meth:`filled` hands it the history read and releases what
    can be delivered.
    """

    #: The last position delivered; None until the channel's position is first known.
    position: Position | None = None
    filling: bool = False
    held: list[tuple[str, Publication]] = field(default_factory=list)

    def start(self, position: Position) -> list[Step]:
        """Set the first known position (from a history read) and release what was held."""
        if self.position is not None:
            return []
        self.position = position
        return self._release()

    def receive(self, epoch: str, publication: Publication) -> tuple[list[Step], Position | None]:
        """
        Take one publication from the backend. Return the steps to deliver now, and the
        position to read history from when a gap was found (None otherwise).
        """
        if self.position is None or self.filling:
            self.held.append((epoch, publication))
            return [], None
        position = self.position
        if (
            publication.offset > position.offset + 1
            if epoch == position.epoch
            else publication.offset > 1  # a new epoch's history may hold its first ones
        ):
            self.filling = True
            self.held.append((epoch, publication))
            return [], position
        return list(self._advance(epoch, publication)), None

    def resync(self) -> Position | None:
        """Begin a check against history (after pub/sub was lost); return where from."""
        if self.position is None or self.filling:
            return None
        self.filling = True
        return self.position

    def filled(self, result: HistoryResult | None) -> list[Step]:
        """
        Take the history read after a gap (None if it failed) and return what to deliver:
        the missing publications, or a :class:`Lost` step, then what was held.
        """
        self.filling = False
        steps: list[Step] = []
        if result is not None:
            steps.extend(self._catch_up(result))
        return steps + self._release()

    def _catch_up(self, result: HistoryResult) -> Iterator[Step]:
        assert self.position is not None
        if not result.recovered:
            # Lost: what comes before the oldest publication that history or pub/sub has.
            epoch = result.position.epoch
            oldest = [result.position.offset + 1]
            oldest += [result.publications[0].offset] if result.publications else []
            oldest += [p.offset for e, p in self.held if e == epoch]
            self.position = Position(min(oldest) - 1, epoch)
            yield Lost(self.position)
        for publication in result.publications:
            yield from self._advance(result.position.epoch, publication)
        if result.recovered and self.position.offset < result.position.offset:
            # history reached the top: nothing can be missing below it any more
            self.position = result.position

    def _release(self) -> list[Step]:
        held, self.held = self.held, []
        steps: list[Step] = []
        for epoch, publication in held:
            steps.extend(self._advance(epoch, publication))
        return steps

    def _advance(self, epoch: str, publication: Publication) -> Iterable[Step]:
        """Deliver ``publication`` if new; a gap or a new epoch is a :class:`Lost` step first."""
        position = self.position
        assert position is not None
        if epoch == position.epoch and publication.offset <= position.offset:
            return []  # already delivered
        steps: list[Step] = []
        if epoch != position.epoch or publication.offset != position.offset + 1:
            steps.append(Lost(Position(publication.offset - 1, epoch)))
        self.position = Position(publication.offset, epoch)
        steps.append(publication)
        return steps
