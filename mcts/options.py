"""One way to declare a configuration field: its default and the help text that its flag shows.

    @dataclasses.dataclass(frozen=True)
    class Config:
        width: int = option(4, "steps sampled per expanded leaf")
        train: TrainConfig = option(help="optimisation", factory=TrainConfig)

Every config dataclass of the project declares its fields so, and checks them in `__post_init__`
with `require`. The command lines turn a config into flags with the one toolkit below:

    add_flags(parser, Config)          one flag per field (`--max-depth`), typed from the annotation,
                                       helped from `option(help=...)`
    flag_values(Config, args)          the parsed flags back as {field: value}
    flag_message(message, names)       a config error's message with its field names spelled as flags,
                                       so the user reads `--max-depth must be >= 1`
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Callable, Collection, Iterable, Mapping

__all__ = ["add_flags", "flag", "flag_message", "flag_values", "option", "require"]

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


def flag(name: str) -> str:
    """The command-line flag of a field: `max_depth` -> `--max-depth`."""
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> type | None:
    """bool, int, float or str for an annotation of one of them or of `X | None`; None otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (bool, int, float, str) else None


def _fields(cls: type, only: Iterable[str] | None, exclude: Collection[str]) -> list[dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return [by_name[n] for n in names if n not in exclude]


def add_flags(parser: argparse.ArgumentParser | Any, cls: type, *, only: Iterable[str] | None = None,
              exclude: Collection[str] = (), choices: Mapping[str, Collection[Any]] | None = None,
              unset: bool = False) -> None:
    """Adds one flag per field of the dataclass `cls` to `parser` (a parser or an argument group).

    The type comes from the field's annotation (`int`, `float`, `str`, `bool` or one of them
    `| None`; a bool field becomes `--x/--no-x`; a `| None` field with another default also reads
    `none`), the help from `option(help=...)`.

    Args:
        only: the fields to expose, in this order (default: all); `exclude`: fields to leave out.
        choices: the allowed values of some fields, e.g. {"algorithm": ALGORITHMS}.
        unset: every flag defaults to None ("not given": `flag_values(..., given=True)` leaves the
            field to the config's own default or a config file), instead of the field's default.

    Raises TypeError for a field whose type has no flag form (a nested config, a tuple): expose
    those by hand or exclude them.
    """
    hints = typing.get_type_hints(cls)
    choices = choices or {}
    for f in _fields(cls, only, exclude):
        kind = _scalar_type(hints[f.name])
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: a {hints[f.name]} field has no flag form")
        default = None if unset else (f.default if f.default is not dataclasses.MISSING else None)
        options: dict[str, Any] = {"default": default, "help": f.metadata.get("help", "")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            # A field that may be None and defaults to something else needs a spelling for None (not
            # a str field: 'none' may be its text).
            may_be_none = kind is not str and kind is not hints[f.name] and f.default is not None
            options["type"] = _or_none(kind) if may_be_none and not unset else kind
            if f.name in choices:
                options["choices"] = tuple(choices[f.name])
        parser.add_argument(flag(f.name), **options)


def _or_none(kind: type) -> Callable[[str], Any]:
    """An argparse type reading `kind`, or None from 'none' (any case)."""
    def read(text: str) -> Any:
        return None if text.strip().lower() == "none" else kind(text)
    read.__name__ = kind.__name__  # argparse names the type in its error: "invalid float value"
    return read


def flag_values(cls: type, args: argparse.Namespace, *, only: Iterable[str] | None = None,
                exclude: Collection[str] = (), given: bool = False) -> dict[str, Any]:
    """The values of the flags `add_flags` made, as {field: value}; `given`: only those set (not None)."""
    values = {f.name: getattr(args, f.name) for f in _fields(cls, only, exclude)}
    return {k: v for k, v in values.items() if v is not None} if given else values


def flag_message(message: str, names: Iterable[str] | type) -> str:
    """`message` (a config's error) with each field name in `names` (or of the dataclass `names`)
    written as its flag: the one map from field names to flag names. A name inside a longer
    identifier or a quoted value is left alone."""
    if isinstance(names, type):
        names = [f.name for f in dataclasses.fields(names)]
    names = sorted(set(names), key=len, reverse=True)
    if not names:
        return message
    pattern = re.compile(r"(?<![\w.'\"-])(" + "|".join(map(re.escape, names)) + r")(?![\w'\"])")
    return pattern.sub(lambda m: flag(m.group(1)), message)
