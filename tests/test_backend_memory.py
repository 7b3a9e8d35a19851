"""The memory backend: state in the process, kept in a state file across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import Twistd, connect, run_twistd
from wsapp.backends.memory import MemoryBackend
from wsapp.backends.statefile import load_counters, save_counters
from wsapp.exceptions import StateFileError
from wsapp.state import SAFE_INTEGER


def test_state_file_round_trip(tmp_path: Path) -> None:
    """Saved counters load back exactly, and the save leaves no temporary file behind."""
    path = tmp_path / "state.json"
    save_counters(path, {"/counter": -SAFE_INTEGER, "/other": 7})
    assert load_counters(path) == {"/counter": -SAFE_INTEGER, "/other": 7}
    assert [file.name for file in tmp_path.iterdir()] == ["state.json"]


def test_missing_state_file_means_no_state(tmp_path: Path) -> None:
    """A state file that does not exist yet loads as None (every counter starts at 0)."""
    assert load_counters(tmp_path / "absent.json") is None
    assert MemoryBackend(state_file=str(tmp_path / "absent.json")).counters() == {}


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 2, "counters": {}}',
        '{"version": true, "counters": {}}',
        '{"version": 1, "counters": {"/counter": "3"}}',
        '{"version": 1, "counters": {"/counter": 9007199254740992}}',
        '{"version": 1, "counters": {"/counter": true}}',
        "\udcff",
    ],
)
def test_corrupt_state_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    """A corrupt state file raises StateFileError with the file's name, never loads."""
    path = tmp_path / "state.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(StateFileError, match=str(path)):
        load_counters(path)


def test_state_file_in_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    """A state file whose folder does not exist is refused at startup, naming the folder."""
    with pytest.raises(StateFileError, match="missing"):
        MemoryBackend(state_file=str(tmp_path / "nowhere" / "state.json"))


def test_memory_publish_has_delivered_when_it_returns() -> None:
    """On the memory backend a publication has reached the listener, and its Deferred fired."""
    backend = MemoryBackend()
    heard: list[tuple[str, int, object]] = []

    class Listener:
        def deliver(self, channel: str, epoch: str, publication: Any, tag: str) -> None:
            heard.append((channel, publication.offset, publication.data))

    backend.listener = Listener()  # type: ignore[assignment]
    backend.subscribe("news")
    published = backend.publish("news", {"text": "hi"})
    assert heard == [("news", 1, {"text": "hi"})]
    assert published.called and published.result.offset == 1


def counter_of(process: Twistd) -> int:
    """Read the counter of a running twistd with a blocking websocket-client connection."""
    import websocket

    connection = websocket.create_connection(process.url("/counter"), timeout=5)
    try:
        return int(json.loads(connection.recv())["value"])
    finally:
        connection.close()


async def change(process: Twistd, actions: list[str]) -> int:
    """Send acknowledged actions to /counter; return the last acknowledged value."""
    client = await connect(process.url("/counter"))
    value = None
    for number, action in enumerate(actions):
        client.send_action(action, id=number)
        while (event := await client.next_of("state")).get("id") != number:
            pass
        value = event["value"]
    client.sendClose()
    await client.factory.closed
    assert value is not None
    return int(value)


@pytest_twisted.ensureDeferred
async def test_counter_survives_a_clean_restart(twistd: Any, tmp_path: Path) -> None:
    """
    SIGTERM writes the state file at once, with the counter app's counter only (the other
    apps keep none); the next start serves the same counter.
    """
    state = str(tmp_path / "state.json")
    first = twistd("--port", "tcp:0:interface=127.0.0.1", "--state-file", state)
    assert "No state file" in first.output()
    assert await change(first, ["plus"] * 7 + ["minus"]) == 6
    first.stop()  # twistd ends with the signal it got (-15) after stopping cleanly
    assert load_counters(state) == {"/counter": 6}
    second = twistd("--port", "tcp:0:interface=127.0.0.1", "--state-file", state)
    assert counter_of(second) == 6


@pytest_twisted.ensureDeferred
async def test_kill_keeps_what_the_last_write_saved(twistd: Any, tmp_path: Path) -> None:
    """After kill -9 the counter is the one of the last periodic write (within 1 s)."""
    state = tmp_path / "state.json"
    first = twistd("--port", "tcp:0:interface=127.0.0.1", "--state-file", str(state))
    assert await change(first, ["plus"] * 5) == 5
    deadline = time.monotonic() + 10
    while (load_counters(state) or {}).get("/counter") != 5:
        assert time.monotonic() < deadline, "the state file was not written within 10 s"
        time.sleep(0.05)
    first.process.kill()
    first.process.wait()
    second = twistd("--port", "tcp:0:interface=127.0.0.1", "--state-file", str(state))
    assert counter_of(second) == 5


def test_corrupt_state_file_stops_twistd_with_one_line(tmp_path: Path) -> None:
    """twistd refuses to start on a corrupt state file: exit 1, one line naming the file."""
    state = tmp_path / "state.json"
    state.write_text("{truncated")
    result = run_twistd(tmp_path, "--state-file", str(state), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"twistd wsapp: {state}: corrupt state file: not valid JSON"
    ]
