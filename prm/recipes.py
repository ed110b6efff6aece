"""The input recipes of the open process reward models, as token pieces (no model, tokenizers only).

A scored trace is `head_ids(problem)` (BOS, chat template, system prompt, problem: the tokens before
the first step) followed by one piece per step, `piece_ids(step, index) -> (ids, read_offset)`:
the step's tokens as its model family's public inference recipe writes them, and the offset inside
the piece where that step's score is read. Pieces are tokenised independently and concatenated, so
a prefix's tokens are a prefix of every extension's (what lets a node's key/value cache extend its
parent's). Steps are read without their surrounding whitespace (the delimiter the policy wrote), as
the recipes split on it.

    MathShepherdRecipe   question, a space, each step followed by the tag " ки", steps joined by
                         "\\n" (peiyi9979/math-shepherd-mistral-7b-prm's model card); read: the LM's
                         next-token logits of "+" and "-" at each tag, softmax, P(+)
    QwenPRMRecipe        the chat template over system prompt, question and the steps joined and
                         closed by "<extra_0>" (Qwen2.5-Math-PRM's model card); read: the two-class
                         head at each "<extra_0>", softmax, index 1
    RLHFlowRecipe        a multi-turn chat: user "question step_1", assistant "+", then one user
                         turn per step, each answered "+" (RLHFlow/Llama3.1-8B-PRM-*, as
                         search-and-learn reads it); read: the LM's logits of "+"/"-" at the token
                         before each assistant "+", softmax, P(+)
    ValueHeadRecipe      BOS text, question, "\\n", then each step followed by the "\\n" step token,
                         tokenised piece by piece as Skywork-o1-Open-PRM's own `prepare_input`;
                         read: sigmoid of the scalar value head at each step token
    GenerativeRecipe     a verification prompt (below), AlphaLLM-style; read: the next token after
                         "Answer:", P(True) / (P(True) + P(False))
    RECIPES              {format name: recipe class}
    check_pieces(recipe) raises PieceError when the tokenizer merges tokens across the recipe's
                         piece boundaries (piece-wise ids differ from the recipe's whole string)

The generative verifier's prompt: "Problem: {problem}\\n" then, per step, "Step {n}: {step}\\nIs
step {n} correct? Answer True or False.\\nAnswer:" (read here) followed by " True\\n". The asked
question stays in the context, answered True, so a later step's tokens extend the earlier ones' (a
multi-turn verification, as the RLHFlow chat answers "+").
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

__all__ = ["GENERATIVE_ANSWER", "GENERATIVE_HEAD", "GENERATIVE_QUESTION", "PROBES", "QWEN_PRM_SYSTEM_PROMPT",
           "RECIPES", "GenerativeRecipe", "MathShepherdRecipe", "PieceError", "QwenPRMRecipe", "RLHFlowRecipe",
           "Reading", "ValueHeadRecipe", "check_pieces", "encode_trace", "special_prefix", "text_ids"]

QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
GENERATIVE_HEAD = "Problem: {problem}\n"
GENERATIVE_QUESTION = "Step {n}: {step}\nIs step {n} correct? Answer True or False.\nAnswer:"
GENERATIVE_ANSWER = " True\n"
_SENTINEL = "\u27e6STEP\u27e7"  # a placeholder step that no template rewrites

# Traces the piece check tokenises both ways: LaTeX, digits, spaces and punctuation at the edges.
PROBES = (
    ("What is $\\frac{1}{2} + 3$?", ("First, $\\frac{1}{2} = 0.5$.", "Then 0.5 + 3 = 3.5.\n\n",
                                      "The answer is $\\boxed{3.5}$.")),
    ("Find x if 2x = 10.", ("Divide by 2: x = 5", "(check) 2*5 = 10, so $x=5$: \\boxed{5}")),
    ("Compute 7 - 4. ", ("  7 - 4 = 3\n", "-3 is wrong; it is 3.", "Answer: 3")),
)


class PieceError(ValueError):
    """A tokenizer whose piece-wise ids differ from the recipe's whole-string ids."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """How a step's score is read from the head's outputs at its read position.

    kind: 'softmax' (over the head's C outputs, the probability of class `index`) or 'sigmoid'
        (of the one output).
    """

    kind: str
    index: int = 0


def text_ids(tokenizer, text: str) -> list[int]:
    """The ids of `text` alone, no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_prefix(tokenizer) -> list[int]:
    """The ids a tokenizer puts before a text of its own (BOS for Llama-like tokenizers, none for Qwen)."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return [t for t in ids if t != tokenizer.eos_token_id]


def _single_token(tokenizer, token: str, fmt: str) -> int:
    """The id of a token the vocabulary must hold as one token (a special or added token)."""
    ids = text_ids(tokenizer, token)
    if len(ids) != 1:
        raise PieceError(f"{fmt}: the tokenizer does not hold {token!r} as one token (it gives {len(ids)} ids)")
    return ids[0]


def _continuation(tokenizer, before: str, after: str) -> int:
    """The first id of `after` as it is tokenised right after `before` (e.g. " True" after "Answer:")."""
    base, full = text_ids(tokenizer, before), text_ids(tokenizer, before + after)
    if full[:len(base)] != base or len(full) == len(base):
        raise PieceError(f"the tokenizer merges {after!r} into {before!r}")
    return full[len(base)]


class MathShepherdRecipe:
    """Math-Shepherd: `question step_1 ки\\nstep_2 ки...`, read at each ` ки` tag."""

    name = "math_shepherd"
    TAG = " ки"
    reading = Reading("softmax", 0)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tag_id = text_ids(tokenizer, self.TAG)[-1]  # the tag as it stands in the text, after a space
        # The model card's candidate ids (tokenizer.encode("+ -")[1:]): "+" and "-" as the LM writes them.
        self.token_ids = (text_ids(tokenizer, "+")[-1], text_ids(tokenizer, "-")[-1])
        self._special = special_prefix(tokenizer)

    def head_ids(self, problem: str) -> list[int]:
        return self._special + text_ids(self.tokenizer, problem)

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        ids = text_ids(self.tokenizer, ("\n" if index else " ") + step.strip() + self.TAG)
        if ids[-1] != self.tag_id:
            raise PieceError(f"{self.name}: step {step[:40]!r} does not end with the step tag {self.TAG!r}")
        return ids, len(ids) - 1

    def whole_ids(self, problem: str, steps: Sequence[str]) -> list[int]:
        text = problem + " " + "\n".join(s.strip() + self.TAG for s in steps)
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])


class QwenPRMRecipe:
    """Qwen2.5-Math-PRM: the chat template, the assistant's steps each closed by `<extra_0>`."""

    name = "qwen_prm"
    SEPARATOR = "<extra_0>"
    reading = Reading("softmax", 1)
    token_ids = None  # read by the model's own classification head

    def __init__(self, tokenizer, system_prompt: str | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise PieceError(f"{self.name}: the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.system_prompt = QWEN_PRM_SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.separator_id = _single_token(tokenizer, self.SEPARATOR, self.name)
        self._special = special_prefix(tokenizer)

    def _render(self, problem: str, assistant: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": assistant}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def head_ids(self, problem: str) -> list[int]:
        text = self._render(problem, _SENTINEL)
        return self._special + text_ids(self.tokenizer, text[:text.index(_SENTINEL)])

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        ids = text_ids(self.tokenizer, step.strip()) + [self.separator_id]
        return ids, len(ids) - 1

    def whole_ids(self, problem: str, steps: Sequence[str]) -> list[int]:
        text = self._render(problem, "".join(s.strip() + self.SEPARATOR for s in steps))
        return self._special + text_ids(self.tokenizer, text)


class RLHFlowRecipe:
    """RLHFlow's PRMs: one user turn per step (the first prefixed by the question), each answered "+"."""

    name = "rlhflow"
    reading = Reading("softmax", 0)

    def __init__(self, tokenizer):
        if getattr(tokenizer, "chat_template", None) is None:
            raise PieceError(f"{self.name}: the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.token_ids = (text_ids(tokenizer, "+")[-1], text_ids(tokenizer, "-")[-1])
        one = self._render(["A"])
        two = self._render(["A", _SENTINEL])
        first = self._render(["Q " + _SENTINEL])
        if not two.startswith(one) or _SENTINEL not in first:
            raise PieceError(f"{self.name}: the chat template does not render a conversation as its turns in order")
        self._later = two[len(one):]  # a later turn's text, the step at the sentinel
        start = first.index(_SENTINEL)
        if first[start - 2:start] != "Q ":
            raise PieceError(f"{self.name}: the chat template does not keep the first turn's text as given")
        self._opening = first[:start - 2]  # everything before the question
        self._first_tail = first[start - 1:]  # " " + step + the rest of the first turn

    def _render(self, user_turns: Sequence[str]) -> str:
        messages = []
        for text in user_turns:
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "+"}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def head_ids(self, problem: str) -> list[int]:
        return text_ids(self.tokenizer, self._opening + problem.lstrip())  # the template trims the turn

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        text = (self._later if index else self._first_tail).replace(_SENTINEL, step.strip())
        ids = text_ids(self.tokenizer, text)
        plus = self.token_ids[0]
        last = max((i for i, t in enumerate(ids) if t == plus), default=None)
        if last is None or last == 0:
            raise PieceError(f"{self.name}: the assistant's '+' is not a token of its own in {text[:60]!r}")
        return ids, last - 1  # the logits before "+" predict it

    def whole_ids(self, problem: str, steps: Sequence[str]) -> list[int]:
        turns = [problem.lstrip() + " " + steps[0].strip(), *(s.strip() for s in steps[1:])] if steps else []
        if not turns:
            return self.head_ids(problem)
        return text_ids(self.tokenizer, self._render(turns))


class ValueHeadRecipe:
    """Skywork-o1-Open-PRM: BOS text + question + "\\n", each step's ids + the "\\n" step token."""

    name = "value_head"
    STEP_TOKEN = "\n"
    reading = Reading("sigmoid")
    token_ids = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.step_token_id = text_ids(tokenizer, self.STEP_TOKEN)[-1]

    def head_ids(self, problem: str) -> list[int]:
        return text_ids(self.tokenizer, (self.tokenizer.bos_token or "") + problem + self.STEP_TOKEN)

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        ids = text_ids(self.tokenizer, step.strip()) + [self.step_token_id]
        return ids, len(ids) - 1

    def whole_ids(self, problem: str, steps: Sequence[str]) -> None:
        return None  # the published recipe tokenises piece by piece itself


class GenerativeRecipe:
    """A causal LM asked, after each step, whether the step is correct (True/False)."""

    name = "generative"
    reading = Reading("softmax", 0)

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.token_ids = (_continuation(tokenizer, "Answer:", " True"), _continuation(tokenizer, "Answer:", " False"))
        if self.token_ids[0] == self.token_ids[1]:
            raise PieceError(f"{self.name}: ' True' and ' False' begin with the same token")
        self._special = special_prefix(tokenizer)

    def head_ids(self, problem: str) -> list[int]:
        return self._special + text_ids(self.tokenizer, GENERATIVE_HEAD.format(problem=problem))

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        question = text_ids(self.tokenizer, GENERATIVE_QUESTION.format(n=index + 1, step=step.strip()))
        return question + text_ids(self.tokenizer, GENERATIVE_ANSWER), len(question) - 1

    def whole_ids(self, problem: str, steps: Sequence[str]) -> list[int]:
        text = GENERATIVE_HEAD.format(problem=problem) + "".join(
            GENERATIVE_QUESTION.format(n=k + 1, step=s.strip()) + GENERATIVE_ANSWER for k, s in enumerate(steps))
        return self._special + text_ids(self.tokenizer, text)


RECIPES = {r.name: r for r in (MathShepherdRecipe, QwenPRMRecipe, RLHFlowRecipe, ValueHeadRecipe, GenerativeRecipe)}


def encode_trace(recipe, problem: str, steps: Sequence[str], head: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """(ids, read positions) of a trace: `head_ids` (or `head`, when given) and each step's piece."""
    ids = list(recipe.head_ids(problem) if head is None else head)
    reads = []
    for k, step in enumerate(steps):
        piece, offset = recipe.piece_ids(step, k)
        reads.append(len(ids) + offset)
        ids.extend(piece)
    return ids, reads


def check_pieces(recipe, probes: Sequence[tuple[str, Sequence[str]]] = PROBES) -> None:
    """Raises PieceError when piece-wise ids of a probe trace are not a prefix of (or equal to) the
    ids the recipe gets from its whole string: the tokenizer merges across a piece boundary."""
    for problem, steps in probes:
        ids, _ = encode_trace(recipe, problem, steps)
        whole = recipe.whole_ids(problem, steps)
        if whole is not None and whole[:len(ids)] != ids:
            at = next((i for i, (a, b) in enumerate(zip(ids, whole)) if a != b), min(len(ids), len(whole)))
            raise PieceError(f"{recipe.name}: this tokenizer merges tokens across step boundaries (piece-wise "
                             f"and whole-string ids differ at token {at} of the probe {problem[:30]!r}), so "
                             f"scores would not follow the recipe")
