"""The toy PRM's build configurations and the seeds its figures rest on (`prm.toy` builds them).

    ToyBuild                       the data, model and training of a toy PRM or PPRM build
    FULL_BUILD, QUICK_BUILD        the shipped PRM's build and the tests' seconds-long one
    STAGE1_BUILD                   the build FULL_BUILD continues from (its `base`)
    FULL_PPRM_BUILD, QUICK_PPRM_BUILD
    EVAL_SEED, POLICY_EVAL_SEED    the builds' held-out problems
    DESIGN_SEED, FAILURE_SEED      the problems the design was chosen on, which no benchmark reports on
    check_report_seed
    check_base_folder              whether a folder holds a given build (the base a second stage continues)

The shipped PRM's second stage (FULL_BUILD, format 7 of prm.toy; format 8 is the same build on
today's shipped policy, whose traces it trains on, see the end of this docstring):

Format 7 keeps format 6 as its first stage (`STAGE1_BUILD`) and continues it (`FULL_BUILD`:
init="prm", base=STAGE1_BUILD). Where format 6 still failed, on 600 of the policy's T=1 traces (300
problems of 1-4 operations, seed FAILURE_SEED; first errors it scored above 0.5): 57 of 142 operand
copies (the reduced operation with an operand miscopied and its arithmetic right,
`3 - 6 = -3, so -3 + 6` for `3 - 7 + 6`), 41 of 125 copies of the rest of the expression, 8 of 76
arithmetic slips. The second stage trains 5000 steps at lr 1e-3 on 30000 branch traces whose slips
are operand slips (half) and copy slips (`prm.toy_traces.operand_slip`, `copy_slip`), with a rehearsal of stage 1's
kinds of data (15000 facts, 8000 one-step traces, 600 rollouts) and 2000 of the policy's own 1-4
operation traces. Its recipe was chosen among three variants, trained by a script with other seeds
before the stage was a build, by their figures on the policy's held-out traces (the build's
`eval_policy_traces`, which benchmarks/prm_heldout.py reports on, so those figures flatter it) and
on problem set 1 of benchmarks/search_quality.py (80 problems, 2 seeds; greedy 0.512), never on
problem set 2:

    variant                                     step AUC / first-error   MCTS* / best-of-16 / weighted SC-16
    format 6                                    0.955 / 0.773            0.494 / 0.463 / 0.525
    2500 steps                                  0.956 / 0.847            0.550 / 0.475 / 0.525
    5000 steps (this build's recipe)            0.964 / 0.919            0.519 / 0.494 / 0.556
    2500 steps, 8000 of the policy's traces     0.960 / 0.890            0.525 / 0.506 / 0.544

The search columns are within each other's noise (one problem is 0.6 points); 5000 steps won on
the PRM's own figures. The build itself (other seeds than the variants') measures, format 6 ->
format 7, on the policy's 1000 held-out traces (benchmarks/prm_heldout.py):

    step AUC, all / problems neither stage trained on   0.955 / -      ->  0.963 / 0.848
    step AUC at 3 / 4 operations                        0.829 / 0.609  ->  0.875 / 0.571
    first-error accuracy, all / at 3 / at 4             0.773 / 0.606 / 0.628  ->  0.909 / 0.839 / 0.905

and on the scripted held-out traces step AUC 0.987 -> 0.990, first-error accuracy 0.925 -> 0.968
(the 4-operation AUC interval is [0.44, 0.71]: 31 right steps among 1198). 60 s of data and
1837 s of training on one core, beside another build on the other. The first stage ships too
(`prm/models/toy-prm-stage1`, `prm.toy.SHIPPED_BASE`: the format-6 folder as it shipped), so `python -m
prm.toy build --ship` rebuilds the second stage from it: about 30 minutes of one core, bit for bit
(two builds from that folder gave the same files). `--base DIR` names another first stage; with
no intact first stage anywhere it is built into the cache first (about 80 minutes more).

Format 8 is FULL_BUILD unchanged, rebuilt (`build --ship`, 1068 s) when the policy it samples from
changed (`mcts.envs.toy_config.FULL_CONFIG`, ops weights 3,3,3,3,1,1): its 2000 policy traces and
its held-out ones are that policy's. The first stage is still the shipped format-6 folder, built on
the previous policy; a rebuild with no shipped first stage trains one on today's policy, which
gives other weights. On the new policy's 1000 held-out traces: step AUC 0.967 (0.962 at 3
operations, 0.892 at 4, 0.939 on problems neither stage trained on), first-error accuracy 0.862
(0.832 at 3, 0.697 at 4); scripted held-out traces 0.992 / 0.966. The new policy is right more often
at 4 operations, so the AUC there rests on more right steps (288 of 1158) than before (31 of 1198).

"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from mcts.envs.arith import ArithConfig
from mcts.envs.shipping import check_record
from mcts.options import option
from mcts.policy.training import TrainConfig

__all__ = ["DESIGN_SEED", "EVAL_SEED", "FAILURE_SEED", "FULL_BUILD", "FULL_PPRM_BUILD", "POLICY_EVAL_SEED", "QUICK_BUILD",
           "QUICK_PPRM_BUILD", "RESERVED_SEEDS", "STAGE1_BUILD", "ToyBuild", "check_base_folder", "check_report_seed"]

POLICY_EVAL_SEED = 4343  # held-out problems of the on-policy evaluation (eval_policy_traces)
EVAL_SEED = 4242  # held-out problems: the training data uses data_seed + i
# The problems the design of the full build was chosen on (the ablation table of prm.toy's docstring:
# 5-6 operation traces of the scripted policy, `python -m prm.eval ... --best-of-n 16 --problems 100
# --min-ops 5 --max-ops 6`). The table did not record its seed. prm.eval's default, 12345, is the
# seed such a run takes unless told otherwise, and it was also benchmarks/prm_best_of_n.py's test
# seed until that moved to 2027; so 12345 is reserved, and no benchmark reports on it
# (`check_report_seed`).
DESIGN_SEED = 12345
# The problems of the failure analysis that the second stage (FULL_BUILD) was designed from: 300
# problems of 1-4 operations (`toy_problems(300, FAILURE_SEED, 1, 4)`), 2 of the policy's traces each.
FAILURE_SEED = 9191
RESERVED_SEEDS = {"the toy PRM's design (the ablation table of prm.toy)": DESIGN_SEED,
                  "the failure analysis of the toy PRM's second stage (prm.toy)": FAILURE_SEED}


@dataclasses.dataclass(frozen=True)
class ToyBuild:
    """The data, model and training of a toy PRM or PPRM build."""

    init: str = option("policy",
        "'policy': start from the tiny policy's weights; 'prm': from a toy PRM's (a PRM build: the folder "
        "of its `base` build; a PPRM build: the toy PRM); 'scratch': a fresh model of the size below")
    base: ToyBuild | None = option(None,
        "PRM builds with init='prm': the build whose folder this one continues training (a second stage "
        "on other data); its data is part of what this build has trained on (`training_problems`)")
    problems: int = option(1500,
        "training problems rolled out whole by the scripted policy at each slip rate")
    samples: int = option(1, "traces per problem and slip rate")
    slip_rates: tuple[float, ...] = option((0.05, 0.15, 0.3),
        "base_eps of the scripted policy; one set of traces per rate")
    fact_problems: int = option(0,
        "one-operation facts: a reduction of a training problem's solution alone, `a op b`, with its "
        "canonical step or a slip (`prm.toy_traces.single_step_traces(isolate=True)`)")
    fact_negate_fraction: float = option(0.0,
        "fraction of the facts whose operands change sign (`single_step_traces(negate_fraction=...)`): "
        "more arithmetic on negative numbers than the solutions hold")
    single_problems: int = option(0,
        "one-step traces from a state of a training problem's solution: its canonical step or a slip "
        "(`prm.toy_traces.single_step_traces`)")
    branch_problems: int = option(0,
        "training problems whose canonical solution branches off at a random step into a slip or not "
        "(`prm.toy_traces.branch_traces`: a balanced first-error signal)")
    branch_wrong_fraction: float = option(0.5, "fraction of the branch traces whose branch step is a slip")
    branch_slip_rate: float = option(0.15,
        "base_eps of the scripted policy that rolls a branch trace out after its branch step")
    branch_operand_fraction: float = option(0.0,
        "fraction of the branch slips that are operand slips (`prm.toy_traces.operand_slip`: the reduced "
        "operation with an operand miscopied)")
    branch_copy_fraction: float = option(0.0,
        "fraction of the other branch slips that are copy slips (`prm.toy_traces.copy_slip`); the rest are "
        "the scripted policy's")
    branch_copy_context_fraction: float = option(0.0,
        "fraction of those copy slips that change the rest of the expression rather than the operation")
    policy_problems: int = option(0,
        "problems also rolled out by the tiny transformer policy at T=1 (its own kinds of mistakes)")
    policy_focus_problems: int = option(0,
        "more problems rolled out by the tiny policy at T=1, of `policy_focus_ops` operations only: its first "
        "errors deep in the expressions a search needs checked (copy slips at 3-4 operations)")
    policy_focus_ops: tuple[int, int] = option((3, 4), "fewest and most operations of the focused policy problems")
    policy_focus_samples: int = option(1, "traces per focused policy problem")
    wrong_fraction: float = option(0.5,
        "fraction of the fact and one-step traces whose step is a slip")
    copy_fraction: float = option(0.3,
        "fraction of those slips that are copy slips (`prm.toy_traces.copy_slip`)")
    min_ops: int = option(1, "fewest operations")
    max_ops: int = option(6, "most operations")
    max_operand: int = option(10, "largest operand")
    max_value: int | None = option(100,
        "bound on |every value a canonical solution writes| (None: unbounded)")
    extra_layers: int = option(0,
        "blocks added on top of a policy-initialised backbone, their output projections zero (so the "
        "model starts as the policy)")
    dense_weight: float = option(0.0,
        "loss weight of the per-token labels (`dense_labels`) against 1 at the step ends; 0: step ends only")
    lm_weight: float = option(0.0,
        "weight of the auxiliary next-token loss on the tokens of correct steps (read at the policy's "
        "depth through the final norm and the tied embedding; needs init='policy'); 0: none")
    pair_reading: str = option("separate",
        "PPRM builds: 'separate' (Bradley-Terry over one score per solution; from the PRM, its head is "
        "kept) or 'joint' (both solutions in one sequence): see prm.pairwise")
    pairs_per_problem: int = option(4,
        "PPRM builds: most (correct, wrong) pairs drawn per problem")
    hidden_size: int = option(192, "width of a from-scratch model")
    num_layers: int = option(4, "blocks of a from-scratch model")
    num_heads: int = option(3, "heads of a from-scratch model")
    intermediate_size: int = option(512, "MLP width of a from-scratch model")
    max_positions: int = option(1024, "context of a from-scratch model")
    train: TrainConfig = option(factory=TrainConfig, help="optimisation")
    seconds: float | None = option(None,
        "train for about this many seconds instead of the configured epochs/steps")
    eval_traces: int = option(1000,
        "held-out toy traces (scripted policy, base_eps 0.05, the build's problems) evaluated after training")
    eval_policy_traces: int = option(0,
        "held-out traces sampled (T=1) from the tiny policy on fresh 1-4 operation problems, its training "
        "range, evaluated after training (`policy_` metrics): the traces a search with that policy scores")
    data_seed: int = option(1, "seed of the training problems and rollouts")

    def __post_init__(self):
        if self.init not in ("policy", "prm", "scratch"):
            raise ValueError(f"init must be 'policy', 'prm' or 'scratch', got {self.init!r}")
        counts = (self.problems, self.fact_problems, self.single_problems, self.branch_problems,
                  self.policy_problems, self.policy_focus_problems, self.eval_traces, self.extra_layers,
                  self.eval_policy_traces)
        if min(counts) < 0 or self.samples < 1 or self.policy_focus_samples < 1:
            raise ValueError("samples and policy_focus_samples must be >= 1; problems, fact_problems, single_problems, "
                             "branch_problems, policy_problems, policy_focus_problems, eval_traces, "
                             "eval_policy_traces and extra_layers >= 0")
        if not 1 <= self.policy_focus_ops[0] <= self.policy_focus_ops[1] <= 8:
            raise ValueError(f"policy_focus_ops must be (fewest, most) within 1-8, got {self.policy_focus_ops}")
        if sum(counts[:6]) == 0:
            raise ValueError("no training data: every kind of training problem is 0")
        if not 1 <= self.min_ops <= self.max_ops <= 8:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 8, got {self.min_ops}, {self.max_ops}")
        fractions = {"wrong_fraction": self.wrong_fraction, "copy_fraction": self.copy_fraction,
                     "fact_negate_fraction": self.fact_negate_fraction,
                     "branch_wrong_fraction": self.branch_wrong_fraction, "branch_slip_rate": self.branch_slip_rate,
                     "branch_operand_fraction": self.branch_operand_fraction,
                     "branch_copy_fraction": self.branch_copy_fraction,
                     "branch_copy_context_fraction": self.branch_copy_context_fraction}
        outside = {k: v for k, v in fractions.items() if not 0 <= v <= 1}
        if outside:
            raise ValueError(f"these must be in [0, 1]: {outside}")
        if self.dense_weight < 0 or self.lm_weight < 0:
            raise ValueError(f"dense_weight and lm_weight must be >= 0, got {self.dense_weight}, {self.lm_weight}")
        if self.base is not None and self.init != "prm":
            raise ValueError("a base build is continued from its folder: it needs init='prm'")
        if self.extra_layers > 0 and self.init != "policy":
            raise ValueError("extra_layers needs init='policy' (the blocks grow on the policy's layers)")
        if self.lm_weight > 0 and self.policy_init() is None:
            raise ValueError("lm_weight needs a policy-initialised backbone: init='policy', or init='prm' with a "
                             "base build that starts from the policy (the loss reads the policy's layers)")
        if self.pair_reading not in ("joint", "separate") or self.pairs_per_problem < 1:
            raise ValueError(f"pair_reading must be 'joint' or 'separate' and pairs_per_problem >= 1, got "
                             f"{self.pair_reading!r}, {self.pairs_per_problem}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size / num_heads must be an even integer, got {self.hidden_size} / {self.num_heads}")

    def policy_init(self) -> ToyBuild | None:
        """The build of this one's chain (itself or a base) that starts from the tiny policy, if any."""
        build = self
        while build is not None and build.init == "prm":
            build = build.base
        return build if build is not None and build.init == "policy" else None

    def policy_depth(self, num_hidden_layers: int) -> int:
        """The policy's blocks in a backbone of `num_hidden_layers` grown by this build's chain."""
        start = self.policy_init()
        return num_hidden_layers - (start.extra_layers if start else 0)

    def arith(self):
        """The `ArithConfig` of the build's problems."""
        return ArithConfig(min_ops=self.min_ops, max_ops=self.max_ops, max_operand=self.max_operand,
                           max_value=self.max_value)


