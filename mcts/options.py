"""One way to declare a configuration field: its default and the help text that its flag shows.

    @dataclasses.dataclass(frozen=True)
    class Config:
        width: int = option(4, "steps sampled per expanded leaf")
        train: TrainConfig = option(help="optimisation", factory=TrainConfig)

Every config dataclass of the project declares its fields so (the command lines read the help
from `field.metadata["help"]`), and checks them in `__post_init__` with `require`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

__all__ = ["option", "require"]

_MISSING: Any = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with `default` (or `factory` for a mutable one) and its help text."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def require(ok: bool, message: str) -> None:
    """Raises ValueError(message) unless `ok`: the check every config's __post_init__ makes."""
    if not ok:
        raise ValueError(message)
