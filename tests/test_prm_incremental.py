"""Incremental PRM scoring (prm/kv_cache.py): equal to full rescoring at every depth, with bounded memory.

Random trees grow round by round as a search grows them (new steps under parents scored before),
and each round also rescores old nodes and scores nodes whose parents were never scored, at mixed
depths in one call. Every score is compared with a full reading of the same trace by the same
weights (`PRMConfig(incremental=False)`).
"""

from __future__ import annotations

import math
import os
import random
import statistics

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mcts.policy.base import Prefix, Step  # noqa: E402
from prm.kv_cache import KVCache, PieceScorer, score_pairs, supports_incremental, transformers_step  # noqa: E402
from prm.model import PRM, PRMConfig  # noqa: E402

TOLERANCE = 1e-5
MAX_DEPTH = 16


def random_step(rng: random.Random) -> str:
    a, b = rng.randint(1, 999), rng.randint(1, 99)
    op, value = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
    text = f"{a} {op} {b} = {value}, so {rng.randint(1, 9999)}"
    return text if rng.random() < 0.5 else text + "\n"  # with and without the delimiter


def grow_rounds(seed: int, problems: int = 3, rounds: int = MAX_DEPTH + 2):
    """Rounds of (prefix, step) pairs over random trees: each round adds 1-3 children under a few
    open nodes (the deepest one always, so that depth 16 is reached), rescoring some old nodes and
    scoring some nodes whose parents were never scored."""
    rng = random.Random(seed)
    texts = [f"{rng.randint(1, 99)} + {rng.randint(1, 99)} * {rng.randint(1, 9)}" for _ in range(problems)]
    nodes = {p: [()] for p in texts}  # problem -> step tuples of its nodes (() is the root)
    for _ in range(rounds):
        pairs = []
        for problem in texts:
            open_nodes = [n for n in nodes[problem] if len(n) < MAX_DEPTH]
            chosen = {max(open_nodes, key=len), *rng.sample(open_nodes, min(2, len(open_nodes)))}
            for parent in chosen:
                for _ in range(rng.randint(1, 3)):
                    step = random_step(rng)
                    pairs.append((Prefix(problem, parent), step))
                    nodes[problem].append((*parent, step))
            old = [n for n in nodes[problem] if n]
            for n in rng.sample(old, min(2, len(old))):  # rescored nodes
                pairs.append((Prefix(problem, n[:-1]), n[-1]))
            deep = max(nodes[problem], key=len)
            if len(deep) >= 3:  # an unscored branch: two new steps at once, the parent never scored
                pairs.append((Prefix(problem, (*deep[:2], random_step(rng))), Step(random_step(rng))))
        rng.shuffle(pairs)
        yield [p for p, _ in pairs], [s for _, s in pairs]


def full_twin(prm: PRM) -> PRM:
    """The same weights, reading every trace whole."""
    return prm.with_config(incremental=False)


