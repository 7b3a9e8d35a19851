"""
The performance page's figures, rendered from a results file of ``python -m wsapp.bench
--json FILE`` committed with the docs, so no number on the page is typed by hand.

``.. wsapp-bench:: PART`` with PART one of ``about`` (the run: command, machine, versions,
smoke or not), ``targets``, ``tables`` (one per load generator), ``spread`` (how the runs
varied), ``workers``, ``channels`` and ``blocking``; the file is ``docs/_data/bench.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from wsapp.bench.blocking import blocking_table
from wsapp.bench.channels import channels_table
from wsapp.bench.report import table
from wsapp.bench.targets import spread_table, targets_table
from wsapp.bench.workers import workers_table

__all__ = ["setup"]

RESULTS = Path(__file__).resolve().parent.parent / "_data" / "bench.json"
PARTS = ("about", "targets", "tables", "spread", "workers", "channels", "blocking")


def _about(report: dict[str, Any]) -> list[nodes.Node]:
    machine, versions = report["machine"], report.get("versions", {})
    load = ", ".join(f"{value:.2f}" for value in machine["load_average"])
    kind = (
        "a smoke run (``--smoke``: tiny counts and fractions of a second, to show the shape; "
        "these figures are not measurements)"
        if report["smoke"]
        else f"a full run, {report['repeat']} time(s) over"
    )
    pinned = "server and load generator pinned to separate cores"
    text = [
        f"These figures are {kind}: ``{report['command']}``, {report['seconds']:.0f} s, "
        f"{pinned if report['pinned'] else 'unpinned'}.",
        f"Machine: {machine['cores']} cores of {machine['cpu'] or 'an unknown CPU'} "
        f"({machine['system']}), load average at the end {load}.",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
    ]
    found: list[nodes.Node] = []
    for line in text:
        paragraph = nodes.paragraph()
        parts = line.split("``")
        for index, part in enumerate(parts):
            paragraph += nodes.literal(text=part) if index % 2 else nodes.Text(part)
        found.append(paragraph)
    return found


def _block(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


def _tables(report: dict[str, Any]) -> list[nodes.Node]:
    found: list[nodes.Node] = []
    shown = ["wsapp", "websockets", "autobahn"]
    for generator, by_server in report["results"].items():
        batched = generator == "wsapp" and report.get("batched")
        how = "batched writes" if batched else "one frame per write"
        title = {"wsapp": "wsapp's own", "picows": "picows on uvloop"}.get(generator, generator)
        found.append(nodes.paragraph(text=f"Load generator: {title} ({how})."))
        found.append(_block(table(by_server, [name for name in shown if name in by_server])))
    return found


class BenchDirective(SphinxDirective):
    """One part of the committed benchmark results."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        part = self.arguments[0]
        if part not in PARTS:
            raise self.error(f"wsapp-bench: unknown part {part!r} (one of {', '.join(PARTS)})")
        self.env.note_dependency(str(RESULTS))
        report = json.loads(RESULTS.read_text())
        if part == "about":
            return _about(report)
        if part == "tables":
            return _tables(report)
        if part == "targets":
            return [_block(targets_table(report["targets"], report["repeat"]))]
        if part == "spread":
            return [_block(spread_table(report))]
        if part not in report:
            return [nodes.paragraph(text=f"This run has no {part} part.")]
        render = {"workers": workers_table, "blocking": blocking_table}.get(part, channels_table)
        return [_block(render(report[part]))]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("wsapp-bench", BenchDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
