"""The pairwise PPRM: layout, symmetric averaging, the preference matrix, save/load, training rows."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mcts.policy.base import Prefix  # noqa: E402
from prm.model import IGNORE_INDEX, PRM, PRMConfig, PRMLoadError  # noqa: E402
from prm.pairwise import PPRM, pair_pieces, symmetric_matrix, symmetrize  # noqa: E402
from prm.rows import encode_pair_rows  # noqa: E402
from prm.train import TrainConfig, load_model_for, train_rows  # noqa: E402

PROBLEM = "2 + 3 * 4"
GOOD = ["3 * 4 = 12, so 2 + 12\n", "2 + 12 = 14, so 14\n", "The answer is \\boxed{14}.\n"]
BAD = ["3 * 4 = 13, so 2 + 13\n", "2 + 13 = 15, so 15\n", "The answer is \\boxed{15}.\n"]
OTHER = ["3 * 4 = 21, so 2 + 21\n", "The answer is \\boxed{23}.\n"]


def test_symmetrize_and_symmetric_matrix():
    assert symmetrize(0.8, 0.4) == pytest.approx(0.7)
    assert symmetrize(0.8, 0.4) + symmetrize(0.4, 0.8) == pytest.approx(1.0)
    raw = np.array([[0.0, 0.9, 0.3], [0.6, 0.0, 0.2], [0.5, 0.7, 0.0]])
    p = symmetric_matrix(raw)
    assert np.diag(p).tolist() == [0.5, 0.5, 0.5]
    assert p + p.T == pytest.approx(np.ones((3, 3)))
    assert p[0, 1] == pytest.approx((0.9 + 1 - 0.6) / 2)


def test_pair_pieces_layout():
    assert pair_pieces(["a", "b\n"], ["c"], "\n") == ["A:\n", "a\n", "b\n", "B:\n", "c\n"]


@pytest.fixture(scope="module")
def pprm(tmp_path_factory):
    from transformers import LlamaConfig, LlamaModel

    from mcts.envs.toy_tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(512)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = PPRM(LlamaModel(config), tok)
    with torch.no_grad():
        model.head.weight.mul_(8.0)
    return model.eval()


def test_pprm_reads_both_solutions_in_one_sequence(pprm):
    assert pprm.config.mode == "pairwise"
    ids = pprm.encode_pair(PROBLEM, GOOD, BAD)
    text = pprm.tokenizer.decode(ids, skip_special_tokens=True)
    assert text == PROBLEM + "\nA:\n" + "".join(GOOD) + "B:\n" + "".join(BAD)


def test_prefer_averages_both_orders(pprm):
    pairs = [(PROBLEM, GOOD, BAD), (PROBLEM, BAD, OTHER), (PROBLEM, OTHER, GOOD)]
    raw = pprm.compare(pairs + [(p, b, a) for p, a, b in pairs])
    assert all(0 <= v <= 1 for v in raw)
    assert raw[0] != pytest.approx(1 - raw[3], abs=1e-4)  # an untrained model has a position bias
    sym = pprm.prefer(pairs)
    assert sym == pytest.approx([(raw[i] + 1 - raw[3 + i]) / 2 for i in range(3)], abs=1e-6)
    swapped = pprm.prefer([(p, b, a) for p, a, b in pairs])
    assert np.array(sym) + np.array(swapped) == pytest.approx(np.ones(3), abs=1e-6)


def test_preference_probs_matrix(pprm):
    sols = [GOOD, BAD, OTHER]
    p = pprm.preference_probs(PROBLEM, sols)
    assert p.shape == (3, 3)
    assert p + p.T == pytest.approx(np.ones((3, 3)), abs=1e-6)
    assert p[0, 1] == pytest.approx(pprm.prefer([(PROBLEM, GOOD, BAD)])[0], abs=1e-5)
    assert pprm.preference_probs(PROBLEM, [GOOD]).tolist() == [[0.5]]


def test_pprm_save_load_and_mode_checks(pprm, tmp_path):
    before = pprm.prefer([(PROBLEM, GOOD, BAD)])
    pprm.save_pretrained(tmp_path / "pp")
    loaded = PPRM.from_pretrained(tmp_path / "pp", device="cpu")
    assert loaded.prefer([(PROBLEM, GOOD, BAD)]) == before
    with pytest.raises(PRMLoadError, match="PPRM"):
        PRM.from_pretrained(tmp_path / "pp")
    plain = PRM(pprm.backbone, pprm.tokenizer, PRMConfig(mode="prm"))
    plain.save_pretrained(tmp_path / "p")
    with pytest.raises(PRMLoadError, match="needs mode 'pairwise'"):
        PPRM.from_pretrained(tmp_path / "p")
    with pytest.raises(TypeError, match="does not score steps"):
        loaded.score([], [])
    assert PPRM.from_pretrained(tmp_path / "pp", device="cpu", trust_remote_code=True).prefer(
        [(PROBLEM, GOOD, BAD)]) == before
    import json

    config = json.loads((tmp_path / "pp" / "config.json").read_text())
    (tmp_path / "pp" / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(PRMLoadError, match="--trust-remote-code"):
        PPRM.from_pretrained(tmp_path / "pp", device="cpu")


def test_pair_training_rows_hold_both_orders(pprm):
    rows = encode_pair_rows(pprm, [{"problem": PROBLEM, "chosen": GOOD, "rejected": BAD}])
    assert len(rows) == 2
    for row, y in zip(rows, (1.0, 0.0)):
        labelled = [(i, v) for i, v in enumerate(row["labels"]) if v != IGNORE_INDEX]
        assert labelled == [(len(row["input_ids"]) - 1, y)]
    assert rows[0]["input_ids"] == pprm.encode_pair(PROBLEM, GOOD, BAD)
    assert rows[1]["input_ids"] == pprm.encode_pair(PROBLEM, BAD, GOOD)


# ---------------------------------------------------------------------------------------------------
# Separate reading: a Bradley-Terry PPRM over one score per solution


@pytest.fixture(scope="module")
def bt(pprm):
    import dataclasses

    model = PPRM(pprm.backbone, pprm.tokenizer, dataclasses.replace(pprm.config, pair_reading="separate"),
                 head=pprm.head)
    return model.eval()


def test_separate_reading_is_bradley_terry_without_position_bias(bt):
    s_good, s_bad, s_other = bt.solution_scores([(PROBLEM, GOOD), (PROBLEM, BAD), (PROBLEM, OTHER)])
    assert bt.encode_solution(PROBLEM, GOOD) == bt.encode(PROBLEM, GOOD)[0]  # the PRM's layout
    p = bt.compare([(PROBLEM, GOOD, BAD), (PROBLEM, BAD, GOOD)])
    assert p[0] == pytest.approx(1 / (1 + np.exp(s_bad - s_good)), abs=1e-6)
    assert p[0] + p[1] == pytest.approx(1.0, abs=1e-6)  # no position bias, by construction
    assert bt.prefer([(PROBLEM, GOOD, BAD)])[0] == pytest.approx(p[0], abs=1e-6)
    m = bt.preference_probs(PROBLEM, [GOOD, BAD, OTHER])
    assert m + m.T == pytest.approx(np.ones((3, 3)), abs=1e-6) and np.diag(m).tolist() == [0.5] * 3
    assert m[2, 0] == pytest.approx(1 / (1 + np.exp(s_good - s_other)), abs=1e-6)


def test_separate_reading_rows_train_the_score_difference(bt, pprm, tmp_path):
    rows = encode_pair_rows(bt, [{"problem": PROBLEM, "chosen": GOOD, "rejected": BAD}])
    assert len(rows) == 1 and rows[0]["input_ids"] == bt.encode_solution(PROBLEM, GOOD)
    assert rows[0]["input_ids_b"] == bt.encode_solution(PROBLEM, BAD)
    assert rows[0]["labels"][-1] == 1.0 and set(rows[0]["labels"][:-1]) == {IGNORE_INDEX}
    # a separate PPRM made from a PRM folder keeps the PRM's head: s = the PRM's logit at the last step
    prm = PRM(pprm.backbone, pprm.tokenizer, PRMConfig(mode="prm"), head=pprm.head)
    prm.save_pretrained(tmp_path / "prm")
    model = load_model_for("pprm", tmp_path / "prm", pair_reading="separate")
    assert model.config.pair_reading == "separate" and torch.equal(model.head.weight, pprm.head.weight)
    value = prm.score_outcomes([Prefix(PROBLEM, tuple(GOOD))])[0]
    assert 1 / (1 + np.exp(-model.solution_scores([(PROBLEM, GOOD)])[0])) == pytest.approx(value, abs=1e-5)
    data = [{"problem": PROBLEM, "chosen": GOOD, "rejected": b} for b in (BAD, OTHER)] * 8
    before = model.prefer([(PROBLEM, GOOD, BAD)])[0]
    config = TrainConfig(epochs=3, batch_size=4, lr=3e-3, warmup_ratio=0.0, num_threads=1, device="cpu")
    train_rows(model, encode_pair_rows(model, data), config, loss="bce", pad_id=model.pad_id, progress=False)
    assert model.prefer([(PROBLEM, GOOD, BAD)])[0] > max(before, 0.6)
    model.save_pretrained(tmp_path / "bt")
    assert PPRM.from_pretrained(tmp_path / "bt", device="cpu").separate