# Stage 1 (the shipped PRM of format 6): the tiny policy's weights, two more blocks, 16000 steps.
STAGE1_BUILD = ToyBuild(init="policy", problems=3000, fact_problems=60000, single_problems=40000, branch_problems=15000,
                      policy_problems=6000, policy_focus_problems=4000, policy_focus_samples=2, extra_layers=2,
                      dense_weight=0.3, lm_weight=1.0, eval_policy_traces=1000,
                      train=TrainConfig(epochs=10.0, max_steps=16000, batch_size=32, lr=2e-3, warmup_ratio=0.05,
                                        min_lr_ratio=0.05, seed=0, num_threads=1, device="cpu"))
# Stage 2 (format 7): 5000 more steps on the tiny policy's commonest first errors, the reduced
# operation with an operand miscopied (`19 * 9` for `19 * 4`) and copy slips, in branch traces, with
# a rehearsal of stage 1's kinds of data (facts, one-step traces, rollouts) and the policy's own
# 1-4 operation traces. This module's docstring has the figures.
FULL_BUILD = ToyBuild(init="prm", base=STAGE1_BUILD, problems=600, fact_problems=15000, single_problems=8000,
                      branch_problems=30000, branch_wrong_fraction=0.6, branch_slip_rate=0.1,
                      branch_operand_fraction=0.5, branch_copy_fraction=0.9, policy_focus_problems=2000,
                      policy_focus_ops=(1, 4), dense_weight=0.3, lm_weight=1.0, eval_policy_traces=1000, data_seed=2,
                      train=TrainConfig(epochs=10.0, max_steps=5000, batch_size=32, lr=1e-3, warmup_ratio=0.05,
                                        min_lr_ratio=0.05, seed=0, num_threads=1, device="cpu"))
