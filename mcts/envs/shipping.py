"""Trained toy models that ship inside the package: what their record holds and how it is checked.

A shipped folder holds a model (its `save_pretrained` files) and one JSON record beside them
(`toy_policy.json` for the tiny policy, `train_info.json` for the toy PRM and PPRM) with the
build's full config, its seeds, the code version it was built with, the metrics measured after
training and a sha256 of every other file. `check_record` says what is wrong with a folder (a
foreign record, a changed, missing or extra file, a recorded config other than the code's), so
that the code never loads a shipped model that its own build would not produce.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

__all__ = ["check_record", "code_version", "folder_hashes", "read_record"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: str | os.PathLike, record: str) -> dict[str, str]:
    """sha256 of every file of a model folder but its record (the file named `record`), by name."""
    folder = Path(folder)
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != record}


def code_version() -> str:
    """The package version and, in a git checkout, the commit (with '+dirty' for local changes)."""
    from importlib import metadata

    try:
        version = metadata.version("treesearch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+git.{commit}{'.dirty' if dirty else ''}"


def read_record(folder: str | os.PathLike, record: str, format_version: int) -> dict | None:
    """The record of a folder when it is a JSON object of `format_version`, else None."""
    try:
        info = json.loads((Path(folder) / record).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format_version") == format_version else None


def check_record(folder: str | os.PathLike, record: str, format_version: int, what: str,
                 expected: Mapping[str, Any] | None = None) -> list[str]:
    """What is wrong with a shipped folder (empty: nothing): a missing or foreign record, files whose
    sha256 differs from the recorded one, files missing or not recorded, and record fields other
    than `expected` (key -> value, compared as JSON: a build config as `dataclasses.asdict`)."""
    folder = Path(folder)
    info = read_record(folder, record, format_version)
    if info is None:
        return [f"{folder / record}: no {what} record of format version {format_version}"]
    problems = []
    recorded, actual = info.get("files") or {}, folder_hashes(folder, record)
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            problems.append(f"{folder / name}: recorded but missing")
        elif name not in recorded:
            problems.append(f"{folder / name}: not in the record")
        elif recorded[name] != actual[name]:
            problems.append(f"{folder / name}: sha256 {actual[name][:12]} is not the recorded {recorded[name][:12]}")
    for key, value in (expected or {}).items():
        if info.get(key) != json.loads(json.dumps(value)):
            problems.append(f"{folder / record}: the recorded {key} is not the code's build config")
    return problems
