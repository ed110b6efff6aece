"""Enhanced Borda Count on hand-made preference matrices (cycles, dominated nodes, alpha limits)."""

from __future__ import annotations

import numpy as np
import pytest

from prm.ebc import borda_scores, ebc_rank, ebc_select, global_quality, preference_matrix, transitive_closure


def probs_from(beats: list[tuple[int, int]], n: int, strength: float = 0.8) -> np.ndarray:
    """A symmetric preference matrix where i beats j with probability `strength` for (i, j) in beats."""
    p = np.full((n, n), 0.5)
    for i, j in beats:
        p[i, j], p[j, i] = strength, 1 - strength
    return p


def closure_by_search(beats: np.ndarray) -> np.ndarray:
    """Reachability by depth-first search: the reference for the closure."""
    n = beats.shape[0]
    out = np.zeros_like(beats, dtype=bool)
    for s in range(n):
        stack = [j for j in range(n) if beats[s, j]]
        while stack:
            j = stack.pop()
            if not out[s, j]:
                out[s, j] = True
                stack += [k for k in range(n) if beats[j, k]]
    return out


def test_preference_matrix_thresholds_and_clears_the_diagonal():
    p = np.array([[0.9, 0.7, 0.5], [0.3, 0.5, 0.2], [0.5, 0.8, 0.1]])
    beats = preference_matrix(p)
    assert beats.tolist() == [[False, True, True], [False, False, False], [True, True, False]]
    with pytest.raises(ValueError, match="square"):
        preference_matrix(np.zeros((2, 3)))


def test_transitive_closure_of_a_chain():
    beats = np.zeros((4, 4), dtype=bool)
    beats[0, 1] = beats[1, 2] = beats[2, 3] = True
    closure = transitive_closure(beats)
    assert closure.tolist() == [[False, True, True, True], [False, False, True, True],
                                [False, False, False, True], [False, False, False, False]]
    assert borda_scores(closure).tolist() == [3, 2, 1, 0]
    assert beats.sum() == 3  # the input is not modified


def test_transitive_closure_matches_search_on_random_relations():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8, 13):
        for density in (0.1, 0.3, 0.6):
            beats = rng.random((n, n)) < density
            np.fill_diagonal(beats, False)
            assert (transitive_closure(beats) == closure_by_search(beats)).all()


def test_three_cycle_all_beat_each_other_and_ties_break_by_local_q_then_index():
    p = probs_from([(0, 1), (1, 2), (2, 0)], 3)
    closure = transitive_closure(preference_matrix(p))
    assert closure.all()  # the diagonal too: each is on the cycle
    assert borda_scores(closure).tolist() == [2, 2, 2]
    order, quality = ebc_rank(p, [0.2, 0.9, 0.5], alpha=1.0)
    assert order.tolist() == [1, 2, 0] and quality.tolist() == [1.0, 1.0, 1.0]
    order, _ = ebc_rank(p, [0.5, 0.5, 0.5], alpha=1.0)
    assert order.tolist() == [0, 1, 2]


def test_four_nodes_with_a_cycle_and_a_dominated_node():
    # 0 > 1 > 2 > 0 (a cycle), and each of them beats 3
    p = probs_from([(0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)], 4)
    closure = transitive_closure(preference_matrix(p))
    assert borda_scores(closure).tolist() == [3, 3, 3, 0]
    assert not closure[3].any() and closure[:3, 3].all()
    order, quality = ebc_rank(p, [0.1, 0.3, 0.2, 0.99], alpha=1.0)
    assert order.tolist() == [1, 2, 0, 3]
    assert quality.tolist() == [1.0, 1.0, 1.0, 0.0]
    # a node above the cycle beats all of it; the cycle's members beat each other but not it
    p2 = probs_from([(0, 1), (1, 2), (2, 0), (3, 0), (3, 1), (3, 2)], 4)
    assert borda_scores(transitive_closure(preference_matrix(p2))).tolist() == [2, 2, 2, 3]
    # one edge into the cycle is enough to beat all of it (3 > 0 > 1 > 2); 3 still loses to 1
    p3 = probs_from([(0, 1), (1, 2), (2, 0), (3, 0), (1, 3), (3, 2)], 4)
    closure3 = transitive_closure(preference_matrix(p3))
    assert closure3[3, :3].all() and closure3[1, 3]


