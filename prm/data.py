"""Step-labelled data for the PRM: files, readers, the toy world's oracle-labelled traces, and the
ReST-MCTS* quality values (ARCHITECTURE.md).

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
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    import datasets

    from mcts.policy.base import StepProposer

__all__ = [
    "FORMATS", "MATH_SHEPHERD_TAG", "StepDataError", "ToyDataConfig", "branch_traces", "check_pair_record",
    "check_record", "copy_slip", "iter_file", "load_pair_dataset", "load_step_dataset", "math_shepherd_record",
    "outcome", "pair_records", "prm800k_record", "quality_values", "read_step_records", "rollout",
    "single_step_traces", "step_dataset", "toy_problems", "toy_records", "toy_step_dataset", "toy_step_records",
    "trace_quality_values", "write_jsonl",
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
# ReST-MCTS* quality values


def quality_values(step_rewards: Sequence[float], remaining: Sequence[int | float]) -> list[float]:
    """The ReST-MCTS* quality values V_1..V_K of a partial solution's steps (ARCHITECTURE.md).

        V_0 = 0,  V_k = max(V_{k-1} + w_k, 0),  w_k = (1 - V_{k-1}) / (m_k + 1) * (1 - 2 r_k)

    r_k is the single-step process reward in the paper's convention: 0 for a correct step, 1 for a
    wrong one (soft values in between); m_k is the reasoning distance, the number of steps still
    needed after step k to reach the answer (0 at the answer step). A correct trace of K steps
    (r = 0, m_k = K - k) climbs linearly, V_k = k / K, to 1 at its last step; a wrong step lowers V;
    V never leaves [0, 1].

    Args:
        step_rewards: [K] r_k in [0, 1].
        remaining: [K] m_k >= 0.

    Returns:
        [K] V_k in [0, 1].
    """
    if len(step_rewards) != len(remaining):
        raise ValueError(f"{len(step_rewards)} step rewards but {len(remaining)} distances")
    values, v = [], 0.0
    for r, m in zip(step_rewards, remaining):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"step rewards must be in [0, 1], got {r}")
        if m < 0:
            raise ValueError(f"distances must be >= 0, got {m}")
        v = max(v + (1.0 - v) / (m + 1.0) * (1.0 - 2.0 * r), 0.0)
        values.append(min(v, 1.0))
    return values


def trace_quality_values(labels: Sequence[int | float]) -> list[float]:
    """Quality values of a whole trace from its 0/1 step labels: r_k = 1 - label_k, m_k = K - k."""
    k = len(labels)
    return quality_values([1.0 - float(x) for x in labels], [k - 1 - i for i in range(k)])


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
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow's errors vary by version
            raise StepDataError(path, None, None, f"not a readable Parquet file: {err}") from None
        for i, record in enumerate(table.to_pylist(), start=1):
            seen += 1
            yield i, record
    else:
        with path.open(encoding="utf-8") as handle:
            for lineno, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
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
    from mcts.envs.arith import write_problems

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
# The toy world: traces sampled from a toy policy, labelled by the oracle


def rollout(policy: "StepProposer", problems: Sequence[str], *, samples: int = 1, temperature: float = 1.0,
            max_steps: int = 12) -> list[tuple[str, list[str]]]:
    """Samples `samples` traces per problem, one batched `propose` per depth for all of them.

    Args:
        policy: any `StepProposer` (the scripted toy policy, an `HFPolicy`).
        problems: [P] problem texts.
        samples: traces per problem.
        temperature: sampling temperature.
        max_steps: a trace still going after this many steps is cut.

    Returns:
        [P * samples] (problem, step texts), problem-major; traces without any step are dropped.
    """
    from mcts.policy.base import Prefix

    traces = [(p, []) for p in problems for _ in range(samples)]
    live = list(range(len(traces)))
    for _ in range(max_steps):
        if not live:
            break
        proposals = policy.propose([Prefix(traces[i][0], tuple(traces[i][1])) for i in live], 1, temperature)
        still = []
        for i, steps in zip(live, proposals):
            if not steps:
                continue
            traces[i][1].append(steps[0].text)
            if not steps[0].finished:
                still.append(i)
        live = still
    return [t for t in traces if t[1]]


def toy_records(traces: Iterable[tuple[str, Sequence[str]]], golds: Mapping[str, int] | None = None) -> list[dict]:
    """Oracle-labelled canonical records of toy traces: labels from `label_steps`, values from
    `trace_quality_values`, the gold answer, and `first_error`."""
    from mcts.envs.arith import evaluate, first_error, label_steps, parse_expression

    out = []
    for problem, steps in traces:
        gold = golds[problem] if golds is not None and problem in golds else evaluate(parse_expression(problem))
        labels = label_steps(problem, steps, gold)
        out.append({"problem": problem, "steps": list(steps), "labels": labels,
                    "values": trace_quality_values(labels), "answer": str(gold),
                    "first_error": first_error(labels)})
    return out


@dataclasses.dataclass(frozen=True)
class ToyDataConfig:
    """Which toy traces a dataset holds: problems, the scripted policy's slip rates, samples."""

    problems: int = dataclasses.field(default=1000, metadata={"help": "problems"})
    samples: int = dataclasses.field(default=2, metadata={"help": "traces per problem and slip rate"})
    min_ops: int = dataclasses.field(default=1, metadata={"help": "fewest operations"})
    max_ops: int = dataclasses.field(default=6, metadata={"help": "most operations"})
    max_operand: int = dataclasses.field(default=10, metadata={"help": "largest operand"})
    max_value: int | None = dataclasses.field(default=100, metadata={
        "help": "bound on |every value a canonical solution writes| (None: unbounded); the defaults are "
                "the toy world's default problems (`mcts.envs.tiny_models.toy_problem_config`)"})
    slip_rates: tuple[float, ...] = dataclasses.field(default=(0.05,), metadata={
        "help": "base_eps of the scripted policy; one set of traces per rate"})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "sampling temperature"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the problems and the sampling"})

    def __post_init__(self):
        if self.problems < 1 or self.samples < 1:
            raise ValueError(f"problems and samples must be >= 1, got {self.problems}, {self.samples}")
        if not 1 <= self.min_ops <= self.max_ops <= 8:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 8, got {self.min_ops}, {self.max_ops}")
        if not self.slip_rates or any(not 0 <= r <= 0.5 for r in self.slip_rates):
            raise ValueError(f"slip_rates must be rates in [0, 0.5], got {self.slip_rates}")


