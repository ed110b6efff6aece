"""A model folder's own code runs only when the caller asks for it by name.

A transformers model folder may ship Python files (`modeling_*.py`, `tokenization_*.py`, ...) and
name them in the `auto_map` of its `config.json` or `tokenizer_config.json`. `from_pretrained`
without `trust_remote_code` then asks "[y/N]" on stdin and, on `y`, imports (runs) them. Every
loader of this project (`HFPolicy`, `VLLMPolicy`, `prm.model.PRM` and `PPRM`) therefore passes
`trust_remote_code=` explicitly, the caller's choice, False by default, to every tokenizer, config,
model and vLLM engine load, and, unless trusted, refuses such a folder first, by reading those JSON
files itself (`check_remote_code`): one clear error naming the flag, before transformers or vLLM
reads the folder, and no prompt ever.

    check_remote_code(folder, trust_remote_code)   raises RemoteCodeError (a ValueError) unless
                                                   trusted, for a folder that asks to run its code
    remote_code_files(folder)                      the JSON files of a folder that name code to run
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CODE_FILES", "TRUST_REMOTE_CODE_FLAG", "RemoteCodeError", "check_remote_code", "remote_code_files"]

# The files whose `auto_map` makes transformers import the folder's own modules.
CODE_FILES = ("config.json", "tokenizer_config.json")
# The command-line flag that grants it (`trust_remote_code=True` in Python).
TRUST_REMOTE_CODE_FLAG = "--trust-remote-code"


class RemoteCodeError(ValueError):
    """A model folder asks to run its own code and the caller did not allow it."""


def remote_code_files(folder: str | Path) -> list[str]:
    """The names of the files of `CODE_FILES` in `folder` whose JSON object has an `auto_map`.

    A file that is missing or not a JSON object is passed over (the loader reports it).
    """
    found = []
    for name in CODE_FILES:
        path = Path(folder) / name
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("auto_map"):
            found.append(name)
    return found


def check_remote_code(folder: str | Path, trust_remote_code: bool, *,
                      error: type[Exception] = RemoteCodeError) -> None:
    """Refuses a folder that asks to run its own code, unless `trust_remote_code` is True.

    Args:
        folder: a local model folder.
        trust_remote_code: the caller's choice (True: the folder's code may run).
        error: the exception class raised (default `RemoteCodeError`; a loader passes its own
            load-error type).

    Raises:
        `error`, one line naming the folder, the files and the flag, e.g. "<folder>: its
        config.json asks to run the folder's own code (auto_map); pass --trust-remote-code to
        allow it".
    """
    if trust_remote_code:
        return
    files = remote_code_files(folder)
    if files:
        which = " and ".join(files)
        verb = "ask" if len(files) > 1 else "asks"
        raise error(f"{folder}: its {which} {verb} to run the folder's own code (auto_map); pass "
                    f"{TRUST_REMOTE_CODE_FLAG} (trust_remote_code=True) to allow it")