def test_alpha_zero_ranks_by_local_q_and_alpha_one_by_borda():
    p = probs_from([(0, 1), (0, 2), (1, 2)], 3)  # Borda 2, 1, 0
    local = [0.1, 0.5, 0.9]
    order0, q0 = ebc_rank(p, local, alpha=0.0)
    assert order0.tolist() == [2, 1, 0] and q0 == pytest.approx(local)
    order1, q1 = ebc_rank(p, local, alpha=1.0)
    assert order1.tolist() == [0, 1, 2] and q1 == pytest.approx([1.0, 0.5, 0.0])
    _, half = ebc_rank(p, local, alpha=0.5)
    assert half == pytest.approx([0.55, 0.5, 0.45])
    with pytest.raises(ValueError, match="alpha"):
        ebc_rank(p, local, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        ebc_rank(p, [0.1, 0.2], alpha=0.5)


def test_ties_at_one_half_beat_both_ways():
    p = np.full((3, 3), 0.5)
    closure = transitive_closure(preference_matrix(p))
    assert borda_scores(closure).tolist() == [2, 2, 2]
    assert ebc_rank(p, [0.3, 0.7, 0.3], alpha=0.5)[0].tolist() == [1, 0, 2]


def test_one_and_zero_candidates():
    order, quality = ebc_rank(np.full((1, 1), 0.5), [0.4], alpha=0.5)
    assert order.tolist() == [0] and quality == pytest.approx([0.2])
    assert global_quality(np.zeros(0), np.zeros(0), 0.5).shape == (0,)


class FakePPRM:
    """Prefers solutions with more steps (a stand-in for a trained PPRM)."""

    def __init__(self):
        self.calls = []

    def preference_probs(self, problem, solutions):
        self.calls.append((problem, [list(s) for s in solutions]))
        n = len(solutions)
        p = np.full((n, n), 0.5)
        for i in range(n):
            for j in range(n):
                if i != j and len(solutions[i]) != len(solutions[j]):
                    p[i, j] = 0.9 if len(solutions[i]) > len(solutions[j]) else 0.1
        return p


def test_ebc_select_picks_among_search_candidates():
    from mcts.answers import Candidate

    cands = [Candidate("1", 0.9, ("a",)), Candidate("2", 0.2, ("a", "b", "c")), Candidate("3", 0.5, ("a", "b")),
             Candidate(None, 1.0, ("x", "y", "z", "w"))]
    pprm = FakePPRM()
    best, quality = ebc_select("p", cands, pprm, alpha=1.0)
    assert best.answer == "2" and quality == pytest.approx(1.0)
    assert pprm.calls == [("p", [["a"], ["a", "b", "c"], ["a", "b"]])]  # the answer-less one left out
    assert ebc_select("p", cands, pprm, alpha=0.0)[0].answer == "1"
    assert ebc_select("p", [], pprm) == (None, 0.0)
    only = Candidate("7", 0.6, ("s",))
    assert ebc_select("p", [only], pprm, alpha=0.5) == (only, pytest.approx(0.3))
    none = [Candidate(None, 0.1, ("a",)), Candidate(None, 0.2, ("a", "b"))]
    assert ebc_select("p", none, pprm, alpha=1.0)[0] is none[1]


# ---------------------------------------------------------------------------------------------------
# EBC as the search's answer judge (mcts.answers: choose_answer "ebc"; treesearch.loaders.load_judge; CLI)


def test_choose_answer_ebc_asks_the_judge_and_needs_one():
    from mcts.answers import ANSWER_SELECTIONS, Candidate, choose_answer
    from mcts.config import SearchConfig
    from prm.ebc import EBCJudge

    judge = EBCJudge(FakePPRM(), alpha=1.0)
    cands = [Candidate("1", 0.9, ("a",)), Candidate("2", 0.2, ("a", "b", "c")), Candidate("3", 0.5, ("a", "b"))]
    best, quality = choose_answer(cands, "ebc", problem="p", judge=judge)
    assert best.answer == "2" and quality == pytest.approx(1.0)
    assert judge.pprm.calls[-1][0] == "p"
    assert choose_answer(cands, "max_value", problem="p", judge=judge)[0].answer == "1"  # other rules ignore it
    assert choose_answer([], "ebc", problem="p", judge=judge) == (None, 0.0)
    with pytest.raises(ValueError, match="--pprm"):
        choose_answer(cands, "ebc")  # no judge
    with pytest.raises(ValueError, match="--pprm"):
        choose_answer(cands, "ebc", judge=judge)  # no problem text
    assert "ebc" in ANSWER_SELECTIONS and SearchConfig(answer_selection="ebc").selection == "ebc"
    with pytest.raises(ValueError, match="alpha"):
        EBCJudge(FakePPRM(), alpha=2.0)


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory):
    """The quick toy PRM and PPRM (seconds to build), in a cache of this module's own."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from prm.toy import ensure_toy_pprm, ensure_toy_prm

    root = tmp_path_factory.mktemp("cache")
    return ensure_toy_prm(root, quick=True, progress=False), ensure_toy_pprm(root, quick=True, progress=False)


def test_load_judge_ranks_real_candidates(quick_models, monkeypatch):
    from mcts.answers import Candidate, choose_answer
    from mcts.envs.arith import solution_steps
    from prm import toy
    from prm.ebc import EBCJudge
    from prm.model import PRM
    from treesearch.loaders import load_judge, load_scorer

    prm_dir, pprm_dir = quick_models
    judge = load_judge(str(pprm_dir), alpha=0.25, device="cpu")
    assert isinstance(judge, EBCJudge) and judge.alpha == 0.25
    good = tuple(s + "\n" for s in solution_steps("1 + 2 * 3"))
    cands = [Candidate("7", 0.8, good), Candidate("9", 0.3, ("1 + 2 = 3, so 3 * 3\n", "3 * 3 = 9, so 9\n",
                                                             "The answer is \\boxed{9}.\n"))]
    best, quality = choose_answer(cands, "ebc", problem="1 + 2 * 3", judge=judge)
    assert best in cands and 0.0 <= quality <= 1.0
    # 'tiny' names the toy world's models, built on first use (here: the quick ones)
    monkeypatch.setattr(toy, "ensure_toy_prm", lambda *a, **k: prm_dir)
    monkeypatch.setattr(toy, "ensure_toy_pprm", lambda *a, **k: pprm_dir)
    assert load_judge("tiny", device="cpu").pprm.config.mode == "pairwise"
    assert isinstance(load_scorer("tiny", device="cpu"), PRM)
    with pytest.raises(ValueError, match="--pprm"):
        load_judge(str(prm_dir))  # a PRM folder is no PPRM


def test_search_cli_checks_ebc_flags(tmp_path, capsys):
    from treesearch.cli import main

    problems = tmp_path / "p.jsonl"
    problems.write_text('{"problem": "1 + 2", "answer": 3}\n', encoding="utf-8")
    out = tmp_path / "r.jsonl"
    base = ["--problem-file", str(problems), "--out", str(out), "--model", "scripted"]
    assert main(base + ["--answer-selection", "ebc"]) == 2
    assert "--pprm" in capsys.readouterr().err
    assert main(base + ["--pprm", str(tmp_path)]) == 2
    assert "--answer-selection ebc" in capsys.readouterr().err
    assert main(base + ["--answer-selection", "ebc", "--pprm", "tiny", "--ebc-alpha", "2"]) == 2
    assert "--ebc-alpha" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("algorithm", ["mcts_star", "best_of_n"])
def test_search_cli_answers_with_ebc(quick_models, tmp_path, algorithm):
    """--answer-selection ebc end to end: the tree search and a sampling baseline hand their
    finished candidates and the problem to the PPRM judge."""
    import json

    from treesearch.cli import main

    prm_dir, pprm_dir = quick_models
    problems = tmp_path / "p.jsonl"
    problems.write_text('{"problem": "2 + 3 * 4", "answer": "14"}\n{"problem": "(7 - 2) * 3", "answer": "15"}\n')
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(problems), "--model", "scripted", "--prm", str(prm_dir), "--pprm",
                 str(pprm_dir), "--answer-selection", "ebc", "--algorithm", algorithm, "--simulations", "6",
                 "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["answer"] is not None and r["num_candidates"] >= 1 for r in records)
