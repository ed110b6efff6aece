"""AlphaLLM self-improvement (ARCHITECTURE.md): imagination, eta-MCTS guided by a trio of critics,
and fine-tuning on the best traces of the searched trees. Settings: `selftrain.config.AlphaLLMConfig`.

One iteration k (stages of iter_k/, each resumable):
    imagine   synthesise `imagined_problems` problems from the training problems (seeds), sample
              `consistency_samples` answers of each with the policy, keep those whose majority
              answer has at least `min_agreement` of the votes; that answer is the problem's
              pseudo-gold (no real answer is ever used for a synthesised problem)
    search    eta-MCTS (`EtaMCTS`) over the training problems and the kept synthesised ones, its
              node values from the critic trio (`CriticTrio`) of iteration k - 1
    harvest   `harvest_trees` over the trees, verified by the real answers and the pseudo-golds
    policy    SFT on the verified traces (a synthesised problem's: those that reach its pseudo-gold)
    prm       the PRM on the inferred step targets (config.prm_target)
    value     the value function (a PRM-architecture model) by MSE on the inferred quality values
    orm       the outcome reward model on whether each finished trace was verified
    critics   the value function and ORM this iteration hands on
    models    the policy and PRM this iteration hands on

The world is told by the problems: toy arithmetic expressions get `ToyImaginer` (the tiny policy
cannot write problems: it perturbs the seed's operands), anything else `PromptImaginer` (the policy
is asked for a new problem of the same kind).

eta-MCTS (`EtaMCTS`, a `mcts.search.TreeSearch`) changes how a leaf is expanded, nothing else:

    probe    `min_width` steps sampled (one batched policy call for every leaf of the round),
             near-duplicates merged, scored (one batched critic call)
    widen    I(s) = max over the probed children |v(child) - v(s)|  (v(s): the leaf's value, the
             probe's mean at the root); width(s) = clip(floor(width_scale * I(s)), min_width,
             max_width); leaves that want more children get them in one more batched call
    merge    siblings whose texts are within `merge_threshold` normalised edit distance (and state
             the same answer, if any) become one node: the likeliest text, the summed probability
    rollout  a greedy rollout of `rollout_depth` steps from the best new child, scored by the
             critics (TreeSearch's own); the leaf's value is the max seen

Before the value function and ORM are first trained (the base models and iteration 1's search)
the trio is the PRM alone; weights of the critics present are renormalised.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from mcts.envs.arith import is_toy
from mcts.grading import extract_answer, normalize
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer
from mcts.problems import Problem
from mcts.answers import SearchResult
from mcts.config import SearchConfig
from mcts.search import Leaf, TreeSearch
from mcts.trees import TreeRecord
from mcts.traces import Counters, sample_traces, Trace
from selftrain.config import AlphaLLMConfig
from mcts.files import write_jsonl_atomic
from selftrain.run import RunContext, read_jsonl
from treesearch.loaders import load_scorer

__all__ = [
    "CriticTrio", "EtaMCTS", "PromptImaginer", "ToyImaginer", "EtaSearch", "edit_distance", "importance",
    "iteration", "majority_answer", "merge_near_duplicates", "node_width", "normalized_edit_distance",
    "perturb_expression", "search_eval",
]


# ---------------------------------------------------------------------------------------------------
# Imagination


def _values(expr) -> list[int]:
    """Every literal and intermediate value of an expression (what a solution writes)."""
    from mcts.envs.arith import BinOp, apply_op

    out: list[int] = []

    def walk(e) -> int:
        if isinstance(e, BinOp):
            v = apply_op(e.op, walk(e.left), walk(e.right))
        else:
            v = int(e)
        out.append(v)
        return v

    walk(expr)
    return out


def perturb_expression(problem: str, rng: random.Random, config, attempts: int = 100) -> str | None:
    """A new toy problem of the seed's shape: the same operators and parentheses, fresh operands.

    Args:
        problem: the seed expression.
        rng: the draws.
        config: an `mcts.envs.arith.ArithConfig`: operands in [min_operand, max_operand], every
            value a solution writes within max_value.
        attempts: draws before giving up.

    Returns:
        The new expression's text, or None when no draw kept within the bounds or differed from the seed.
    """
    from mcts.envs.arith import BinOp, parse_expression, render

    shape = parse_expression(problem)

    def draw(e):
        if isinstance(e, BinOp):
            return BinOp(e.op, draw(e.left), draw(e.right))
        return config.min_operand + rng.randrange(config.max_operand - config.min_operand + 1)

    for _ in range(attempts):
        new = draw(shape)
        text = render(new)
        if text != problem and (config.max_value is None or max(abs(v) for v in _values(new)) <= config.max_value):
            return text
    return None


class ToyImaginer:
    """Synthesises toy problems by perturbing seed expressions (`perturb_expression`); no tokens."""

    def __init__(self, config=None, seed: int = 0):
        """Args:
            config: the bounds (`ArithConfig`; default the toy policy's training problems,
                `mcts.envs.toy_config.toy_problem_config()`).
            seed: problem i is drawn from `random.Random(f"imagine:{seed}:{i}")`.
        """
        if config is None:
            from mcts.envs.toy_config import toy_problem_config

            config = toy_problem_config()
        self.config, self.seed = config, seed

    def imagine(self, seeds: Sequence[str], n: int, counters: Counters | None = None) -> list[str | None]:
        """[n] new problems, problem i from seeds[i % len(seeds)] (None where none could be drawn)."""
        if not seeds:
            return []
        return [perturb_expression(seeds[i % len(seeds)], random.Random(f"imagine:{self.seed}:{i}"), self.config)
                for i in range(n)]


IMAGINE_PROMPT = ("Here is a math problem:\n\n{problem}\n\nWrite one new problem of the same kind and "
                  "difficulty, with a single numerical answer. Write only the new problem, without its solution.")


class PromptImaginer:
    """Synthesises problems by asking the policy (a chat model) for a new problem of the seed's kind.

    The request is the `Prefix.problem` of an empty prefix, so a chat policy renders it in its
    template as the user's message; up to `max_steps` steps of the reply are the new problem.
    """

    def __init__(self, proposer: StepProposer, *, max_steps: int = 4, temperature: float = 1.0,
                 prompt: str = IMAGINE_PROMPT):
        self.proposer, self.max_steps, self.temperature, self.prompt = proposer, max_steps, temperature, prompt

    def imagine(self, seeds: Sequence[str], n: int, counters: Counters | None = None) -> list[str | None]:
        if not seeds:
            return []
        counters = counters if counters is not None else Counters.zeros(n)
        traces = [Trace(i, Prefix(self.prompt.format(problem=seeds[i % len(seeds)]), ())) for i in range(n)]
        sample_traces(traces, self.proposer, None, max_depth=self.max_steps, temperature=self.temperature,
                      counters=counters)
        out = []
        for t in traces:
            text = "".join(t.prefix.steps).strip()
            # a reply that already answers its own problem wrote a solution, not a problem
            out.append(text if text and extract_answer(text) is None else None)
        return out


def majority_answer(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """The most frequent stated answer (by normalised spelling; first seen wins ties) and its share
    of all samples, unanswered ones included. (None, 0.0) when no sample states one."""
    counts: collections.Counter[str] = collections.Counter()
    first: dict[str, str] = {}
    for a in answers:
        if a is not None:
            key = normalize(a)
            counts[key] += 1
            first.setdefault(key, a)
    if not counts:
        return None, 0.0
    key = max(counts, key=lambda k: counts[k])  # Counter keeps first-seen order: ties go to the first
    return first[key], counts[key] / len(answers)


def consistent_problems(problems: Sequence[str], proposer: StepProposer, *, samples: int, min_agreement: float,
                        max_depth: int, temperature: float, counters: Counters) -> list[dict]:
    """Samples `samples` solutions of every problem (batched together) and keeps those whose
    majority answer has at least `min_agreement` of the samples.

    Returns:
        [{"problem", "pseudo_gold", "agreement"}] of the kept problems, in input order.
    """
    traces = [Trace(i, Prefix(text, ())) for i, text in enumerate(problems) for _ in range(samples)]
    sample_traces(traces, proposer, None, max_depth=max_depth, temperature=temperature, counters=counters)
    out = []
    for i, text in enumerate(problems):
        answer, share = majority_answer([t.answer for t in traces[i * samples:(i + 1) * samples]])
        if answer is not None and share >= min_agreement:
            out.append({"problem": text, "pseudo_gold": answer, "agreement": share})
    return out


# ---------------------------------------------------------------------------------------------------
# eta-MCTS: importance-weighted widths, state merge


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions of characters)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalized_edit_distance(a: str, b: str) -> float:
    """edit_distance / the longer length, in [0, 1] (0 for two empty texts)."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def merge_near_duplicates(steps: Sequence[Step], threshold: float) -> list[Step]:
    """Sibling steps with state merge: identical texts are one step; texts closer than `threshold`
    normalised edit distance that state the same answer (or none) are one node, whose text is the
    group's likeliest and whose log-probability is the group's total (logsumexp of the distinct texts).

    Groups are formed greedily in input order (a step joins the first group whose first member is
    close enough); the result keeps the order of each group's first member.
    """
    distinct: dict[str, Step] = {}
    for s in steps:
        distinct.setdefault(s.text, s)
    groups: list[list[Step]] = []
    for s in distinct.values():
        answer = extract_answer(s.text)
        for group in groups:
            head = group[0]
            longest = max(len(head.text), len(s.text), 1)
            if (threshold > 0 and extract_answer(head.text) == answer
                    and abs(len(head.text) - len(s.text)) / longest < threshold  # a lower bound, cheap
                    and normalized_edit_distance(head.text, s.text) < threshold):
                group.append(s)
                break
        else:
            groups.append([s])
    out = []
    for group in groups:
        best = max(group, key=lambda s: s.logprob)
        mass = _logsumexp([s.logprob for s in group])
        out.append(best if len(group) == 1 else dataclasses.replace(best, logprob=mass))
    return out


