"""Packaging: the twistd plugin ships in a plain (non-editable) install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_plain_install_into_a_fresh_venv_registers_the_plugin(tmp_path: Path) -> None:
    """After ``pip install .`` into a new virtual environment, ``twistd --help`` lists wsapp."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    listing = subprocess.run(
        [str(venv / "bin/twistd"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert listing.returncode == 0
    assert any(line.split()[:1] == ["wsapp"] for line in listing.stdout.splitlines())
    direct_url = next(
        (venv / "lib").glob("python3*/site-packages/wsapp-*.dist-info/direct_url.json")
    )
    assert json.loads(direct_url.read_text()).get("dir_info", {}).get("editable") is not True
    assert next((venv / "lib").glob("python3*/site-packages/twisted/plugins/wsapp_plugin.py"))


def test_no_plugin_cache_or_build_output_is_committed() -> None:
    """dropin.cache, build folders and egg-info never enter the repository."""
    tracked = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert "twisted/plugins/wsapp_plugin.py" in tracked
    assert not (ROOT / "twisted/__init__.py").exists()
    assert not (ROOT / "twisted/plugins/__init__.py").exists()
    for path in tracked:
        assert not path.endswith("dropin.cache")
        assert not path.startswith(("build/", "dist/")) and ".egg-info" not in path
