"""The README's own-app example works as written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import websocket

from tests.conftest import ROOT


def readme_blocks(language: str) -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Writing your own app")[1].split("\n## ")[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_readme_example_app_mounts_from_config(tmp_path: Path, twistd: Any) -> None:
    """shout.py and shout.yaml from the README serve the shout app, as the README says."""
    (python,) = readme_blocks("python")
    (yaml,) = readme_blocks("yaml")
    (tmp_path / "shout.py").write_text(python)
    (tmp_path / "shout.yaml").write_text(yaml)
    server = twistd("--config", "shout.yaml", "--port", "tcp:0:interface=127.0.0.1")
    listener = websocket.create_connection(server.url("/shout"), timeout=5)
    shouter = websocket.create_connection(server.url("/shout"), timeout=5)
    shouter.send(json.dumps({"action": "shout", "text": "hi", "id": 1}))
    publication = {"type": "publication", "channel": "shouts", "offset": 1, "data": {"text": "HI"}}
    assert json.loads(listener.recv()) == publication
    assert json.loads(shouter.recv()) == publication
    assert json.loads(shouter.recv()) == {"type": "shouted", "offset": 1, "id": 1}
    shouter.send(json.dumps({"action": "shout", "text": "x" * 101}))
    assert json.loads(shouter.recv())["error"] == "invalid-argument"