def importance(child_values: Sequence[float], value: float) -> float:
    """I(s) = max over children |v(child) - v(s)| (0 without children)."""
    return max((abs(float(v) - float(value)) for v in child_values), default=0.0)


def node_width(importance_value: float, min_width: int, max_width: int, scale: float) -> int:
    """The number of children of a node: floor(scale * I(s)) clipped to [min_width, max_width]."""
    if not math.isfinite(importance_value):
        return max_width
    return int(min(max(math.floor(scale * importance_value), min_width), max_width))


class EtaMCTS(TreeSearch):
    """AlphaLLM's eta-MCTS over reasoning steps (options ended by the step delimiter) for a batch of
    problems: `mcts.search.TreeSearch` whose expansion probes, widens by importance and merges
    near-duplicate siblings (module docstring). Selection, backup, rollouts and the answer choice
    are TreeSearch's, under `config` (e.g. mcts_star: UCT over the value, quality backup).
    """

    def __init__(self, problems: Sequence[str], proposer: StepProposer, scorer: StepScorer, config: SearchConfig,
                 eta: AlphaLLMConfig):
        # The forest makes room for max_width children per expansion; rollouts are eta's own (its
        # greedy value rollouts, on step expansion: eta-MCTS decides each node's children itself).
        super().__init__(problems, proposer, scorer,
                         dataclasses.replace(config, width=eta.max_width, rollout_depth=eta.rollout_depth,
                                             max_children=eta.max_width,  # eta-MCTS widens by importance instead
                                             expansion="step"))
        self.eta = eta
        self.widths: list[tuple[int, int, float, int]] = []  # (tree, leaf, I(s), children), per expansion

    def _sample(self, asked: Sequence[Leaf], prefixes: Sequence[Prefix], counts: Sequence[int]) -> list[list[Step]]:
        """counts[i] sampled steps after prefixes[i], all in one policy call (a prefix repeated once
        per sample, so that each leaf asks for as many as it needs)."""
        cfg = self.config
        rows = [i for i, n in enumerate(counts) for _ in range(n)]
        out: list[list[Step]] = [[] for _ in prefixes]
        if not rows:
            return out
        proposals = self.proposer.propose([prefixes[i] for i in rows], 1, cfg.temperature)
        self.counters.charge_policy([asked[i].tree for i in rows], proposals)
        for i, steps in zip(rows, proposals):
            out[i].extend(steps[:1])
        return out

    def _critic(self, asked: Sequence[Leaf], pairs: list[tuple[int, Prefix, Step]]) -> list[float]:
        if not pairs:
            return []
        values = self.scorer.score([p for _, p, _ in pairs], [s for _, _, s in pairs])
        self.counters.charge_scorer([asked[i].tree for i, _, _ in pairs])
        return [float(v) for v in values]

    def children(self, asked: Sequence[Leaf], prefixes: Sequence[Prefix]) -> tuple[list[list[Step]], list[list[float]]]:
        """The expander hook of `TreeSearch`: probe, widen by importance, merge. Each child is scored
        once, when it is first sampled (the probe's values decide the width)."""
        if not asked:
            return [], []
        assert not any(a.widen for a in asked), "eta-MCTS sets its widths itself: no widening slots"
        eta, greedy = self.eta, self.config.temperature == 0
        merge = lambda steps: merge_near_duplicates(steps, eta.merge_threshold)  # noqa: E731
        probe = self._sample(asked, prefixes, [1 if greedy else eta.min_width] * len(prefixes))
        children = [merge(s) for s in probe]
        values = self._critic(asked, [(i, prefixes[i], s) for i, kids in enumerate(children) for s in kids])
        scored: list[dict[str, float]] = []
        it = iter(values)
        for kids in children:
            scored.append({s.text: next(it) for s in kids})
        want = []
        for i, ((b, _, leaf, _), kids) in enumerate(zip(asked, children)):
            vals = list(scored[i].values())
            parent = float(np.mean(vals)) if leaf == 0 and vals else float(self.forest.reward[b, leaf])
            level = importance(vals, parent)
            width = 1 if greedy else node_width(level, eta.min_width, eta.max_width, eta.width_scale)
            self.widths.append((b, leaf, level, width))
            want.append(width)
        more = self._sample(asked, prefixes, [0 if greedy else max(0, w - len(k)) for w, k in zip(want, children)])
        for i, extra in enumerate(more):
            if extra:
                children[i] = merge([*children[i], *extra])[:want[i]]
            else:
                children[i] = children[i][:want[i]]
        new = [(i, prefixes[i], s) for i, kids in enumerate(children) for s in kids if s.text not in scored[i]]
        for (i, _, s), v in zip(new, self._critic(asked, new)):
            scored[i][s.text] = v
        return children, [[scored[i][s.text] for s in kids] for i, kids in enumerate(children)]

    def tree_record(self, b: int) -> TreeRecord:
        tree = super().tree_record(b)  # no widening slots here, so node ids are the forest's
        tree.algorithm = "eta_mcts"
        tree.extra["widths"] = [{"node": leaf, "importance": level, "children": w}
                                for t, leaf, level, w in self.widths if t == b]
        return tree


