"""Policies and scorers by name: the one place that turns `--model` and `--prm` into objects.

    load_proposer(model, backend=...)   'scripted', 'tiny' or a local model folder, on transformers
                                        ('hf') or vLLM
    load_scorer(prm, prm_format=...)    'oracle', 'tiny' or a local reward-model folder: this project's
                                        own PRM or an open one (prm.adapters), auto-detected or named
    load_judge(pprm, alpha=...)         the answer judge of `--answer-selection ebc`: Enhanced Borda
                                        Count with a pairwise PPRM ('tiny' or a folder)
    check_toy(problems, what)           the toy world's models know only arithmetic expressions

This module sits at the edge, above `prm`: it alone (with the rest of `treesearch`) may name every
model family. The model imports are inside the functions on purpose: a run of the scripted policy
and the oracle never imports torch, and a bad flag is refused before any heavy import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from mcts.envs.arith import first_non_toy
from mcts.envs.arith_steps import gold_int
from mcts.problems import Problem, RecordError
from mcts.answers import AnswerJudge
from mcts.policy.base import StepProposer, StepScorer

__all__ = ["POLICY_BACKENDS", "PRM_BACKENDS", "PRM_FORMATS", "PRM_FORMAT_CHOICES", "check_toy", "check_toy_gold", "load_judge", "load_proposer", "load_scorer"]


def check_toy(problems: Sequence[str], what: str) -> None:
    """Raises ValueError unless every text is a toy-world arithmetic expression (`what` names the
    model that needs one, e.g. '--prm oracle')."""
    text = first_non_toy(problems)
    if text is not None:
        raise ValueError(f"{what} only knows the toy arithmetic world, but {text[:60]!r} is not an "
                         f"arithmetic expression")


def check_toy_gold(problem: Problem) -> None:
    """The toy oracle's need of a problem record: a toy expression with an integer gold answer (or none). Raises
    `RecordError` on field 'answer', which `load_problems(check=...)` reports with its line (and on
    field 'problem' for a problem that is not the toy world's)."""
    try:
        check_toy([problem.problem], "--prm oracle")
    except ValueError as err:
        raise RecordError("problem", str(err)) from None
    if problem.answer is not None:
        try:
            gold_int(problem.answer)
        except ValueError:
            raise RecordError("answer", f"{problem.answer!r} is not an integer, and the toy world's oracle "
                                        f"(--prm oracle) labels steps by an integer answer") from None


POLICY_BACKENDS = ("hf", "vllm")
# --prm-format: how a reward-model folder is read (prm.adapters.PRM_FORMATS, spelled here so that the
# CLI lists them without importing torch).
PRM_FORMATS = ("treesearch", "math_shepherd", "qwen_prm", "rlhflow", "value_head", "generative")
PRM_FORMAT_CHOICES = ("auto", *PRM_FORMATS)
PRM_BACKENDS = ("hf", "vllm")  # what runs a --prm folder (prm.vllm_scorer.PRM_BACKENDS)


def load_proposer(model: str, *, backend: str = "hf", problems: Sequence[str] = (), seed: int = 0,
                  device: str | None = None, max_new_tokens: int | None = None,
                  delimiter: str | None = None, engine_options: Mapping[str, Any] | None = None,
                  trust_remote_code: bool = False, preset: str | None = None) -> StepProposer:
    """The policy named by `model`: 'scripted' (the toy world's scripted policy), 'tiny' (the toy
    world's tiny transformer, built on first use), or a local transformers model folder (its step
    delimiter: `delimiter`, else what the folder declares, else blank lines), run by `backend`:
    'hf' (transformers) or 'vllm' (mcts.policy.vllm_policy; for 'tiny', its built folder).

    `engine_options`: more `VLLMPolicyConfig` fields for --backend vllm (tensor_parallel_size,
    dtype, gpu_memory_utilization); the transformers backend refuses them. `trust_remote_code`:
    let a folder whose config names its own Python (`auto_map`) run it; without it such a folder
    is refused with an error naming --trust-remote-code. `preset`: a policy family's prompt and step
    settings (`mcts.policy.presets`: system prompt, answer instruction, delimiter, stop tokens, chat
    template); `delimiter` and `max_new_tokens`, when given, win over it.

    Raises ValueError (or OSError for an unreadable folder) with a message naming what is wrong;
    `problems` are checked to be toy-world expressions where the policy needs them.
    """
    engine_options = {k: v for k, v in (engine_options or {}).items() if v is not None}
    if engine_options and backend != "vllm":
        raise ValueError(f"{', '.join(sorted(engine_options))}: vLLM engine options need --backend vllm")
    if model == "scripted":
        from mcts.policy.toy import ScriptedPolicy

        if preset not in (None, "toy"):
            raise ValueError(f"--preset {preset}: the scripted policy writes the toy world's steps (--preset toy)")
        check_toy(problems, "--model scripted")
        return ScriptedPolicy(seed=seed)
    if backend not in POLICY_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(POLICY_BACKENDS)}")
    options = {"seed": seed, "device": device, "max_new_tokens": max_new_tokens, "delimiter": delimiter}
    options = {k: v for k, v in options.items() if v is not None}
    if preset is not None:
        from mcts.policy.presets import preset_fields

        options = preset_fields(preset, **options)
    options["trust_remote_code"] = trust_remote_code
    if backend == "vllm":
        from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig

        if model == "tiny":
            from mcts.envs.tiny_models import ensure_toy_policy

            model = str(ensure_toy_policy())
        options.pop("device", None)  # vLLM places the model itself
        return VLLMPolicy.from_pretrained(Path(model), VLLMPolicyConfig(**options, **engine_options))
    if model == "tiny":
        from mcts.envs.tiny_models import load_toy_policy

        return load_toy_policy(**options)
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    return HFPolicy.from_pretrained(Path(model), HFPolicyConfig(**options))


