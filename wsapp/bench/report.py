"""The results table: ratios of wsapp to each peer first, then every server's figure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["aligned", "rows", "table"]

Row = tuple[str, str, str, dict[str, float | None], float | None]


def _metric(result: Any, key: str, scale: float = 1.0) -> float | None:
    if not isinstance(result, dict) or key not in result:
        return None
    return float(result[key]) * scale


def rows(results: dict[str, dict[str, dict[str, Any]]], servers: list[str]) -> Iterator[Row]:
    """Yield (metric, mode, better, value by server, highest client CPU %) per table row."""

    def of(workload: str, mode: str, tier: str | None = None) -> dict[str, Any]:
        found = {}
        for name in servers:
            result = results.get(name, {}).get(workload, {}).get(mode)
            found[name] = result.get(tier) if tier and isinstance(result, dict) else result
        return found

    def client_cpu(found: dict[str, Any]) -> float | None:
        values = [_metric(r, "client_cpu_percent") for r in found.values()]
        return max((v for v in values if v is not None), default=None)

    fanout_tiers: list[str] = []
    for per_workload in results.values():
        for per_mode in per_workload.get("fanout", {}).values():
            for tier in per_mode:
                if tier.isdigit() and tier not in fanout_tiers:
                    fanout_tiers.append(tier)
    for mode in ("plain", "deflate"):
        for workload, label in [
            ("echo_1x1", "echo 1 client, round trips/s"),
            ("echo_50x1", "echo 50x1, round trips/s"),
            ("echo_50x10", "echo 50x10, round trips/s"),
            ("handshakes", "handshakes/s (with closing handshake)"),
        ]:
            found = of(workload, mode)
            values = {n: _metric(r, "per_second") for n, r in found.items()}
            yield label, mode, "higher", values, client_cpu(found)
        found = of("chat", mode)
        members = next((int(r["clients"]) for r in found.values() if r and "clients" in r), 0)
        for key, label, better in [
            ("per_second", "deliveries/s", "higher"),
            ("latency_median_ms", "median ms until all have it", "lower"),
            ("latency_p99_ms", "p99 ms until all have it", "lower"),
            ("wire_bytes_per_delivery", "bytes on the wire per delivery", "lower"),
            ("server_cpu_us_per_message", "server CPU us per delivery", "lower"),
        ]:
            values = {n: _metric(r, key) for n, r in found.items()}
            yield f"1 KiB chat to {members}: {label}", mode, better, values, client_cpu(found)
        for tier in sorted(fanout_tiers, key=int):
            found = of("fanout", mode, tier)
            cpu = client_cpu(found)
            for key, label, better in [
                ("latency_median_ms", "median ms until all have it", "lower"),
                ("latency_p99_ms", "p99 ms until all have it", "lower"),
                ("per_second", "deliveries/s", "higher"),
            ]:
                values = {n: _metric(r, key) for n, r in found.items()}
                yield f"broadcast to {tier}: {label}", mode, better, values, cpu
        found = of("memory", mode)
        values = {n: _metric(r, "bytes_per_connection", 1 / 1024) for n, r in found.items()}
        yield "memory, KiB per connection after 1 KiB", mode, "lower", values, None
        for workload, label in [
            ("echo_1x1", "echo 1 client"),
            ("echo_50x1", "echo 50x1"),
            ("echo_50x10", "echo 50x10"),
            ("handshakes", "handshake"),
        ]:
            found = of(workload, mode)
            values = {n: _metric(r, "server_cpu_us_per_message") for n, r in found.items()}
            yield f"server CPU us per {label}", mode, "lower", values, None
        for tier in sorted(fanout_tiers, key=int):
            found = of("fanout", mode, tier)
            values = {n: _metric(r, "server_cpu_us_per_message") for n, r in found.items()}
            yield f"server CPU us per delivery to {tier}", mode, "lower", values, None


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def aligned(lines: list[list[str]], left: int) -> list[str]:
    """
    Rows of cells as text columns: the first ``left`` columns left-aligned, the others
    right-aligned, a rule under the first row (the header).
    """
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for index, line in enumerate(lines):
        cells = [
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells))
        if index == 0:
            text.append("  ".join("-" * w for w in widths))
    return text


def table(results: dict[str, dict[str, dict[str, Any]]], servers: list[str]) -> str:
    """Format the results as a text table, ratios of wsapp to each peer first."""
    peers = [name for name in servers if name != "wsapp"]
    ours = "wsapp" in servers
    header = ["metric", "mode", "better"]
    header += [f"wsapp/{peer}" for peer in peers] if ours else []
    header += [*servers, "client CPU %"]
    lines = [header]
    for label, mode, better, values, cpu in rows(results, servers):
        if all(value is None for value in values.values()):
            continue
        line = [label, mode, better]
        if ours:
            for peer in peers:
                mine, theirs = values.get("wsapp"), values.get(peer)
                line.append(f"{mine / theirs:.2f}x" if mine is not None and theirs else "-")
        line += [_number(values.get(name)) for name in servers]
        line.append(_number(cpu))
        lines.append(line)
    return "\n".join(aligned(lines, 3))