def spread_head(prm: PRM, seed: int = 0) -> PRM:
    """The same backbone under a random head whose logits have mean 0 and std 1 over this test's
    step ends: the shipped head saturates on random steps, and a random one reads mostly the part
    that all hidden states share, so that either would hide a difference in the hidden states."""
    prefixes, steps = next(grow_rounds(seed=99, rounds=4))
    rows = [prm.encode(p.problem, (*p.steps, s.text if isinstance(s, Step) else s)) for p, s in zip(prefixes, steps)]
    with torch.inference_mode():
        hidden = torch.stack([prm.hidden_states(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0, ends[-1]]
                              for ids, ends in rows]).float()
    direction = torch.randn(hidden.shape[1], generator=torch.Generator().manual_seed(seed))
    logits = hidden @ direction
    head = torch.nn.Linear(hidden.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_((direction / logits.std())[None])
        head.bias.fill_(-(logits.mean() / logits.std()).item())
    return PRM(prm.backbone, prm.tokenizer, prm.config, head=head).eval()


def check_against_full(prm: PRM, seed: int) -> dict[int, float]:
    """Worst |incremental - full| per depth over the rounds; asserts the cache stays within budget
    and that the scores spread (saturated values would hide differences)."""
    full = full_twin(prm)
    worst: dict[int, float] = {}
    values = []
    for prefixes, steps in grow_rounds(seed):
        got, want = prm.score(prefixes, steps), full.score(prefixes, steps)
        values += want
        for prefix, a, b in zip(prefixes, got, want):
            depth = len(prefix.steps) + 1
            worst[depth] = max(worst.get(depth, 0.0), abs(a - b))
        assert prm.kv_cache.nbytes <= prm.config.cache_bytes
    assert statistics.pstdev(values) > 0.05, statistics.pstdev(values)
    return worst


@pytest.fixture(scope="module")
def toy_prm():
    from treesearch.loaders import load_scorer

    return load_scorer("tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def llama_prm(tmp_path_factory, random_llama):
    folder = tmp_path_factory.mktemp("llama")
    random_llama(1024, 2, folder)
    return PRM.from_backbone(folder, device="cpu", seed=1).eval()


@pytest.fixture(scope="module")
def qwen_prm(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mcts.envs.toy_tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(1024)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return PRM.from_backbone(folder, device="cpu", seed=2).eval()


# ---------------------------------------------------------------------------------------------------
# Equal to full rescoring


@pytest.mark.parametrize("which", ["toy_prm", "llama_prm", "qwen_prm"])
def test_scores_equal_full_rescoring_at_every_depth(which, request):
    prm = spread_head(request.getfixturevalue(which))
    assert prm.kv_cache is not None
    worst = check_against_full(prm, seed=11)
    assert sorted(worst) == list(range(1, MAX_DEPTH + 1))
    assert max(worst.values()) < TOLERANCE, worst
    stats = prm.kv_cache.stats
    assert stats.hits > 0 and stats.evictions == 0 and stats.forward_calls > 0


@pytest.mark.parametrize("budget_nodes", [0, 3, 40])
def test_tiny_byte_budgets_evict_and_scores_stay_equal(toy_prm, budget_nodes):
    per_token = 5 * 2 * 96 * 4  # the toy PRM: 5 layers, keys and values, 3 heads x 32, float32
    prm = spread_head(toy_prm).with_config(cache_bytes=budget_nodes * 25 * per_token)
    worst = check_against_full(prm, seed=5)
    assert max(worst.values()) < TOLERANCE, worst
    stats = prm.kv_cache.stats
    if budget_nodes == 0:
        assert len(prm.kv_cache) == 0 and stats.not_kept == stats.nodes_computed
    else:
        assert stats.evictions > 0 and 0 < len(prm.kv_cache)


def test_a_path_reads_each_token_once_and_rescoring_reads_none(toy_prm):
    prm = toy_prm.with_config()
    rng = random.Random(3)
    problem, steps = "12 + 30 * 2", [random_step(rng) for _ in range(MAX_DEPTH)]
    for k in range(MAX_DEPTH):  # one step per round, as a search extends a path
        prm.score([Prefix(problem, tuple(steps[:k]))], [steps[k]])
    ids, _ = prm.encode(problem, steps)
    stats = prm.kv_cache.stats
    assert stats.tokens_read == len(ids)  # the head once, each step once
    pairs = [Prefix(problem, tuple(steps[:k])) for k in range(MAX_DEPTH)]
    again = prm.score(pairs, steps)
    assert prm.kv_cache.stats.tokens_read == len(ids) and stats.hits == MAX_DEPTH
    assert again == pytest.approx(full_twin(prm).score(pairs, steps), abs=TOLERANCE)


def test_batched_equals_one_by_one(toy_prm):
    together, alone = toy_prm.with_config(), toy_prm.with_config(batch_size=1)
    for prefixes, steps in grow_rounds(seed=8, rounds=6):
        assert together.score(prefixes, steps) == pytest.approx(alone.score(prefixes, steps), abs=TOLERANCE)
    assert alone.kv_cache.stats.forward_calls > together.kv_cache.stats.forward_calls


def test_traces_past_max_length_fall_back_to_the_truncated_full_reading(toy_prm):
    prm = toy_prm.with_config(max_length=120)
    full = full_twin(prm)
    rng = random.Random(4)
    problem, steps = "7 * 6", [random_step(rng) for _ in range(12)]
    prefixes = [Prefix(problem, tuple(steps[:k])) for k in range(12)]
    got, want = prm.score(prefixes, steps), full.score(prefixes, steps)
    assert got == pytest.approx(want, abs=TOLERANCE) and not any(math.isnan(v) for v in got)
    long = [k for k in range(12) if len(prm.encode(problem, steps[:k + 1])[0]) > 120]
    assert 0 < len(long) < 12  # both kinds occur
    stats = prm.kv_cache.stats
    assert stats.nodes_computed == 12 - len(long) + 1  # + the head; long ones are read whole
    assert stats.whole_reads == len(long)


def test_changed_weights_empty_the_cache(llama_prm):
    prm = llama_prm.with_config()
    prefixes, steps = next(grow_rounds(seed=2, rounds=1))
    before = prm.score(prefixes, steps)
    assert len(prm.kv_cache) > 0
    saved = prm.backbone.layers[0].mlp.up_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            prm.backbone.layers[0].mlp.up_proj.weight.mul_(3.0)  # in place, as an optimizer step
        after = prm.score(prefixes, steps)
        assert after == pytest.approx(full_twin(prm).score(prefixes, steps), abs=TOLERANCE)
        assert after != pytest.approx(before, abs=1e-3)
    finally:
        with torch.no_grad():
            prm.backbone.layers[0].mlp.up_proj.weight.copy_(saved)


def test_incremental_off_or_impossible_reads_whole(tmp_path, toy_prm):
    assert toy_prm.with_config(incremental=False).kv_cache is None
    from transformers import Qwen2Config, Qwen2Model

    windowed = Qwen2Model(Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, use_sliding_window=True,
                                      sliding_window=8, max_window_layers=0))
    assert not supports_incremental(windowed)  # a sliding window drops old keys: no piece-by-piece reading
    assert supports_incremental(toy_prm.backbone)
    prm = PRM(windowed, toy_prm.tokenizer, PRMConfig()).eval()
    assert prm.kv_cache is None and 0 <= prm.score([Prefix("1 + 2")], ["1 + 2 = 3, so 3"])[0] <= 1


def test_config_and_piece_checks(toy_prm):
    with pytest.raises(ValueError, match="cache_bytes"):
        PRMConfig(cache_bytes=-1)
    with pytest.raises(ValueError, match="incremental"):
        PRMConfig(incremental="yes")
    cache = KVCache(transformers_step(toy_prm.backbone), 1 << 20)
    with pytest.raises(ValueError, match="read offset 5"):
        cache.outputs([[([1, 2, 3], None), ([4, 5], 5)]])
    with pytest.raises(ValueError, match="no piece to read"):
        cache.outputs([[([1, 2, 3], None)]])
    with pytest.raises(ValueError, match="max_bytes"):
        KVCache(transformers_step(toy_prm.backbone), -1)


# ---------------------------------------------------------------------------------------------------
# The generic side: any model and read, as the adapters use it


class LogitScorer:
    """A PieceScorer over an LM's logits: P(token 'y') at each step's last token, a stand-in for the
    adapters' `+`/`-` readings."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.yes = tokenizer.convert_tokens_to_ids("y")

    def head_ids(self, problem):
        return self.tokenizer(problem + "\n")["input_ids"]  # BOS + the problem line

    def piece_ids(self, step, index):
        return self.tokenizer(f"[{index}] {step}\n", add_special_tokens=False)["input_ids"], -1

    def read(self, outputs):
        return torch.softmax(outputs.float(), dim=-1)[:, self.yes].tolist()


def test_any_model_call_and_read_through_score_pairs(random_llama):
    model, tok = random_llama(1024, 2)
    model.eval()
    scorer = LogitScorer(tok)
    assert isinstance(scorer, PieceScorer)
    cache = KVCache(transformers_step(model, lambda out: out.logits), 1 << 24, batch_size=4)
    for prefixes, steps in grow_rounds(seed=9, problems=2, rounds=8):
        with torch.inference_mode():
            got = score_pairs(cache, scorer, prefixes, steps)
            want = []
            for prefix, step in zip(prefixes, steps):  # the recipe: the whole string at once
                texts = (*prefix.steps, step.text if isinstance(step, Step) else step)
                ids = scorer.head_ids(prefix.problem) + [
                    t for k, s in enumerate(texts) for t in scorer.piece_ids(s, k)[0]]
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
                want.append(torch.softmax(logits.float(), -1)[scorer.yes].item())
        assert got == pytest.approx(want, abs=TOLERANCE)
    assert cache.stats.hits > 0