def load_scorer(prm: str, *, problems: Sequence[str] = (), golds: dict[str, str] | None = None,
                oracle_noise: float = 0.0, seed: int = 0, device: str | None = None,
                progress: bool = True, trust_remote_code: bool = False, prm_format: str = "auto",
                prm_backend: str = "hf", prm_engine_options: Mapping[str, Any] | None = None) -> StepScorer:
    """The scorer named by `prm`.

    Args:
        prm: 'oracle' (the toy world's oracle PRM, flipping a score with probability
            `oracle_noise`; `golds` maps problem text to gold answer), 'tiny' (the toy world's
            trained PRM, built on first use: `prm.toy.ensure_toy_prm`) or a local reward-model folder.
        progress: show the build's progress bar when a 'tiny' model is built on first use.
        prm_format: how a folder is read (`prm.adapters.PRM_FORMATS`): 'treesearch' (this
            project's own, `prm.model.PRM`), an open reward model's recipe ('math_shepherd',
            'qwen_prm', 'rlhflow', 'value_head', 'generative'), or 'auto' (what the folder's files
            say: `prm.adapters.detect_format`).
        prm_backend: 'hf' (transformers) or 'vllm' (`prm.vllm_scorer`: a vLLM pooling engine,
            `prm_engine_options` its `VLLMScorerConfig` fields, e.g. gpu_memory_utilization).

    Returns:
        A `StepScorer`; ValueError (or OSError for an unreadable folder) names what is wrong.
    """
    if prm_format not in PRM_FORMAT_CHOICES:
        raise ValueError(f"prm_format {prm_format!r} is not one of {', '.join(PRM_FORMAT_CHOICES)}")
    if prm in ("oracle", "tiny") and prm_format not in ("auto", "treesearch"):
        raise ValueError(f"--prm-format {prm_format} reads a folder; --prm {prm} is not one")
    if prm == "oracle":
        from mcts.envs.arith import OraclePRM

        check_toy(problems, "--prm oracle")
        return OraclePRM(noise=oracle_noise, seed=seed, answers=golds)
    try:
        from prm.adapters import detect_format, load_adapter
        from prm.model import PRM
    except ImportError:
        raise ValueError("a PRM folder needs prm.model (the trainable PRM), which this install lacks") from None
    if prm == "tiny":
        from prm.toy import ensure_toy_prm

        prm = str(ensure_toy_prm(progress=progress))
    folder = Path(prm)
    if prm_format == "auto" and folder.is_dir():
        prm_format = detect_format(folder)
    if prm_backend == "vllm":
        from prm.vllm_scorer import VLLMScorer, VLLMScorerConfig

        options = {k: v for k, v in (prm_engine_options or {}).items() if v is not None}
        return VLLMScorer.from_pretrained(folder, prm_format, VLLMScorerConfig(trust_remote_code=trust_remote_code,
                                                                               **options))
    if prm_backend != "hf":
        raise ValueError(f"prm_backend={prm_backend!r} is not one of {', '.join(PRM_BACKENDS)}")
    if prm_format in ("auto", "treesearch"):  # auto on a missing folder: PRM names it
        return PRM.from_pretrained(folder, device=device, trust_remote_code=trust_remote_code)
    return load_adapter(folder, prm_format, device=device, trust_remote_code=trust_remote_code)


def load_judge(pprm: str, *, alpha: float = 0.5, device: str | None = None, progress: bool = True,
               trust_remote_code: bool = False) -> AnswerJudge:
    """The answer judge of `answer_selection='ebc'`: Enhanced Borda Count (`prm.ebc.EBCJudge`) with
    the pairwise PPRM named by `pprm`: 'tiny' (the toy world's, built on first use) or a local PPRM
    folder. `alpha`: EBC's weight of the normalised Borda score against the candidates' values."""
    from prm.ebc import EBCJudge
    from prm.pairwise import PPRM

    if pprm == "tiny":
        from prm.toy import ensure_toy_pprm

        pprm = str(ensure_toy_pprm(progress=progress))
    try:
        model = PPRM.from_pretrained(Path(pprm), device=device, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"--pprm {pprm}: {err}") from None
    return EBCJudge(model, alpha=alpha)
