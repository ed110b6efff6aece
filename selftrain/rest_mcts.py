"""ReST-MCTS* self-training (ARCHITECTURE.md): search the training problems with MCTS* guided by the
PRM, harvest the verified-correct solutions and the inferred step targets from the trees, fine-tune
the policy on the solutions and the PRM on the targets, and search again with the new models.

One iteration k (stages of iter_k/, each resumable):
    search    MCTS* over every training problem with the previous policy and PRM (trees kept)
    harvest   SFT solutions, PRM targets (labels and quality values), preference pairs
    policy    SFT of the policy (selftrain.sft)
    prm       the PRM trained on the targets (BCE on labels or MSE on values: config.prm_target)
    models    the policy and PRM this iteration hands on
"""

from __future__ import annotations

from selftrain.harvest import harvest_trees, write_harvest
from selftrain.run import RunContext

__all__ = ["iteration"]


def toy_steps_sound(problem: str, steps) -> bool:
    """The toy world's step checker: every step is the canonical reduction of the expression
    before it (the remark `a op b = c` included), and the answer step states the value."""
    from mcts.envs.arith import DELIMITER, solution_steps

    return [s.rstrip(DELIMITER) for s in steps] == list(solution_steps(problem))


def step_checker(ctx: RunContext):
    """config.sft_filter 'steps': the domain's step checker (the toy world has one); 'outcome': none;
    'auto': the checker where the domain has one."""
    if ctx.config.sft_filter == "outcome" or (ctx.config.sft_filter == "auto" and not ctx.toy):
        return None
    if not ctx.toy:
        raise ValueError("sft_filter='steps' needs a step checker, and only the toy world has one")
    return toy_steps_sound


def harvest_options(ctx: RunContext) -> dict:
    """The SFT selection of the run's configuration, as `harvest_trees` options (every loop's)."""
    return {"check_steps": step_checker(ctx), "best_only": ctx.config.sft_select == "best"}


def harvest_stage(ctx: RunContext, k: int, search_stage: str = "search") -> dict:
    def work(folder):
        records = ctx.search_records(k, search_stage)
        harvest = harvest_trees([r["tree"] for r in records if r.get("tree")], ctx.golds, **harvest_options(ctx))
        write_harvest(harvest, folder, iteration=k, source=search_stage)
        return harvest.counts()

    return ctx.stage(k, "harvest", work)


def train_and_hand_on(ctx: RunContext, k: int, *, prm_kind: str = "prm") -> None:
    """The policy and PRM stages on the harvest of iterations <= k, then the models stage."""
    policy, prm = ctx.models(k - 1)
    data = ctx.harvests(k)
    ctx.sft(k, data.sft)
    ctx.train_scorer(k, "prm", prm_kind, prm, data.prm, target=ctx.config.prm_target)
    new_policy, new_prm = ctx.iter_dir(k) / "policy", ctx.iter_dir(k) / "prm"
    ctx.set_models(k, new_policy if new_policy.is_dir() else policy, new_prm if new_prm.is_dir() else prm)


def iteration(ctx: RunContext, k: int) -> None:
    policy, prm = ctx.models(k - 1)
    ctx.search(k, "search", ctx.train, policy, prm, ctx.config.search, seed=ctx.config.seed * 1000 + k)
    harvest_stage(ctx, k)
    train_and_hand_on(ctx, k)
