"""The PRM model: encoding (pure functions, a fake tokenizer), batched scoring, save/load."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mcts.policy.base import Prefix, Step, StepScorer  # noqa: E402
from prm.model import (  # noqa: E402
    CONFIG_FILE,
    IGNORE_INDEX,
    PRM,
    PRMConfig,
    PRMLoadError,
    encode_pieces,
    normalize_step,
    tokenize_row,
)

PROBLEM = "(17 + 5) * 3 - 8"
STEPS = ("17 + 5 = 22, so 22 * 3 - 8\n", "22 * 3 = 66, so 66 - 8\n", "66 - 8 = 58, so 58\n",
         "The answer is \\boxed{58}.\n")


class WordTokenizer:
    """A fake tokenizer: one token per whitespace-separated word, plus one per newline."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def _ids(self, text: str) -> list[int]:
        out = []
        for line_no, line in enumerate(text.split("\n")):
            if line_no:
                out.append(self.vocab.setdefault("\n", len(self.vocab) + 10))
            out += [self.vocab.setdefault(w, len(self.vocab) + 10) for w in line.split()]
        return out

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [self._ids(t) for t in texts]}


# ---------------------------------------------------------------------------------------------------
# Pure encoding


def test_normalize_step_appends_the_delimiter_once():
    assert normalize_step("a = 1", "\n") == "a = 1\n"
    assert normalize_step("a = 1\n", "\n") == "a = 1\n"
    assert normalize_step("x\n", "\n\n") == "x\n\n\n"


def test_encode_pieces_records_the_last_token_of_each_piece():
    tok = WordTokenizer()
    ids, ends = encode_pieces(tok, [1], ["p q\n", "a b c\n", "d\n"])
    assert len(ids) == 1 + 3 + 4 + 2
    assert ends == [3, 7, 9]
    assert all(ids[e] == tok.vocab["\n"] for e in ends)


def test_tokenize_row_labels_only_step_ends():
    tok = WordTokenizer()
    head = [1, *tok(["problem here\n"])["input_ids"][0]]
    row = tokenize_row(tok, head, ["s1 x", "s2 y z\n", "s3"], [1, 0.25, 0], delimiter="\n")
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) == len(head) + 3 + 4 + 2
    carried = [i for i, y in enumerate(labels) if y != IGNORE_INDEX]
    assert carried == [len(head) + 2, len(head) + 6, len(head) + 8]
    assert [labels[i] for i in carried] == [1.0, 0.25, 0.0]
    assert all(ids[i] == tok.vocab["\n"] for i in carried)  # the delimiter closing each step


def test_tokenize_row_orm_labels_the_last_step_only():
    tok = WordTokenizer()
    row = tokenize_row(tok, [1], ["a\n", "b\n", "c\n"], [1, 1, 0], delimiter="\n", mode="orm")
    carried = [(i, y) for i, y in enumerate(row["labels"]) if y != IGNORE_INDEX]
    assert carried == [(len(row["labels"]) - 1, 0.0)]


def test_tokenize_row_truncates_from_the_left_and_checks_lengths():
    tok = WordTokenizer()
    row = tokenize_row(tok, [1, 2, 3], ["a b\n", "c d\n"], [1, 0], delimiter="\n", max_length=3)
    assert len(row["input_ids"]) == 3
    assert [y for y in row["labels"] if y != IGNORE_INDEX] == [0.0]  # the first step's end fell off
    with pytest.raises(ValueError, match="2 steps but 1 targets"):
        tokenize_row(tok, [1], ["a", "b"], [1], delimiter="\n")


# ---------------------------------------------------------------------------------------------------
# A random tiny model


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, random_llama):
    folder = tmp_path_factory.mktemp("backbone")
    random_llama(256, 2, folder)
    return folder


@pytest.fixture(scope="module")
def prm(backbone_dir):
    model = PRM.from_backbone(backbone_dir, device="cpu", seed=3)
    with torch.no_grad():  # a head that spreads the values, so that differences show
        model.head.weight.mul_(8.0)
    return model.eval()


def _pairs():
    prefixes, steps = [], []
    for k in range(len(STEPS)):
        prefixes.append(Prefix(PROBLEM, STEPS[:k]))
        steps.append(Step(STEPS[k]))
    prefixes += [Prefix("2 * 3", ()), Prefix("1 + 1", ("1 + 1 = 3, so 3\n",))]
    steps += [Step("2 * 3 = 6, so 6"), Step("The answer is \\boxed{3}.\n")]
    return prefixes, steps


def test_prm_is_a_step_scorer_with_values_in_unit_interval(prm):
    assert isinstance(prm, StepScorer)
    prefixes, steps = _pairs()
    values = prm.score(prefixes, steps)
    assert len(values) == len(prefixes)
    assert all(0.0 <= v <= 1.0 for v in values)
    assert len(set(round(v, 6) for v in values)) > 1
    assert prm.score([], []) == []
    with pytest.raises(ValueError, match="2 prefixes and 1 steps"):
        prm.score(prefixes[:2], steps[:1])


