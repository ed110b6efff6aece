"""The self-training loops by name, and the driver that runs one (`selftrain run`).

    build_base     stage base/ of iteration 0: the starting policy (weak, tiny or a folder) and PRM
    LOOPS[name]    a `Loop`: its iteration (search, harvest, train, hand on) and, where the loop
                   searches its own way, the held-out search of its evaluation
    execute(cfg)   runs or resumes a whole run folder; returns the metrics of iterations 0..K
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from mcts.envs.tiny_models import FORMAT_VERSION, build_toy_policy, default_cache_dir, ensure_toy_policy
from mcts.envs.toy_config import WEAK_BASE_CONFIG
from mcts.problems import Problem
from selftrain import alphallm, llama_berry, rest_em, rest_mcts
from selftrain.config import RunConfig
from mcts.files import write_json_atomic
from prm.toy import ensure_toy_prm
from prm.train import load_model_for, save_atomic
from selftrain.run import RunContext, check_models

__all__ = ["LOOPS", "Loop", "build_base", "build_weak_policy", "execute", "weak_policy_dir"]


@dataclasses.dataclass(frozen=True)
class Loop:
    """One self-training loop."""

    iteration: Callable[[RunContext, int], None]  # iteration k: its stages, from the models of k - 1
    # the held-out search of the evaluation, (ctx, k, problems, policy, prm) -> answers;
    # None: `run_algorithm` with `config.search`
    search_eval: Callable[[RunContext, int, Sequence[Problem], Path, Path], list] | None = None


LOOPS: dict[str, Loop] = {
    "rest_mcts": Loop(rest_mcts.iteration),
    "alphallm": Loop(alphallm.iteration, alphallm.search_eval),
    "llama_berry": Loop(llama_berry.iteration, llama_berry.search_eval),
    "rest_em": Loop(rest_em.iteration),
}


def weak_policy_dir(steps: int, traces: int | None, seed: int) -> Path:
    data = "fresh" if traces is None else f"{traces}t"
    return default_cache_dir().parent / f"toy-policy-weak-{data}-{steps}s-s{seed}-v{FORMAT_VERSION}"


def build_weak_policy(steps: int, traces: int | None, seed: int, *, threads: int, progress: bool) -> Path:
    """The toy policy trained for only `steps` optimizer steps of 32 solutions (the full one takes
    3000), on `traces` distinct solutions or (None) a fresh one every time: deliberately weak (it
    writes the format but has learnt few arithmetic facts), cached beside the full toy policy
    (training is deterministic under its seed and threads)."""
    out = weak_policy_dir(steps, traces, seed)
    if not out.exists():
        config = dataclasses.replace(WEAK_BASE_CONFIG, steps=steps,
                                     warmup_steps=min(WEAK_BASE_CONFIG.warmup_steps, steps // 4),
                                     distinct_traces=traces, seed=seed, eval_per_ops=0, num_threads=threads)
        build_toy_policy(out, config, progress=progress)
    return out


def build_base(ctx: RunContext) -> dict:
    """Stage base/ of iteration 0: the starting policy and PRM."""

    def work(folder: Path) -> dict:
        cfg = ctx.config
        if cfg.policy == "weak":
            policy = build_weak_policy(cfg.weak_steps, cfg.weak_traces, cfg.seed, threads=cfg.threads,
                                       progress=ctx.progress)
        elif cfg.policy == "tiny":
            policy = ensure_toy_policy(progress=ctx.progress)
        else:
            check_models(cfg)  # checked when the run started; the folder may have gone since
            policy = Path(cfg.policy)
        if cfg.prm == "fresh":
            model = load_model_for("prm", policy, seed=cfg.seed)
            prm = save_atomic(folder / "prm", lambda tmp: model.save_pretrained(tmp), overwrite=True)
        elif cfg.prm == "tiny":
            prm = ensure_toy_prm(progress=ctx.progress)
        else:
            check_models(cfg)
            prm = Path(cfg.prm)
        return {"policy": str(Path(policy).resolve()), "prm": str(Path(prm).resolve())}

    return ctx.stage(0, "base", work)


def execute(config: RunConfig, *, force: bool = False, progress: bool = True,
            on_iteration: Callable[[dict], None] | None = None) -> list[dict]:
    """Runs (or resumes) a whole run; returns the metrics of iterations 0..K."""
    ctx = RunContext(config, force=force, progress=progress)
    loop = LOOPS[config.algorithm]
    import torch

    torch.set_num_threads(config.threads)
    search_eval = loop.search_eval
    evaluate = lambda k: ctx.evaluate(k, search_eval and (lambda *a, k=k: search_eval(ctx, k, *a)))  # noqa: E731
    try:
        build_base(ctx)
        rows = [evaluate(0)]
        if on_iteration:
            on_iteration(rows[-1])
        for k in range(1, config.iterations + 1):
            loop.iteration(ctx, k)
            rows.append(evaluate(k))
            if on_iteration:
                on_iteration(rows[-1])
    finally:
        ctx.close()
    write_json_atomic(ctx.folder / "summary.json", rows)
    return rows
