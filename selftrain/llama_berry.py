"""LLaMA-Berry self-training (ARCHITECTURE.md): SR-MCTS over whole solutions, PPRM + Enhanced Borda
Count to rank them, and self-training of the PPRM, the policy and the PRM on what the trees hold.
Settings: `selftrain.config.BerryConfig`.

One iteration k (stages of iter_k/, each resumable):
    search    SR-MCTS (`SRMCTS`) over every training problem with the previous policy, PRM and PPRM;
              each tree is stored as the trie of its solutions (shared prefixes share nodes), so the
              harvest infers step targets from it as from a step-level tree
    harvest   `harvest_trees` over the tries with the real answers: preference pairs (a correct vs
              a wrong solution of one problem), PRM targets, and the policy's SFT data: the
              `best_solutions` verified-correct solutions of each problem with the highest Q
    pprm      the PPRM trained on the pairs (from the previous PPRM; the first is a fresh pairwise
              head on the base policy, stage pprm_base of iteration 0)
    policy    SFT on the best verified solutions
    prm       the PRM on the inferred step targets (config.prm_target)
    critics   the PPRM this iteration hands on
    models    the policy and PRM this iteration hands on

SR-MCTS, for a batch of problems at once over one `Forest` (a node is a whole solution):

    select    UCT (the core's `select`, one leaf per tree)
    expand    the root: `initial_solutions` sampled solutions and a dummy "I don't know" (value 0);
              any other node: critique, then `rewrites` rewrites (`PRMCritic` in the toy world: the
              PRM's first step below `critique_threshold`, else its lowest, is the error, and the
              policy regenerates the solution from the steps before it; `PromptRefiner` for chat
              models: a critique prompt, then a rewrite prompt). Every new solution of the round is
              sampled in the same batched policy calls and scored in one PRM pass
    value     the PRM's value of the solution (`solution_value` over its step values)
    backup    mean (the core's `backup`); the value backed up from a refined leaf is the mean of its
              own value and its rewrites' (a solution's Q: the mean of its value and those below it)
    answer    the answered distinct solutions with the highest Q (`ebc_candidates`), ranked by
              Enhanced Borda Count over the PPRM's preferences and their Q (`prm.ebc.ebc_select`)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mcts.core import Forest, backup, expand, select
from mcts.envs.arith import is_toy
from mcts.grading import extract_answer
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer
from mcts.problems import Problem
from mcts.answers import Candidate, SearchResult, aggregate_step_values, candidate_fields
from mcts.trees import tree_from_solutions
from mcts.traces import Counters, sample_traces, Trace
from mcts.config import SearchConfig
from prm.pairwise import PPRM
from selftrain.config import BerryConfig
from selftrain.run import RunContext

__all__ = [
    "DUMMY_STEP", "PRMCritic", "PromptRefiner", "Refinement", "SRMCTS", "Solution", "critique_index",
    "SRSearch", "iteration", "search_eval", "trace_step_values",
]

DUMMY_STEP = "I don't know.\n"


@dataclasses.dataclass
class Solution:
    """One node of an SR-MCTS tree."""

    steps: tuple[str, ...]
    finished: bool  # ends with a stated answer (or the policy ended it)
    step_values: list[float]  # the PRM's value of each step
    value: float  # the solution's value (BerryConfig.solution_value over step_values)
    critique: int | str | None = None  # what the critique of its parent said (toy: the step it blamed)
    dummy: bool = False

    @property
    def answer(self) -> str | None:
        return extract_answer(self.steps[-1]) if self.finished and self.steps and not self.dummy else None


@dataclasses.dataclass
class Refinement:
    """A rewritten solution and the critique it answers."""

    steps: tuple[str, ...]
    finished: bool
    critique: int | str


def trace_step_values(scorer: StepScorer, prefixes: Sequence[Prefix]) -> list[list[float]]:
    """Every step value of each trace: one `score_traces` pass where the scorer has it (a PRM),
    else one batched `score` over every (prefix, step) pair."""
    if hasattr(scorer, "score_traces"):
        return [[float(v) for v in row] for row in scorer.score_traces(list(prefixes))]
    pairs = [(Prefix(p.problem, p.steps[:i]), p.steps[i]) for p in prefixes for i in range(len(p.steps))]
    flat = scorer.score([a for a, _ in pairs], [Step(b) for _, b in pairs]) if pairs else []
    out, i = [], 0
    for p in prefixes:
        out.append([float(v) for v in flat[i:i + len(p.steps)]])
        i += len(p.steps)
    return out


def critique_index(step_values: Sequence[float], threshold: float = 0.5) -> int:
    """The step a PRM critique blames: the first valued below `threshold`, else the lowest (the first
    of equals); 0 for a solution without steps. NaN (a step the PRM could not read) counts as low."""
    if not step_values:
        return 0
    values = [v if math.isfinite(v) else -math.inf for v in step_values]
    for i, v in enumerate(values):
        if v < threshold:
            return i
    return int(np.argmin(values))


class PRMCritic:
    """Critique and rewrite in the toy world: the PRM locates the error (`critique_index`), the
    policy regenerates the solution from the steps before it (sampled, batched)."""

    def __init__(self, proposer: StepProposer, *, threshold: float = 0.5, temperature: float = 1.0,
                 max_depth: int = 16):
        self.proposer, self.threshold, self.temperature, self.max_depth = proposer, threshold, temperature, max_depth

    def refine(self, items: Sequence[tuple[int, str, Solution]], n: int, counters: Counters) -> list[list[Refinement]]:
        """`n` rewrites of each (owner, problem, solution), every one sampled in the same calls."""
        blamed = [0 if s.dummy else critique_index(s.step_values, self.threshold) for _, _, s in items]
        traces = [Trace(owner, Prefix(problem, () if s.dummy else s.steps[:i]))
                  for (owner, problem, s), i in zip(items, blamed) for _ in range(n)]
        sample_traces(traces, self.proposer, None, max_depth=self.max_depth, temperature=self.temperature,
                      counters=counters)
        return [[Refinement(t.prefix.steps, t.finished, i) for t in traces[j * n:(j + 1) * n]]
                for j, i in enumerate(blamed)]


CRITIQUE_PROMPT = ("Problem:\n{problem}\n\nProposed solution:\n{solution}\n\nReview the proposed solution step by "
                   "step. Name the first step that is wrong and say why; if every step is right, say so. Do not "
                   "write a new solution.")
REWRITE_PROMPT = ("Problem:\n{problem}\n\nProposed solution:\n{solution}\n\nCritique:\n{critique}\n\nRewrite the "
                  "solution, fixing what the critique points out. Solve it step by step and put the final answer "
                  "in \\boxed{{}}.")


class PromptRefiner:
    """Critique and rewrite for chat models: the policy answers a critique prompt, then a rewrite
    prompt that quotes the solution and the critique (each request is an empty prefix's problem,
    which a chat policy renders as the user's message; both are batched over every item)."""

    def __init__(self, proposer: StepProposer, *, temperature: float = 1.0, max_depth: int = 16,
                 critique_steps: int = 8, critique_prompt: str = CRITIQUE_PROMPT, rewrite_prompt: str = REWRITE_PROMPT):
        self.proposer, self.temperature, self.max_depth = proposer, temperature, max_depth
        self.critique_steps, self.critique_prompt, self.rewrite_prompt = critique_steps, critique_prompt, rewrite_prompt

    def refine(self, items: Sequence[tuple[int, str, Solution]], n: int, counters: Counters) -> list[list[Refinement]]:
        texts = ["".join(s.steps) for _, _, s in items]
        asks = [Trace(owner, Prefix(self.critique_prompt.format(problem=problem, solution=text), ()))
                for (owner, problem, _), text in zip(items, texts)]
        sample_traces(asks, self.proposer, None, max_depth=self.critique_steps, temperature=self.temperature,
                      counters=counters)
        critiques = ["".join(t.prefix.steps).strip() for t in asks]
        rewrites = [Trace(owner, Prefix(self.rewrite_prompt.format(problem=problem, solution=text, critique=c), ()))
                    for (owner, problem, _), text, c in zip(items, texts, critiques) for _ in range(n)]
        sample_traces(rewrites, self.proposer, None, max_depth=self.max_depth, temperature=self.temperature,
                      counters=counters)
        return [[Refinement(t.prefix.steps, t.finished, c) for t in rewrites[j * n:(j + 1) * n]]
                for j, c in enumerate(critiques)]


class SRMCTS:
    """Self-refine MCTS for a batch of problems: one tree per problem in one `Forest`, one leaf per
    tree and round (module docstring). `run()` returns one `SearchResult` per problem; `to_json(b)`
    gives tree b as the trie of its solutions."""

    def __init__(self, problems: Sequence[str], proposer: StepProposer, prm: StepScorer, refiner, config: BerryConfig,
                 *, pprm=None, max_depth: int = 16, temperature: float = 1.0, tree_backend: str = "auto"):
        self.problems = list(problems)
        self.proposer, self.prm, self.refiner, self.pprm, self.config = proposer, prm, refiner, pprm, config
        self.max_depth, self.temperature, self.tree_backend = max_depth, temperature, tree_backend
        B = len(self.problems)
        # the root's children, then at most `rewrites` children per later round
        self.forest = Forest.empty(B, 1 + config.initial_solutions + 1 + config.rollouts * config.rewrites)
        self.nodes: list[list[Solution | None]] = [[None] for _ in range(B)]  # [tree][node]; the root has none
        self.counters = Counters.zeros(B)
        self.simulations = np.zeros(B, np.int64)
        self.seconds = 0.0

    # -- values

    def _value(self, step_values: Sequence[float]) -> float:
        finite = [v for v in step_values if math.isfinite(v)]
        return aggregate_step_values(finite, self.config.solution_value) if finite else 0.0

    def _solutions(self, drafts: list[tuple[int, str, tuple[str, ...], bool, int | str | None]]) -> list[Solution]:
        """Scores (owner, problem, steps, finished, critique) drafts in one PRM pass."""
        scored = [d for d in drafts if d[2]]
        values = trace_step_values(self.prm, [Prefix(d[1], d[2]) for d in scored]) if scored else []
        if scored:
            self.counters.charge_scorer([owner for owner, *_ in scored])
        it = iter(values)
        out = []
        for owner, problem, steps, finished, critique in drafts:
            sv = next(it) if steps else []
            out.append(Solution(steps, finished, sv, self._value(sv), critique))
        return out

    # -- the loop

    def run(self) -> list[SearchResult]:
        start = time.perf_counter()
        for _ in range(1 + self.config.rollouts):
            self.round()
        self.seconds = time.perf_counter() - start
        return [self.result(b) for b in range(self.forest.num_trees)]

    def round(self) -> None:
        """Select a leaf per tree; expand the roots with sampled solutions and every other leaf by
        critique and rewrite (all in the same batched calls); score; expand; back up."""
        cfg, f = self.config, self.forest
        leaves = select(f, 1, "uct", cfg.c, 1.0, backend=self.tree_backend)
        roots = [b for b in range(f.num_trees) if leaves[b, 0] == 0]
        refine = [(b, int(leaves[b, 0])) for b in range(f.num_trees) if leaves[b, 0] > 0]
        # the roots' first solutions, sampled together with the rewrites
        firsts = [Trace(b, Prefix(self.problems[b], ())) for b in roots for _ in range(cfg.initial_solutions)]
        if firsts:
            sample_traces(firsts, self.proposer, None, max_depth=self.max_depth, temperature=self.temperature,
                          counters=self.counters)
        rewrites = self.refiner.refine([(b, self.problems[b], self.nodes[b][leaf]) for b, leaf in refine],
                                       cfg.rewrites, self.counters) if refine else []
        drafts = [(t.owner, self.problems[t.owner], t.prefix.steps, t.finished, None) for t in firsts]
        drafts += [(b, self.problems[b], r.steps, r.finished, r.critique)
                   for (b, _), rs in zip(refine, rewrites) for r in rs]
        solutions = iter(self._solutions(drafts))
        children: dict[int, list[Solution]] = {}
        for b in roots:
            kids = [next(solutions) for _ in range(cfg.initial_solutions)]
            children[b] = kids + [Solution((DUMMY_STEP,), False, [], 0.0, None, dummy=True)]
        for b, _ in refine:
            children[b] = [next(solutions) for _ in range(cfg.rewrites)]
        K = max(cfg.initial_solutions + 1, cfg.rewrites)
        B = f.num_trees
        counts = np.zeros((B, 1), np.int32)
        priors = np.zeros((B, 1, K), np.float32)
        rewards = np.zeros((B, 1, K), np.float32)
        values = np.zeros((B, 1), np.float64)
        for b, kids in children.items():
            counts[b, 0] = len(kids)
            priors[b, 0, :len(kids)] = 1.0 / len(kids)
            rewards[b, 0, :len(kids)] = [s.value for s in kids]
            # a solution keeps its own value in its Q: the mean of it and what its rewrites found
            own = self.nodes[b][int(leaves[b, 0])]
            found = [s.value for s in kids if not s.dummy] + ([own.value] if own is not None else [])
            values[b, 0] = float(np.mean(found)) if found else 0.0
        grow = np.where(counts > 0, leaves, -1).astype(np.int32)
        first = expand(f, grow, counts, priors, rewards, np.zeros((B, 1, K), np.uint8), backend=self.tree_backend)
        for b, kids in children.items():
            if first[b, 0] >= 0:
                assert first[b, 0] == len(self.nodes[b]), "node ids are allocated in order"
                self.nodes[b].extend(kids)
        backup(f, leaves, values, "mean", backend=self.tree_backend)
        self.simulations += (leaves[:, 0] >= 0)

    # -- answers

    def candidates(self, b: int) -> list[tuple[int, Candidate]]:
        """(node, Candidate) of every distinct answered solution of tree b, highest Q first (the
        first node of equal solutions is kept), at most `ebc_candidates`."""
        q = self.forest.q_values(b)
        best: dict[tuple[str, ...], tuple[int, Candidate]] = {}
        for node, s in enumerate(self.nodes[b]):
            if s is None or s.answer is None:
                continue
            c = Candidate(s.answer, float(q[node]), s.steps)
            if s.steps not in best or c.value > best[s.steps][1].value:
                best[s.steps] = (node, c)
        ranked = sorted(best.values(), key=lambda nc: (-nc[1].value, nc[0]))
        return ranked[:self.config.ebc_candidates]

    def result(self, b: int) -> SearchResult:
        from prm.ebc import ebc_select

        pool = self.candidates(b)
        cands = [c for _, c in pool]
        if self.pprm is not None and cands:
            chosen, quality = ebc_select(self.problems[b], cands, self.pprm, self.config.alpha)
        else:
            chosen, quality = (cands[0], cands[0].value) if cands else (None, 0.0)
        if chosen is None:  # nothing answered: the solution with the highest Q, as it is
            q = self.forest.q_values(b)
            nodes = [n for n, s in enumerate(self.nodes[b]) if s is not None and not s.dummy]
            node = max(nodes, key=lambda n: q[n], default=None)
            chosen = Candidate(None, 0.0, self.nodes[b][node].steps if node is not None else ())
        return SearchResult(
            answer=chosen.answer, trace="".join(chosen.steps), value=float(quality),
            tokens=int(self.counters.tokens[b]), simulations=int(self.simulations[b]),
            policy_calls=int(self.counters.policy_calls[b]), scorer_calls=int(self.counters.scorer_calls[b]),
            seconds=float(self.seconds), num_candidates=len(cands), **candidate_fields(cands))

    def to_json(self, b: int) -> dict:
        """Tree b (`mcts.trees`): the trie of its solutions, with the SR-MCTS nodes themselves
        (refinements and the dummy included) under "solutions"."""
        f, q = self.forest, self.forest.q_values(b)
        records = []
        for node, s in enumerate(self.nodes[b]):
            if s is None:
                continue
            records.append({"node": node, "parent": int(f.parent[b, node]), "steps": list(s.steps),
                            "finished": s.finished, "answer": s.answer, "value": s.value, "q": float(q[node]),
                            "visits": int(f.visits[b, node]), "critique": s.critique, "dummy": s.dummy})
        solutions = [(r["steps"], r["answer"]) for r in records if not r["dummy"]]
        return tree_from_solutions(self.problems[b], solutions, "sr_mcts", share_prefixes=True,
                                   extra={"solutions": records}).to_json()


# ---------------------------------------------------------------------------------------------------
# The loop


def _pprm(ctx: RunContext, k: int) -> Path:
    """The PPRM folder in effect after iteration k (the base one: a fresh pairwise head on the
    starting policy, made once as stage pprm_base of iteration 0)."""
    for j in range(k, 0, -1):
        found = ctx.stages(j).get("critics")
        if found and found.get("pprm"):
            return Path(found["pprm"])

    def work(folder: Path) -> dict:
        from prm.train import load_model_for, save_atomic

        model = load_model_for("pprm", ctx.models(0)[0], seed=ctx.config.seed + 7)
        out = save_atomic(folder / "pprm", lambda tmp: model.save_pretrained(tmp), overwrite=True)
        return {"pprm": str(out.resolve())}

    return Path(ctx.stage(0, "pprm_base", work)["pprm"])


@dataclasses.dataclass(frozen=True)
class SRSearch:
    """SR-MCTS as a `treesearch.executor.SearchRunner`: the search stage's tree search, run by the
    executor in this process or on Ray actors, with the worker's scorer (the PRM) and the PPRM of
    `pprm_dir` (loaded once per engine). Its sampling and depth are the search config's."""

    pprm_dir: str | None
    llama_berry: BerryConfig
    device: str | None = None
    name: str = "sr_mcts"

    def __call__(self, texts: Sequence[str], proposer, scorer, config: SearchConfig, *, on_tree,
                 cache: dict) -> list[SearchResult]:
        if "pprm" not in cache:
            cache["pprm"] = PPRM.from_pretrained(self.pprm_dir, device=self.device) if self.pprm_dir is not None else None
        options = {"temperature": config.temperature, "max_depth": config.max_depth}
        refiner = (PRMCritic(proposer, threshold=self.llama_berry.critique_threshold, **options) if is_toy(texts)
                   else PromptRefiner(proposer, **options))
        tree = SRMCTS(texts, proposer, scorer, refiner, self.llama_berry, pprm=cache["pprm"],
                      tree_backend=config.tree_backend, **options)
        results = tree.run()
        for b in range(len(texts)):
            on_tree(b, tree.to_json(b))
        return results


def sr_search(ctx: RunContext, pprm_dir: Path | None) -> SRSearch:
    return SRSearch(str(pprm_dir) if pprm_dir is not None else None, ctx.config.llama_berry, ctx.config.device)


def best_solutions(tree: Mapping, gold, n: int) -> list[tuple[str, ...]]:
    """The steps of the `n` verified-correct solutions of a tree with the highest Q (distinct)."""
    from mcts.grading import is_equivalent

    if gold is None:
        return []
    right = [s for s in tree.get("solutions", []) if s.get("answer") is not None and is_equivalent(s["answer"], gold)]
    out: list[tuple[str, ...]] = []
    for s in sorted(right, key=lambda s: (-s["q"], s["node"])):
        if tuple(s["steps"]) not in out:
            out.append(tuple(s["steps"]))
    return out[:n]


def iteration(ctx: RunContext, k: int) -> None:
    from selftrain.harvest import harvest_trees, write_harvest
    from selftrain.rest_mcts import harvest_options

    cfg = ctx.config
    policy, prm = ctx.models(k - 1)
    pprm = _pprm(ctx, k - 1)
    ctx.search(k, "search", ctx.train, policy, prm, cfg.search, seed=cfg.seed * 1000 + k, runner=sr_search(ctx, pprm))

    def harvest(folder: Path) -> dict:
        trees = [r["tree"] for r in ctx.search_records(k, "search") if r.get("tree")]
        data = harvest_trees(trees, ctx.golds, **harvest_options(ctx))
        keep = {(t["problem"], steps) for t in trees
                for steps in best_solutions(t, ctx.golds.get(t["problem"]), cfg.llama_berry.best_solutions)}
        data.sft = [r for r in data.sft if (r["problem"], tuple(r["steps"])) in keep]
        refined = sum(1 for t in trees for s in t.get("solutions", []) if s.get("critique") is not None)
        write_harvest(data, folder, iteration=k, source="search")
        return {**data.counts(), "refined_solutions": refined}

    ctx.stage(k, "harvest", harvest)
    data = ctx.harvests(k)
    ctx.train_scorer(k, "pprm", "pprm", pprm, data.pairs)
    ctx.sft(k, data.sft)
    ctx.train_scorer(k, "prm", "prm", prm, data.prm, target=cfg.prm_target)
    new_pprm = ctx.iter_dir(k) / "pprm"
    ctx.stage(k, "critics", lambda folder: {"pprm": str(new_pprm if new_pprm.is_dir() else pprm)})
    new_policy, new_prm = ctx.iter_dir(k) / "policy", ctx.iter_dir(k) / "prm"
    ctx.set_models(k, new_policy if new_policy.is_dir() else policy, new_prm if new_prm.is_dir() else prm)


def search_eval(ctx: RunContext, k: int, problems: Sequence[Problem], policy_dir: Path, prm_dir: Path) -> list[str | None]:
    """Held-out search answers: SR-MCTS + EBC with the models of the iteration being evaluated."""
    proposer = ctx.load_policy(policy_dir, ctx.config.seed)
    if hasattr(proposer, "reseed"):
        proposer.reseed(ctx.config.seed)
    run, cache = sr_search(ctx, _pprm(ctx, k)), {}
    scorer = ctx.load_prm(prm_dir)
    texts = [p.problem for p in problems]
    answers: list[str | None] = []
    for i in range(0, len(texts), ctx.config.batch):
        answers += [r.answer for r in run(texts[i:i + ctx.config.batch], proposer, scorer, ctx.config.search,
                                          on_tree=lambda b, tree: None, cache=cache)]
    return answers
