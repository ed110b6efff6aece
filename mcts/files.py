"""Files written whole or not at all: a temporary file beside the destination, renamed into place.

    write_atomic(path, write)          write(handle) on the temporary file, then the rename
    write_jsonl_atomic(path, records)  JSON lines
    write_json_atomic(path, value)     one indented JSON value

A rewritten file keeps the mode of the one it replaces (the temporary file's 0600 would not);
a new one follows the umask. Every writer of results, records and problem files uses these.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["write_atomic", "write_json_atomic", "write_jsonl_atomic"]


def _new_file_mode(path: Path) -> int:
    """The mode a rewritten `path` keeps (mkstemp's 0600 would otherwise replace it), or what a new
    file gets under the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Calls `write(handle)` on a temporary file beside `path`, then renames it into place: a reader
    never sees half a file, and a crash leaves the old one. The new file keeps the old one's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Mapping]) -> None:
    """Writes JSON lines to a temporary file beside `path`, then renames it into place."""
    def write(handle) -> None:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    write_atomic(Path(path), write)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """One JSON value, indented, written atomically."""
    write_atomic(Path(path), lambda handle: handle.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n"))
