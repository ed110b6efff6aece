"""Step-labelled data for the PRM: the canonical record and its checks, the PRM800K and
Math-Shepherd converters, file readers, and pairs for the pairwise model (ARCHITECTURE.md).

The canonical record (JSONL or Parquet, one per trace):

    {"problem": "17 + 5 * 3", "steps": ["5 * 3 = 15, so 17 + 15", ...],
     "labels": [1, 1, 0]          0/1 per step (hard labels, BCE), and/or
     "values": [0.33, 0.67, 0.0]} floats in [0, 1] per step (soft targets such as quality values, MSE)

Optional fields kept when present: "answer" (the gold answer) and "id". Every record of a file must
carry the same target fields. Other formats are converted on reading:

    PRM800K       {"question": {"problem"}, "label": {"steps": [{"completions": [{"text", "rating"}],
                   "chosen_completion", "human_completion"}]}}, ratings -1/0/1
    Math-Shepherd {"input": "<problem> Step 1: ... ки\\nStep 2: ... ки", "label": same with +/- tags}

Pairs for the pairwise model (`prm.pairwise`): {"problem", "chosen": [steps], "rejected": [steps]}.

Bad input raises `StepDataError`, whose message names the file, the line and the field.

The toy world's oracle-labelled traces are made in `prm.toy_traces` and the ReST-MCTS* quality
values in `prm.quality`; the names of theirs that code outside `prm` reads from here
(`quality_values`, `ToyDataConfig`, `toy_step_records`, ...) stay importable from here.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import pyarrow.parquet as pq

from mcts.envs.arith import write_problems
from mcts.policy.base import StepProposer
from prm.toy_traces import ToyDataConfig, toy_step_records

if TYPE_CHECKING:
    # `datasets` takes about a second to import and only the Dataset helpers need it: it is
    # imported there, so that reading and checking records stays light.
    import datasets

__all__ = [
    "FORMATS", "MATH_SHEPHERD_TAG", "StepDataError", "check_pair_record", "check_record",
    "iter_file", "load_pair_dataset", "load_step_dataset", "math_shepherd_record", "outcome", "pair_records",
    "prm800k_record", "read_step_records", "step_dataset", "toy_step_dataset", "write_jsonl",
]

FORMATS = ("auto", "steps", "prm800k", "math_shepherd")
MATH_SHEPHERD_TAG = "ки"
KEPT_FIELDS = ("id", "answer")


class StepDataError(ValueError):
    """A data file that cannot be read as step-labelled records.

    Attributes:
        path: the file.
        line: 1-based line (JSONL) or row (Parquet); None for the file as a whole.
        field: the offending field, or None.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


# ---------------------------------------------------------------------------------------------------
# Validation of one record


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_record(record: Any, path: str | Path = "<records>", line: int | None = None) -> dict:
    """A canonical step record, checked and normalised.

    Args:
        record: the parsed JSON object.
        path, line: where it came from (for the error message).

    Returns:
        {"problem": str, "steps": [str], "labels"?: [int], "values"?: [float], "answer"?: str, "id"?: str}.
        Raises `StepDataError` naming the field on anything else.
    """
    def fail(field: str | None, message: str):
        raise StepDataError(path, line, field, message)

    if not isinstance(record, Mapping):
        fail(None, f"expected a JSON object, got {type(record).__name__}")
    if "problem" not in record:
        other = [k for k in ("question", "prompt", "input", "query") if k in record]
        hint = f" (found {other[0]!r}: is it another format? see prm.data FORMATS)" if other else ""
        fail("problem", f"missing{hint}; fields present: {sorted(record)}")
    problem = record["problem"]
    if not isinstance(problem, str) or not problem.strip():
        fail("problem", f"must be a non-empty string, got {problem!r:.60}")
    steps = record.get("steps")
    if "steps" not in record:
        fail("steps", f"missing; fields present: {sorted(record)}")
    if not isinstance(steps, list) or not steps:
        fail("steps", f"must be a non-empty list of strings, got {steps!r:.60}")
    for i, s in enumerate(steps):
        if not isinstance(s, str):
            fail("steps", f"step {i} must be a string, got {type(s).__name__}")
    out: dict = {"problem": problem, "steps": list(steps)}
    if "labels" not in record and "values" not in record:
        fail("labels", f"missing: a record needs 'labels' (0/1 per step) or 'values' (floats in [0, 1]); "
                       f"fields present: {sorted(record)}")
    for field in ("labels", "values"):
        if field not in record:
            continue
        targets = record[field]
        if not isinstance(targets, list):
            fail(field, f"must be a list, got {type(targets).__name__}")
        if len(targets) != len(steps):
            fail(field, f"{len(targets)} {field} for {len(steps)} steps")
        for i, t in enumerate(targets):
            if not _is_number(t) or not 0 <= t <= 1:
                fail(field, f"{field}[{i}] = {t!r} is not a number in [0, 1]")
            if field == "labels" and t not in (0, 1):
                fail(field, f"labels[{i}] = {t!r}: labels are 0 or 1 (soft targets go in 'values')")
        out[field] = [int(t) for t in targets] if field == "labels" else [float(t) for t in targets]
    for field in KEPT_FIELDS:
        if record.get(field) is not None:
            out[field] = str(record[field])
    return out


