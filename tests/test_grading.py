"""Answer extraction and equivalence: unit cases, robustness, and the real MATH-500 / GSM8K files.

The acceptance check of the grader: every MATH-500 gold solution graded against its own answer
(>= 99 % correct) and against a systematically altered answer (<= 1 % correct); the same for GSM8K.
"""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from mcts import grading
from mcts.grading import extract_answer, grade, is_equivalent, last_boxed, normalize, rewrite

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _read_jsonl(name: str) -> list[dict]:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------------------------------
# Extraction


@pytest.mark.parametrize("text, expected", [
    (r"so $x = \boxed{5}$.", "5"),
    (r"The answer is \boxed{\frac{14}{3}}.", r"\frac{14}{3}"),
    (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\frac{\sqrt{3}}{\sqrt{\frac{1}{2}}}}", r"\frac{\sqrt{3}}{\sqrt{\frac{1}{2}}}"),
    (r"first \boxed{1}, then \boxed{2}", "2"),
    (r"\boxed {7}", "7"),
    (r"\fbox{42}", "42"),
    (r"$\boxed 5$.", "5"),
    (r"so \boxed 2.5.", "2.5"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    (r"\boxed{3} and then, truncated: \boxed{4", "3"),
    (r"\boxed{} \boxed{9}", "9"),
    ("17 + 5 = 22, so 22 * 3 - 8\n66 - 8 = 58\nThe answer is \\boxed{58}.", "58"),
    # "The answer is" when nothing is boxed: trailing period and $ go.
    ("So the answer is 42.", "42"),
    ("The answer is $\\frac{1}{2}$.", r"\frac{1}{2}"),
    ("The final answer is: 7", "7"),
    ("The answer is \\$18.90.", r"\$18.90"),
    ("The answer is 2.5. Then we stop.", "2.5"),
    ("The answer is 3.\nLater: the answer is 4.", "4"),
    ("**The answer is** 12", "12"),
    # GSM8K
    ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
    ("#### 1,600", "1,600"),
    # boxed wins over prose, prose over ####
    ("The answer is 3. \\boxed{4}", "4"),
    ("#### 5\nThe answer is 6", "6"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no answer here", r"\boxed{", r"\boxed{}", "the answer is", "####  ",
                                  "Our answer is not obvious"])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_last_boxed_is_boxed_only():
    assert last_boxed("The answer is 3") is None
    assert last_boxed(r"\boxed{a}\boxed{b}") == "b"


# --------------------------------------------------------------------------------------------------
# Equivalence

EQUIVALENT = [
    ("58", "58"), ("1,234", "1234"), ("+7", "7"), ("-10", "-10"), ("\\$36", "36"), ("\\$18.90", "18.9"),
    ("007", "7"), ("18.00", "18"), ("-0", "0"), ("-7", "\u22127"),
    (r"\frac{14}{3}", r"\dfrac{14}{3}"), (r"\frac{14}{3}", "14/3"), (r"\frac{14}{3}", r"4\frac{2}{3}"),
    (r"\frac{1}{2}", "0.5"), (r"\frac43", r"\frac{4}{3}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \pi/2)"),
    ("p - q", "-q + p"),
    (r"\text{(C)}", "C"), (r"\text{(C)}", "(C)"),
    (r"10\%", "10"), (r"90^\circ", "90"), (r"90^{\circ}", "90"),
    ("(3,4]", "(3, 4]"), (r"(-\infty, 0]", r"(-\infty,0]"),
    ("1,-2", "-2, 1"), ("3, 5, 7", "7,5,3"),
    (r"10,\!080", "10080"), (r"\$32,\!348", "32348"),
    (r"x \in [-2,7]", "[-2,7]"), ("x=5", "5"), ("y = 2x + 3", "2x+3"),
    (r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}", r"\begin{pmatrix} -\frac{1}{3} \\ \frac{2}{3} \end{pmatrix}"),
    (r"2\sqrt{2}", r"\sqrt{8}"), ("6 - 5i", "-5i+6"), (r"\text{Evelyn}", "Evelyn"),
    (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
]

DIFFERENT = [
    ("58", "59"), ("1,234", "1,235"), ("-7", "7"), ("123456789012345678", "123456789012345679"),
    ("2", "2.0000001"), ("1,2", "12"),
    (r"\frac{14}{3}", r"\frac{15}{3}"), (r"\frac{1}{3}", "0.333"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{3} \right)"),
    ("p - q", "q - p"), (r"\text{(C)}", r"\text{(D)}"),
    ("(3,4]", "[3,4]"), ("(3,4]", "(3,4)"),
    ("1,-2", "1,2"), (r"\text{Evelyn}", "Navin"), (r"90^\circ", "91"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
]


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent(gold, pred):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("gold, pred", DIFFERENT)
def test_not_equivalent(gold, pred):
    assert not is_equivalent(pred, gold)


@pytest.mark.parametrize("pred, gold", [(None, "1"), ("1", None), (None, None), ("", "1"), ("1", ""),
                                        ("$", "1"), ("{" * 300, "1")])
def test_equivalent_bad_input_is_false(pred, gold):
    assert is_equivalent(pred, gold) is False


def test_normalize_keeps_case_and_values():
    assert normalize(r" \left( 1,\! 2 \right) ") == "(1,2)"
    assert normalize(r"\dfrac{1}{2}.") == r"\frac{1}{2}"
    assert normalize("P") != normalize("p")


def test_integers_are_tolerated():
    assert is_equivalent(58, "58") and not is_equivalent(58, "59")


def test_grade():
    assert grade("so \\boxed{\\frac{1}{2}}", "0.5") is True
    assert grade("so \\boxed{3}", "4") is False
    assert grade("no answer at all", "4") is False
    assert grade("\\boxed{4}", None) is None


PATHOLOGICAL = [r"9^{9^{9^{9^9}}}", r"2^{2^{2^{2^{2^{2}}}}}", "99999999999!", "7^{123456789}"]


@pytest.mark.parametrize("pred", PATHOLOGICAL)
def test_pathological_input_does_not_hang(pred):
    start = time.perf_counter()
    assert is_equivalent(pred, "1") is False
    assert time.perf_counter() - start < 5 * grading.VERIFY_TIMEOUT_S + 2


def test_pathological_input_off_the_main_thread():
    # No signal-based timeout is possible here: the input screen must keep SymPy away from these.
    results = []
    worker = threading.Thread(target=lambda: results.extend(is_equivalent(p, "1") for p in PATHOLOGICAL),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "grading hung off the main thread"
    assert results == [False] * len(PATHOLOGICAL)
    # and ordinary answers are still verified there
    out = []
    worker = threading.Thread(target=lambda: out.append(is_equivalent("14/3", r"\frac{14}{3}")), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert out == [True]


# --------------------------------------------------------------------------------------------------
# What models write: answers spelled otherwise than the gold, in the styles policies use, and near
# misses that must stay unequal. Every verdict is also given by a second grader written here, the
# Hendrycks MATH normaliser (as PRM800K's math_normalize describes it), and each pair on which it
# gives the other verdict is listed with the reason.


def _hendrycks_braced_fracs(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{b}` -> `\\frac{1}{b}`: single-character arguments braced."""
    pieces = s.split("\\frac")
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append("\\frac")
        if piece.startswith("{"):
            out.append(piece)
        elif len(piece) < 2:
            return s
        elif piece[1] == "{":
            out.append("{" + piece[0] + "}" + piece[1:])
        else:
            out.append("{" + piece[0] + "}{" + piece[1] + "}" + piece[2:])
    return "".join(out)


def hendrycks_normalize(answer: str) -> str:
    """The MATH normaliser, from its description: a \\text{} around the whole answer goes; then line
    breaks, `\\!`, doubled backslashes, `\\left`/`\\right`, `^\\circ`, `\\$`, units after `\\text{ `
    and `\\%` go, `\\dfrac`/`\\tfrac` become `\\frac`; a leading `.` gets its 0; a left side of at
    most two characters (`x =`, `k=`) goes; `\\sqrt3` and `\\frac12` get their braces; spaces go;
    `0.5` becomes `\\frac{1}{2}` and an integer `a/b` becomes `\\frac{a}{b}`. Added, as the brief
    of this test asks: a trailing `.0` of an integer goes (`3.00` -> `3`)."""
    s = answer.strip()
    whole_text = re.fullmatch(r"\\text\{(.+?)\}", s)
    if whole_text:
        s = whole_text.group(1).strip()
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("\\tfrac", "\\frac"), ("\\dfrac", "\\frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    s = s.split("\\text{ ")[0]  # units on the right
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = _hendrycks_braced_fracs(s.replace(" ", ""))
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    slash = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{slash.group(1)}}}{{{slash.group(2)}}}" if slash else s


def hendrycks_equal(pred: str, gold: str) -> bool:
    return hendrycks_normalize(pred) == hendrycks_normalize(gold)


@pytest.mark.parametrize("answer, expected", [
    (r"\text{(B)}", "(B)"), (r"\dfrac{1}{2}", r"\frac{1}{2}"), (r"\frac12", r"\frac{1}{2}"), (r"\frac1{x}", r"\frac{1}{x}"),
    (r"\sqrt3", r"\sqrt{3}"), ("0.5", r"\frac{1}{2}"), ("3/4", r"\frac{3}{4}"), ("k = 7", "7"), ("ab = 7", "ab=7"),
    (r"90^\circ", "90"), (r"12 \text{ cm}", "12"), (r"12\text{cm}", r"12\text{cm}"), (r"50\%", "50"), (r"\$5", "5"),
    (".5", r"\frac{1}{2}"), (r"\left( 1, 2 \right)", "(1,2)"), (r"10,\!080", "10,080"), ("3.00", "3"), ("3.50", "3.50"),
])
def test_second_grader_follows_its_description(answer, expected):
    assert hendrycks_normalize(answer) == expected


# (style, gold, what a model writes)
WRITTEN_EQUAL = [
    ("decimal", r"\frac{1}{4}", "0.25"), ("decimal", r"\frac{3}{8}", "0.375"), ("decimal", r"\frac{5}{2}", "2.5"),
    ("decimal", r"-\frac{1}{2}", "-0.5"), ("decimal", r"\frac{9}{20}", ".45"), ("decimal", r"\frac{1}{2}", "0.5"),
    ("decimal", r"\frac{1}{3}", r"0.\overline{3}"), ("decimal", r"\frac{4}{11}", r"0.\overline{36}"),
    ("dfrac", r"\frac{3}{4}", r"\dfrac{3}{4}"), ("dfrac", r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt3}{2}"),
    ("dfrac", r"\frac{1}{6}", r"\tfrac16"), ("dfrac", r"\frac{14}{3}", r"4\dfrac{2}{3}"),
    ("x =", "5", "x = 5"), ("x =", "-3", "x=-3"), ("x =", r"\frac{1}{2}", r"k = \frac12"), ("x =", "7", "n=7"),
    ("x =", "(2,-1)", "(x, y) = (2, -1)"), ("x =", "2x+3", "y = 2x + 3"),
    ("units", "12", r"12 \text{ cm}"), ("units", "5", r"5\text{ inches}"), ("units", "40", r"40 \mbox{ minutes}"),
    ("units", "6", r"6 \text{ cm}^2"), ("units", r"\$5.40", "5.40"), ("units", "5.40", r"\$5.40"),
    ("units", "12", r"12\,\text{cm}"),
    ("degrees", "30", r"30^\circ"), ("degrees", r"120^\circ", "120"), ("degrees", "45", "45°"),
    ("degrees", "75", r"75^{\circ}"), ("degrees", r"60^\circ", r"60 \text{ degrees}"),
    ("percent", "25", r"25\%"), ("percent", r"12.5\%", "12.5"), ("percent", "40", "40%"),
    ("thousands", "10080", "10,080"), ("thousands", "1000000", "1{,}000{,}000"), ("thousands", "12345", r"12\,345"),
    ("thousands", r"10,\!080", "10080"), ("thousands", "4000", "4,000"),
    ("interval", "[1,5)", r"x \in [1, 5)"), ("interval", r"(0,\infty)", r"\left(0, \infty\right)"),
    ("interval", r"[2,\infty)", r"[2, +\infty)"), ("interval", r"(-\infty,-2]\cup[2,\infty)", r"(-\infty, -2] \cup [2, \infty)"),
    ("interval", "[1,5)", r"1 \le x < 5"), ("interval", r"(2,\infty)", "x > 2"),
    ("interval", r"(-\infty, 2) \cup (3, \infty)", r"x<2 \text{ or } x>3"), ("interval", r"(-\infty,3]", "x ≤ 3"),
    ("tuple", r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"), ("tuple", "(1,2,3)", "(1, 2, 3)"),
    ("tuple", r"(6,-\frac{1}{2})", "(6, -0.5)"), ("tuple", "(1, 2)", r"\left(1,2\right)"),
    ("matrix", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{bmatrix}1\\2\end{bmatrix}"),
    ("matrix", r"\begin{pmatrix} \frac{1}{2} \\ 2 \end{pmatrix}", r"\begin{pmatrix} 0.5 \\ 2 \end{pmatrix}"),
    ("matrix", r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{pmatrix}1&0\\0&1\end{pmatrix}"),
    ("set", r"\{1,2,3\}", r"\{3,1,2\}"), ("set", "1, -2", "-2, 1"), ("set", "-1, 2, 4", "4, -1, 2"),
    ("set", r"\{-1, 1\}", r"\{1,-1\}"), ("set", r"1 \pm \sqrt{19}", r"1-\sqrt{19}, 1+\sqrt{19}"),
    ("set", "1,-2", r"x = 1 \text{ and } x = -2"),
    ("choice", r"\text{(B)}", "B"), ("choice", r"\text{(B)}", "(B)"), ("choice", r"\text{(B)}", r"\textbf{(B)}"),
    ("choice", r"\text{(B)}", r"\text{B}"), ("choice", r"\text{(E)}", "E"), ("choice", r"\text{(A)}", r"\mathrm{(A)}"),
    ("choice", r"\text{(C)}", r"\textbf{(C)} 12"), ("choice", r"\text{(D)}", r"(D) \frac{1}{2}"),
    ("value", r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"), ("value", r"2\sqrt{3}", r"\sqrt{12}"),
    ("value", r"\frac{3\pi}{4}", r"3\pi/4"), ("value", "3", "3.0"), ("value", r"\frac{14}{3}", r"4\frac{2}{3}"),
    ("value", r"\text{Navin}", "Navin"), ("value", r"\infty", "∞"),
]

NEAR_MISSES = [
    ("decimal", r"\frac{1}{3}", "0.33"), ("decimal", r"\frac{1}{4}", "0.2"), ("decimal", r"\frac{3}{7}", "0.375"),
    ("decimal", r"\frac{2}{5}", "2.5"), ("decimal", r"\frac{1}{2}", "-0.5"), ("decimal", r"\frac{1}{3}", r"0.\overline{6}"),
    ("decimal", r"\frac{1}{3}", "0.3"), ("decimal", r"\frac{4}{11}", r"0.\overline{63}"),
    ("dfrac", r"\frac{3}{4}", r"\dfrac{4}{3}"), ("dfrac", r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt2}{2}"),
    ("dfrac", r"\frac{1}{6}", r"\tfrac{1}{5}"), ("dfrac", r"\frac{14}{3}", r"4\dfrac{1}{3}"),
    ("x =", "5", "x = 6"), ("x =", "-3", "x = 3"), ("x =", r"\frac{1}{2}", r"k = \frac13"), ("x =", "7", "n=-7"),
    ("x =", "(2,-1)", "(x, y) = (-1, 2)"), ("x =", "2x+3", "y = 3x + 2"),
    ("units", "12", r"13 \text{ cm}"), ("units", "5", r"5.5\text{ inches}"), ("units", "40", r"4 \mbox{ minutes}"),
    ("units", "6", r"6.5 \text{ cm}^2"), ("units", r"\$5.40", "5.04"), ("units", "5.40", r"\$54"),
    ("units", "12", r"21\,\text{cm}"),
    ("degrees", "30", r"60^\circ"), ("degrees", r"120^\circ", "12"), ("degrees", "45", "54°"),
    ("degrees", "75", r"57^{\circ}"), ("degrees", r"60^\circ", r"6 \text{ degrees}"),
    ("percent", "25", r"2.5\%"), ("percent", r"12.5\%", "125"), ("percent", r"10\%", "0.1"),
    ("thousands", "10080", "10,800"), ("thousands", "1000000", "100{,}000"), ("thousands", "12345", r"12\,354"),
    ("thousands", "2", "2,000"), ("thousands", "4000", "4,001"), ("thousands", "1000", "1.000"),
    ("interval", "[1,5)", "[1,5]"), ("interval", r"(0,\infty)", r"[0,\infty)"),
    ("interval", r"[2,\infty)", r"(-\infty, 2]"), ("interval", r"(-\infty,-2]\cup[2,\infty)", r"(-\infty, -2] \cap [2, \infty)"),
    ("interval", "[1,5)", r"1 \le x \le 5"), ("interval", r"(2,\infty)", r"x \ge 2"),
    ("interval", r"(-\infty, 2) \cup (3, \infty)", r"2 < x < 3"), ("interval", r"(-\infty,3]", "x < 3"),
    ("tuple", r"\left( 3, \frac{\pi}{2} \right)", r"(\frac{\pi}{2}, 3)"), ("tuple", "(1,2,3)", "(1, 2)"),
    ("tuple", r"(6,-\frac{1}{2})", "(6, 0.5)"), ("tuple", "(1, 2)", "(2, 1)"),
    ("matrix", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \\ 0 \end{pmatrix}"),
    ("matrix", r"\begin{pmatrix} \frac{1}{2} \\ 2 \end{pmatrix}", r"\begin{pmatrix} 0.2 \\ 2 \end{pmatrix}"),
    ("matrix", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}"),
    ("set", r"\{1,2,3\}", r"\{1,2\}"), ("set", "1, -2", "1, 2"), ("set", "-1, 2, 4", "-1, 2, 4, 5"),
    ("set", r"\{-1, 1\}", r"\{1\}"), ("set", r"1 \pm \sqrt{19}", r"1+\sqrt{19}"),
    ("set", "5", r"5 \text{ or } 6"), ("set", "2", r"2 \text{ and } 3"),
    ("choice", r"\text{(B)}", "C"), ("choice", r"\text{(B)}", "(D)"), ("choice", r"\text{(E)}", r"\textbf{(A)}"),
    ("choice", r"\text{(B)}", r"\text{A}"), ("choice", r"\text{(C)}", r"\textbf{(B)} 12"),
    ("choice", r"\text{(C)}", r"(A) \text{ or } (C)"),
    ("value", r"\frac{\sqrt{2}}{2}", r"\sqrt{2}"), ("value", r"2\sqrt{3}", r"3\sqrt{2}"),
    ("value", r"\frac{3\pi}{4}", r"4\pi/3"), ("value", "3", "3.01"), ("value", r"\frac{14}{3}", r"4\frac{1}{3}"),
    ("value", r"\text{Navin}", "Evelyn"), ("value", r"\infty", r"-\infty"),
]

# Why the Hendrycks normaliser gives the other verdict: it compares spellings, never values.
_DECIMAL = "it rewrites only the literal 0.5 as a fraction, no other decimal"
_REPEATING = "it does not read a repeating decimal (\\overline) as the fraction it denotes"
_MIXED = "it does not read a mixed number (4\\frac{2}{3} is 14/3)"
_UNITS = "it drops units only after '\\text{ ' with a space: not \\mbox{...}, '\\,\\text{', 'degrees' after '\\text{ ' is caught but ° is not"
_DEGREE_SIGN = "it removes ^\\circ but not the ° character"
_EQUALS = "it drops a left side only when it has at most two characters: not '(x, y) =' nor 'x = 1 \\text{ and } x ='"
_THOUSANDS = "it keeps thousands separators ({,} \\, and ,), so 10,080 is not 10080"
_INTERVAL = "it does not read 'x \\in', '+\\infty' or an inequality as an interval"
_UNORDERED = "it does not treat a set or a list of solutions as unordered"
_PM = "it does not expand \\pm into the two values"
_MATRIX = "it does not compare matrix entries: bmatrix is not pmatrix, 0.5 is not \\frac{1}{2} inside one"
_TUPLE_DECIMAL = "it rewrites 0.5 only when it is the whole answer, not inside a tuple"
_CHOICE = "it keeps the parentheses of (B) and the \\textbf/\\mathrm around it, and reads '(C) 12' as a different answer"
_VALUE = "it does not compute values: \\sqrt{12} is 2\\sqrt{3}, 3\\pi/4 is \\frac{3\\pi}{4}, sqrt{2}/2 is \\frac{\\sqrt{2}}{2}"
_UNICODE = "it does not read the Unicode ∞ as \\infty"
_HEDGE = "its units rule cuts the answer at '\\text{ ', so the hedge '5 \\text{ or } 6' reads as 5"

HENDRYCKS_DISAGREES = {
    (r"\frac{1}{4}", "0.25"): _DECIMAL, (r"\frac{3}{8}", "0.375"): _DECIMAL, (r"\frac{5}{2}", "2.5"): _DECIMAL,
    (r"-\frac{1}{2}", "-0.5"): _DECIMAL, (r"\frac{9}{20}", ".45"): _DECIMAL,
    (r"\frac{1}{3}", r"0.\overline{3}"): _REPEATING, (r"\frac{4}{11}", r"0.\overline{36}"): _REPEATING,
    (r"\frac{14}{3}", r"4\dfrac{2}{3}"): _MIXED, (r"\frac{14}{3}", r"4\frac{2}{3}"): _MIXED,
    (r"(2,-1)", "(x, y) = (2, -1)"): _EQUALS, ("1,-2", r"x = 1 \text{ and } x = -2"): _EQUALS,
    ("40", r"40 \mbox{ minutes}"): _UNITS, ("12", r"12\,\text{cm}"): _UNITS,
    ("45", "45°"): _DEGREE_SIGN,
    ("10080", "10,080"): _THOUSANDS, ("1000000", "1{,}000{,}000"): _THOUSANDS, ("12345", r"12\,345"): _THOUSANDS,
    (r"10,\!080", "10080"): _THOUSANDS, ("4000", "4,000"): _THOUSANDS,
    ("[1,5)", r"x \in [1, 5)"): _INTERVAL, (r"[2,\infty)", r"[2, +\infty)"): _INTERVAL, ("[1,5)", r"1 \le x < 5"): _INTERVAL,
    (r"(2,\infty)", "x > 2"): _INTERVAL, (r"(-\infty, 2) \cup (3, \infty)", r"x<2 \text{ or } x>3"): _INTERVAL,
    (r"(-\infty,3]", "x ≤ 3"): _INTERVAL,
    (r"(6,-\frac{1}{2})", "(6, -0.5)"): _TUPLE_DECIMAL,
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{bmatrix}1\\2\end{bmatrix}"): _MATRIX,
    (r"\begin{pmatrix} \frac{1}{2} \\ 2 \end{pmatrix}", r"\begin{pmatrix} 0.5 \\ 2 \end{pmatrix}"): _MATRIX,
    (r"\{1,2,3\}", r"\{3,1,2\}"): _UNORDERED, ("1, -2", "-2, 1"): _UNORDERED, ("-1, 2, 4", "4, -1, 2"): _UNORDERED,
    (r"\{-1, 1\}", r"\{1,-1\}"): _UNORDERED, (r"1 \pm \sqrt{19}", r"1-\sqrt{19}, 1+\sqrt{19}"): _PM,
    (r"\text{(B)}", "B"): _CHOICE, (r"\text{(B)}", r"\textbf{(B)}"): _CHOICE, (r"\text{(B)}", r"\text{B}"): _CHOICE,
    (r"\text{(E)}", "E"): _CHOICE, (r"\text{(A)}", r"\mathrm{(A)}"): _CHOICE, (r"\text{(C)}", r"\textbf{(C)} 12"): _CHOICE,
    (r"\text{(D)}", r"(D) \frac{1}{2}"): _CHOICE,
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"): _VALUE, (r"2\sqrt{3}", r"\sqrt{12}"): _VALUE, (r"\frac{3\pi}{4}", r"3\pi/4"): _VALUE,
    (r"\infty", "∞"): _UNICODE,
    ("5", r"5 \text{ or } 6"): _HEDGE, ("2", r"2 \text{ and } 3"): _HEDGE,
}

_VERDICTS = [(style, gold, pred, True) for style, gold, pred in WRITTEN_EQUAL] + [
    (style, gold, pred, False) for style, gold, pred in NEAR_MISSES]


def test_written_answers_cover_every_style_on_both_sides():
    styles = {style for style, _, _ in WRITTEN_EQUAL}
    assert styles == {style for style, _, _ in NEAR_MISSES}
    assert len(WRITTEN_EQUAL) >= 60 and len(NEAR_MISSES) >= len(WRITTEN_EQUAL)
    pairs = [(g, p) for _, g, p, _ in _VERDICTS]
    assert len(set(pairs)) == len(pairs)
    assert set(HENDRYCKS_DISAGREES) <= set(pairs), set(HENDRYCKS_DISAGREES) - set(pairs)


@pytest.mark.parametrize("style, gold, pred, equal", _VERDICTS)
def test_written_answers(style, gold, pred, equal):
    assert is_equivalent(pred, gold) is equal
    if style != "choice":  # a letter with its option's text, '(C) 12', is read only against a bare letter
        assert is_equivalent(gold, pred) is equal  # else it does not matter which side is the gold


@pytest.mark.parametrize("style, gold, pred, equal", _VERDICTS)
def test_second_grader_agrees_or_the_disagreement_is_explained(style, gold, pred, equal):
    # A listed disagreement that no longer disagrees fails too: the list cannot go stale.
    assert hendrycks_equal(pred, gold) is (equal != ((gold, pred) in HENDRYCKS_DISAGREES))


def test_rewrite_reads_what_math_verify_does_not():
    assert rewrite(r"0.\overline{3}") == r"\frac{1}{3}"
    assert rewrite(r"-1.2\overline{45}") == r"-\frac{137}{110}"  # 1.24545... = 137/110
    assert rewrite(r"0.\overline{9}") == "1"
    assert rewrite(r"x \geq -3") == r"[-3, \infty)"
    assert rewrite(r"5 > x > 1") == "(1, 5)"
    assert rewrite(r"-1 < t \le 4.") == "(-1, 4]"
    assert rewrite(r"x < -1 \text{ or } x \ge 1") == r"(-\infty, -1) \cup [1, \infty)"
    assert rewrite("x ≥ 2") == r"[2, \infty)" and rewrite("−∞") == r"-\infty"
    # Not one-variable inequalities: left alone.
    for answer in ("a<b", r"x > 1 \text{ and } y < 3", "f(x) > 0", "2 < 3", r"x<1 \text{ or } y>2", r"\frac{1}{2}"):
        assert rewrite(answer) == answer


# --------------------------------------------------------------------------------------------------
# The real files: gold solutions against gold answers, and against altered answers.


def alter(answer: str) -> str:
    """A different answer: the first integer plus one, or "+1" appended where there is none."""
    match = re.search(r"\d+", answer)
    if match:
        return answer[: match.start()] + str(int(match.group()) + 1) + answer[match.end():]
    return answer + "+1"


def test_math500_gold_solutions_grade_correct_and_altered_answers_do_not():
    rows = _read_jsonl("math500.jsonl")
    assert len(rows) == 500
    start = time.perf_counter()
    wrong = [(r["answer"], extract_answer(r["solution"])) for r in rows
             if not grade(r["solution"], r["answer"])]
    t_gold = time.perf_counter() - start

    altered = [(r["answer"], alter(r["answer"])) for r in rows]
    assert all(normalize(a) != normalize(g) for g, a in altered)
    start = time.perf_counter()
    accepted = [(g, a) for g, a in altered if is_equivalent(a, g)]
    t_altered = time.perf_counter() - start

    n = len(rows)
    print(f"\nMATH-500: gold solutions graded correct {100 * (n - len(wrong)) / n:.1f}% ({t_gold:.1f}s); "
          f"altered answers graded correct {100 * len(accepted) / n:.1f}% ({t_altered:.1f}s)")
    assert len(wrong) <= 0.01 * n, wrong
    assert len(accepted) <= 0.01 * n, accepted


def test_math500_answers_parse_and_self_verify_with_math_verify():
    # The fast paths settle the test above; this checks that math-verify itself reads every gold
    # answer, which is what grades a prediction spelled differently from the gold.
    rows = _read_jsonl("math500.jsonl")
    failed = [r["answer"] for r in rows if not grading._math_verify(r["answer"], r["answer"])]
    print(f"\nMATH-500: math-verify self-verification {100 * (len(rows) - len(failed)) / len(rows):.1f}%")
    assert len(failed) <= 0.01 * len(rows), failed


# Mechanical respellings of a gold answer that keep its value, and alterations that change it.
def _as_dfrac(a: str) -> str | None:
    return a.replace("\\frac", "\\dfrac") if "\\frac" in a and "\\dfrac" not in a else None


def _with_variable(a: str) -> str | None:
    return None if re.search(r"\\text|\\begin|=|,|<|>|\\le|\\ge", a) else "x = " + a


def _as_decimal(a: str) -> str | None:
    """\\frac{p}{q} with a terminating decimal expansion, as that decimal."""
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", a.strip())
    if not m:
        return None
    value = Fraction(int(m.group(2)), int(m.group(3)))
    q = value.denominator
    for prime in (2, 5):
        while q % prime == 0:
            q //= prime
    if q != 1 or value.denominator == 1:
        return None
    return m.group(1) + str(Decimal(value.numerator) / Decimal(value.denominator))


def _with_separators(a: str) -> str | None:
    return f"{int(a):,}" if re.fullmatch(r"-?\d{4,}", a.strip()) else None


def _with_units(a: str) -> str | None:
    return a + r"\text{ cm}" if re.fullmatch(r"-?\d+(\.\d+)?", a.strip()) else None


def _without_degrees(a: str) -> str | None:
    return a.replace("^\\circ", "") if "^\\circ" in a else None


_NUMBER_WITH_SEPARATORS = re.compile(r"(\\\$)?\d{1,3}(,(\\!)?\d{3})+")


def _reordered_set(a: str) -> str | None:
    """A set or a list of solutions in reverse order (equal: neither has an order)."""
    s = a.strip()
    inner, left, right = s, "", ""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner, left, right = s[2:-2], "\\{", "\\}"
    if _NUMBER_WITH_SEPARATORS.fullmatch(s) or re.search(r"[()\[\]{}]", inner):
        return None
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) < 2 or len(set(parts)) < len(parts):
        return None
    return left + ", ".join(reversed(parts)) + right


def _swapped_pair(a: str) -> str | None:
    """An ordered pair with its two different coordinates swapped (unequal: a pair has an order)."""
    s = a.strip().replace("\\left", "").replace("\\right", "")
    if not (s.startswith("(") and s.endswith(")")) or "\\infty" in s:
        return None
    parts = [p.strip() for p in s[1:-1].split(",")]
    if len(parts) != 2 or parts[0] == parts[1] or any(re.search(r"[()\[\]]", p) for p in parts):
        return None
    return f"({parts[1]}, {parts[0]})"


def _flipped_fraction(a: str) -> str | None:
    """The first \\frac{p}{q} with p != q turned upside down (unequal)."""
    m = re.search(r"\\frac\{([^{}]+)\}\{([^{}]+)\}", a)
    if not m or m.group(1) == m.group(2):
        return None
    return a[: m.start()] + f"\\frac{{{m.group(2)}}}{{{m.group(1)}}}" + a[m.end():]


MATH500_REWRITES = [  # (name, rewrite, equal)
    ("\\dfrac", _as_dfrac, True), ("x = ", _with_variable, True), ("decimal", _as_decimal, True),
    ("thousands", _with_separators, True), ("units", _with_units, True), ("no ^\\circ", _without_degrees, True),
    ("set reordered", _reordered_set, True), ("pair swapped", _swapped_pair, False),
    ("fraction flipped", _flipped_fraction, False), ("first integer + 1", alter, False),
]


def test_math500_golds_respelled_and_altered_against_both_graders():
    rows = _read_jsonl("math500.jsonl")
    lines, wrong = [], []
    for name, rewrite_gold, equal in MATH500_REWRITES:
        pairs = [(r["unique_id"], r["answer"], rewrite_gold(r["answer"])) for r in rows]
        pairs = [(uid, gold, pred) for uid, gold, pred in pairs if pred is not None]
        assert pairs, f"rewrite {name!r} applies to no MATH-500 answer"
        ours = [is_equivalent(pred, gold) for _, gold, pred in pairs]
        theirs = [hendrycks_equal(pred, gold) for _, gold, pred in pairs]
        wrong += [(name, *pair) for pair, verdict in zip(pairs, ours) if verdict is not equal]
        lines.append(f"{name:<18} {'equal' if equal else 'unequal':<8} {len(pairs):>5} "
                     f"{sum(v is equal for v in ours):>6} {sum(v is equal for v in theirs):>9} "
                     f"{sum(a == b for a, b in zip(ours, theirs)):>7}")
    print("\nMATH-500 golds rewritten: rewrite, expected verdict, pairs, right (this grader), right (Hendrycks), "
          "same verdict\n" + "\n".join(lines))
    assert not wrong, wrong


def test_gsm8k_gold_and_altered():
    rows = _read_jsonl("gsm8k_test.jsonl")
    n = len(rows)
    golds = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    extracted = [extract_answer(r["answer"]) for r in rows]
    right = sum(is_equivalent(e, g) for e, g in zip(extracted, golds))
    altered = [str(int(g.replace(",", "")) + 1) for g in golds]
    accepted = sum(is_equivalent(a, g) for a, g in zip(altered, golds))
    respelled = sum(is_equivalent(g.replace(",", ""), g) for g in golds)
    print(f"\nGSM8K test: gold graded correct {100 * right / n:.1f}%, altered graded correct {100 * accepted / n:.1f}%")
    assert extracted == golds
    assert right == n and respelled == n
    assert accepted == 0
