"""The self-training loops by name, and the driver that runs one (`selftrain run`).

    LOOPS[name]    a `Loop`: its iteration (search, harvest, train, hand on) and, where the loop
                   searches its own way, the held-out search of its evaluation
    execute(cfg)   runs or resumes a whole run folder; returns the metrics of iterations 0..K
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from mcts.problems import Problem
from selftrain import alphallm, llama_berry, rest_em, rest_mcts
from selftrain.config import RunConfig
from selftrain.run import RunContext, build_base, write_json_atomic

__all__ = ["LOOPS", "Loop", "execute"]


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
