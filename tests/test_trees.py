"""The tree format (mcts.trees): one type for the search's trees, the loops' and the harvest's."""

from __future__ import annotations

import json

import pytest

from mcts.config import SearchConfig
from mcts.envs.arith import OraclePRM
from mcts.policy.toy import ScriptedPolicy
from mcts.search import TreeSearch
from mcts.trees import TREE_FORMAT, TreeFormatError, TreeRecord, tree_from_solutions
from selftrain.harvest import harvest_tree

A = ["2 * 3 = 6, so 1 + 6\n", "1 + 6 = 7, so 7\n", "The answer is \\boxed{7}.\n"]
B = ["2 * 3 = 6, so 1 + 6\n", "1 + 6 = 8, so 8\n", "The answer is \\boxed{8}.\n"]


def test_a_searched_tree_round_trips_through_json():
    problems = ["1 + 2 * 3", "(4 - 1) * 5"]
    search = TreeSearch(problems, ScriptedPolicy(seed=0), OraclePRM(answers={"1 + 2 * 3": "7", "(4 - 1) * 5": "15"}),
                        SearchConfig(simulations=12, width=3))
    search.run()
    for b in range(len(problems)):
        data = json.loads(json.dumps(search.to_json(b)))
        assert data["format"] == TREE_FORMAT and data["algorithm"] == "mcts_star"
        tree = TreeRecord.from_json(data)
        assert tree.to_json() == data
        assert [n.id for n in tree.nodes] == list(range(len(tree.nodes)))  # dense, parents first
        assert all(n.visits is not None and n.q is not None for n in tree.nodes)
        assert any(n.terminal and n.answer for n in tree.nodes)
        kids = tree.children()
        assert all(tree.nodes[c].parent == n.id and tree.nodes[c].depth == n.depth + 1 for n in tree.nodes
                   for c in kids[n.id])


def test_the_trie_of_solutions_shares_prefixes_and_chains_share_nothing():
    sols = [(A, "7"), (B, "8"), ([], None), (A, "7")]
    trie = tree_from_solutions("1 + 2 * 3", sols, "sr_mcts", share_prefixes=True, extra={"solutions": []})
    assert len(trie.nodes) == 1 + 1 + 2 + 2  # the shared first step is one node; duplicates add nothing
    assert sum(n.terminal for n in trie.nodes) == 2 and trie.extra == {"solutions": []}
    assert [trie.nodes[i].step for i in trie.path(3)] == A
    chains = tree_from_solutions("1 + 2 * 3", sols, "rest_em", share_prefixes=False)
    assert len(chains.nodes) == 1 + 3 * 3 and sum(n.terminal for n in chains.nodes) == 3
    h = harvest_tree(trie.to_json(), "7")
    assert len(h.sft) == 1 and len(h.pairs) == 1
    assert h.pairs[0]["chosen"] == A and h.pairs[0]["rejected"] == B
    # without a tree, ReST-EM's chains label a whole sample by its outcome
    labels = {tuple(r["steps"]): r["labels"] for r in harvest_tree(chains, "7").prm}
    assert labels[tuple(A)] == [1.0] * 3 and labels[tuple(B)] == [0.0] * 3


def _tree() -> dict:
    return tree_from_solutions("1 + 2 * 3", [(A, "7")], "rest_em", share_prefixes=False).to_json()


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("format"), "field 'format': this version reads tree format 1, got None"),
    (lambda t: t.update(format=2), "field 'format': this version reads tree format 1, got 2"),
    (lambda t: t.pop("problem"), "field 'problem': missing"),
    (lambda t: t.update(nodes={}), "field 'nodes': missing or not a list"),
    (lambda t: t["nodes"][1].pop("terminal"), "node 1: field 'terminal'"),
    (lambda t: t["nodes"][1].update(step=3), "node 1: field 'step': not a string"),
    (lambda t: t["nodes"][2].update(parent=5), "node 2: field 'parent': nodes must be listed parents first"),
    (lambda t: t["nodes"][1].update(visits="9"), "node 1: field 'visits'"),
])
def test_a_tree_of_another_format_or_shape_is_refused_naming_the_field(change, message):
    tree = _tree()
    change(tree)
    with pytest.raises(TreeFormatError, match="^trees/x.json: " + message.replace("(", r"\(")):
        TreeRecord.from_json(tree, "trees/x.json")
