"""The pure channel state: names, history and recovery, and the gapless feed (properties)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsapp.channels import (
    ChannelLog,
    Feed,
    HistoryResult,
    Lost,
    Position,
    Publication,
    Step,
    check_channel_name,
    namespace_of,
    recover,
)
from wsapp.exceptions import MessageError


@pytest.mark.parametrize(
    "name", ["", "x" * 256, "a b", "tab\there", "nul\x00", "$counter:/x", "zero\u200bwidth", 7]
)
def test_bad_channel_names_are_invalid_arguments(name: object) -> None:
    """Empty, too long, spaced, control, invisible, reserved and non-string names are refused."""
    with pytest.raises(MessageError) as raised:
        check_channel_name(name)
    assert raised.value.code == "invalid-argument"


def test_namespace_is_the_part_before_the_first_colon() -> None:
    """chat:room:1 is in namespace chat; a name without a colon is in no namespace."""
    assert check_channel_name("chat:room:1") == "chat:room:1"
    assert namespace_of("chat:room:1") == "chat"
    assert namespace_of("news") == ""


@given(size=st.integers(0, 20), count=st.integers(0, 60), since=st.integers(0, 70))
def test_recovery_is_all_or_nothing(size: int, count: int, since: int) -> None:
    """Reading after an offset gives exactly the later publications, or says it cannot."""
    log = ChannelLog("e1", size=size)
    for number in range(count):
        log.append({"n": number + 1}, now=0.0)
    result = log.read(0.0, Position(since, "e1"))
    assert result.position == Position(count, "e1")
    if result.recovered:
        assert [p.offset for p in result.publications] == list(range(since + 1, count + 1))
    else:
        assert since > count or count - since > size
    if since <= count and count - since <= size:
        assert result.recovered


@given(count=st.integers(0, 30), since=st.integers(0, 30))
def test_another_epoch_never_recovers(count: int, since: int) -> None:
    """A position from another life of the channel is never recovered, however close."""
    log = ChannelLog("new", size=100)
    for _ in range(count):
        log.append(1, now=0.0)
    assert not log.read(0.0, Position(since, "old")).recovered


def test_history_ttl_expires_old_publications() -> None:
    """Publications older than the history's time to live are gone; recovery then fails."""
    log = ChannelLog("e", size=10, ttl=5.0)
    log.append("old", now=0.0)
    log.append("new", now=4.0)
    assert [p.data for p in log.kept(now=6.0)] == ["new"]
    assert not log.read(6.0, Position(0, "e")).recovered
    assert log.read(6.0, Position(1, "e")).recovered


def test_recover_refuses_positions_ahead_of_the_stream() -> None:
    """A client claiming an offset past the stream's end is not recovered."""
    assert recover(Position(5, "e"), Position(3, "e"), []) == ((), False)


def _delivered(steps: list[Step]) -> list[int]:
    return [step.offset for step in steps if isinstance(step, Publication)]


@settings(max_examples=300)
@given(
    total=st.integers(1, 40),
    dropped=st.sets(st.integers(1, 40)),
    duplicated=st.sets(st.integers(1, 40)),
    size=st.integers(0, 40),
)
def test_feed_delivers_each_offset_once_in_order_or_says_lost(
    total: int, dropped: set[int], duplicated: set[int], size: int
) -> None:
    """
    Whatever pub/sub drops or repeats, the feed delivers increasing offsets, each once; a
    gap is filled from history when it reaches back, and otherwise comes after a Lost step.
    """
    log = ChannelLog("e", size=size)
    feed = Feed()
    steps = feed.start(log.position)
    for _ in range(total):
        publication = log.append(None, now=0.0)
        arrivals = [] if publication.offset in dropped else [publication]
        if publication.offset in duplicated:
            arrivals *= 2
        for arrival in arrivals:
            now, gap = feed.receive("e", arrival)
            steps += now
            if gap is not None:
                steps += feed.filled(log.read(0.0, gap))
    if feed.position is not None and feed.position.offset < total:
        since = feed.resync()
        assert since is not None
        steps += feed.filled(log.read(0.0, since))
    offsets = _delivered(steps)
    assert offsets == sorted(set(offsets))
    assert feed.position == Position(total, "e")
    expected = 1
    for step in steps:
        if isinstance(step, Lost):
            assert step.position.offset >= expected - 1
            expected = step.position.offset + 1
        else:
            assert step.offset == expected  # never a silent gap
            expected += 1
    if size >= total:
        assert not any(isinstance(step, Lost) for step in steps)


def test_feed_holds_what_arrives_while_filling() -> None:
    """Publications arriving during a history read come after the filled ones, in order."""
    feed = Feed()
    feed.start(Position(0, "e"))
    now, gap = feed.receive("e", Publication(3, "c"))
    assert now == [] and gap == Position(0, "e")
    assert feed.receive("e", Publication(4, "d")) == ([], None)
    result = HistoryResult(
        Position(3, "e"), (Publication(1, "a"), Publication(2, "b"), Publication(3, "c"))
    )
    assert _delivered(feed.filled(result)) == [1, 2, 3, 4]


def test_feed_reports_a_new_epoch_as_lost() -> None:
    """A publication of a new epoch (the stream was lost) comes after a Lost step."""
    feed = Feed()
    feed.start(Position(5, "old"))
    steps, gap = feed.receive("new", Publication(1, "x"))
    assert gap is None
    assert steps == [Lost(Position(0, "new")), Publication(1, "x")]


@given(first=st.integers(2, 30), kept=st.integers(0, 30))
def test_a_new_epoch_joined_late_is_recovered_from_its_history(first: int, kept: int) -> None:
    """
    The first publication heard of a new epoch is not its first one (this process was not
    subscribed when those were made): they come from history, after one Lost step that
    covers only what neither history nor pub/sub has.
    """
    log = ChannelLog("new", size=kept)
    for _ in range(first):
        log.append(None, now=0.0)
    feed = Feed()
    feed.start(Position(5, "old"))
    heard = log.append(None, now=0.0)
    steps, gap = feed.receive("new", heard)
    assert steps == [] and gap == Position(5, "old")
    steps = feed.filled(log.read(0.0, gap))
    oldest = min(max(1, first + 2 - kept), first + 1)  # what history has, or the one heard
    assert steps[0] == Lost(Position(oldest - 1, "new"))
    assert _delivered(steps[1:]) == list(range(oldest, first + 2))
    assert feed.position == Position(first + 1, "new")
