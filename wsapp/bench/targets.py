"""
The performance targets beside what was measured, and how repeated runs vary.

Each target is wsapp ÷ websockets in the same run, by the one-frame-per-write load
generator (``wsapp``), with the cross-check generator's (``picows``) ratio beside it; a
target holds when the median over the runs meets it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from .report import aligned

__all__ = ["TARGETS", "combine", "spread", "spread_table", "target_rows", "targets_table"]

#: label, server, workload, mode, metric, comparison (">=" / "<="), bound, of a ratio?
TARGETS: list[tuple[str, str, str, str, str, str, float, bool]] = [
    ("echo 50x1 round trips/s", "wsapp", "echo_50x1", "plain", "per_second", ">=", 1.2, True),
    ("echo 50x1 round trips/s", "wsapp", "echo_50x1", "deflate", "per_second", ">=", 1.2, True),
    (
        "echo 50x1, high_water_mark 4 MiB",
        "wsapp-hwm4m",
        "echo_50x1",
        "plain",
        "per_second",
        ">=",
        1.2,
        True,
    ),
    (
        "echo 50x1, high_water_mark 4 MiB",
        "wsapp-hwm4m",
        "echo_50x1",
        "deflate",
        "per_second",
        ">=",
        1.2,
        True,
    ),
    ("handshakes/s", "wsapp", "handshakes", "plain", "per_second", ">=", 1.0, True),
    ("handshakes/s", "wsapp", "handshakes", "deflate", "per_second", ">=", 1.0, True),
    ("1 KiB broadcast: deliveries/s", "wsapp", "chat", "deflate", "per_second", ">=", 2.0, True),
    ("1 KiB broadcast: median", "wsapp", "chat", "deflate", "latency_median_ms", "<=", 0.5, True),
    (
        "KiB per connection, compressed message",
        "wsapp",
        "memory",
        "deflate",
        "bytes_per_connection",
        "<=",
        40.0,
        False,
    ),
]  # fmt: skip

Results = dict[str, dict[str, dict[str, dict[str, Any]]]]


def _value(results: Results, generator: str, target: tuple[Any, ...]) -> float | None:
    _, server, workload, mode, metric, _, _, ratio = target
    by_server = results.get(generator, {})

    def figure(name: str) -> float | None:
        found = by_server.get(name, {}).get(workload, {}).get(mode)
        if not isinstance(found, dict) or metric not in found:
            return None
        return float(found[metric])

    mine = figure(server)
    if mine is None:
        return None
    if not ratio:
        return mine / 1024 if metric == "bytes_per_connection" else mine
    theirs = figure("websockets")
    return mine / theirs if theirs else None


def _blocking_ratio(blocking: dict[str, Any] | None) -> float | None:
    """The lowest ratio of a ``wsapp.connect`` loop to websocket-client, over modes."""
    if not blocking or "ratios" not in blocking:
        return None
    values = [
        float(ratio)
        for name, modes in blocking["ratios"].items()
        if name.startswith("wsapp.connect")
        for ratio in modes.values()
    ]
    return min(values) if values else None


def spread(values: list[float | None]) -> dict[str, float] | None:
    """Min, median and max of the values that exist (None: none do)."""
    found = [value for value in values if value is not None]
    if not found:
        return None
    return {"min": min(found), "median": statistics.median(found), "max": max(found)}


def target_rows(runs: list[Results], blocking: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Each target with its ratio per run (both generators) and whether it holds."""
    rows = []
    for target in TARGETS:
        label, _, _, mode, _, comparison, bound, ratio = target
        measured = {gen: spread([_value(run, gen, target) for run in runs]) for gen in GENERATORS}
        rows.append(_row(label, mode, comparison, bound, ratio, measured))
    measured = {"wsapp": spread([_blocking_ratio(b) for b in blocking]), "picows": None}
    rows.append(_row("blocking client round trips/s", "both", ">=", 1.0, True, measured))
    return rows


#: The load generators, the one that decides first.
GENERATORS = ("wsapp", "picows")


def _row(
    label: str,
    mode: str,
    comparison: str,
    bound: float,
    ratio: bool,
    measured: dict[str, dict[str, float] | None],
) -> dict[str, Any]:
    decisive = measured.get("wsapp")
    holds = None
    if decisive is not None:
        median = decisive["median"]
        holds = median >= bound if comparison == ">=" else median <= bound
    target = f"{comparison} {bound:g}{'x' if ratio else ''}"
    return {
        "target": label,
        "mode": mode,
        "bound": target,
        "ratio": ratio,
        "measured": measured,
        "holds": holds,
    }


def targets_table(rows: list[dict[str, Any]], runs: int) -> str:
    """The targets as text: the median (and range over runs) by each generator."""

    def shown(found: dict[str, float] | None, ratio: bool) -> str:
        if found is None:
            return "-"
        unit = "x" if ratio else ""
        text = f"{found['median']:.2f}{unit}"
        if runs > 1:
            text += f" ({found['min']:.2f}-{found['max']:.2f})"
        return text

    lines = [
        ["target (wsapp / websockets)", "mode", "needs", "one frame per write", "picows", "holds"]
    ]
    for row in rows:
        holds = {True: "yes", False: "NO", None: "-"}[row["holds"]]
        lines.append(
            [
                row["target"],
                row["mode"],
                row["bound"],
                shown(row["measured"].get("wsapp"), row["ratio"]),
                shown(row["measured"].get("picows"), row["ratio"]),
                holds,
            ]
        )
    title = f"targets: median of {runs} run(s)" + (" (min-max)" if runs > 1 else "")
    return "\n".join([title, *aligned(lines, 3)])


def combine(runs: list[Any], pick: Callable[[list[float]], float] = statistics.median) -> Any:
    """
    One result from several runs of the same shape: each number the ``pick`` (median) of
    its values, anything else as in the first run, an error if any run had one.
    """
    first = runs[0]
    if isinstance(first, dict):
        failed = [run for run in runs if isinstance(run, dict) and "error" in run]
        if failed:
            return failed[0]
        return {
            key: combine([run[key] for run in runs if isinstance(run, dict) and key in run], pick)
            for key in first
        }
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return pick([float(run) for run in runs])


#: The rows of :func:`spread_table`: workload, metric, label.
SPREAD_ROWS = [
    ("echo_50x1", "per_second", "echo 50x1, round trips/s"),
    ("handshakes", "per_second", "handshakes/s"),
    ("chat", "per_second", "1 KiB chat, deliveries/s"),
    ("chat", "latency_median_ms", "1 KiB chat, median ms"),
]


def spread_table(report: dict[str, Any]) -> str:
    """How the runs varied: min, median and max of a few figures, by generator and server."""
    lines = [["figure", "mode", "generator", "server", "min", "median", "max"]]
    results, low, high = report["results"], report["spread"]["min"], report["spread"]["max"]
    for workload, metric, label in SPREAD_ROWS:
        for mode in ("plain", "deflate"):
            for gen, by_server in results.items():
                for server in by_server:
                    found = [
                        part.get(server, {}).get(workload, {}).get(mode, {}).get(metric)
                        for part in (low.get(gen, {}), by_server, high.get(gen, {}))
                    ]
                    if any(value is None for value in found):
                        continue
                    cells = [f"{value:,.0f}" if value >= 100 else f"{value:.2f}" for value in found]
                    lines.append([label, mode, gen, server, *cells])
    title = f"how {report['repeat']} run(s) varied"
    return "\n".join([title, *aligned(lines, 4)])
