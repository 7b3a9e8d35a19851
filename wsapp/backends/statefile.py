"""
The memory backend's state file: the counter of each app, as JSON, written atomically.

``{"version": 1, "counters": {"/counter": 41}}``. A write goes to a temporary file in the
same folder, is flushed to disk, then renamed over the old file, so a crash leaves either
the old or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..exceptions import StateFileError
from ..state import SAFE_INTEGER

__all__ = ["VERSION", "load_counters", "save_counters"]

VERSION = 1


def load_counters(path: str | os.PathLike[str]) -> dict[str, int] | None:
    """
    Return the counters kept in ``path``, or None if it does not exist yet.

    Raises :class:`StateFileError`, naming the file, if it cannot be read or is not a
    state file, or if its folder does not exist (no state could ever be written there).
    """
    file = Path(path)
    if not file.parent.is_dir():
        raise StateFileError(f"{file}: cannot keep state there: folder {file.parent} is missing")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise StateFileError(f"{file}: cannot read state file: {reason}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StateFileError(f"{file}: corrupt state file: not valid JSON") from None
    if not isinstance(data, dict):
        data = {}
    counters, version = data.get("counters"), data.get("version")
    if type(version) is not int or version != VERSION or not isinstance(counters, dict):
        raise StateFileError(f"{file}: corrupt state file: expected version {VERSION} counters")
    for name, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > SAFE_INTEGER:
            raise StateFileError(f"{file}: corrupt state file: bad counter for {name!r}")
    return counters


def save_counters(path: str | os.PathLike[str], counters: Mapping[str, int]) -> None:
    """Replace ``path`` with ``counters`` atomically (temporary file, fsync, rename)."""
    file = Path(path)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    data = json.dumps({"version": VERSION, "counters": dict(counters)}, sort_keys=True)
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            stream.write(data + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, file)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
