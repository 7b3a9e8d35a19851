"""The README front page, its tour, and the documentation site it leads to."""

from __future__ import annotations

import ast
import dataclasses
import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import websocket

import wsapp
from tests.conftest import ROOT
from wsapp import messages
from wsapp.config import schema

README = (ROOT / "README.md").read_text()


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def test_readme_is_a_front_page() -> None:
    """Under 10 KB, the two commands first, and every link points at a file that exists."""
    assert len(README.encode()) < 10_000
    assert readme_blocks("sh")[0].splitlines() == [
        "sh .ci/setup && .venv/bin/twistd -n wsapp --port 8000   # set up, then serve on port 8000",
        "sh .ci/test                                              # set up, then run every test",
    ]
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if not link.startswith("http")]
    assert "CHANGELOG.md" in local and "docs/tutorial/index.rst" in local
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_readme_tour_runs(tmp_path: Path, twistd: Any) -> None:
    """The tour's app mounted with --mount serves /shout; its blocking client prints the reply."""
    app, client = readme_blocks("python")
    (tmp_path / "shout.py").write_text(app)
    mount = re.search(r"--mount (\S+)`", README)
    assert mount is not None
    server = twistd("--mount", mount.group(1), "--port", "tcp:0:interface=127.0.0.1")
    listener = websocket.create_connection(server.url("/shout"), timeout=5)
    code = client.replace(":8000", f":{server.port}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'type': 'shouted', 'offset': 1, 'id': 1}",
        "{'text': 'HI'}",
    ]
    publication = {"type": "publication", "channel": "shouts", "offset": 1, "data": {"text": "HI"}}
    assert json.loads(listener.recv()) == publication


@pytest.fixture(scope="module")
def site(tmp_path_factory: Any) -> Path:
    """The documentation built as .ci/docs builds it: offline, warnings as errors."""
    out = tmp_path_factory.mktemp("docs")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", out],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def text_of(page: Path) -> str:
    body = re.sub(r"<(script|style).*?</\1>", "", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def keys(cls: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the config schema; PATH and NAME stand for chosen names."""
    placeholders = {
        "apps": ("PATH", schema.AppConfig),
        "namespaces": ("NAME", schema.NamespaceConfig),
    }
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        if field.name in placeholders:
            name, section = placeholders[field.name]
            yield from keys(section, f"{key}.{name}.")
        elif field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
            default := field.default_factory()
        ):
            yield from keys(type(default), f"{key}.")
        else:
            yield key


def test_config_reference_has_every_key(site: Path) -> None:
    """Each key of wsapp.config.schema, with its comment, is an entry of the config page."""
    page = (site / "reference/config.html").read_text()
    entries = set(re.findall(r'<dt class="sig sig-object std" id="confval-([^"]+)"', page))
    expected = list(keys(schema.Config))
    assert len(expected) > 50
    assert set(expected) <= entries
    text = text_of(site / "reference/config.html")
    assert "LZ77 window of server-to-client messages, 9 to 15 bits." in text
    assert 'One of "coalesce", "close".' in text


def test_option_reference_has_every_option(site: Path) -> None:
    """Every option of twistd wsapp and of wsapp-client is on the command-line page."""
    from wsapp.tap import Options

    text = text_of(site / "reference/cli.html")
    names = [f"--{option[0]}" for option in Options.optParameters + Options.optFlags]
    names += ["--mount", "--send", "--timeout", "--no-compression", "--cafile"]
    assert [name for name in names if f"{name}¶" not in text and f"{name} " not in text] == []
    assert "--help" not in text.split("wsapp-client")[0].split("override the")[1]


def test_reference_names_the_stable_api_error_codes_and_metrics(site: Path) -> None:
    """The API page documents every stable name; the protocol page every error code."""
    api = text_of(site / "reference/api.html")
    assert [name for name in wsapp.__all__ if name not in api] == []
    protocol = text_of(site / "reference/protocol.html")
    codes = [
        value for name, value in vars(messages).items() if name.isupper() and isinstance(value, str)
    ]
    assert len(codes) >= 13
    assert [code for code in codes if code not in protocol] == []
    metrics = set(re.findall(r'"(wsapp_\w+)"', (ROOT / "wsapp/metrics.py").read_text()))
    shown = text_of(site / "reference/metrics.html")
    assert [metric for metric in sorted(metrics) if metric not in shown] == []
    assert "CHANGELOG" not in text_of(site / "index.html") or (site / "changelog.html").exists()
    assert "Unreleased" in text_of(site / "changelog.html")


def test_public_api_is_explicit() -> None:
    """Every wsapp module has __all__; wsapp's names resolve and are listed by dir()."""
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "wsapp").rglob("*.py"))
        if not any(
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and "__all__" in ast.unparse(node).split("=")[0]
            for node in ast.parse(path.read_text()).body
        )
    ]
    assert missing == []
    assert set(wsapp.__all__) <= set(dir(wsapp))
    for name in wsapp.__all__:
        assert getattr(wsapp, name).__name__ == name
    assert isinstance(wsapp.ServerProtocol.default_options, Mapping)
    assert (ROOT / "wsapp/py.typed").exists()
