"""The MATH path end to end on tiny models of the real families, built here (no downloads).

A tiny Qwen2-architecture chat policy (a chat template with a system prompt, steps cut at "\\n\\n")
is trained for a few seconds to answer the first MATH-500 problems, as its chat template renders
them, with two steps: "Let us compute.\\n\\n" and "The answer is $\\boxed{9}$." (MATH-500's fourth
gold answer is 9: one right, three wrong). Then `python -m mcts.search --problem-file
../shared/data/math500.jsonl --limit 4 --model POLICY --prm PRM --prm-format F` runs as a
subprocess for each adapter format (tiny random reward models of tests/test_prm_adapters.py) and
the results and trees are checked: the answers are the memorised ones (so the prompt was the chat
template's: under another prompt the policy writes something else), the steps were cut at
"\\n\\n", the answers were extracted and graded against the gold, and the tokens were counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcts.policy.base import Prefix
from test_prm_adapters import BUILDERS, QWEN_POLICY_TEMPLATE, qwen_tokenizer, tiny_config

ROOT = Path(__file__).resolve().parents[1]
MATH500 = ROOT.parent / "shared" / "data" / "math500.jsonl"
RESPONSE = ["Let us compute.\n\n", "The answer is $\\boxed{9}$."]
LIMIT = 4

pytestmark = pytest.mark.skipif(not MATH500.is_file(), reason=f"{MATH500} is missing (CI has ../shared beside the clone)")


def _problems() -> list[dict]:
    with MATH500.open(encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(LIMIT), f)]


@pytest.fixture(scope="module")
def policy_folder(tmp_path_factory) -> Path:
    """The tiny Qwen2 chat policy, trained on the prompts its own HFPolicy renders."""
    from transformers import Qwen2ForCausalLM

    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    folder = tmp_path_factory.mktemp("qwen-policy")
    tok = qwen_tokenizer(QWEN_POLICY_TEMPLATE)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_config("qwen2", tok, max_position_embeddings=1024, hidden_size=64,
                                         intermediate_size=128))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    policy = HFPolicy.from_pretrained(folder, HFPolicyConfig(device="cpu"))
    assert policy.delimiter == "\n\n"
    prompts = [Prefix(r["problem"]) for r in _problems()]
    heads = policy.prompt_ids(prompts)
    assert all(policy.prompt_fn(p).startswith("<|im_start|>system\nPlease reason step by step") for p in prompts)
    answer = tok("".join(RESPONSE), add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    rows = [h + answer for h in heads]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (h, r) in enumerate(zip(heads, rows)):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        labels[i, len(h):len(r)] = torch.tensor(answer)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(120):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the tiny policy did not learn its answer (loss {loss.item():.3f})"
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prm_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("math-prms")
    return {fmt: build(root / fmt) for fmt, build in BUILDERS.items()}


def run_search(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mcts.search", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_math500_search_with_each_adapter(policy_folder, prm_folders, fmt, tmp_path):
    out, trees = tmp_path / "results.jsonl", tmp_path / "trees"
    done = run_search("--problem-file", "../shared/data/math500.jsonl", "--limit", str(LIMIT),
                      "--model", str(policy_folder), "--prm", str(prm_folders[fmt]), "--prm-format", fmt,
                      "--algorithm", "mcts_star", "--simulations", "3", "--width", "2", "--max-new-tokens", "24",
                      "--temperature", "0.7", "--batch", "4", "--device", "cpu", "--out", str(out),
                      "--trees-out", str(trees), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    golds = [r["answer"] for r in _problems()]
    assert [r["gold"] for r in records] == golds
    assert [r["answer"] for r in records] == ["9"] * LIMIT  # extracted from \boxed{} of the memorised step
    assert [r["correct"] for r in records] == [g == "9" for g in golds]  # graded: only the fourth is right
    for r in records:
        assert r["trace"] == "".join(RESPONSE)
        assert r["tokens"] >= len(RESPONSE) and r["scorer_calls"] >= 1 and r["policy_calls"] >= 2
    texts = [n["step"] for f in sorted(trees.iterdir()) for n in json.loads(f.read_text())["nodes"][1:]]
    assert texts and all(t in RESPONSE for t in texts)  # every step cut at "\n\n", or the finished answer
    assert "accuracy" in done.stdout and "0.250" in done.stdout


def test_a_folder_of_unknown_format_is_one_line_naming_the_flag(policy_folder, prm_folders, tmp_path):
    done = run_search("--problem-file", "../shared/data/math500.jsonl", "--limit", "1", "--model", str(policy_folder),
                      "--prm", str(prm_folders["rlhflow"]), "--simulations", "1", "--device", "cpu",
                      "--out", str(tmp_path / "r.jsonl"), cwd=ROOT)
    assert done.returncode == 2
    assert "--prm-format" in done.stderr and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr
