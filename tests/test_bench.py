"""The benchmark's smoke mode: every server and workload runs and lands in the JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from wsapp.bench.__main__ import MODES, for_server, workloads
from wsapp.bench.channels import CONFIGURATIONS as CHANNEL_CONFIGURATIONS
from wsapp.bench.scaleout import CONFIGURATIONS, RATIOS
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
    assert (
        "scale-out: counter broadcast to 20 clients, the least disturbed of 1 run(s)" in run.stdout
    )
    assert "channels: 20 channels with 1 subscriber each" in run.stdout
    assert "history 100 / history 0" in run.stdout
    report = json.loads(output.read_text())
    check_scaleout(report["scaleout"])
    check_channels(report["channels"])
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


def check_scaleout(scaleout: dict[str, Any]) -> None:
    """Every scale-out configuration ran in both modes, with every client of every process."""
    assert set(scaleout["results"]) == {name for name, _, _ in CONFIGURATIONS}
    for name, _, processes in CONFIGURATIONS:
        for mode in MODES:
            result = scaleout["results"][name][mode]
            assert "error" not in result, (name, mode, result)
            assert result["clients"] == 20 and result["processes"] == processes
            assert result["broadcasts"] > 0
            assert result["delivered"] == result["broadcasts"] * 20
            assert len(result["server_cpu_us_per_message_each"]) == processes
    for mode in MODES:
        for key in ("ratios", "ratios_of_medians"):
            assert set(scaleout[key][mode]) == {name for name, _, _, _ in RATIOS}
            assert all(ratio > 0 for ratio in scaleout[key][mode].values())


def check_channels(channels: dict[str, Any]) -> None:
    """Every channels configuration ran both loads, each publication reached every subscriber."""
    assert set(channels["results"]) == {name for name, _, _ in CHANNEL_CONFIGURATIONS}
    for name, backend, _ in CHANNEL_CONFIGURATIONS:
        result = channels["results"][name]
        assert "error" not in result, (name, result)
        assert result["memory"]["subscriptions"] == 20
        for part, subscribers, channel_count in [("many", 1, 20), ("one", 10, 1)]:
            load = result[part]
            assert load["channels"] == channel_count, (name, part)
            assert load["publishes"] > 0, (name, part)
            assert load["delivered"] == load["publishes"] * subscribers, (name, part)
            assert load["latency_p99_ms"] >= load["latency_median_ms"] > 0, (name, part)
            if backend == "memory":
                assert load["redis_cpu_us_per_message"] == 0, (name, part)
    for ratio in channels["history_ratios"].values():
        assert ratio["of_medians"] > 0 and len(ratio["per_turn"]) == 1