def check_pair_record(record: Any, path: str | Path = "<records>", line: int | None = None) -> dict:
    """A pair record {"problem", "chosen": [steps], "rejected": [steps]}, checked."""
    def fail(field: str | None, message: str):
        raise StepDataError(path, line, field, message)

    if not isinstance(record, Mapping):
        fail(None, f"expected a JSON object, got {type(record).__name__}")
    for field in ("problem", "chosen", "rejected"):
        if field not in record:
            fail(field, f"missing; fields present: {sorted(record)}")
    if not isinstance(record["problem"], str) or not record["problem"].strip():
        fail("problem", "must be a non-empty string")
    out = {"problem": record["problem"]}
    for field in ("chosen", "rejected"):
        steps = record[field]
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            fail(field, f"must be a non-empty list of step strings, got {steps!r:.60}")
        out[field] = list(steps)
    return out


# ---------------------------------------------------------------------------------------------------
# Other formats


def prm800k_record(record: Any, path: str | Path = "<records>", line: int | None = None, *,
                   neutral: int = 1) -> dict:
    """A PRM800K line as a canonical record.

    Each step takes its chosen completion (`chosen_completion`), else the human's, else (the
    labeller stopped there) the first completion rated -1, or the only one; the trace ends after
    its first step rated -1. Ratings map to labels: 1 -> 1, -1 -> 0, 0 -> `neutral`.
    """
    def fail(field: str, message: str):
        raise StepDataError(path, line, field, message)

    if not isinstance(record, Mapping):
        raise StepDataError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, Mapping) or not isinstance(question.get("problem"), str):
        fail("question.problem", "missing or not a string")
    label = record.get("label")
    if not isinstance(label, Mapping) or not isinstance(label.get("steps"), list):
        fail("label.steps", "missing or not a list")
    steps, labels = [], []
    for i, step in enumerate(label["steps"]):
        where = f"label.steps[{i}]"
        if not isinstance(step, Mapping):
            fail(where, "not an object")
        completions = step.get("completions") or []
        if not isinstance(completions, list):
            fail(f"{where}.completions", "not a list")
        chosen = step.get("chosen_completion")
        if chosen is not None:
            if not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                fail(f"{where}.chosen_completion", f"{chosen!r} is not an index of its {len(completions)} completions")
            pick = completions[chosen]
        elif isinstance(step.get("human_completion"), Mapping):
            pick = {"text": step["human_completion"].get("text"), "rating": 1}
        else:
            wrong = [c for c in completions if isinstance(c, Mapping) and c.get("rating") == -1]
            if wrong:
                pick = wrong[0]
            elif len(completions) == 1:
                pick = completions[0]
            else:
                break  # unlabelled continuation: the labelled trace ends here
        if not isinstance(pick, Mapping) or not isinstance(pick.get("text"), str):
            fail(f"{where}.completions", "a completion without a 'text' string")
        rating = pick.get("rating")
        if rating not in (-1, 0, 1):
            fail(f"{where}.completions.rating", f"{rating!r} is not -1, 0 or 1")
        steps.append(pick["text"])
        labels.append({1: 1, 0: neutral, -1: 0}[rating])
        if rating == -1:
            break
    if not steps:
        fail("label.steps", "no labelled step")
    out = {"problem": question["problem"], "steps": steps, "labels": labels}
    if question.get("ground_truth_answer") is not None:
        out["answer"] = str(question["ground_truth_answer"])
    return out