def toy_problems(n: int, seed: int, min_ops: int = 1, max_ops: int = 6, max_operand: int = 10,
                 max_value: int | None = 100) -> list[dict]:
    """`n` toy problems (`mcts.envs.arith.generate_problems`); the defaults are the toy world's
    default problems (operands up to 10, every value within 100, 1-6 operations)."""
    from mcts.envs.arith import ArithConfig, generate_problems

    return generate_problems(n, seed, ArithConfig(min_ops=min_ops, max_ops=max_ops, max_operand=max_operand,
                                                  max_value=max_value))


def toy_step_records(config: ToyDataConfig, policy: "StepProposer | None" = None) -> list[dict]:
    """Oracle-labelled traces: `config.samples` per problem from the scripted policy at each slip
    rate, or from `policy` when given (then `slip_rates` is ignored)."""
    from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig

    problems = toy_problems(config.problems, config.seed, config.min_ops, config.max_ops, config.max_operand,
                            config.max_value)
    texts = [p["problem"] for p in problems]
    golds = {p["problem"]: p["answer"] for p in problems}
    records = []
    if policy is not None:
        records += toy_records(rollout(policy, texts, samples=config.samples, temperature=config.temperature), golds)
    else:
        for i, rate in enumerate(config.slip_rates):
            scripted = ScriptedPolicy(ToyPolicyConfig(base_eps=rate), seed=config.seed * 1009 + i)
            records += toy_records(rollout(scripted, texts, samples=config.samples,
                                           temperature=config.temperature), golds)
    return records