# ---------------------------------------------------------------------------------------------------
# The critic trio


class CriticTrio:
    """A `StepScorer`: the weighted sum of a value function, the PRM and an ORM (on finished steps
    only: an ORM reads whole solutions). Missing critics (None) are left out and the weights of the
    others renormalised, so that every value stays in [0, 1]."""

    def __init__(self, prm: StepScorer | None, value: StepScorer | None = None, orm: StepScorer | None = None, *,
                 prm_weight: float = 0.4, value_weight: float = 0.4, orm_weight: float = 0.2):
        parts = [(prm, prm_weight), (value, value_weight)]
        self.step_critics = [(c, w) for c, w in parts if c is not None and w > 0]
        self.orm = orm if orm is not None and orm_weight > 0 else None
        self.orm_weight = orm_weight
        if not self.step_critics:
            raise ValueError("CriticTrio needs the PRM or the value function with a positive weight")

    @classmethod
    def from_config(cls, prm, value, orm, config: AlphaLLMConfig) -> "CriticTrio":
        return cls(prm, value, orm, prm_weight=config.prm_weight, value_weight=config.value_weight,
                   orm_weight=config.orm_weight)

    def score(self, prefixes: Sequence[Prefix], steps: Sequence[Step]) -> list[float]:
        n = len(prefixes)
        total = np.zeros(n)
        weight = np.zeros(n)
        for critic, w in self.step_critics:
            total += w * np.asarray(critic.score(prefixes, steps), np.float64)
            weight += w
        if self.orm is not None:
            done = [i for i, s in enumerate(steps) if _finished(s)]
            if done:
                outcomes = self.orm.score([prefixes[i] for i in done], [steps[i] for i in done])
                total[done] += self.orm_weight * np.asarray(outcomes, np.float64)
                weight[done] += self.orm_weight
        return (total / weight).tolist()


