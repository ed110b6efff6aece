"""Problem files: the real MATH-500 and GSM8K files, the in-memory formats, and every error case."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mcts.grading import extract_answer
from mcts.problems import (
    FORMATS,
    GSM8KFormat,
    JsonlFormat,
    MathFormat,
    Problem,
    ProblemFileError,
    RecordError,
    load_problems,
    problem_from_record,
)

CARRIED = Path(__file__).resolve().parents[1] / "data"  # in the repository (data/README.md)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # too large to carry: GSM8K train


def _data(name: str) -> Path:
    path = CARRIED / name if (CARRIED / name).exists() else SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def test_the_carried_problem_files_match_their_recorded_hashes():
    rows = [line.split("|") for line in (CARRIED / "README.md").read_text().splitlines()
            if line.startswith("| ") and len(line.split("|")) == 4 and len(line.split("|")[2].strip()) == 64]
    recorded = {name.strip(): digest.strip() for _, name, digest, _ in rows}
    assert set(recorded) == {"math500.jsonl", "gsm8k_test.jsonl"}
    for name, digest in recorded.items():
        assert hashlib.sha256((CARRIED / name).read_bytes()).hexdigest() == digest, name


def _write(tmp_path: Path, lines: list, name: str = "probs.jsonl") -> Path:
    """Writes `lines` (dicts become JSON, strings are written as they are) one per line."""
    path = tmp_path / name
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Real files


def test_math500():
    path = _data("math500.jsonl")
    problems = load_problems(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(problems) == len(rows) == 500
    assert [p.id for p in problems] == [r["unique_id"] for r in rows]
    assert [p.answer for p in problems] == [r["answer"] for r in rows]
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.problem.startswith("Convert the point $(0,3)$")
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.source == "math"
    assert set(first.meta) == {"solution", "subject", "level"} and first.meta["level"] == 2
    assert {p.meta["level"] for p in problems} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("name, count", [("gsm8k_test.jsonl", 1319), ("gsm8k_train.jsonl", 7473)])
def test_gsm8k(name, count):
    path = _data(name)
    problems = load_problems(path)
    assert len(problems) == count
    stem = name.removesuffix(".jsonl")
    assert problems[0].id == f"{stem}:1" and problems[-1].id == f"{stem}:{count}"
    assert all(p.source == "gsm8k" and "####" not in p.answer for p in problems)
    assert all(p.answer.replace(",", "").lstrip("-").isdigit() for p in problems)
    if name == "gsm8k_test.jsonl":
        first = problems[0]
        assert first.problem.startswith("Janet\u2019s ducks lay 16 eggs per day.")
        assert first.answer == "18"
        assert first.meta["reasoning"].startswith("Janet sells 16 - 3 - 4")
        assert first.meta["reasoning"].endswith("farmer\u2019s market.")


def test_limit_reads_only_the_first_problems():
    path = _data("gsm8k_test.jsonl")
    assert [p.id for p in load_problems(path, limit=3)] == ["gsm8k_test:1", "gsm8k_test:2", "gsm8k_test:3"]
    assert load_problems(path, limit=0) == []
    assert len(load_problems(path, limit=10_000)) == 1319
    with pytest.raises(ValueError, match="limit"):
        load_problems(path, limit=-1)


# --------------------------------------------------------------------------------------------------
# Formats, in memory and from small files


def test_math_train_without_answer_takes_the_last_box():
    record = {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra",
              "solution": r"First \boxed{3}? No: $1+1=\boxed{\frac{4}{2}}$."}
    problem = problem_from_record(record, default_id="train:1")
    assert problem == Problem(id="train:1", problem="What is $1+1$?", answer=r"\frac{4}{2}", source="math",
                              meta={"level": "Level 1", "type": "Algebra", "solution": record["solution"]})
    assert problem.answer == extract_answer(record["solution"])
    no_box = problem_from_record({"problem": "p", "solution": "no box"}, default_id="x")
    assert no_box.answer is None


def test_toy_world_file(tmp_path):
    path = _write(tmp_path, [{"problem": "17 + 5 * 3 - 8", "answer": 24}, {"problem": "(2 - 9) * 3", "answer": -21}],
                  name="arith_seed0.jsonl")
    problems = load_problems(path)
    assert [(p.id, p.problem, p.answer, p.source) for p in problems] == [
        ("arith_seed0:1", "17 + 5 * 3 - 8", "24", "jsonl"), ("arith_seed0:2", "(2 - 9) * 3", "-21", "jsonl")]
    assert problems[0].meta == {}


def test_generic_jsonl_fields(tmp_path):
    path = _write(tmp_path, [
        {"question": "How many?", "answer": "12", "id": "q-a", "tag": "x"},
        {"problem": "No answer known"},
        {"problem": "Float answer", "answer": 2.5, "id": 7},
        {"question": "GSM8K-like without ####", "answer": " 3 "},
    ])
    problems = load_problems(path)
    assert [(p.id, p.problem, p.answer) for p in problems] == [
        ("q-a", "How many?", "12"), ("probs:2", "No answer known", None), ("7", "Float answer", "2.5"),
        ("probs:4", "GSM8K-like without ####", "3")]
    assert problems[0].meta == {"tag": "x"}
    assert {p.source for p in problems} == {"jsonl"}


def test_blank_lines_are_skipped_and_ids_count_physical_lines(tmp_path):
    path = _write(tmp_path, ["", {"problem": "a"}, "   ", "\t", {"problem": "b"}, ""])
    assert [p.id for p in load_problems(path)] == ["probs:2", "probs:5"]


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"problem": "a", "answer": 1}\r\n{"problem": "b"}\r\n')
    assert [(p.problem, p.answer) for p in load_problems(path)] == [("a", "1"), ("b", None)]


def test_each_record_is_claimed_by_one_format():
    math = {"problem": "p", "solution": r"\boxed{1}", "answer": "1", "unique_id": "u"}
    gsm8k = {"question": "q", "answer": "r\n#### 1"}
    plain = {"problem": "p", "answer": 1}
    claims = {name: [type(f) for f in FORMATS if f.matches(r)]
              for name, r in (("math", math), ("gsm8k", gsm8k), ("plain", plain))}
    assert claims["math"][0] is MathFormat
    assert claims["gsm8k"][0] is GSM8KFormat
    assert claims["plain"] == [JsonlFormat]
    assert problem_from_record(gsm8k, "d").meta == {"reasoning": "r"}


# --------------------------------------------------------------------------------------------------
# Errors: one ProblemFileError naming the file, the line and the field


def _error(path: Path, **kwargs) -> ProblemFileError:
    with pytest.raises(ProblemFileError) as info:
        load_problems(path, **kwargs)
    return info.value


def test_missing_file(tmp_path):
    err = _error(tmp_path / "nope.jsonl")
    assert isinstance(err, ValueError)
    assert (err.line, err.field) == (None, None)
    assert str(err) == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_directory_is_not_a_file(tmp_path):
    err = _error(tmp_path)
    assert "cannot read" in str(err) and str(tmp_path) in str(err)


@pytest.mark.parametrize("lines", [[], [""], ["", "   ", ""]])
def test_empty_file(tmp_path, lines):
    path = _write(tmp_path, lines, name="empty.jsonl")
    err = _error(path)
    assert (err.path, err.line, err.field) == (str(path), None, None)
    assert "empty.jsonl: empty file" in str(err)


# (lines, bad line number, field or None, words the message must hold)
ERROR_CASES = {
    "malformed_json": ([{"problem": "a"}, '{"problem": "b",', {"problem": "c"}], 2, None, "malformed JSON"),
    "not_json_at_all": (["problem: a"], 1, None, "malformed JSON"),
    "array_line": ([{"problem": "a"}, [1, 2]], 2, None, "expected a JSON object, got an array"),
    "string_line": (['"just text"'], 1, None, "expected a JSON object, got a string"),
    "null_line": (["null"], 1, None, "expected a JSON object, got null"),
    "no_problem_field": ([{"problem": "a"}, {"prompt": "b", "answer": 1}], 2, "problem",
                         "field 'problem': missing (expected 'problem' or 'question')"),
    "problem_not_string": ([{"problem": 17}], 1, "problem", "field 'problem': expected a string, got a number"),
    "question_not_string": ([{"question": ["a"]}], 1, "question", "field 'question': expected a string, got an array"),
    "math_problem_not_string": ([{"problem": None, "solution": "s"}], 1, "problem", "expected a string, got null"),
    "problem_empty": ([{"problem": "  "}], 1, "problem", "field 'problem': empty"),
    "answer_bad_type": ([{"problem": "a", "answer": [1]}], 1, "answer", "expected a string or a number"),
    "answer_bool": ([{"problem": "a", "answer": True}], 1, "answer", "got a boolean"),
    "solution_not_string": ([{"problem": "a", "solution": 3}], 1, "solution", "expected a string"),
    "gsm8k_nothing_after_hashes": ([{"question": "q", "answer": "reasoning ####  "}], 1, "answer", "nothing after '####'"),
    "id_bad_type": ([{"problem": "a", "id": {"x": 1}}], 1, "id", "expected a non-empty string or an integer"),
    "unique_id_empty": ([{"problem": "a", "solution": "s", "unique_id": ""}], 1, "unique_id", "non-empty"),
    "duplicate_id": ([{"problem": "a", "id": "x"}, "", {"problem": "b", "id": "x"}], 3, "id",
                     "duplicate id 'x' (first on line 1)"),
    "duplicate_unique_id": ([{"problem": "a", "solution": "s", "unique_id": "u"},
                             {"problem": "b", "solution": "s", "unique_id": "u"}], 2, "unique_id", "duplicate id 'u'"),
    "duplicate_explicit_and_default_id": ([{"problem": "a"}, {"problem": "b", "id": "bad:1"}], 2, "id",
                                          "duplicate id 'bad:1'"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_line(tmp_path, case):
    lines, line, field, words = ERROR_CASES[case]
    path = _write(tmp_path, lines, name="bad.jsonl")
    err = _error(path)
    assert (err.path, err.line, err.field) == (str(path), line, field)
    message = str(err)
    assert message.startswith(f"{path}:{line}: ")
    assert "bad.jsonl" in message and words in message
    if field is not None:
        assert f"field '{field}'" in message


def test_message_format():
    err = ProblemFileError("math500.jsonl", 17, "problem", "missing (expected 'problem' or 'question')")
    assert str(err) == "math500.jsonl:17: field 'problem': missing (expected 'problem' or 'question')"


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"problem": "a"}\n{"problem": "caf\xe9"}\n')
    err = _error(path)
    assert (err.line, err.field) == (2, None) and "not UTF-8" in str(err)


def test_error_after_limit_is_not_reached(tmp_path):
    path = _write(tmp_path, [{"problem": "a"}, "{broken"])
    assert [p.problem for p in load_problems(path, limit=1)] == ["a"]
    assert _error(path).line == 2


def test_record_error_names_the_field():
    with pytest.raises(RecordError) as info:
        problem_from_record({"answer": 1}, default_id="x")
    assert info.value.field == "problem"
