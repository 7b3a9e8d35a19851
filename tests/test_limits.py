"""The pure limit keepers: token bucket, connection counts, origin and token checks."""

from __future__ import annotations

from wsapp.config import AuthConfig, Config
from wsapp.guard import Guard
from wsapp.limits import ConnectionLimiter, Refusal, TokenBucket


def test_bucket_allows_burst_then_rate() -> None:
    """A full bucket lets ``burst`` requests through at once, and a steady ``rate`` forever."""
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(step / 10) for step in range(1000))  # 10/s for 100 s
    assert [bucket.take(200.0) for _ in range(6)] == [True] * 5 + [False]


def test_client_over_the_rate_gets_only_the_burst() -> None:
    """A client that keeps sending at ten times the rate sinks into debt after the burst."""
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    allowed = [bucket.take(step / 100) for step in range(300)]  # 100/s for 3 s
    assert allowed[:5] == [True] * 5 and not any(allowed[10:])
    assert bucket.debt > 250


def test_bucket_refills_up_to_burst_only() -> None:
    """After a long pause the bucket holds ``burst`` tokens, no more."""
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_refused_requests_build_debt_that_the_rate_pays_back() -> None:
    """Each refusal deepens the debt; waiting pays it back at the rate."""
    bucket = TokenBucket(rate=2, burst=1, now=0.0)
    assert bucket.take(0.0)
    for _ in range(10):
        assert not bucket.take(0.0)
    assert bucket.debt == 10
    assert not bucket.take(5.0)  # 10 tokens repaid, one spent: debt 1
    assert bucket.debt == 1
    assert bucket.take(6.0)
    assert bucket.debt == 0


def test_limiter_counts_total_app_and_address() -> None:
    """Each limit refuses with its status and counts nothing; release frees a place."""
    limiter = ConnectionLimiter(max_total=3, max_per_address=2)
    assert limiter.admit("/a", 0, "10.0.0.1") is None
    assert limiter.admit("/a", 0, "10.0.0.1") is None
    assert limiter.admit("/a", 0, "10.0.0.1") == Refusal(
        429, "too many connections from your address"
    )
    assert limiter.admit("/b", 1, "10.0.0.2") is None
    assert limiter.admit("/b", 1, "10.0.0.3").status == 503  # type: ignore[union-attr]
    assert limiter.admit("/c", 0, "10.0.0.3").status == 503  # type: ignore[union-attr]
    assert (limiter.total, dict(limiter.per_app)) == (3, {"/a": 2, "/b": 1})
    limiter.release("/a", "10.0.0.1")
    assert limiter.admit("/c", 1, "10.0.0.3") is None
    for app, address in [("/a", "10.0.0.1"), ("/b", "10.0.0.2"), ("/c", "10.0.0.3")]:
        limiter.release(app, address)
    assert (limiter.total, dict(limiter.per_app), dict(limiter.per_address)) == (0, {}, {})


def test_origin_allow_list_matches_exact_and_wildcard_origins() -> None:
    """Listed origins and wildcard matches pass; others fail; no Origin header passes."""
    guard = Guard(Config(origins=("https://app.example", "https://*.trusted.example")))
    assert guard.origin_allowed("https://app.example")
    assert guard.origin_allowed("HTTPS://APP.EXAMPLE")
    assert guard.origin_allowed("https://a.trusted.example")
    assert not guard.origin_allowed("https://app.example.evil")
    assert not guard.origin_allowed("http://app.example")
    assert not guard.origin_allowed("https://trusted.example")
    assert not guard.origin_allowed("null")
    assert guard.origin_allowed(None)
    assert Guard(Config()).origin_allowed("https://anything.example")


def test_token_check() -> None:
    """With tokens configured only those pass; with none, anything does."""
    guard = Guard(Config(auth=AuthConfig(tokens=("s3cret", "other"))))
    assert guard.token_valid("s3cret") and guard.token_valid("other")
    assert not guard.token_valid("s3cre") and not guard.token_valid(None)
    assert not guard.token_valid("")
    assert Guard(Config()).token_valid(None)