def branch_traces(problems: Sequence[str], *, seed: int = 0, wrong_fraction: float = 0.5,
                  continue_fraction: float = 0.5, slip_rate: float = 0.15) -> list[tuple[str, list[str]]]:
    """Traces that branch off the canonical solution at a random step: a balanced first-error signal.

    Per problem: k uniform in [0, K), the first k canonical steps, then step k + 1, which is the
    canonical one or (with probability `wrong_fraction`) one of the scripted policy's slips at that
    state (drawn by their probabilities). With probability `continue_fraction` the trace is then
    rolled out to its end by the scripted policy (base_eps `slip_rate`), so that the steps after a
    first error are seen too; else it ends at the branch step (short sequences: cheap to train on).

    Returns:
        [P] (problem, step texts).
    """
    from mcts.envs.arith import DELIMITER, solution_steps
    from mcts.policy.base import Prefix
    from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig

    rng = random.Random(f"branch:{seed}")
    distribution = ScriptedPolicy(ToyPolicyConfig(base_eps=0.5, max_eps=0.5, answer_eps=0.2))
    traces, go_on = [], []
    for problem in problems:
        canonical = [s + DELIMITER for s in solution_steps(problem)]
        k = rng.randrange(len(canonical))
        steps = canonical[:k]
        options = distribution.distribution(Prefix(problem, tuple(steps)))
        slips = options[1:]
        if slips and rng.random() < wrong_fraction:
            u, acc = rng.random() * sum(p for _, p in slips), 0.0
            pick = slips[-1][0]
            for step, p in slips:
                acc += p
                if u < acc:
                    pick = step
                    break
            steps.append(pick.text)
            finished = pick.finished
        else:
            steps.append(canonical[k])
            finished = k == len(canonical) - 1
        traces.append((problem, steps))
        go_on.append(not finished and rng.random() < continue_fraction)
    cont = [i for i, g in enumerate(go_on) if g]
    if cont:
        policy = ScriptedPolicy(ToyPolicyConfig(base_eps=slip_rate), seed=seed)
        live = cont
        while live:
            proposals = policy.propose([Prefix(traces[i][0], tuple(traces[i][1])) for i in live], 1)
            still = []
            for i, steps in zip(live, proposals):
                if steps:
                    traces[i][1].append(steps[0].text)
                    if not steps[0].finished and len(traces[i][1]) < 16:
                        still.append(i)
            live = still
    return traces


_OPERATOR_TOKENS = ("+", "-", "*")


def copy_slip(step: str, rng: random.Random) -> str | None:
    """A near miss in the copied part of a reduction step: what a model that copies long expressions
    badly writes (the scripted policy never does).

    The step's arithmetic (`a op b = r`) is kept; in the expression after ", so ", one number is
    changed by a few or one operator replaced, or one operation (`op number`) dropped.

    Args:
        step: a reduction step `a op b = r, so EXPR` (with or without its delimiter).
        rng: the random source.

    Returns:
        The changed step (with the step's delimiter, if it had one), or None when the step writes
        no expression with something to change.
    """
    import re

    from mcts.envs.arith import DELIMITER

    body = step[:-len(DELIMITER)] if step.endswith(DELIMITER) else step
    head, sep, rhs = body.rpartition(", so ")
    if not sep:
        return None
    tokens = rhs.split(" ")
    numbers = [i for i, t in enumerate(tokens) if re.search(r"\d", t)]
    operators = [i for i, t in enumerate(tokens) if t in _OPERATOR_TOKENS]
    droppable = [i for i in operators if i + 1 < len(tokens) and re.fullmatch(r"-?\d+", tokens[i + 1])]
    kinds = [k for k, ok in (("number", numbers), ("operator", operators), ("drop", droppable)) if ok]
    if not kinds:
        return None
    kind = rng.choice(kinds)
    if kind == "number":
        i = rng.choice(numbers)
        match = re.search(r"\d+", tokens[i])
        value = int(match.group()) + rng.choice((-3, -2, -1, 1, 2, 3))
        tokens[i] = tokens[i][:match.start()] + str(abs(value)) + tokens[i][match.end():]
    elif kind == "operator":
        i = rng.choice(operators)
        tokens[i] = rng.choice([o for o in _OPERATOR_TOKENS if o != tokens[i]])
    else:
        i = rng.choice(droppable)
        del tokens[i:i + 2]
    out = f"{head}, so {' '.join(tokens)}"
    if out == body:
        return None
    return out + (DELIMITER if step.endswith(DELIMITER) else "")