def _finished(step: Step | str) -> bool:
    return step.finished if isinstance(step, Step) else extract_answer(step) is not None


# ---------------------------------------------------------------------------------------------------
# The loop


def _critics(ctx: RunContext, k: int) -> tuple[Path | None, Path | None]:
    """(value function, ORM) folders in effect after iteration k (None before the first training)."""
    for j in range(k, 0, -1):
        found = ctx.stages(j).get("critics")
        if found:
            return (Path(found["value"]) if found.get("value") else None,
                    Path(found["orm"]) if found.get("orm") else None)
    return None, None


@dataclasses.dataclass(frozen=True)
class EtaSearch:
    """eta-MCTS as a `treesearch.executor.SearchRunner`: the search stage's tree search, run by the
    executor in this process or on Ray actors. The critic trio is the worker's scorer (the PRM),
    the value function and the ORM of these folders, loaded once per engine."""

    value_dir: str | None
    orm_dir: str | None
    alphallm: AlphaLLMConfig
    device: str | None = None
    name: str = "eta_mcts"

    def __call__(self, texts: Sequence[str], proposer, scorer, config: SearchConfig, *, on_tree,
                 cache: dict) -> list[SearchResult]:
        if "trio" not in cache:
            value = load_scorer(self.value_dir, device=self.device) if self.value_dir is not None else None
            orm = load_scorer(self.orm_dir, device=self.device) if self.orm_dir is not None else None
            cache["trio"] = CriticTrio.from_config(scorer, value, orm, self.alphallm)
        tree = EtaMCTS(texts, proposer, cache["trio"], config, self.alphallm)
        results = tree.run()
        for b in range(len(texts)):
            on_tree(b, tree.to_json(b))
        return results


