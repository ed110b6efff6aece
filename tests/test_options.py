"""The config toolkit (mcts.options): fields declared once become flags, values and flag-named errors."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from mcts.options import add_flags, flag, flag_message, flag_values, option, require


@dataclasses.dataclass(frozen=True)
class Knobs:
    max_depth: int = option(8, "deepest step")
    temperature: float = option(1.0, "sampling temperature")
    rule: str = option("mean", "leaf value rule")
    cap: int | None = option(None, "optional cap")
    floor: float | None = option(0.2, "optional floor, on by default")
    greedy_child: bool = option(False, "add the greedy step")
    names: tuple[str, ...] = option(("a",), "not a flag")

    def __post_init__(self):
        require(self.max_depth >= 1, f"max_depth must be >= 1, got {self.max_depth}")
        require(self.cap is None or self.cap <= self.max_depth, f"need cap <= max_depth, got {self.cap}")


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, Knobs, exclude=("names",), choices={"rule": ("mean", "max")}, **kwargs)
    return parser


def test_flags_are_typed_from_the_annotations_and_round_trip():
    args = _parser().parse_args(["--max-depth", "3", "--temperature", "0.5", "--cap", "2", "--greedy-child"])
    values = flag_values(Knobs, args, exclude=("names",))
    assert values == {"max_depth": 3, "temperature": 0.5, "rule": "mean", "cap": 2, "floor": 0.2, "greedy_child": True}
    assert Knobs(**values).cap == 2
    assert flag_values(Knobs, _parser().parse_args(["--no-greedy-child"]), exclude=("names",))["greedy_child"] is False


def test_choices_and_types_are_enforced_by_the_parser():
    with pytest.raises(argparse.ArgumentError):
        _parser().parse_args(["--rule", "median"])
    with pytest.raises(argparse.ArgumentError):
        _parser().parse_args(["--max-depth", "deep"])


def test_a_field_that_may_be_none_but_defaults_to_a_value_reads_none():
    assert flag_values(Knobs, _parser().parse_args(["--floor", "none"]), exclude=("names",))["floor"] is None
    assert flag_values(Knobs, _parser().parse_args(["--floor", "0.5"]), exclude=("names",))["floor"] == 0.5
    with pytest.raises(argparse.ArgumentError, match="invalid float value"):
        _parser().parse_args(["--floor", "off"])
    with pytest.raises(argparse.ArgumentError):  # a field whose default is None has no need of it
        _parser().parse_args(["--cap", "none"])


def test_unset_flags_leave_the_config_to_its_own_defaults():
    args = _parser(unset=True).parse_args(["--temperature", "0.7"])
    assert flag_values(Knobs, args, exclude=("names",), given=True) == {"temperature": 0.7}


def test_a_field_without_a_flag_form_is_refused_unless_excluded():
    with pytest.raises(TypeError, match="names"):
        add_flags(argparse.ArgumentParser(), Knobs)
    with pytest.raises(TypeError, match="no field bogus"):
        add_flags(argparse.ArgumentParser(), Knobs, only=["bogus"])


def test_errors_name_flags_not_fields():
    with pytest.raises(ValueError) as err:
        Knobs(max_depth=2, cap=5)
    assert flag_message(str(err.value), Knobs) == "need --cap <= --max-depth, got 5"
    # a name inside a longer identifier, after a dot, or quoted, stays as it is
    assert flag_message("cap_size and x.cap and 'cap' but cap", ["cap"]) == "cap_size and x.cap and 'cap' but --cap"
    assert flag("max_depth") == "--max-depth"
