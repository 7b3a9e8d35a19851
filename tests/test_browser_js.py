"""The pure parts of wsapp.js (backoff, request ids, recovery) under Node's own test runner."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_unit_tests_pass() -> None:
    """`node --test tests/js/` runs every JavaScript unit test and all of them pass."""
    result = subprocess.run(
        ["node", "--test", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout, "no JavaScript test ran"
