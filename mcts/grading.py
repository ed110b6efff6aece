"""Final answers: extraction from a solution text, and equivalence with a gold answer.

One grader serves the toy world and real maths. The toy world's answers are integers, compared
exactly; anything else goes to math-verify (HuggingFace), which parses LaTeX into SymPy and compares
values, sets, intervals, tuples and matrices. Cheap checks run first: a normalised string match, and
exact arithmetic when both sides are plain numbers. math-verify is only reached when neither
decides, and runs under its own timeouts (a pathological expression cannot stall a search).

    extract_answer(text)    the last \\boxed{...}, else "The answer is X", else GSM8K "#### X"
    is_equivalent(pred, g)  True when the two answers have the same value
    grade(text, gold)       both at once; None when the gold answer is unknown
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from decimal import Decimal, InvalidOperation

logger = logging.getLogger(__name__)

__all__ = ["extract_answer", "last_boxed", "is_equivalent", "grade", "normalize"]

# Longer answers skip math-verify: no real final answer is this long, and SymPy's cost grows with it.
MAX_VERIFY_CHARS = 400
# Seconds math-verify may spend parsing one answer and comparing one pair (signal-based, so only
# enforced on the main thread; see `_timeout`).
VERIFY_TIMEOUT_S = 2

# ---------------------------------------------------------------------------------------------------
# Extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
# A sentence end after the answer: a period then whitespace (not the point of a decimal like 2.5).
_SENTENCE_END = re.compile(r"\.\s")


def _braced(text: str, start: int) -> str | None:
    """The contents of the brace group opening at text[start] == '{', or None when unbalanced."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped character (\{ \} \\) never opens or closes a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The contents of the last complete `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`) in `text`.

    Nested braces are matched; a box left unclosed (a truncated generation) is passed over.

    Args:
        text: a solution text.

    Returns:
        The boxed contents, stripped, or None when there is no complete box.
    """
    for match in reversed(list(_BOXED.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            inner = _braced(text, end)
        elif match.group().endswith(("boxed", "fbox")):
            continue  # e.g. \boxedsomething: not a box
        else:  # "\boxed 5": the argument is the next token
            token = re.match(r"[^\s$,;]+", text[end:])
            inner = token.group().rstrip(".") if token else None
        if inner is not None and inner.strip():
            return inner.strip()
    return None


def _clean_tail(answer: str) -> str | None:
    """Trims what surrounds an answer written in prose: markdown bold, `$`, a closing period."""
    answer = _SENTENCE_END.split(answer, maxsplit=1)[0]
    answer = answer.strip().strip("*").strip()
    answer = answer.rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and not answer.endswith("\\$"):
        answer = answer.strip("$").strip()
    elif answer.endswith("$") and not answer.endswith("\\$") and answer.count("$") == 1:
        answer = answer[:-1].strip()
    answer = answer.rstrip(".").strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer stated in a solution text.

    In order of preference: the last `\\boxed{...}` (nested braces handled, also `\\boxed {`,
    `\\fbox{}`); else the last "The answer is X" (X up to the end of its sentence or line, without a
    trailing period or `$`); else the last GSM8K-style `#### X`.

    Args:
        text: a solution, generated or gold.

    Returns:
        The answer as written (LaTeX kept), or None when the text states none.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_ANSWER_IS, _HASHES):
        matches = pattern.findall(text)
        for candidate in reversed(matches):
            answer = _clean_tail(candidate)
            if answer is not None:
                return answer
    return None


# ---------------------------------------------------------------------------------------------------
# Equivalence

_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_REMOVE = (
    "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\displaystyle",
    "^\\circ", "^{\\circ}", "°", "\\degree", "\\%", "%", "\\$", "$",
)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")


def normalize(answer: str) -> str:
    """A canonical spelling of an answer, for the string comparisons.

    Removes what never changes a value: spacing macros, `\\left`/`\\right`, `$`, `\\$`, degree and
    percent signs, text wrappers (`\\text{(C)}` -> `(C)`), `\\dfrac`/`\\tfrac` spelling, whitespace
    and a trailing period. Case is kept (`P` and `p` are different variables).
    """
    s = answer.strip().replace("\u2212", "-")  # a Unicode minus sign
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _TEXT_MACRO.sub(r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def _plain_number(s: str) -> Decimal | None:
    """The exact value of a normalised plain number (`-1,234`, `+7`, `0.50`, `.5`), else None."""
    if not s or not any(ch.isdigit() for ch in s) or not _PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def _timeout() -> int | None:
    # math-verify's timeouts use signal.alarm, which only the main thread may set; elsewhere it
    # would raise, so there we go without and `_explosive` screens the input instead.
    return VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


_TOWER = re.compile(r"\^\s*[\w.]+\s*\^|\*\*\s*\(?\s*[\w.]+\s*\)?\s*\*\*")  # a^b^c, a**b**c
_HUGE_EXPONENT = re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*\d{7,}")  # 2^{12345678}
_HUGE_FACTORIAL = re.compile(r"(?:\d{6,}|[)}\]])\s*!")  # 1234567!, (10^9)!


def _explosive(answer: str) -> bool:
    """Whether SymPy might take unbounded time on `answer`: power towers, huge powers, factorials.

    Only consulted where no timeout can be set (off the main thread); no MATH-500 answer matches.
    """
    if _TOWER.search(answer) or _HUGE_EXPONENT.search(answer) or _HUGE_FACTORIAL.search(answer):
        return True
    for match in re.finditer(r"\^\s*\{", answer):  # an exponent group holding a power or factorial
        inner = _braced(answer, match.end() - 1)
        if inner is None or "^" in inner or "**" in inner or "!" in inner.replace("\\!", ""):
            return True
    return False


@functools.lru_cache(maxsize=1 << 14)
def _parse(answer: str) -> tuple:
    """math-verify's parse of one bare answer (cached: a search grades the same answers many times)."""
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=_timeout()))


@functools.lru_cache(maxsize=1 << 14)
def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=_timeout()))


def is_equivalent(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted answer has the gold answer's value.

    Plain numbers (the toy world, GSM8K: `1,234`, `-7`, `+3`, `\\$18.90`) are compared exactly;
    anything else by math-verify (fractions, radicals, tuples, intervals, sets, matrices,
    expressions, `x = 5` against `5`), after a normalised string comparison that settles the
    common case without it. Never raises on bad input; never hangs on the main thread.

    Args:
        pred: the candidate answer (as `extract_answer` returns it), or None.
        gold: the reference answer, or None.

    Returns:
        True when both are given and equivalent.
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)  # tolerate the toy world's ints
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    p_num, g_num = _plain_number(p), _plain_number(g)
    if p_num is not None and g_num is not None:
        return p_num == g_num
    if len(pred) > MAX_VERIFY_CHARS or len(gold) > MAX_VERIFY_CHARS:
        return False
    if _timeout() is None and (_explosive(pred) or _explosive(gold)):
        return False
    try:
        return _math_verify(pred.strip(), gold.strip())
    except Exception:  # math-verify reports its own failures as False; this guards anything else
        logger.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return False


def grade(text: str, gold: str | None) -> bool | None:
    """Whether the answer stated in `text` matches `gold`; None when `gold` is None (ungraded).

    A text that states no answer is graded False.
    """
    if gold is None:
        return None
    return is_equivalent(extract_answer(text), gold)