QUICK_BUILD = ToyBuild(init="scratch", problems=150, slip_rates=(0.15, 0.3), max_ops=4, hidden_size=48,
                       num_layers=2, num_heads=2, intermediate_size=96, max_positions=256,
                       train=TrainConfig(epochs=1.0, batch_size=16, lr=3e-3, warmup_ratio=0.1, seed=0),
                       eval_traces=0)
FULL_PPRM_BUILD = ToyBuild(init="prm", problems=1500, samples=6, slip_rates=(0.15, 0.3), pair_reading="separate",
                           train=TrainConfig(epochs=1.0, max_steps=100, batch_size=16, lr=1e-4, warmup_ratio=0.05,
                                             min_lr_ratio=0.05, seed=0, num_threads=1, device="cpu"))
QUICK_PPRM_BUILD = dataclasses.replace(QUICK_BUILD, init="prm", problems=40, samples=6)


def check_report_seed(seed: int, what: str = "--seed") -> None:
    """Refuses a seed whose problems the toy PRM's design was chosen on: a figure reported on them
    would flatter it. The build's own held-out seeds (EVAL_SEED, POLICY_EVAL_SEED) were only ever
    evaluated on, and the training draws are held out by problem (`training_problems`)."""
    for use, reserved in RESERVED_SEEDS.items():
        if seed == reserved:
            raise ValueError(f"{what} {seed} is the seed of {use} (prm.toy.RESERVED_SEEDS); report on another seed")


