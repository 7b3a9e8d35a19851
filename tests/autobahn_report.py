"""
Read the Autobahn TestSuite reports kosoku writes, judge them and summarize them.

A case passes when both its behavior and its close behavior are OK or INFORMATIONAL;
NON-STRICT, FAILED, UNCLEAN, WRONG CODE, ERROR and UNIMPLEMENTED do not.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaseResult", "failure_report", "read_results", "summary"]

PASSING = ("OK", "INFORMATIONAL")
#: Columns of the summary table, from best to worst; any other verdict counts as FAILED.
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED")
_RANK = {"OK": 0, "INFORMATIONAL": 1, "NON-STRICT": 2}

CHAPTERS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Miscellaneous",
    "12": "Compression: payloads",
    "13": "Compression: parameters",
}


@dataclass(frozen=True)
class CaseResult:
    """One case's verdicts, from the run's ``index.json``."""

    case_id: str
    behavior: str
    behavior_close: str
    duration_ms: int
    report_file: Path

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING and self.behavior_close in PASSING

    @property
    def verdict(self) -> str:
        """The worse of the two verdicts, as one of :data:`COLUMNS`."""
        worst = max(_RANK.get(self.behavior, 3), _RANK.get(self.behavior_close, 3))
        return {0: "OK", 1: "INFORMATIONAL", 2: "NON-STRICT"}.get(worst, "FAILED")

    @property
    def chapter(self) -> str:
        return self.case_id.split(".")[0]

    def details(self) -> str:
        """The case's id, description and the runner's reasons for its verdicts."""
        case = json.loads(self.report_file.read_text(encoding="utf-8"))
        return (
            f"{self.case_id}: {_plain(case['description'])}\n"
            f"    behavior {self.behavior}: {_plain(case['result'])}\n"
            f"    close {self.behavior_close}: {_plain(case['resultClose'])}"
        )


def _plain(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def _order(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def read_results(folder: Path) -> list[CaseResult]:
    """
    Return the cases in ``folder/index.json``, in case order.

    The index groups cases by the peer's agent name, taken from its handshake; a case that
    could not connect is filed under the peer's address instead, so every group is read.
    """
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    results = [
        CaseResult(
            case_id,
            case["behavior"],
            case["behaviorClose"],
            case["duration"],
            folder / case["reportfile"],
        )
        for cases in index.values()
        for case_id, case in cases.items()
    ]
    return sorted(results, key=lambda result: _order(result.case_id))


def failure_report(results: list[CaseResult]) -> str:
    """Describe every case that did not pass; empty when all passed."""
    failed = [result for result in results if not result.passed]
    if not failed:
        return ""
    return f"{len(failed)} of {len(results)} cases failed:\n" + "\n".join(
        result.details() for result in failed
    )


def summary(title: str, results: list[CaseResult], folder: Path, slowest: int = 5) -> str:
    """A table of verdicts per chapter, the slowest cases, and where the reports are."""
    counts: dict[str, Counter[str]] = {}
    for result in results:
        counts.setdefault(result.chapter, Counter())[result.verdict] += 1
    total: Counter[str] = sum(counts.values(), Counter())
    header = f"{'chapter':<30}{'cases':>6}" + "".join(f"{name:>15}" for name in COLUMNS)
    lines = [title, header]
    for chapter in sorted(counts, key=int):
        name = f"{chapter} {CHAPTERS.get(chapter, '')}"
        lines.append(_row(name, counts[chapter]))
    lines.append(_row("all", total))
    ranked = sorted(results, key=lambda result: result.duration_ms, reverse=True)[:slowest]
    lines.append(
        "slowest: "
        + ", ".join(f"{result.case_id} {result.duration_ms / 1000:.1f} s" for result in ranked)
    )
    lines.append(f"reports: {folder / 'index.html'}")
    return "\n".join(lines)


def _row(name: str, counts: Counter[str]) -> str:
    cells = "".join(f"{counts[column]:>15}" for column in COLUMNS)
    return f"{name:<30}{sum(counts.values()):>6}{cells}"


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.autobahn_report DIR``: print the summary and failures of a report."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("folder", type=Path, help="kosoku's report folder (with index.json)")
    folder = parser.parse_args(argv).folder
    results = read_results(folder)
    print(summary(f"{len(results)} cases", results, folder))
    failures = failure_report(results)
    if failures:
        print(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
