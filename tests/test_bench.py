"""The benchmark's smoke mode: every server and workload runs and lands in the JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wsapp.bench.__main__ import MODES, for_server, workloads
from wsapp.bench.servers import SERVERS

WORKLOADS = ("echo_1x1", "echo_50x10", "handshakes", "memory", "fanout")


def test_smoke_run_reports_every_server_and_workload(tmp_path: Path) -> None:
    """``python -m wsapp.bench --smoke`` measures each workload, both modes, on every server."""
    output = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "wsapp.bench", "--smoke", "--json", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wsapp/websockets" in run.stdout and "wsapp/autobahn" in run.stdout
    report = json.loads(output.read_text())
    assert set(report["results"]) == set(SERVERS)
    for server, per_workload in report["results"].items():
        assert set(per_workload) == set(WORKLOADS), server
        for workload, per_mode in per_workload.items():
            assert set(per_mode) == set(MODES), (server, workload)
            for mode, result in per_mode.items():
                assert "error" not in result, (server, workload, mode, result)
                if workload == "fanout":
                    assert {tier["clients"] for tier in result.values()} == {5, 20}
                    assert all(tier["broadcasts"] > 0 for tier in result.values())
                elif workload == "memory":
                    assert result["bytes_per_connection"] > 0
                else:
                    assert result["delivered"] > 0 and "server_cpu_us_per_message" in result


def test_autobahn_is_not_asked_for_the_5000_client_tier() -> None:
    """The --full tiers reach 5,000 clients on wsapp and websockets, 1,000 on bare autobahn."""
    (fanout,) = [w for w in workloads(False, "100,1000,5000")[-1] if w.name == "fanout"]

    def tiers(name: str) -> str:
        args = for_server(fanout, name).args
        return args[args.index("--tiers") + 1]

    assert tiers("wsapp") == tiers("websockets") == "100,1000,5000"
    assert tiers("autobahn") == "100,1000"
