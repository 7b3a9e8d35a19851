"""The benchmark's smoke mode: every server, workload and load generator runs and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from wsapp.bench.channels import CONFIGURATIONS as CHANNEL_CONFIGURATIONS
from wsapp.bench.scaleout import CONFIGURATIONS, RATIOS
from wsapp.bench.servers import SERVERS
from wsapp.bench.suite import GENERATORS, MODES, PEERS, for_server, workloads
from wsapp.bench.targets import TARGETS, combine
from wsapp.bench.workers import descendants

#: The workloads each generator runs on the peers; the wsapp variant runs only echo 50x1.
WORKLOADS = {
    "wsapp": {"echo_1x1", "echo_50x1", "echo_50x10", "handshakes", "memory", "chat", "fanout"},
    "picows": {"echo_1x1", "echo_50x1", "echo_50x10", "handshakes", "memory", "chat"},
}


def test_smoke_run_reports_every_server_workload_and_generator(tmp_path: Path) -> None:
    """``--smoke --workloads all`` measures each workload, both modes and generators, everywhere."""
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "wsapp.bench", "--smoke", "--workloads", "all"]
    run = subprocess.run(
        [*command, "--json", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wsapp/websockets" in run.stdout and "wsapp/autobahn" in run.stdout
    assert "wsapp load generator (one frame per write)" in run.stdout
    assert "picows load generator (one frame per write)" in run.stdout
    assert "targets: median of 1 run(s)" in run.stdout
    assert (
        "scale-out: counter broadcast to 20 clients, the least disturbed of 1 run(s)" in run.stdout
    )
    assert "channels: 20 channels with 1 subscriber each" in run.stdout
    assert "history 100 / history 0" in run.stdout
    assert "workers: counter broadcast on redis" in run.stdout
    report = json.loads(output.read_text())
    check_scaleout(report["scaleout"])
    check_channels(report["channels"])
    check_workers(report["workers"])
    assert set(report["versions"]) >= {"python", "autobahn", "twisted", "websockets", "picows"}
    assert set(report["results"]) == set(GENERATORS)
    for generator, per_server in report["results"].items():
        assert set(per_server) == set(SERVERS), generator
        for server, per_workload in per_server.items():
            expected = WORKLOADS[generator] if server in PEERS else {"echo_50x1"}
            assert set(per_workload) == expected, (generator, server)
            for workload, per_mode in per_workload.items():
                assert set(per_mode) == set(MODES), (generator, server, workload)
                for mode, result in per_mode.items():
                    check_result(workload, result, (generator, server, workload, mode))
    rows = report["targets"]
    assert len(rows) == len(TARGETS) + 1  # and the blocking client's
    for row in rows[:-1]:
        assert row["measured"]["wsapp"] is not None and row["measured"]["picows"] is not None
        assert row["holds"] in (True, False), row


def check_result(workload: str, result: dict[str, Any], where: tuple[str, ...]) -> None:
    """One workload's figures: no error, and something measured."""
    assert "error" not in result, (where, result)
    if workload == "fanout":
        assert {tier["clients"] for tier in result.values()} == {5, 20}
        assert all(tier["broadcasts"] > 0 for tier in result.values())
    elif workload == "memory":
        assert "bytes_per_connection" in result  # RSS pages: a tiny count may not grow it
    else:
        assert result["delivered"] > 0 and "server_cpu_us_per_message" in result, where
    if workload.startswith("echo"):
        assert result["batched"] is False
    if workload == "handshakes":
        assert result["failed"] == 0, where
    if workload == "chat":
        assert result["clients"] == 20 and result["wire_bytes_per_delivery"] > 0
        assert result["deflate"] == (where[-1] == "deflate"), where


def test_batched_echo_is_reported_as_batched(tmp_path: Path) -> None:
    """``--batched`` marks the own generator's echo results, not the cross-check's."""
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "wsapp.bench", "--smoke", "--batched", "--workloads"]
    command += ["echo_50x1", "--servers", "wsapp", "--modes", "plain", "--json", str(output)]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wsapp load generator (batched writes)" in run.stdout
    results = json.loads(output.read_text())["results"]
    assert results["wsapp"]["wsapp"]["echo_50x1"]["plain"]["batched"] is True
    assert results["picows"]["wsapp"]["echo_50x1"]["plain"]["batched"] is False


def test_repeated_runs_combine_to_medians() -> None:
    """--repeat's results: each number the median of its runs, an error if any run failed."""
    runs = [{"a": {"x": 1.0, "n": "s"}}, {"a": {"x": 5.0, "n": "s"}}, {"a": {"x": 2.0, "n": "s"}}]
    assert combine(runs) == {"a": {"x": 2.0, "n": "s"}}
    assert combine(runs, max) == {"a": {"x": 5.0, "n": "s"}}
    assert combine([{"x": 1.0}, {"error": "refused"}]) == {"error": "refused"}


def test_descendants_finds_the_children_of_a_process() -> None:
    """The workers part sums the CPU of a process's children, found through /proc."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert child.pid in descendants(os.getpid())
    finally:
        child.communicate(b"")


def test_autobahn_is_not_asked_for_the_5000_client_tier() -> None:
    """The --full tiers reach 5,000 clients on wsapp and websockets, 1,000 on bare autobahn."""
    (fanout,) = [
        w for group in workloads(False, "100,1000,5000") for w in group.workloads
        if w.name == "fanout"
    ]  # fmt: skip

    def tiers(name: str) -> str:
        args = for_server(fanout, name).args
        return args[args.index("--tiers") + 1]

    assert tiers("wsapp") == tiers("websockets") == "100,1000,5000"
    assert tiers("autobahn") == "100,1000"


def check_workers(workers: dict[str, Any]) -> None:
    """Both worker counts ran, or both say --workers is not there yet."""
    results = workers["results"]
    assert set(results) == {"1", "2"}
    for count, result in results.items():
        if "error" in result:
            assert result["error"] == "--workers not supported by this twistd wsapp"
            continue
        assert result["workers"] == int(count) and result["broadcasts"] > 0
        assert len(result["pids"]) >= int(count)


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
