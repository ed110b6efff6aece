"""Smoke test of benchmarks/policy_throughput.py: its transformers path, on an untrained toy-sized Llama
saved in a temporary folder (no toy-model build, no vLLM), in about a second."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("policy_throughput", ROOT / "benchmarks" / "policy_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained model with the toy policy's tokenizer and declared settings (delimiter '\\n')."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mcts.envs.tiny_models import TOY_POLICY_DEFAULTS
    from mcts.envs.toy_tokenizer import build_char_tokenizer
    from mcts.policy.hf_policy import write_policy_defaults

    folder = tmp_path_factory.mktemp("untrained-toy")
    tokenizer = build_char_tokenizer(model_max_length=256)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_policy_defaults(folder, **TOY_POLICY_DEFAULTS)
    return folder


def test_prefixes_share_their_problem_and_grow_by_depth(bench):
    prefixes = bench.make_prefixes(5, depth=2, seed=3, quick=True)
    problems = list(dict.fromkeys(p.problem for p in prefixes))
    assert len(problems) == 5
    for problem in problems:
        depths = [p.depth for p in prefixes if p.problem == problem]
        assert depths == list(range(len(depths))) and 1 <= len(depths) <= 3
        chain = [p for p in prefixes if p.problem == problem]
        for parent, child in zip(chain, chain[1:]):  # every prefix extends its parent's steps
            assert child.steps[:-1] == parent.steps and child.steps[-1].endswith("\n")


def test_quick_transformers_row_as_json(bench, model_dir, capfd):
    # where vLLM is missing, asking for it too prints the transformers row and says so
    backends = "transformers" if bench.HAS_VLLM else "transformers,vllm"
    assert bench.main(["--quick", "--model", str(model_dir), "--backends", backends, "--max-new-tokens", "6",
                       "--problems", "3", "--depth", "1", "--width", "2", "--json"]) == 0
    out, err = capfd.readouterr()
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == 1
    row = rows[0]
    assert row["backend"] == "transformers" and row["width"] == 2 and row["rounds"] == 1
    assert row["steps"] == row["prefixes"] * 2 and 0 < row["tokens"] <= row["steps"] * 6
    assert row["tokens_per_s"] > 0 and row["steps_per_s"] > 0
    assert "tokens/s" in err and "transformers" in err  # the table goes to stderr with --json
    if not bench.HAS_VLLM:
        assert "vLLM is not installed" in err


def test_table_formats_missing_values(bench):
    row = dict(backend="vllm", prefix_cache=False, seeded=True, prefixes=4, width=2, steps=8, tokens=80,
               seconds=0.5, tokens_per_s=160.0, steps_per_s=16.0, mean_step_tokens=10.0, cached_frac=None, threads=1)
    table = bench.format_table([row]).splitlines()
    assert table[0].split()[:2] == ["backend", "prefix"] and set(table[1]) == {"-"}
    assert "off" in table[2] and "160" in table[2]


def test_unknown_backend_is_refused(bench):
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(["--backends", "transformers,tensorrt"])