def eta_search(ctx: RunContext, k: int) -> EtaSearch:
    """The eta-MCTS of iteration k + 1: the critics in effect after iteration k."""
    value_dir, orm_dir = _critics(ctx, k)
    return EtaSearch(str(value_dir) if value_dir is not None else None,
                     str(orm_dir) if orm_dir is not None else None, ctx.config.alphallm, ctx.config.device)


def imagine_stage(ctx: RunContext, k: int, policy: Path) -> list[dict]:
    """Stage `imagine`: the kept synthesised problems, [{"id", "problem", "pseudo_gold", "agreement", "seed"}]."""
    cfg, eta = ctx.config, ctx.config.alphallm

    def work(folder: Path) -> dict:
        seeds = [p.problem for p in ctx.train]
        counters = Counters.zeros(max(1, eta.imagined_problems))
        proposer = ctx.load_policy(policy, cfg.seed * 1000 + k)
        if is_toy(seeds):
            from mcts.envs.toy_config import toy_problem_config

            bounds = dataclasses.replace(toy_problem_config(), min_ops=cfg.min_ops, max_ops=cfg.max_ops)
            imaginer = ToyImaginer(bounds, seed=cfg.seed * 1000 + k)
        else:
            imaginer = PromptImaginer(proposer, max_steps=eta.imagine_max_steps, temperature=cfg.search.temperature)
        drafts = imaginer.imagine(seeds, eta.imagined_problems, counters)
        known = {p.problem for p in (*ctx.train, *ctx.eval)}  # never a training or held-out problem
        fresh, seen = [], set()
        for i, text in enumerate(drafts):
            if text is not None and text not in known and text not in seen:
                seen.add(text)
                fresh.append((i, text))
        if hasattr(proposer, "reseed"):
            proposer.reseed(cfg.seed * 1000 + k)
        kept = consistent_problems([t for _, t in fresh], proposer, samples=eta.consistency_samples,
                                   min_agreement=eta.min_agreement, max_depth=cfg.search.max_depth,
                                   temperature=cfg.search.temperature, counters=counters)
        seed_of = {t: seeds[i % len(seeds)] for i, t in fresh}
        records = [{"id": f"imagined-{k}-{j}", **r, "seed": seed_of[r["problem"]]} for j, r in enumerate(kept)]
        write_jsonl_atomic(folder / "problems.jsonl", records)
        correct = None
        if is_toy(seeds) and records:  # how often a pseudo-gold is right (measured, never used)
            from mcts.envs.arith import evaluate, parse_expression

            right = [normalize(r["pseudo_gold"]) == str(evaluate(parse_expression(r["problem"]))) for r in records]
            correct = sum(right) / len(right)
        return {"synthesised": len(fresh), "kept": len(records), "pseudo_gold_accuracy": correct,
                "tokens": int(counters.tokens.sum())}

    ctx.stage(k, "imagine", work)
    return read_jsonl(ctx.iter_dir(k) / "imagine" / "problems.jsonl")