def test_batched_scores_equal_one_at_a_time(prm):
    prefixes, steps = _pairs()
    together = prm.score(prefixes, steps)
    alone = [prm.score([p], [s])[0] for p, s in zip(prefixes, steps)]
    assert together == pytest.approx(alone, abs=1e-5)
    small = PRM(prm.backbone, prm.tokenizer, PRMConfig(batch_size=2), head=prm.head).eval()
    assert small.score(prefixes, steps) == pytest.approx(together, abs=1e-5)


def test_score_traces_gives_every_step_value_in_one_pass(prm):
    values = prm.score_traces([Prefix(PROBLEM, STEPS), Prefix("2 * 3", ("2 * 3 = 6, so 6\n",))])
    assert [len(v) for v in values] == [len(STEPS), 1]
    one_by_one = prm.score([Prefix(PROBLEM, STEPS[:k]) for k in range(len(STEPS))], list(STEPS))
    assert values[0] == pytest.approx(one_by_one, abs=1e-5)
    assert prm.score_outcomes([Prefix(PROBLEM, STEPS)])[0] == pytest.approx(values[0][-1], abs=1e-6)
    # a step without its delimiter reads as with it
    assert prm.score([Prefix(PROBLEM)], ["17 + 5 = 22, so 22 * 3 - 8"]) == pytest.approx(values[0][:1], abs=1e-6)


def test_reads_the_policy_prompt_layout(prm):
    from mcts.policy.hf_policy import plain_prompt

    prefix = Prefix(PROBLEM, STEPS[:2])
    ids, ends = prm.encode(prefix.problem, prefix.steps)
    assert ids == prm.tokenizer(plain_prompt(prefix, "\n"))["input_ids"]  # <bos> + the same characters
    assert ends[-1] == len(ids) - 1


def test_save_load_round_trip_gives_identical_scores(prm, tmp_path):
    prefixes, steps = _pairs()
    before = prm.score(prefixes, steps)
    prm.save_pretrained(tmp_path / "saved")
    record = json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())
    assert record["format_version"] == 1 and record["mode"] == "prm" and record["delimiter"] == "\n"
    loaded = PRM.from_pretrained(tmp_path / "saved", device="cpu")
    assert loaded.score(prefixes, steps) == before


def test_trust_remote_code_is_a_keyword_never_read_from_the_folder(prm, tmp_path, backbone_dir):
    prm.save_pretrained(tmp_path / "t")
    record = json.loads((tmp_path / "t" / CONFIG_FILE).read_text())
    (tmp_path / "t" / CONFIG_FILE).write_text(json.dumps({**record, "trust_remote_code": True}))  # ignored
    assert PRM.from_pretrained(tmp_path / "t", device="cpu", trust_remote_code=True).score(*_pairs()) == \
        PRM.from_pretrained(tmp_path / "t", device="cpu").score(*_pairs())
    assert PRM.from_backbone(backbone_dir, device="cpu", trust_remote_code=True).config.mode == "prm"
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    (tmp_path / "t" / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(PRMLoadError, match="--trust-remote-code"):
        PRM.from_pretrained(tmp_path / "t", device="cpu")


def test_load_errors_name_the_folder(prm, tmp_path, backbone_dir):
    with pytest.raises(PRMLoadError, match="nowhere"):
        PRM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PRMLoadError, match=f"{CONFIG_FILE} is missing"):
        PRM.from_pretrained(backbone_dir)
    prm.save_pretrained(tmp_path / "v")
    record = json.loads((tmp_path / "v" / CONFIG_FILE).read_text())
    (tmp_path / "v" / CONFIG_FILE).write_text(json.dumps({**record, "format_version": 99}))
    with pytest.raises(PRMLoadError, match="format_version 99"):
        PRM.from_pretrained(tmp_path / "v")
    (tmp_path / "v" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(PRMLoadError, match=str(tmp_path / "v")):
        PRM.from_pretrained(tmp_path / "v")
    (tmp_path / "v" / CONFIG_FILE).write_text(json.dumps({**record, "mode": "pairwise"}))
    with pytest.raises(PRMLoadError, match="PPRM"):
        PRM.from_pretrained(tmp_path / "v")
    (tmp_path / "v" / CONFIG_FILE).write_text(json.dumps(record))
    (tmp_path / "v" / "head.safetensors").write_bytes(b"garbage")
    with pytest.raises(PRMLoadError, match="cannot load the PRM"):
        PRM.from_pretrained(tmp_path / "v")


def test_search_load_scorer_reads_a_prm_folder(prm, tmp_path):
    from treesearch.loaders import load_scorer

    prm.save_pretrained(tmp_path / "p")
    scorer = load_scorer(str(tmp_path / "p"), device="cpu")
    prefixes, steps = _pairs()
    assert scorer.score(prefixes, steps) == prm.score(prefixes, steps)


def test_long_sequences_lose_their_start(prm):
    short = PRM(prm.backbone, prm.tokenizer, PRMConfig(max_length=40), head=prm.head).eval()
    values = short.score_traces([Prefix(PROBLEM, STEPS)])[0]
    assert math.isnan(values[0]) and not math.isnan(values[-1])
    assert 0 <= short.score([Prefix(PROBLEM, STEPS[:3])], [STEPS[3]])[0] <= 1


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        PRMConfig(mode="value")
    with pytest.raises(ValueError, match="delimiter"):
        PRMConfig(delimiter="")
    with pytest.raises(ValueError, match="batch_size"):
        PRMConfig(batch_size=0)