def math_shepherd_record(record: Any, path: str | Path = "<records>", line: int | None = None, *,
                         tag: str = MATH_SHEPHERD_TAG) -> dict:
    """A Math-Shepherd line as a canonical record.

    `input` holds the problem and the steps, each step closed by the tag `ки`; `label` is the same
    text with each tag replaced by `+` (correct) or `-` (wrong). The problem is what precedes
    "Step 1:" (else the first line) of the first piece.
    """
    def fail(field: str, message: str):
        raise StepDataError(path, line, field, message)

    if not isinstance(record, Mapping):
        raise StepDataError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    text, tagged = record.get("input"), record.get("label")
    if not isinstance(text, str):
        fail("input", "missing or not a string")
    if not isinstance(tagged, str):
        fail("label", "missing or not a string")
    pieces = text.split(tag)
    if len(pieces) < 2:
        fail("input", f"no step tag {tag!r}")
    labels, pos = [], 0
    for i, piece in enumerate(pieces[:-1]):
        if tagged[pos:pos + len(piece)] != piece:
            fail("label", f"does not match 'input' before step tag {i + 1}")
        mark = tagged[pos + len(piece):pos + len(piece) + 1]
        if mark not in ("+", "-"):
            fail("label", f"tag {i + 1} is {mark!r}, not '+' or '-'")
        labels.append(int(mark == "+"))
        pos += len(piece) + 1
    first = pieces[0]
    cut = first.find("Step 1:")
    if cut < 0:
        cut = first.find("\n") + 1
    problem, step1 = first[:cut].strip(), first[cut:]
    steps = [step1, *pieces[1:-1]]
    steps = [s.strip() for s in steps]
    if not problem:
        fail("input", "no problem text before the first step")
    if any(not s for s in steps):
        fail("input", "an empty step")
    out = {"problem": problem, "steps": steps, "labels": labels}
    if record.get("task") is not None:
        out["id"] = str(record["task"])
    return out


_CONVERTERS = {"steps": check_record, "prm800k": prm800k_record, "math_shepherd": math_shepherd_record}


def _detect(record: Any) -> str:
    if isinstance(record, Mapping):
        if "steps" in record or "problem" in record:
            return "steps"
        if isinstance(record.get("label"), Mapping) and "question" in record:
            return "prm800k"
        if isinstance(record.get("input"), str) and isinstance(record.get("label"), str):
            return "math_shepherd"
    return "steps"  # the canonical checker says what is missing


# ---------------------------------------------------------------------------------------------------
# Files


def iter_file(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, parsed record) of a JSONL or Parquet file; blank lines skipped.

    Raises `StepDataError` for a missing file, malformed JSON (naming the line) or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise StepDataError(path, None, None, "no such file")
    seen = 0
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow's errors vary by version
            raise StepDataError(path, None, None, f"not a readable Parquet file: {err}") from None
        for i, record in enumerate(table.to_pylist(), start=1):
            seen += 1
            yield i, record
    else:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise StepDataError(path, lineno, None, f"not UTF-8 text ({err.reason})") from None
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except RecursionError:
                    raise StepDataError(path, lineno, None, "JSON nested too deeply") from None
                except json.JSONDecodeError as err:
                    raise StepDataError(path, lineno, None, f"malformed JSON: {err.msg} (column {err.colno})") from None
                seen += 1
                yield lineno, record
    if not seen:
        raise StepDataError(path, None, None, "the file holds no records")