def single_step_traces(problems: Sequence[str], *, seed: int = 0, wrong_fraction: float = 0.5,
                       copy_fraction: float = 0.3, isolate: bool = False, negate_fraction: float = 0.0,
                       max_value: int | None = 100) -> list[tuple[str, list[str]]]:
    """One-step traces from the states of canonical solutions: short, and every one a first-error
    example (the cheapest signal for learning to check one step).

    Per problem: k uniform over its canonical steps; the state before step k (the problem, or the
    expression the canonical step k - 1 writes, itself a toy problem of the same value) becomes
    the trace's problem, and its step is the canonical next step or (with probability
    `wrong_fraction`) a slip: a copy slip (`copy_slip`, with probability `copy_fraction`, where
    the step has something to copy) or one of the scripted policy's slips at that state (off by a
    few, swapped digits, wrong operator; answer slips at the last step), drawn by their
    probabilities.

    With `isolate`, the state is the operation alone (`a op b`), and with probability
    `negate_fraction` one or both of its operands change sign first (where the result stays within
    `max_value`): arithmetic on negative numbers (`3 - -1`, `-11 * 4`) is where a small checker
    slips most, and solutions meet it less often than they need it.

    Returns:
        [P] (state, [step]).
    """
    from mcts.envs.arith import (DELIMITER, BinOp, apply_op, parse_expression, parse_step, reduce_once,
                                 reduction_step, render, solution_steps)
    from mcts.policy.base import Prefix
    from mcts.policy.toy import ScriptedPolicy, ToyPolicyConfig

    rng = random.Random(f"single-step:{seed}")
    distribution = ScriptedPolicy(ToyPolicyConfig(base_eps=0.5, max_eps=0.5, answer_eps=0.5))
    traces = []
    for problem in problems:
        canonical = [s + DELIMITER for s in solution_steps(problem)]
        k = rng.randrange(len(canonical))
        state = problem if k == 0 else render(parse_step(canonical[k - 1]))
        step = canonical[k]
        if isolate:  # the operation alone: `a op b` (an arithmetic fact to check), or the answer
            red = reduce_once(parse_expression(state))
            if red is not None:
                a, b = red.a, red.b
                if negate_fraction and rng.random() < negate_fraction:
                    sign_a, sign_b = rng.choice(((-1, 1), (1, -1), (-1, -1)))
                    value = apply_op(red.op, sign_a * a, sign_b * b)
                    if max_value is None or abs(value) <= max_value:
                        a, b = sign_a * a, sign_b * b
                result = apply_op(red.op, a, b)
                state = render(BinOp(red.op, a, b))
                step = reduction_step(a, red.op, b, result, result) + DELIMITER
        if rng.random() < wrong_fraction:
            slip = copy_slip(step, rng) if rng.random() < copy_fraction else None
            if slip is None:
                slips = distribution.distribution(Prefix(state, ()))[1:]
                if slips:
                    u, acc = rng.random() * sum(p for _, p in slips), 0.0
                    slip = slips[-1][0].text
                    for option, p in slips:
                        acc += p
                        if u < acc:
                            slip = option.text
                            break
            step = slip or step
        traces.append((state, [step]))
    return traces


def toy_step_dataset(config: ToyDataConfig | None = None, policy: "StepProposer | None" = None) -> "datasets.Dataset":
    """`toy_step_records` as a `datasets.Dataset` (problem, steps, labels, values, answer)."""
    return step_dataset(toy_step_records(config or ToyDataConfig(), policy))
