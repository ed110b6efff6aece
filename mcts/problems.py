"""Problem files: MATH-500, MATH train, GSM8K, the toy world, any JSONL with a problem field.

Every line of a JSONL file is one problem. Its layout is detected per line by the first format that
claims it (`FORMATS`); each format only says where the text, the gold answer, the id and the extra
fields are, and one shared `ProblemFormat.to_problem` builds and checks the `Problem`:

    MathFormat    problem, solution[, answer, unique_id, subject, level]   gold: answer, else the
                                                                           last \\boxed{} of solution
    GSM8KFormat   question, answer = "reasoning ... #### 18"               gold: the text after ####
    JsonlFormat   problem or question[, answer, id]                        gold: answer (a number is
                                                                           kept as its text)

Ids default to `<file stem>:<line number>`. Bad input raises one `ProblemFileError` naming the file,
the line and the field; blank lines are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, ClassVar

from mcts.grading import last_boxed

__all__ = [
    "FORMATS",
    "GSM8KFormat",
    "JsonlFormat",
    "MathFormat",
    "Problem",
    "ProblemFileError",
    "ProblemFormat",
    "RecordError",
    "load_problems",
    "problem_from_record",
]


@dataclasses.dataclass
class Problem:
    """One problem to search on.

    id: unique within its file (MATH's `unique_id`, a record's `id`, else `<file stem>:<line>`).
    problem: the statement given to the policy.
    answer: the gold final answer as text (LaTeX kept), or None when unknown.
    source: the name of the format that read it: "math", "gsm8k" or "jsonl".
    meta: the record's other fields (MATH's solution, subject, level; GSM8K's reasoning).
    """

    id: str
    problem: str
    answer: str | None
    source: str
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """A hash of the statement (16 hex digits): results records carry it, so that a resumed run
        notices a problem that changed under its id."""
        return hashlib.sha256(self.problem.encode("utf-8")).hexdigest()[:16]


class RecordError(ValueError):
    """A record (one parsed line) that is not a valid problem; `field` is the offending field."""

    def __init__(self, field: str | None, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"field {field!r}: {reason}" if field else reason)


class ProblemFileError(ValueError):
    """A problem file that cannot be read, with where: `path`, `line` (1-based) and `field`.

    `line` is None for whole-file problems (missing, empty); `field` is None where no single field
    is at fault (malformed JSON). The message reads like `math500.jsonl:17: field 'problem': missing`.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, reason: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field {field!r}: {reason}" if field else reason
        super().__init__(f"{where}: {what}")


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "a boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _text(record: dict, field: str) -> str:
    """A required, non-empty string field."""
    if field not in record:
        raise RecordError(field, "missing")
    value = record[field]
    if not isinstance(value, str):
        raise RecordError(field, f"expected a string, got {_json_type(value)}")
    if not value.strip():
        raise RecordError(field, "empty")
    return value


