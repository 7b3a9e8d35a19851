"""The client benchmark runs end to end (a smoke test: it checks counts, never speed)."""

from __future__ import annotations

import subprocess
import sys


def test_bench_client_runs_every_loop() -> None:
    """A tiny run reports each client's round trips, rate, median and CPU time per round trip."""
    done = subprocess.run(
        [sys.executable, "-m", "wsapp.bench_client", "--count", "30", "--seconds", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[0] == "client"
    names = [row.rsplit(None, 4)[0] for row in rows]
    assert names == [
        "wsapp.connect, deflate offered",
        "wsapp.connect, no deflate",
        "websocket-client",
    ]
    for row in rows:
        count, *measured = row.rsplit(None, 4)[1:]
        assert int(count) == 30
        assert all(float(value.replace(",", "")) > 0 for value in measured)