def _imagined_golds(ctx: RunContext, k: int) -> dict[str, str]:
    return {r["problem"]: r["pseudo_gold"] for r in read_jsonl(ctx.iter_dir(k) / "imagine" / "problems.jsonl")}


def iteration(ctx: RunContext, k: int) -> None:
    from selftrain.harvest import harvest_trees, write_harvest
    from selftrain.rest_mcts import harvest_options

    cfg = ctx.config
    policy, prm = ctx.models(k - 1)
    value_dir, orm_dir = _critics(ctx, k - 1)
    imagined = imagine_stage(ctx, k, policy)
    # a synthesised problem has no answer here: its pseudo-gold only verifies the harvest
    problems = [*ctx.train, *(Problem(id=r["id"], problem=r["problem"], answer=None, source="imagined")
                              for r in imagined)]
    ctx.search(k, "search", problems, policy, prm, cfg.search, seed=cfg.seed * 1000 + k,
               runner=eta_search(ctx, k - 1))

    def harvest(folder: Path) -> dict:
        golds = {**_imagined_golds(ctx, k), **ctx.golds}  # a real answer wins over a pseudo-gold
        records = ctx.search_records(k, "search")
        data = harvest_trees([r["tree"] for r in records if r.get("tree")], golds, **harvest_options(ctx))
        write_harvest(data, folder, iteration=k, source="search", imagined=len(imagined))
        imagined_texts = {r["problem"] for r in imagined}
        return {**data.counts(), "imagined_sft_traces": sum(r["problem"] in imagined_texts for r in data.sft)}

    ctx.stage(k, "harvest", harvest)
    data = ctx.harvests(k)
    ctx.sft(k, data.sft)
    ctx.train_scorer(k, "prm", "prm", prm, data.prm, target=cfg.prm_target)
    base_policy = ctx.models(0)[0]
    ctx.train_scorer(k, "value", "prm", value_dir or base_policy, data.prm, target="values")
    ctx.train_scorer(k, "orm", "orm", orm_dir or base_policy, data.prm, target="labels")

    def critics(folder: Path) -> dict:
        value, orm = ctx.iter_dir(k) / "value", ctx.iter_dir(k) / "orm"
        pick = lambda new, old: str(new) if new.is_dir() else (str(old) if old else None)  # noqa: E731
        return {"value": pick(value, value_dir), "orm": pick(orm, orm_dir)}

    ctx.stage(k, "critics", critics)
    new_policy, new_prm = ctx.iter_dir(k) / "policy", ctx.iter_dir(k) / "prm"
    ctx.set_models(k, new_policy if new_policy.is_dir() else policy, new_prm if new_prm.is_dir() else prm)


def search_eval(ctx: RunContext, k: int, problems: Sequence[Problem], policy_dir: Path, prm_dir: Path) -> list[str | None]:
    """Held-out search answers: eta-MCTS with the critic trio of the iteration being evaluated."""
    proposer = ctx.load_policy(policy_dir, ctx.config.seed)
    if hasattr(proposer, "reseed"):
        proposer.reseed(ctx.config.seed)
    answers: list[str | None] = []
    run, cache = eta_search(ctx, k), {}
    scorer = ctx.load_prm(prm_dir)
    texts = [p.problem for p in problems]
    for i in range(0, len(texts), ctx.config.batch):
        answers += [r.answer for r in run(texts[i:i + ctx.config.batch], proposer, scorer, ctx.config.search,
                                          on_tree=lambda b, tree: None, cache=cache)]
    return answers