def _answer_text(value: Any, field: str = "answer") -> str | None:
    """A gold answer as text: strings as written, numbers (the toy world's integers) as digits."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise RecordError(field, f"expected a string or a number, got {_json_type(value)}")


class ProblemFormat:
    """One layout of a problem record. Subclasses say where things are; `to_problem` builds.

    name: the `Problem.source` of what this format reads.
    id_fields: the fields that may hold the id, first present wins.
    own_fields: the fields that become `problem`/`answer`/`id` (the rest goes to `meta`).
    """

    name: ClassVar[str]
    id_fields: ClassVar[tuple[str, ...]] = ("id",)
    own_fields: ClassVar[frozenset[str]] = frozenset()

    def matches(self, record: dict) -> bool:
        """Whether this format claims the record (checked in `FORMATS` order)."""
        raise NotImplementedError

    def problem_field(self, record: dict) -> str:
        raise NotImplementedError

    def answer(self, record: dict) -> str | None:
        raise NotImplementedError

    def meta(self, record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in self.own_fields}

    def to_problem(self, record: dict, default_id: str) -> Problem:
        """Builds the `Problem` of a record; raises `RecordError` naming the field at fault."""
        text = _text(record, self.problem_field(record))
        return Problem(id=self._id(record, default_id), problem=text, answer=self.answer(record),
                       source=self.name, meta=self.meta(record))

    def _id(self, record: dict, default_id: str) -> str:
        for field in self.id_fields:
            if field in record:
                value = record[field]
                if isinstance(value, int) and not isinstance(value, bool):
                    return str(value)
                if not isinstance(value, str) or not value.strip():
                    raise RecordError(field, f"expected a non-empty string or an integer, got {value!r}")
                return value
        return default_id


class MathFormat(ProblemFormat):
    """MATH (MATH-500, MATH train): `problem`, `solution` ending in a box, optional `answer`."""

    name = "math"
    id_fields = ("unique_id", "id")
    own_fields = frozenset({"problem", "answer", "unique_id", "id"})

    def matches(self, record: dict) -> bool:
        return "problem" in record and "solution" in record

    def problem_field(self, record: dict) -> str:
        return "problem"

    def answer(self, record: dict) -> str | None:
        if record.get("answer") is not None:
            return _answer_text(record["answer"])
        solution = record["solution"]
        if not isinstance(solution, str):
            raise RecordError("solution", f"expected a string, got {_json_type(solution)}")
        return last_boxed(solution)


class GSM8KFormat(ProblemFormat):
    """GSM8K: `question`, and `answer` = the reasoning, then `#### <number>`."""

    name = "gsm8k"
    own_fields = frozenset({"question", "answer", "id"})

    def matches(self, record: dict) -> bool:
        return "question" in record and isinstance(record.get("answer"), str) and "####" in record["answer"]

    def problem_field(self, record: dict) -> str:
        return "question"

    def answer(self, record: dict) -> str | None:
        gold = record["answer"].rsplit("####", 1)[1].strip()
        if not gold:
            raise RecordError("answer", "nothing after '####'")
        return gold

    def meta(self, record: dict) -> dict:
        return {"reasoning": record["answer"].rsplit("####", 1)[0].strip(), **super().meta(record)}


class JsonlFormat(ProblemFormat):
    """Any record with `problem` (or `question`) and optional `answer` and `id`; the toy world's."""

    name = "jsonl"
    own_fields = frozenset({"problem", "question", "answer", "id"})

    def matches(self, record: dict) -> bool:
        return True

    def problem_field(self, record: dict) -> str:
        for field in ("problem", "question"):
            if field in record:
                return field
        raise RecordError("problem", "missing (expected 'problem' or 'question')")

    def answer(self, record: dict) -> str | None:
        return _answer_text(record.get("answer"))


FORMATS: tuple[ProblemFormat, ...] = (MathFormat(), GSM8KFormat(), JsonlFormat())


def problem_from_record(record: Any, default_id: str) -> Problem:
    """The `Problem` of one record, read by the first format of `FORMATS` that claims it.

    Args:
        record: a parsed JSON line (must be an object).
        default_id: the id when the record has none.

    Returns:
        The problem. Raises `RecordError` (with the offending `field`) when the record is invalid.
    """
    return _format_of(record).to_problem(record, default_id)


def _format_of(record: Any) -> ProblemFormat:
    if not isinstance(record, dict):
        raise RecordError(None, f"expected a JSON object, got {_json_type(record)}")
    return next(f for f in FORMATS if f.matches(record))


def load_problems(path: str | Path, limit: int | None = None,
                  check: Callable[[Problem], None] | None = None) -> list[Problem]:
    """Reads a JSONL problem file (MATH-500, MATH train, GSM8K, toy world, any problem JSONL).

    Args:
        path: the file; each non-blank line is one JSON object.
        limit: read at most this many problems (None: all); lines after them are not read.
        check: called with each problem; a `RecordError` it raises (what the models to come need
            of a problem, e.g. the toy oracle's integer answers) names the line like a bad field.

    Returns:
        The problems in file order. Raises `ProblemFileError` (naming file, line and field) for a
        missing or empty file, a line that is not a JSON object, an invalid field or a repeated id.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ProblemFileError(path, None, None, "file not found") from None
    except OSError as err:
        raise ProblemFileError(path, None, None, f"cannot read: {err.strerror or err}") from None

    problems: list[Problem] = []
    first_line: dict[str, int] = {}  # id -> the line that defined it
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if limit is not None and len(problems) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ProblemFileError(path, lineno, None, f"not UTF-8 text ({err.reason})") from None
            line = line.lstrip("\ufeff") if lineno == 1 else line
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except RecursionError:
                raise ProblemFileError(path, lineno, None, "JSON nested too deeply") from None
            except json.JSONDecodeError as err:
                raise ProblemFileError(path, lineno, None,
                                       f"malformed JSON: {err.msg} (column {err.colno})") from None
            try:
                problem = problem_from_record(record, default_id=f"{path.stem}:{lineno}")
                if check is not None:
                    check(problem)
            except RecordError as err:
                raise ProblemFileError(path, lineno, err.field, err.reason) from None
            if problem.id in first_line:
                id_field = next((f for f in _format_of(record).id_fields if f in record), "id")
                raise ProblemFileError(path, lineno, id_field,
                                       f"duplicate id {problem.id!r} (first on line {first_line[problem.id]})")
            first_line[problem.id] = lineno
            problems.append(problem)
    if not problems and limit != 0:
        raise ProblemFileError(path, None, None, "empty file: no problems")
    return problems
