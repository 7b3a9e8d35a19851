"""The pure state objects, without sockets."""

from __future__ import annotations

import pytest

from wsapp.exceptions import StateError
from wsapp.state import SAFE_INTEGER, Counter, Registry, Throttle


def test_registry_tracks_members_in_join_order() -> None:
    """Members are listed in the order they joined; leaving twice is harmless."""
    registry: Registry[str] = Registry()
    for name in ["a", "b", "c"]:
        registry.add(name)
    assert list(registry) == ["a", "b", "c"] and len(registry) == 3
    assert registry.discard("b") is True
    assert registry.discard("b") is False
    assert list(registry) == ["a", "c"] and "b" not in registry


def test_registry_iterates_over_a_snapshot() -> None:
    """Members may leave while a broadcast iterates over the registry."""
    registry: Registry[int] = Registry()
    for member in range(5):
        registry.add(member)
    seen = []
    for member in registry:
        registry.discard(member + 1)
        seen.append(member)
    assert seen == [0, 1, 2, 3, 4]
    assert list(registry) == [0]


def test_counter_adds_and_keeps_within_safe_integers() -> None:
    """The counter adds any amount but refuses to leave the range JavaScript represents exactly."""
    counter = Counter()
    assert counter.add(5) == 5 and counter.add(-7) == -2
    counter = Counter(SAFE_INTEGER - 1)
    assert counter.add(1) == SAFE_INTEGER
    with pytest.raises(StateError) as refused:
        counter.add(1)
    assert refused.value.code == "out-of-range"
    assert counter.value == SAFE_INTEGER


def test_throttle_runs_at_once_when_quiet_and_merges_requests_within_the_interval() -> None:
    """A request after a quiet period is due now; requests within the interval merge into one."""
    throttle = Throttle(0.1)
    assert throttle.request(10.0) == 0
    throttle.ran(10.0)
    assert throttle.request(10.03) == pytest.approx(0.07)
    assert throttle.request(10.05) is None
    assert throttle.request(10.09) is None
    throttle.ran(10.1)
    assert throttle.request(10.35) == 0


def test_throttle_with_no_interval_never_delays() -> None:
    """An interval of 0 makes every request due at once, one at a time."""
    throttle = Throttle(0)
    for now in (1.0, 1.0, 1.0):
        assert throttle.request(now) == 0
        assert throttle.request(now) is None
        throttle.ran(now)
