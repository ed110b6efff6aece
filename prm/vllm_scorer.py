"""Scoring on vLLM: an open reward model run as a vLLM pooling model (`--prm-backend vllm`).

The trace is encoded exactly as the transformers adapter encodes it (`prm.recipes`: the same head
and pieces, the same read positions), sent to vLLM as token ids, and read the same way; one
`LLM.encode` call per round carries every trace of the round. vLLM is imported lazily (only when a
scorer is built), as the policy backend does (`mcts.policy.vllm_policy`).

    VLLMScorerConfig                 gpu_memory_utilization (the share of the GPU this engine takes,
                                     so that it sits beside the policy's engine), dtype,
                                     enable_prefix_caching, max_model_len, trust_remote_code
    VLLMScorer.from_pretrained(folder, fmt, config)
    scorer.score(prefixes, steps) -> [P];  scorer.score_traces(prefixes) -> [P][K]
    VLLM_FORMATS                     the formats whose architecture vLLM runs as a pooling model

What vLLM runs: `qwen_prm` (vLLM has `Qwen2ForProcessRewardModel`, token classification, whose
per-token outputs are the two-class head's). The LM-head formats (math_shepherd, rlhflow,
generative) and value_head need a per-token output that vLLM's pooling runner does not give for a
causal LM's folder or for a `v_head` checkpoint; they are refused with a message naming
--prm-backend hf.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

from mcts.options import option, require
from mcts.policy.base import Prefix, Step
from mcts.policy.remote_code import check_remote_code
from prm.model import PRMLoadError
from prm.recipes import RECIPES, check_pieces, encode_trace

__all__ = ["PRM_BACKENDS", "VLLMScorer", "VLLMScorerConfig", "VLLM_FORMATS"]

PRM_BACKENDS = ("hf", "vllm")
VLLM_FORMATS = ("qwen_prm",)


@dataclasses.dataclass(frozen=True)
class VLLMScorerConfig:
    """How the vLLM engine of a reward model is built."""

    gpu_memory_utilization: float = option(0.3,
        "share of the GPU's memory this engine takes (the policy's engine takes its own share: the two "
        "must sum below 1 on one GPU)")
    dtype: str = option("auto", "weights' dtype (auto, float16, bfloat16, float32)")
    enable_prefix_caching: bool = option(True,
        "reuse the KV cache of shared prefixes between traces (where the installed vLLM supports it for "
        "pooling models)")
    max_model_len: int | None = option(None, "most tokens per trace (None: the model's)")
    system_prompt: str | None = option(None, "qwen_prm: the system prompt (None: the model card's)")
    trust_remote_code: bool = option(False, "let the folder run its own code (auto_map)")

    def __post_init__(self):
        require(0.0 < self.gpu_memory_utilization <= 1.0,
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        require(self.max_model_len is None or self.max_model_len >= 2,
                f"max_model_len must be None or >= 2, got {self.max_model_len!r}")


class VLLMScorer:
    """A reward model on a vLLM pooling engine; implements `StepScorer` (and `score_traces`)."""

    def __init__(self, llm, tokenizer, recipe, fmt: str):
        self.llm, self.tokenizer, self.recipe, self.format = llm, tokenizer, recipe, fmt

    @classmethod
    def from_pretrained(cls, path: str | Path, fmt: str, config: VLLMScorerConfig | None = None) -> "VLLMScorer":
        config = config or VLLMScorerConfig()
        folder = Path(path).expanduser()
        if fmt not in VLLM_FORMATS:
            raise ValueError(f"--prm-backend vllm runs {', '.join(VLLM_FORMATS)}; --prm-format {fmt} needs "
                             f"--prm-backend hf")
        if not folder.is_dir():
            raise PRMLoadError(f"model folder {str(folder)!r} does not exist or is not a folder")
        if fmt != "qwen_prm":  # vLLM reads qwen_prm's architecture itself, not through auto_map
            check_remote_code(folder, config.trust_remote_code, error=PRMLoadError)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True,
                                                  trust_remote_code=config.trust_remote_code)
        recipe = RECIPES[fmt](tokenizer, config.system_prompt) if fmt == "qwen_prm" else RECIPES[fmt](tokenizer)
        check_pieces(recipe)
        try:
            from vllm import LLM
            from vllm.config import PoolerConfig
        except ImportError as err:
            raise ImportError(f"--prm-backend vllm needs vLLM (pip install -e .[vllm]): {err}") from None
        options = {"max_model_len": config.max_model_len} if config.max_model_len else {}
        # ALL: every token's outputs, read at the recipe's positions (vLLM's STEP default for this
        # architecture filters on Qwen's own <extra_0> id, 151651, whatever the tokenizer says).
        llm = LLM(model=str(folder), runner="pooling", dtype=config.dtype,
                  pooler_config=PoolerConfig(tok_pooling_type="ALL"),
                  gpu_memory_utilization=config.gpu_memory_utilization,
                  enable_prefix_caching=config.enable_prefix_caching,
                  trust_remote_code=config.trust_remote_code, **options)
        return cls(llm, tokenizer, recipe, fmt)

    def _scores(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        """One `encode` call for every row; the per-token outputs read at each row's positions."""
        import torch
        from vllm import PoolingParams

        if not rows:
            return []
        outputs = self.llm.encode([{"prompt_token_ids": ids} for ids, _ in rows],
                                  PoolingParams(use_activation=False), pooling_task="token_classify",
                                  use_tqdm=False)
        out = []
        reading = self.recipe.reading
        for (_, reads), result in zip(rows, outputs):
            data = result.outputs.data.float()  # [T, C] per-token logits
            picked = data[torch.tensor(reads, dtype=torch.long)]
            values = torch.sigmoid(picked[:, 0]) if reading.kind == "sigmoid" else \
                torch.softmax(picked, dim=-1)[:, reading.index]
            out.append(values.tolist())
        return out

    def score(self, prefixes: Sequence[Prefix], steps: Sequence[Step | str]) -> list[float]:
        if len(prefixes) != len(steps):
            raise ValueError(f"got {len(prefixes)} prefixes and {len(steps)} steps")
        rows = []
        for prefix, step in zip(prefixes, steps):
            ids, reads = encode_trace(self.recipe, prefix.problem,
                                      (*prefix.steps, step.text if isinstance(step, Step) else step))
            rows.append((ids, reads[-1:]))
        return [v[0] for v in self._scores(rows)]

    def score_traces(self, prefixes: Sequence[Prefix]) -> list[list[float]]:
        return self._scores([encode_trace(self.recipe, p.problem, p.steps) for p in prefixes])

    def score_outcomes(self, prefixes: Sequence[Prefix]) -> list[float]:
        values = self.score_traces(prefixes)
        return [v[-1] if v else math.nan for v in values]