RECORD_FILE = "train_info.json"  # prm.train.TRAIN_INFO: the record beside a toy PRM's weights


def _recorded_build(folder: Path) -> tuple[dict | None, list[str]]:
    """The build recorded in a toy PRM folder of any format, and what is wrong with its files."""
    try:
        info = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, [f"{folder / RECORD_FILE}: missing or not JSON"]
    if not isinstance(info, dict) or info.get("kind") != "treesearch toy prm":
        return None, [f"{folder / RECORD_FILE}: not the record of a toy PRM"]
    format_version = info.get("format_version")
    return info.get("build"), check_record(folder, RECORD_FILE, format_version, "toy prm")


def _with_defaults(recorded: dict) -> dict:
    """A recorded build with the fields that its code did not have yet at their defaults (which
    reproduce what that code did), so that an older record compares with today's config."""
    filled = dict(recorded)
    for field in dataclasses.fields(ToyBuild):
        if field.name not in filled:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            filled[field.name] = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
    if isinstance(filled.get("base"), dict):
        filled["base"] = _with_defaults(filled["base"])
    return filled


def check_base_folder(folder: str | os.PathLike, base: ToyBuild) -> list[str]:
    """What keeps a folder from being `base`'s build (empty: nothing): its files against its record
    (any format: the shipped format-6 PRM is stage 1 of format 7) and its recorded build."""
    folder = Path(folder)
    recorded, problems = _recorded_build(folder)
    if recorded is not None and json.loads(json.dumps(_with_defaults(recorded))) != json.loads(
            json.dumps(dataclasses.asdict(base))):
        problems.append(f"{folder / RECORD_FILE}: the recorded build is not the base build this build continues")
    return problems
