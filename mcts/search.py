"""The batched tree search (ARCHITECTURE.md): `TreeSearch` and its round.

One round, for all B trees at once:

    leaves = select(forest, L)                       mcts.core, native code
    steps  = proposer.propose(prefixes, width)       ONE batched policy call for every leaf
    scores = scorer.score(child prefixes, steps)     ONE batched PRM call for every new step
    expand(forest, leaves, ...); backup(forest, leaves, values)

Step texts live here, on the Python side, keyed by (tree, node); the Forest holds the numbers.
Trees stop on their own (simulation budget, token budget, an answer whose value reaches
`stop_value`, a full tree); a stopped tree is closed by pruning its root, so `select` skips it.

`mcts.config.SearchConfig` is the budget and rules of every algorithm, the baselines
(`mcts.baselines`) too, so that they compare at equal budgets; `mcts.algorithms.run_algorithm` runs
any of them by name. What they share besides lives below this module: `mcts.traces` (traces
advanced one step per batched call, the budget ledger) and `mcts.answers` (finished candidates and
the answer choice).
The command line, `python -m mcts.search`, is `treesearch.cli`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np

from mcts.answers import AnswerJudge, Candidate, SearchResult, aggregate_step_values, candidate_fields, choose_answer
from mcts.config import TREE_RULES, SearchConfig
from mcts.core import EXPANDED, PRUNED, TERMINAL, Forest, backup, expand, select
from mcts.grading import extract_answer
from mcts.policy.base import Prefix, Step, StepProposer, StepScorer
from mcts.traces import Counters, Trace, propose, sample_traces
from mcts.trees import NodeRecord, TreeRecord

__all__ = ["Leaf", "TreeSearch"]


# ---------------------------------------------------------------------------------------------------
# The tree search

class Leaf(NamedTuple):
    """A node the round asks the policy about: `node` of tree `tree`, selected in column `slot` of
    the round's leaves. `widen`: the selected leaf was `node`'s empty widening slot, so `node`
    (already expanded) gets more children; otherwise `node` is the leaf to expand."""

    tree: int
    slot: int
    node: int
    widen: bool = False


class TreeSearch:
    """MCTS over reasoning steps for a batch of problems: one tree per problem in one Forest.

    Usage: `TreeSearch(problems, proposer, scorer, config).run()` returns one `SearchResult` per
    problem; `to_json(b)` dumps tree b for inspection. `judge`: the `AnswerJudge` of
    `answer_selection='ebc'`.
    """

    def __init__(self, problems: Sequence[str], proposer: StepProposer, scorer: StepScorer,
                 config: SearchConfig, *, judge: AnswerJudge | None = None):
        if config.algorithm not in TREE_RULES:
            raise ValueError(f"TreeSearch runs {', '.join(TREE_RULES)}, not {config.algorithm!r}")
        self.problems = list(problems)
        self.proposer, self.scorer, self.config, self.judge = proposer, scorer, config, judge
        self.rules = TREE_RULES[config.algorithm]
        B = len(self.problems)
        # Each backed-up leaf allocates at most `children_per_node` nodes (real children, then the
        # empty slots that progressive widening fills later: a node's children stay contiguous);
        # with rollouts, so does every node of its continuation.
        per_simulation = config.children_per_node * (config.max_depth if config.expansion == "rollout" else 1)
        self.forest = Forest.empty(B, 1 + config.simulations * per_simulation)
        # [tree][node]: the step into each node; None for the root and for empty widening slots.
        self.steps: list[list[Step | None]] = [[None] for _ in range(B)]
        # [tree] {node: its arm, the next empty slot}, for every node that may still widen.
        self.arms: list[dict[int, int]] = [{} for _ in range(B)]
        self._closed_arms: list[tuple[int, int]] = []  # (tree, slot) of saturated nodes, closed after backup
        self.simulations = np.zeros(B, np.int64)
        self.ungated = np.full(B, config.arm_gate == "open")  # trees whose arms are open whatever their children's Q
        self.counters = Counters.zeros(B)
        self.done = np.zeros(B, bool)
        self.seconds = np.zeros(B)
        self.completions: dict[int, tuple[int, Trace]] = {}  # tree -> (the node it starts from, greedy completion)
        self._start = 0.0

    # -- text of the tree

    def prefix(self, b: int, node: int) -> Prefix:
        path = self.forest.path(b, node)
        return Prefix(self.problems[b], tuple(self.steps[b][s].text for s in path[1:]))

    def answer_of(self, b: int, node: int) -> str | None:
        step = self.steps[b][node]
        return extract_answer(step.text) if step is not None and step.finished else None

    # -- the loop

    def run(self) -> list[SearchResult]:
        self._start = time.perf_counter()
        self._stop_where(self.forest.num_trees * [False])  # a batch of 0 trees is done at once
        while not self.done.all():
            self.round()
        self.forest.flags[:, 0] &= ~PRUNED  # reopen the roots closed by _stop_where
        if self.config.complete_unfinished:
            self._complete_unfinished()
        return [self.result(b) for b in range(self.forest.num_trees)]

    def round(self) -> None:
        """One round for every live tree: select, propose, score, expand (or widen), back up.

        A selected leaf is one of three kinds: a finished answer or dead end (backed up with its
        value, then closed unless `revisit_terminals`), an empty widening slot (the 'new step' arm
        of its parent: more steps are sampled at the parent), or a leaf to expand. Expansions and
        widenings share one policy call and one scorer call. With `expansion='rollout'` the best
        new child of each is then sampled on to a finished answer (one policy and one scorer call
        per step for all of them), and the backup runs from that answer.
        """
        cfg, f = self.config, self.forest
        leaves = select(f, cfg.leaves_per_tree, self.rules.select, cfg.c, cfg.virtual_loss, backend=cfg.tree_backend)
        B, L = leaves.shape
        values = np.zeros((B, L), np.float64)  # what each selected leaf backs up
        expanding: list[Leaf] = []
        widening: list[Leaf] = []
        closing: list[tuple[int, int]] = []  # (tree, node) of finished answers and dead ends
        for b, slot in zip(*np.nonzero(leaves >= 0)):
            b, slot, leaf = int(b), int(slot), int(leaves[b, slot])
            if f.flags[b, leaf] & TERMINAL:
                values[b, slot] = self._terminal_value(b, leaf)
                closing.append((b, leaf))
            elif self._is_slot(b, leaf):
                widening.append(Leaf(b, slot, int(f.parent[b, leaf]), widen=True))
            else:
                expanding.append(Leaf(b, slot, leaf))
        asked = [*expanding, *widening]
        children, rewards = self.children(asked, [self.prefix(a.tree, a.node) for a in asked])
        n = len(expanding)
        backed = [*self._expand(leaves, expanding, children[:n], rewards[:n]),
                  *self._widen(leaves, widening, children[n:], rewards[n:])]
        for a, value in zip(asked, backed):
            values[a.tree, a.slot] = value
        if cfg.expansion == "rollout":
            leaves, ends = self._roll_out(leaves, values, asked, children, rewards)
            closing += ends
        backup(f, leaves, values, self.rules.backup, backend=cfg.tree_backend)
        if not cfg.revisit_terminals:
            for b, leaf in closing:
                f.flags[b, leaf] |= PRUNED
        for b, arm in self._closed_arms:
            f.flags[b, arm] |= PRUNED
            f.visits[b, arm], f.value_sum[b, arm] = 0, 0.0
        self._closed_arms = []
        nothing_selected = (leaves < 0).all(axis=1)
        if cfg.arm_gate in ("until_exhausted", "trusted"):
            for b in np.nonzero(nothing_selected & ~self.done & ~self.ungated)[0]:
                if self.arms[b]:  # gated arms are left: open them for the rest of the budget
                    self.ungated[b], nothing_selected[b] = True, False
        self._gate_arms()
        self.simulations += (leaves >= 0).sum(axis=1)
        self._stop_where(nothing_selected)

    def _is_slot(self, b: int, node: int) -> bool:
        """An empty widening slot (allocated, holding no step yet)."""
        return node != 0 and self.steps[b][node] is None

    def _new_siblings(self, b: int, node: int, steps: list[Step]) -> list[Step]:
        """The proposed steps at `node` that none of its children holds, as many as fit its slots."""
        held = {self.steps[b][k].text for k in self.forest.children(b, node) if not self._is_slot(b, int(k))}
        end = int(self.forest.first_child[b, node] + self.forest.num_children[b, node])
        room = end - self.arms[b][node]
        return [s for s in steps if s.text not in held][:room]

    def _terminal_value(self, b: int, node: int) -> float:
        # A finished answer is worth its step value; a dead end (depth limit, no proposal) nothing.
        return 0.0 if self._dead_end(b, node) else float(self.forest.reward[b, node])

    def children(self, asked: Sequence[Leaf], prefixes: Sequence[Prefix]) -> tuple[list[list[Step]], list[list[float]]]:
        """The expander hook: the new steps at every asked node and their PRM values, from ONE
        policy call and ONE scorer call for the whole round. A widening node gets only steps that
        none of its children holds. A subclass changes how a node's children are chosen by
        overriding this (eta-MCTS: probe, widen by importance, merge near-duplicates)."""
        proposed = self._propose(asked, prefixes)
        proposed = [self._new_siblings(a.tree, a.node, steps) if a.widen else steps for a, steps in zip(asked, proposed)]
        return proposed, self._score(asked, prefixes, proposed)

    def _propose(self, asked: Sequence[Leaf], prefixes: Sequence[Prefix]) -> list[list[Step]]:
        """Distinct proposed steps per leaf (duplicates merged: they would be the same node)."""
        if not asked:
            return []
        cfg = self.config
        # Greedy decoding has one answer per prefix: asking for `width` copies would only be charged.
        n = 1 if cfg.temperature == 0 else cfg.width
        proposals = propose(self.proposer, prefixes, n, cfg.temperature, cfg.truncation)
        self.counters.charge_policy([a.tree for a in asked], proposals)
        expanding = [i for i, a in enumerate(asked) if not a.widen]
        if cfg.first_children > cfg.width and expanding:  # greedy_child, where sampling leaves room for it
            # A node's first children include its greedy step (ahead of the samples, so the width
            # cap below keeps it); widening adds samples only, the greedy step being already there.
            greedy = propose(self.proposer, [prefixes[i] for i in expanding], 1, 0.0)
            self.counters.charge_policy([asked[i].tree for i in expanding], greedy)
            for i, steps in zip(expanding, greedy):
                proposals[i] = [*steps, *proposals[i]]
        distinct = []
        for steps in proposals:
            seen: dict[str, Step] = {}
            for step in steps:
                seen.setdefault(step.text, step)
            distinct.append(list(seen.values())[: cfg.first_children])
        return distinct

    def _score(self, asked: Sequence[Leaf], prefixes: Sequence[Prefix], children: list[list[Step]]) -> list[list[float]]:
        pairs = [(prefix, step) for prefix, steps in zip(prefixes, children) for step in steps]
        if not pairs:
            return [[] for _ in children]
        flat = self.scorer.score([p for p, _ in pairs], [s for _, s in pairs])
        self.counters.charge_scorer([a.tree for a, steps in zip(asked, children) if steps])
        out, i = [], 0
        for steps in children:
            out.append([float(v) for v in flat[i:i + len(steps)]])
            i += len(steps)
        return out

    def _priors(self, steps: list[Step]) -> np.ndarray:
        if self.config.prior == "uniform" or not steps:
            return np.full(len(steps), 1.0 / max(len(steps), 1))
        if self.config.prior == "sequence":
            logits = np.array([s.logprob for s in steps], np.float64)
        else:
            logits = np.array([s.logprob / max(s.num_tokens, 1) for s in steps], np.float64)
        logits = np.where(np.isfinite(logits), logits, -1e9)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def _expand(self, leaves: np.ndarray, expanding: Sequence[Leaf], children: list[list[Step]],
                rewards: list[list[float]]) -> list[float]:
        """Adds the children of every expanding leaf (and the empty slots widening may fill later);
        returns the value each leaf backs up (`leaf_value` over its children, or a rollout's)."""
        cfg, f = self.config, self.forest
        backed = []
        B, L = leaves.shape
        K = cfg.children_per_node  # real children first, then the empty slots widening may fill
        expand_leaves = np.full((B, L), -1, np.int32)
        counts = np.zeros((B, L), np.int32)
        priors = np.zeros((B, L, K), np.float32)
        reward_block = np.zeros((B, L, K), np.float32)
        terminal = np.zeros((B, L, K), np.uint8)
        for (b, slot, leaf, _), steps, r in zip(expanding, children, rewards):
            if not steps:  # the policy cannot continue this prefix: a dead end
                f.flags[b, leaf] |= TERMINAL
                backed.append(0.0)
                continue
            k = len(steps)
            child_depth = int(f.depth[b, leaf]) + 1
            expand_leaves[b, slot] = leaf
            # Children at the depth limit end their branch: nothing to widen.
            counts[b, slot] = K if cfg.widens and child_depth < cfg.max_depth else k
            p = self._priors(steps)
            priors[b, slot, :k] = p
            reward_block[b, slot, :k] = r
            terminal[b, slot, :k] = [s.finished or child_depth >= cfg.max_depth for s in steps]
            backed.append(float(np.dot(p, r)) if cfg.leaf_value == "mean" else max(r))
        first = expand(f, expand_leaves, counts, priors, reward_block, terminal, backend=cfg.tree_backend)
        for (b, slot, leaf, _), steps in zip(expanding, children):
            start = int(first[b, slot])
            if start >= 0:
                assert start == len(self.steps[b]), "node ids are allocated in order"
                empty = int(counts[b, slot]) - len(steps)
                self.steps[b].extend([*steps, *[None] * empty])
                if empty:
                    f.flags[b, start + len(steps): start + len(steps) + empty] = PRUNED
                    if self._keeps_arm(b, leaf, news=True):
                        self._set_arm(b, leaf, start + len(steps), pulls=0)
        if cfg.rollout_depth > 0:
            backed = self._rollouts(expanding, children, rewards, first, backed)
        return backed

    def _widen(self, leaves: np.ndarray, widening: Sequence[Leaf], new_steps: list[list[Step]],
               rewards: list[list[float]]) -> list[float]:
        """Fills the selected arm slots (and the slots after them) with the new steps sampled at
        their parents. The selected slot becomes the first new child and is backed up with its
        value; the next empty slot becomes the arm, pulled once more. A node whose samples held
        nothing new is saturated: its arm is closed and it widens no more. Returns the value each
        selected slot backs up."""
        cfg, f = self.config, self.forest
        q = f.q_values()
        backed = []
        for (b, slot, node, _), steps, r in zip(widening, new_steps, rewards):
            arm = self.arms[b].pop(node)
            assert arm == leaves[b, slot], "the selected slot is its parent's arm"
            pulls = int(f.visits[b, arm])
            f.visits[b, arm], f.value_sum[b, arm] = 0, 0.0  # the backup gives the new child its first visit
            if not steps and self._keeps_arm(b, node, news=False):
                # Nothing new, but the policy still puts much probability on steps its children do
                # not hold (`widen_unseen`): the arm stays, and this draw counts as one more pull.
                backed.append(float(q[b, node]))
                self._set_arm(b, node, arm, pulls)  # the backup adds this pull
                continue
            if not steps:
                # A draw of what the node already holds: no news, and the node widens no more. Keeping
                # the arm for a second or fourth such draw was measured worse (problem set 1, MCTS*
                # at 32 simulations, 2 seeds): 0.650 / 0.613 against 0.656 with the shipped PRM,
                # 0.681 / 0.675 against 0.719 with the oracle; the retries spend simulations a
                # rollout elsewhere would use. So was a Good-Turing rule, retrying while a tenth of
                # the node's samples or more hold a step drawn once (oracle, sets 0 / 1: 0.650 /
                # 0.681 against 0.644 / 0.719), and that rule closing arms too, also at expansion
                # (0.637 / 0.656; at a fifth, 0.650 / 0.669).
                backed.append(float(q[b, node]))
                self._closed_arms.append((b, arm))
                continue
            child_depth = int(f.depth[b, node]) + 1
            if cfg.expansion == "rollout":  # the best new step fills the selected slot: it is rolled out
                order = np.argsort(-np.asarray(r), kind="stable")
                steps, r = [steps[i] for i in order], [r[i] for i in order]
            for i, (step, value) in enumerate(zip(steps, r)):
                self.steps[b][arm + i] = step
                f.reward[b, arm + i] = value
                f.flags[b, arm + i] = TERMINAL if step.finished or child_depth >= cfg.max_depth else 0
            start = int(f.first_child[b, node])
            filled = arm + len(steps)
            f.prior[b, start:filled] = self._priors(self.steps[b][start:filled])
            if filled < start + int(f.num_children[b, node]) and self._keeps_arm(b, node, news=True):
                self._set_arm(b, node, filled, pulls + 1)
            backed.append(float(r[0]))
        return backed

    def _gate_arms(self) -> None:
        """An arm is open only while the node's children disappoint: none has a Q up to the node's
        worth ('trusted': neither a Q nor a PRM value), so with 'trusted' a failure below a child
        the PRM trusts as much as the node is repaired below that child. An ungated tree's arms
        ('open'; 'until_exhausted' and 'trusted' once nothing else is left) stay open."""
        f = self.forest
        q = f.q_values()
        by_prm_value = self.config.arm_gate == "trusted"
        for b, arms in enumerate(self.arms):
            for node, arm in arms.items():
                start = int(f.first_child[b, node])
                best = q[b, start:arm].max()
                if by_prm_value:
                    best = max(best, float(f.reward[b, start:arm].max()))
                if self.ungated[b] or best < f.reward[b, arm]:
                    f.flags[b, arm] &= ~PRUNED
                else:
                    f.flags[b, arm] |= PRUNED

    def _keeps_arm(self, b: int, node: int, news: bool) -> bool:
        """Whether `node` keeps a 'new step' arm beside the children it has now (`news`: its last
        samples held a step its children did not). Without `widen_unseen`, while its samples bring
        news; with it, while the policy's probability of a step none of its children holds is at
        least `widen_unseen`."""
        floor = self.config.widen_unseen
        left = None if floor is None else self._unseen_mass(b, node)
        return news if left is None else left >= floor

    def _unseen_mass(self, b: int, node: int) -> float | None:
        """The policy's probability of a step at `node` that none of its children holds: 1 minus
        their steps' probabilities (exp of their log-probabilities, which every policy here reports
        untempered). None when a child's step has no finite log-probability."""
        held = [self.steps[b][int(k)] for k in self.forest.children(b, node) if not self._is_slot(b, int(k))]
        if not all(math.isfinite(step.logprob) for step in held):
            return None
        return max(0.0, 1.0 - sum(math.exp(step.logprob) for step in held))

    def _set_arm(self, b: int, node: int, slot: int, pulls: int) -> None:
        """Makes `slot` the open 'new step' arm of `node`: a bandit arm beside its children whose
        value is what the PRM said `node` is worth (the root, which the PRM does not score, is
        worth 1: the problem has a solution) and whose visits are the widenings made so far.
        Selection then widens where the PRM trusts a node more than the children found so far,
        and less often the more it has already widened there. The arm's visits also enter the
        `quality` backup's mean, so a node the PRM trusts keeps part of its value while its first
        children disappoint."""
        f = self.forest
        worth = 1.0 if node == 0 else float(f.reward[b, node])
        self.arms[b][node] = slot
        f.flags[b, slot] = 0
        f.reward[b, slot] = worth
        f.visits[b, slot] = pulls
        f.value_sum[b, slot] = worth * pulls
        f.prior[b, slot] = 1.0 / (1 + slot - int(f.first_child[b, node]))

    def _rollouts(self, expanding: Sequence[Leaf], children: list[list[Step]], rewards: list[list[float]],
                  first: np.ndarray, backed: list[float]) -> list[float]:
        """ReST-MCTS*'s optional greedy rollout: from the best new child of each expanded leaf, a
        few greedy steps scored by the PRM; the leaf's value becomes the max value seen."""
        starts = []
        for i, ((b, slot, _, _), steps, r) in enumerate(zip(expanding, children, rewards)):
            if first[b, slot] < 0 or not steps:
                continue
            j = int(np.argmax(r))
            if steps[j].finished:
                continue
            starts.append((i, Trace(b, self.prefix(b, int(first[b, slot]) + j))))
        if starts:
            cfg = self.config
            sample_traces([t for _, t in starts], self.proposer, self.scorer, max_depth=cfg.max_depth,
                          temperature=0.0, counters=self.counters, max_steps=cfg.rollout_depth)
        backed = list(backed)
        for i, trace in starts:
            if trace.step_values:
                backed[i] = max(backed[i], max(trace.step_values))
        return backed

    def _roll_out(self, leaves: np.ndarray, values: np.ndarray, asked: Sequence[Leaf],
                  children: list[list[Step]], rewards: list[list[float]]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """`expansion='rollout'`: continues the best new child of every asked node (for a
        widening, the selected slot, which `_widen` filled with its best new step) by sampling to a
        finished answer, grafts the continuation into the tree, and moves each simulation's backup
        to the continuation's end, valued as a terminal. Returns the leaves to back up from and the
        (tree, node) of the ends, to close like any backed-up terminal."""
        cfg, f = self.config, self.forest
        leaves = leaves.copy()
        starts: list[tuple[Leaf, int]] = []
        for a, steps, r in zip(asked, children, rewards):
            if not steps:
                continue
            if a.widen:
                starts.append((a, int(leaves[a.tree, a.slot])))
            elif f.flags[a.tree, a.node] & EXPANDED:  # its children fitted in the forest
                starts.append((a, int(f.first_child[a.tree, a.node]) + int(np.argmax(r))))
        traces = [Trace(a.tree, self.prefix(a.tree, node)) for a, node in starts]
        live = [t for (_, node), t in zip(starts, traces) if not f.flags[t.owner, node] & TERMINAL]
        sample_traces(live, self.proposer, self.scorer, max_depth=cfg.max_depth, temperature=cfg.temperature,
                      counters=self.counters, truncation=cfg.truncation)
        for (a, node), t in zip(starts, traces):
            if not t.added and not f.flags[a.tree, node] & TERMINAL:
                f.flags[a.tree, node] |= TERMINAL  # the policy could not continue it: a dead end
        chains = [(a, node, t.added, t.step_values) for (a, node), t in zip(starts, traces)]
        ends = self._graft(leaves.shape, chains)
        q = f.q_values()
        closing = []
        for (a, *_), end in zip(chains, ends):
            leaves[a.tree, a.slot] = end
            if f.flags[a.tree, end] & TERMINAL:
                values[a.tree, a.slot] = self._terminal_value(a.tree, end)
                closing.append((a.tree, end))
            else:  # the forest filled up before the continuation's end
                values[a.tree, a.slot] = float(q[a.tree, end])
        return leaves, closing

    def _graft(self, shape: tuple[int, int], chains: Sequence[tuple[Leaf, int, list[Step], list[float]]]) -> list[int]:
        """Adds each chain's steps below its node, one batched `expand` per depth; every new node
        gets the slots widening may fill. Returns the last node of each chain."""
        cfg, f = self.config, self.forest
        K = cfg.children_per_node
        ends = [node for _, node, _, _ in chains]
        growing = [bool(steps) for _, _, steps, _ in chains]
        depth = 0
        while any(growing):
            level = [i for i, g in enumerate(growing) if g]
            leaves = np.full(shape, -1, np.int32)
            counts = np.zeros(shape, np.int32)
            priors = np.zeros((*shape, K), np.float32)
            rewards = np.zeros((*shape, K), np.float32)
            terminal = np.zeros((*shape, K), np.uint8)
            for i in level:
                a, _, steps, step_values = chains[i]
                child_depth = int(f.depth[a.tree, ends[i]]) + 1
                leaves[a.tree, a.slot] = ends[i]
                counts[a.tree, a.slot] = K if cfg.widens and child_depth < cfg.max_depth else 1
                priors[a.tree, a.slot, 0] = 1.0
                rewards[a.tree, a.slot, 0] = step_values[depth]
                terminal[a.tree, a.slot, 0] = steps[depth].finished or child_depth >= cfg.max_depth
            first = expand(f, leaves, counts, priors, rewards, terminal, backend=cfg.tree_backend)
            # `expand` allocates a tree's nodes in slot order: record their steps in the same order.
            for i in sorted(level, key=lambda i: (chains[i][0].tree, chains[i][0].slot)):
                a, _, steps, _ = chains[i]
                start = int(first[a.tree, a.slot])
                growing[i] = start >= 0 and depth < len(steps) - 1  # a full forest ends the chain here
                if start < 0:
                    continue
                assert start == len(self.steps[a.tree]), "node ids are allocated in order"
                empty = int(counts[a.tree, a.slot]) - 1
                self.steps[a.tree].extend([steps[depth], *[None] * empty])
                if empty:
                    f.flags[a.tree, start + 1: start + 1 + empty] = PRUNED
                    if self._keeps_arm(a.tree, ends[i], news=True):
                        self._set_arm(a.tree, ends[i], start + 1, pulls=0)
                ends[i] = start
            depth += 1
        return ends

    def _stop_where(self, nothing_selected: np.ndarray) -> None:
        cfg = self.config
        now = time.perf_counter() - self._start
        for b in np.nonzero(~self.done)[0]:
            b = int(b)
            stop = (nothing_selected[b] or self.simulations[b] >= cfg.simulations
                    or cfg.over_budget(int(self.counters.tokens[b])) or bool(self.forest.full[b])
                    or (cfg.stop_value is not None and self._best_answer_value(b) >= cfg.stop_value))
            if stop:
                self.done[b] = True
                self.seconds[b] = now
                self.forest.flags[b, 0] |= PRUNED  # a pruned root has no selectable leaf

    def _best_answer_value(self, b: int) -> float:
        best = -math.inf
        for node, step in enumerate(self.steps[b]):
            if step is not None and step.finished and self.answer_of(b, node) is not None:
                best = max(best, float(self.forest.reward[b, node]))
        return best

    # -- answers

    def candidates(self, b: int) -> list[Candidate]:
        """Every finished solution in tree b (and its greedy completion, if one was made), valued
        by `candidate_value`: 'q' (the answer node's Q: its reward once visited) or 'path'
        (`step_aggregate` over the PRM values of the steps on its path, as the sampling baselines
        value their traces)."""
        cfg, q = self.config, self.forest.q_values(b)
        out = []
        for node, step in enumerate(self.steps[b]):
            if step is None or not step.finished:
                continue
            path = self.forest.path(b, node)[1:]
            if cfg.candidate_value == "path":
                value = aggregate_step_values([float(self.forest.reward[b, s]) for s in path], cfg.step_aggregate)
            else:
                value = float(q[node])
            value = cfg.solution_value(value, [self.steps[b][s] for s in path])
            out.append(Candidate(self.answer_of(b, node), value, self.prefix(b, node).steps))
        if b in self.completions:
            start, t = self.completions[b]
            how = cfg.step_aggregate if cfg.candidate_value == "path" else "last"
            steps = [*(self.steps[b][s] for s in self.forest.path(b, start)[1:]), *t.added]
            out.append(Candidate(t.answer, cfg.solution_value(aggregate_step_values(t.step_values, how), steps),
                                 t.prefix.steps))
        return out

    def _best_partial(self, b: int) -> int:
        """The end of the greedy path by Q, preferring children that are not dead ends (terminal
        without an answer) so that a completion from it can still succeed."""
        node, f = 0, self.forest
        q = self.forest.q_values(b)
        while f.num_children[b, node] > 0:
            kids = [int(k) for k in f.children(b, node) if not self._is_slot(b, int(k))]
            node = max(kids, key=lambda k: (not self._dead_end(b, k), q[k]))
        return node

    def _dead_end(self, b: int, node: int) -> bool:
        return bool(self.forest.flags[b, node] & TERMINAL) and self.answer_of(b, node) is None

    def _complete_unfinished(self) -> None:
        need = [b for b in range(self.forest.num_trees)
                if not any(c.answer is not None for c in self.candidates(b))]
        starts = {b: self._best_partial(b) for b in need}
        traces = [Trace(b, self.prefix(b, node)) for b, node in starts.items()]
        traces = [t for t in traces if t.prefix.depth < self.config.max_depth]
        if not traces:
            return
        sample_traces(traces, self.proposer, self.scorer, max_depth=self.config.max_depth, temperature=0.0,
                      counters=self.counters)
        for t in traces:
            if t.finished:
                self.completions[t.owner] = (starts[t.owner], t)
                self.seconds[t.owner] = time.perf_counter() - self._start

    def result(self, b: int) -> SearchResult:
        candidates = self.candidates(b)
        chosen, value = choose_answer(candidates, self.config.selection, problem=self.problems[b],
                                      judge=self.judge)
        if chosen is None:
            steps = self.prefix(b, self._best_partial(b)).steps
            chosen = Candidate(None, 0.0, steps)
        return SearchResult(
            answer=chosen.answer, trace="".join(chosen.steps), value=float(value),
            tokens=int(self.counters.tokens[b]), simulations=int(self.simulations[b]),
            policy_calls=int(self.counters.policy_calls[b]), scorer_calls=int(self.counters.scorer_calls[b]),
            seconds=float(self.seconds[b]), num_candidates=len(candidates),
            **candidate_fields(candidates),
        )

    def tree_record(self, b: int) -> TreeRecord:
        """Tree b (`mcts.trees`): its nodes, parents before children, without the empty widening
        slots (node ids are renumbered densely; the order is the forest's)."""
        f = self.forest
        q = self.forest.q_values(b)
        kept = [s for s in range(int(f.num_nodes[b])) if not self._is_slot(b, s)]
        new_id = {s: i for i, s in enumerate(kept)}
        nodes = []
        for s in kept:
            step, flags = self.steps[b][s], int(f.flags[b, s])
            nodes.append(NodeRecord(
                id=new_id[s], parent=new_id.get(int(f.parent[b, s]), -1), depth=int(f.depth[b, s]),
                step=step.text if step else None, terminal=bool(flags & TERMINAL), answer=self.answer_of(b, s),
                logprob=step.logprob if step else None, prior=float(f.prior[b, s]), reward=float(f.reward[b, s]),
                visits=int(f.visits[b, s]), q=float(q[s]), expanded=bool(flags & EXPANDED)))
        return TreeRecord(self.problems[b], self.config.algorithm, nodes)

    def to_json(self, b: int) -> dict:
        """Tree b as JSON (the format of `mcts.trees`)."""
        return self.tree_record(b).to_json()


if __name__ == "__main__":  # `python -m mcts.search`: the command line lives at the edge (treesearch.cli)
    from treesearch.cli import main

    sys.exit(main())