def read_step_records(path: str | Path, format: str = "auto", **options) -> list[dict]:
    """Every record of a step file as a canonical record.

    Args:
        path: JSONL or Parquet.
        format: "auto" (from the first record's fields), "steps", "prm800k" or "math_shepherd".
        **options: for the converters (`neutral` of PRM800K, `tag` of Math-Shepherd).

    Returns:
        Canonical records (see `check_record`). Raises `StepDataError` naming file, line, field.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    records: list[dict] = []
    targets: tuple[str, ...] | None = None
    first_line = None
    for line, raw in iter_file(path):
        if format == "auto":
            format = _detect(raw)
        record = _CONVERTERS[format](raw, path, line, **options)
        has = tuple(f for f in ("labels", "values") if f in record)
        if targets is None:
            targets, first_line = has, line
        elif has != targets:
            field = (set(targets) ^ set(has)).pop()
            raise StepDataError(path, line, field, f"this record has targets {list(has)} but line {first_line} "
                                                   f"has {list(targets)}; every record must carry the same ones")
        records.append(record)
    return records


def step_dataset(records: Iterable[Mapping]) -> "datasets.Dataset":
    """Canonical records as a `datasets.Dataset` (columns problem, steps, labels and/or values, and
    answer/id where every record has them)."""
    import datasets

    records = list(records)
    if not records:
        raise ValueError("no records")
    columns = [c for c in ("problem", "steps", "labels", "values", *KEPT_FIELDS) if all(c in r for r in records)]
    return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in columns})


def load_step_dataset(path: str | Path, format: str = "auto", **options) -> "datasets.Dataset":
    """A step file (see `read_step_records`) as a `datasets.Dataset`."""
    return step_dataset(read_step_records(path, format, **options))


def load_pair_dataset(path: str | Path) -> "datasets.Dataset":
    """A pair file ({"problem", "chosen", "rejected"} per line) as a `datasets.Dataset`; a step file
    is turned into pairs by `pair_records` (traces of one problem that differ in outcome)."""
    import datasets

    records = []
    kind = None
    for line, raw in iter_file(path):
        if kind is None:
            kind = "pairs" if isinstance(raw, Mapping) and "chosen" in raw else "steps"
        records.append(check_pair_record(raw, path, line) if kind == "pairs" else
                       _CONVERTERS[_detect(raw)](raw, path, line))
    if kind == "steps":
        records = pair_records(records)
        if not records:
            raise StepDataError(path, None, None, "no problem has both a correct and a wrong trace to pair")
    return datasets.Dataset.from_dict({c: [r[c] for r in records] for c in ("problem", "chosen", "rejected")})


def write_jsonl(path: str | Path, records: Iterable[Mapping]) -> Path:
    """Records as JSONL, atomically (a temporary file beside `path`, then a rename)."""
    return write_problems(path, records)


# ---------------------------------------------------------------------------------------------------
# Pairs for the pairwise model


def outcome(record: Mapping) -> float:
    """A trace's outcome: its last label (else its last value)."""
    return float(record["labels"][-1] if "labels" in record else record["values"][-1])


def pair_records(records: Iterable[Mapping], *, max_pairs_per_problem: int = 16, seed: int = 0) -> list[dict]:
    """Pairs (correct trace, wrong trace) of the same problem, by outcome (`outcome` >= 0.5 is correct).

    Per problem, up to `max_pairs_per_problem` pairs drawn without repetition (seeded); identical
    step lists are never paired.

    Returns:
        [{"problem", "chosen", "rejected"}].
    """
    groups: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for r in records:
        good, bad = groups[r["problem"]]
        (good if outcome(r) >= 0.5 else bad).append(list(r["steps"]))
    rng = random.Random(seed)
    out = []
    for problem, (good, bad) in groups.items():
        pairs = [(g, b) for g in good for b in bad if g != b]
        if len(pairs) > max_pairs_per_problem:
            pairs = rng.sample(pairs, max_pairs_per_problem)
        out += [{"problem": problem, "chosen": g, "rejected": b} for g, b in pairs]
    return out


# ---------------------------------------------------------------------------------------------------
# The toy world's records as a dataset


def toy_step_dataset(config: ToyDataConfig | None = None, policy: StepProposer | None = None) -> "datasets.Dataset":
    """`toy_step_records` as a `datasets.Dataset` (problem, steps, labels, values, answer)."""
    return step_dataset(toy_step_records(config or ToyDataConfig(), policy))
