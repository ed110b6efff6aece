"""Final answers: extraction from a solution text, and equivalence with a gold answer.

One grader serves the toy world and real maths. The toy world's answers are integers, compared
exactly; anything else goes to math-verify (HuggingFace), which parses LaTeX into SymPy and compares
values, sets, intervals, tuples and matrices. Cheap checks run first: a normalised string match, and
exact arithmetic when both sides are plain numbers. math-verify is only reached when neither
decides, and runs under its own timeouts (a pathological expression cannot stall a search).

Before either, both answers are rewritten into the spelling math-verify reads (`rewrite`): repeating
decimals as fractions, one-variable inequalities as intervals, Unicode symbols as LaTeX. A gold answer
that is a multiple-choice letter accepts a prediction that states the same letter, with or without
the option's text after it.

    extract_answer(text)    the last \\boxed{...}, else "The answer is X", else GSM8K "#### X"
    is_equivalent(pred, g)  True when the two answers have the same value
    grade(text, gold)       both at once; None when the gold answer is unknown
    normalize(answer)       the canonical spelling the string comparisons use
    rewrite(answer)         the spelling math-verify is given
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction

logger = logging.getLogger(__name__)

__all__ = ["extract_answer", "last_boxed", "is_equivalent", "grade", "normalize", "rewrite"]

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


# ---------------------------------------------------------------------------------------------------
# Rewriting: spellings that models write and math-verify does not read

_UNICODE = {"\u2212": "-", "\u221e": "\\infty", "\u03c0": "\\pi", "\u2264": "\\le ", "\u2265": "\\ge "}
# 0.\overline{3}, 1.2\overline{45}; longer cycles than this are not an answer anyone writes.
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\s*\{(\d{1,30})\}")
_RELATION = re.compile(r"\\(?:le|ge)(?:q(?:slant)?)?(?![a-zA-Z])|\\[lg]t(?![a-zA-Z])|<=|>=|<|>")
_OR = re.compile(r"\\(?:text|textrm|mbox|mathrm)\s*\{\s*or\s*\}|\\lor(?![a-zA-Z])|\\vee(?![a-zA-Z])|\bor\b")
# The variable of an inequality: a Latin or Greek letter (not \\pi, a constant).
_VARIABLE = re.compile(r"[a-zA-Z]|\\(?:alpha|beta|gamma|delta|epsilon|theta|lambda|mu|rho|sigma|tau|phi|varphi|psi|omega)")


def _repeating_fraction(match: re.Match) -> str:
    """`I.F\\overline{R}` as the exact fraction it denotes: (IFR - IF) / (10^|F| (10^|R| - 1))."""
    sign, whole, fixed, cycle = match.groups()
    value = Fraction(int(whole + fixed + cycle) - int(whole + fixed or "0"), 10 ** len(fixed) * (10 ** len(cycle) - 1))
    text = str(value.numerator) if value.denominator == 1 else f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
    return sign + text


def _strict(relation: str) -> bool:
    return relation in ("<", ">", "\\lt", "\\gt")


def _less(relation: str) -> bool:
    return relation.startswith(("<", "\\l"))


def _interval_of(piece: str) -> tuple[str, str] | None:
    """(variable, interval) of one inequality in one variable: `x > a`, `a \\le x`, `a < x \\le b`."""
    relations = _RELATION.findall(piece)
    terms = [t.strip() for t in _RELATION.split(piece)]
    if not relations or len(relations) > 2 or any(not t or "=" in t or "," in t for t in terms):
        return None
    if len(relations) == 2:  # a < x < b (or a > x > b)
        low, variable, high = terms
        if not _VARIABLE.fullmatch(variable) or _less(relations[0]) != _less(relations[1]):
            return None
        if not _less(relations[0]):
            low, high, relations = high, low, relations[::-1]
        return variable, ("(" if _strict(relations[0]) else "[") + f"{low}, {high}" + (
            ")" if _strict(relations[1]) else "]")
    left, right = terms
    relation = relations[0]
    if _VARIABLE.fullmatch(left) and _VARIABLE.fullmatch(right):
        return None  # a < b: which one is the variable?
    if _VARIABLE.fullmatch(left):
        variable, bound, above = left, right, not _less(relation)  # x > a: the variable is above a
    elif _VARIABLE.fullmatch(right):
        variable, bound, above = right, left, _less(relation)  # a < x
    else:
        return None
    if above:
        return variable, ("(" if _strict(relation) else "[") + f"{bound}, \\infty)"
    return variable, f"(-\\infty, {bound}" + (")" if _strict(relation) else "]")


def _inequality_interval(answer: str) -> str | None:
    """An answer made of inequalities in one variable, joined by 'or', as a union of intervals."""
    if not _RELATION.search(answer):
        return None
    found = [_interval_of(piece) for piece in _OR.split(answer.strip().rstrip("."))]
    if any(f is None for f in found) or len({variable for variable, _ in found}) != 1:
        return None
    return " \\cup ".join(interval for _, interval in found)


def rewrite(answer: str) -> str:
    """`answer` in the spelling math-verify reads: Unicode symbols (-, infinity, pi, <=, >=) as
    LaTeX, repeating decimals (`0.1\\overline{6}`) as fractions, and inequalities in one variable
    (`x > 2`, `1 \\le x < 5`, `x < -1 \\text{ or } x > 1`) as intervals (`[1, 5)`)."""
    s = answer
    for symbol, latex in _UNICODE.items():
        s = s.replace(symbol, latex)
    s = _REPEATING.sub(_repeating_fraction, s)
    interval = _inequality_interval(s)
    return s if interval is None else interval


# A multiple-choice answer (`\text{(C)}` normalised), and a prediction that opens with a choice label.
_CHOICE = re.compile(r"\(?([A-Z])\)?")
_CHOICE_LABEL = re.compile(r"\(([A-Z])\)")
_OPERATION = re.compile(r"[-+*/^_!=]|\\(?:cdot|times|div)(?![a-zA-Z])")


def _same_choice(p: str, g: str) -> bool | None:
    """For a gold answer that is a choice letter, whether the normalised prediction names the same
    letter (`(B)`, `B`, or `(B)` followed by the option's text, `(B)12`); None when the gold is no
    choice or the prediction names no letter. Several letters (a hedge), or a letter inside an
    expression, are not the answer."""
    gold = _CHOICE.fullmatch(g)
    if gold is None:
        return None
    bare = _CHOICE.fullmatch(p)
    if bare is not None:
        return bare.group(1) == gold.group(1)
    labels = _CHOICE_LABEL.findall(p)
    if not labels:
        return None
    if len(labels) > 1 or not p.startswith("(") or _OPERATION.match(p, 3):
        return False  # a hedge, or the letter inside an expression: '(C)+1' is no option of a choice
    return labels[0] == gold.group(1)


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

    Both are first rewritten (`rewrite`: repeating decimals, inequalities, Unicode symbols). Plain
    numbers (the toy world, GSM8K: `1,234`, `-7`, `+3`, `\\$18.90`) are compared exactly; a gold
    choice letter (`\\text{(C)}`) against the letter the prediction states (`C`, `\\textbf{(C)} 12`);
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
    pred, gold = rewrite(str(pred)), rewrite(str(gold))  # str: tolerate the toy world's ints
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g:
        return True
    choice = _same_choice(p, g)
    if choice is not None:
        return choice
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
