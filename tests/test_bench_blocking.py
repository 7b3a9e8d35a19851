"""The blocking-client benchmark runs end to end (a smoke test: it checks counts, never speed)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.threads import deferToThread

from wsapp.bench.blocking import LOOPS, REFERENCE, blocking_table, run_blocking


@pytest_twisted.ensureDeferred
async def test_run_blocking_reports_every_client_and_ratio() -> None:
    """A tiny run measures each client and mode, and the table shows every ratio."""
    lines: list[str] = []
    # In a worker thread: blocking clients refuse to run in the reactor's thread.
    result = await deferToThread(run_blocking, True, lines.append)
    assert len(lines) == 1  # one slice
    for name, mode in LOOPS:
        figures = result["clients"][name][mode]
        assert all(figures[key] > 0 for key in ("per_second", "client_cpu_us"))
        if name != REFERENCE:
            assert result["ratios"][name][mode] > 0
    table = blocking_table(result)
    assert table.splitlines()[0].split()[:2] == ["client", "mode"]
    assert len(table.splitlines()) == 2 + len(LOOPS) + 1
    assert table.count("x  ") == len(LOOPS) - 1
