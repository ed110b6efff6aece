"""The configuration of a self-training run: one dataclass tree, read from YAML and flags, checked
before any work starts.

    RunConfig                      the run (loop, iterations, problems, models, where it runs)
      .search   SearchConfig       the tree search of the training problems (mcts.search)
      .sft      SFTConfig          policy fine-tuning (selftrain.sft)
      .prm_train TrainConfig       PRM / PPRM / critic training (prm.train)
      .alphallm AlphaLLMConfig     the AlphaLLM loop's own knobs (selftrain.alphallm)
      .llama_berry BerryConfig     the LLaMA-Berry loop's own knobs (selftrain.llama_berry)

`load_config(path, overrides)` reads a YAML file (sections are nested mappings) and `key=value`
overrides (`search.simulations=32`); an unknown key, a value of the wrong type or a value the
dataclass refuses raises ConfigError naming the file, the line and the key.

The YAML reader is bounded: a file over MAX_YAML_BYTES, or one whose anchors and aliases expand to
more than MAX_YAML_NODES values (an "alias bomb": each alias stands for a whole copy of what it
names), or that refers to itself, is refused with one line naming the file, before anything is
built from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from mcts.config import SearchConfig
from prm.train import TrainConfig
from selftrain.sft import SFTConfig
from mcts.options import option, require

__all__ = ["ALGORITHMS", "AlphaLLMConfig", "BerryConfig", "ConfigError", "RunConfig", "config_fingerprint",
           "fingerprint_of", "load_config", "to_dict"]

ALGORITHMS = ("rest_mcts", "alphallm", "llama_berry", "rest_em")
MAX_YAML_BYTES = 1 << 20  # a config file is a few hundred bytes
MAX_YAML_NODES = 100_000  # values of the YAML document once every alias is expanded



class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, line and key."""


@dataclasses.dataclass(frozen=True)
class AlphaLLMConfig:
    """The AlphaLLM loop's own settings (selftrain.alphallm)."""

    imagined_problems: int = option(64,
        "problems synthesised per iteration (seeds: the training problems, in turn)")
    consistency_samples: int = option(8,
        "answers sampled per synthesised problem to check that they agree")
    min_agreement: float = option(0.5,
        "keep a synthesised problem when this share of its sampled answers agree (the majority "
        "answer becomes its pseudo-gold)")
    imagine_max_steps: int = option(4,
        "chat models: most steps of a synthesised problem's text")
    min_width: int = option(2,
        "eta-MCTS: fewest children of a node (the probe sampled before its importance is known)")
    max_width: int = option(6, "eta-MCTS: most children of a node")
    width_scale: float = option(10.0,
        "eta-MCTS: children = floor(width_scale * I(s)), clipped to [min_width, max_width], with "
        "I(s) = max over the probed children |v(child) - v(s)|")
    merge_threshold: float = option(0.05,
        "eta-MCTS: siblings closer than this normalised edit distance are merged (never two that "
        "state different answers); 0 merges nothing. Toy steps that differ by one slipped digit are "
        "about 0.07 apart, so keep it below that there")
    rollout_depth: int = option(2,
        "eta-MCTS: fast greedy rollout steps from the best new child (0: none)")
    value_weight: float = option(0.4, "node value: weight of the value function")
    prm_weight: float = option(0.4, "node value: weight of the PRM")
    orm_weight: float = option(0.2, "node value: weight of the ORM (finished steps)")

    def __post_init__(self):
        require(self.imagined_problems >= 0, f"imagined_problems must be >= 0, got {self.imagined_problems}")
        require(self.consistency_samples >= 1, f"consistency_samples must be >= 1, got {self.consistency_samples}")
        require(0 < self.min_agreement <= 1, f"min_agreement must be in (0, 1], got {self.min_agreement}")
        require(self.imagine_max_steps >= 1, f"imagine_max_steps must be >= 1, got {self.imagine_max_steps}")
        require(1 <= self.min_width <= self.max_width,
             f"need 1 <= min_width <= max_width, got min_width={self.min_width}, max_width={self.max_width}")
        require(self.width_scale >= 0, f"width_scale must be >= 0, got {self.width_scale}")
        require(0 <= self.merge_threshold < 1, f"merge_threshold must be in [0, 1), got {self.merge_threshold}")
        require(self.rollout_depth >= 0, f"rollout_depth must be >= 0, got {self.rollout_depth}")
        weights = (self.value_weight, self.prm_weight, self.orm_weight)
        require(min(weights) >= 0 and self.prm_weight + self.value_weight > 0,
             f"critic weights must be >= 0 with value_weight + prm_weight > 0 (an unfinished step needs a "
             f"critic), got value_weight={self.value_weight}, prm_weight={self.prm_weight}, "
             f"orm_weight={self.orm_weight}")


@dataclasses.dataclass(frozen=True)
class BerryConfig:
    """The LLaMA-Berry loop's own settings (selftrain.llama_berry)."""

    rollouts: int = option(8,
        "SR-MCTS: selections per problem after the root's expansion, each a critique and rewrite")
    initial_solutions: int = option(2,
        "SR-MCTS: sampled solutions under the root (beside the dummy \"I don't know\")")
    rewrites: int = option(1,
        "SR-MCTS: rewritten solutions per expansion (the children of a refined node)")
    c: float = option(1.0, "SR-MCTS: UCT exploration constant")
    critique_threshold: float = option(0.5,
        "toy critique: the first step the PRM scores below this is the error (else the lowest)")
    solution_value: str = option("last",
        "a solution's value from its PRM step values: last (the PRM's reading of the whole "
        "solution), min, mean or prod")
    alpha: float = option(0.5, "EBC: weight of the Borda score against local Q")
    ebc_candidates: int = option(8,
        "EBC: the distinct answered solutions with the highest Q that the PPRM compares (N(N-1) readings)")
    best_solutions: int = option(4,
        "SFT: the verified-correct solutions of a problem with the highest Q that the policy learns")

    def __post_init__(self):
        for name in ("rollouts", "initial_solutions", "rewrites", "ebc_candidates", "best_solutions"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.c >= 0, f"c must be >= 0, got {self.c}")
        require(0 <= self.critique_threshold <= 1, f"critique_threshold must be in [0, 1], got {self.critique_threshold}")
        require(self.solution_value in ("last", "min", "mean", "prod"),
             f"solution_value must be last, min, mean or prod, got {self.solution_value!r}")
        require(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A self-training run. Defaults: ReST-MCTS* on the toy world (1-2 operations), from a
    deliberately weak tiny policy and a PRM head that has seen nothing, three iterations, on a CPU
    (about 10 minutes on one core, plus about 4 to build the weak policy once)."""

    name: str = option("toy", "run folder name under runs_dir")
    runs_dir: str = option("runs", "where run folders live")
    algorithm: str = option("rest_mcts",
        f"the loop: {', '.join(ALGORITHMS)} (rest_em: rejection sampling without search, the baseline)")
    iterations: int = option(3, "self-training iterations after the base")
    seed: int = option(0, "seed of everything")
    policy: str = option("weak",
        "starting policy: 'weak' (the toy policy trained for weak_steps only), 'tiny' (the full toy "
        "policy) or a local model folder")
    weak_steps: int = option(1200,
        "optimizer steps of the weak toy policy (batches of 32; the full one takes 3000). At 1200 it "
        "writes the format and knows some arithmetic facts; with fewer its samples are too rarely "
        "sound for the search to find solutions to learn from")
    weak_traces: int | None = option(None,
        "distinct solutions the weak toy policy is trained on, over and over (None: a fresh one every "
        "time, weak_steps * 32 in all)")
    preset: str | None = option(None,
        "the policy family's prompt and step settings (mcts.policy.presets: qwen2.5-math, "
        "llama-3.1-instruct, ...) for a policy folder, in its searches and its fine-tuning alike")
    prm: str = option("tiny",
        "starting PRM: 'tiny' (the toy world's trained PRM, shipped in the package), 'fresh' (a new "
        "head on the starting policy's backbone: it knows nothing) or a PRM folder")
    prm_target: str = option("labels",
        "what the PRM fits from the trees: 'labels' (inferred step correctness, BCE) or 'values' "
        "(ReST-MCTS* quality values, MSE)")
    # 'outcome' by default: it is what a real run has (final answers, and the PRM's inferred values
    # for the steps), ReST-MCTS*'s own recipe. The toy world's step checker is an oracle, like the
    # oracle PRM; it stays as a labelled ablation (the summary table names it).
    sft_filter: str = option("outcome",
        "which correct-answer solutions the policy learns from: 'outcome' (every one whose final "
        "answer is verified: what a real run has), 'steps' (ABLATION: only those whose every step "
        "the toy world's step checker accepts, an oracle; with small integer answers a wrong "
        "derivation often lands on the right number) or 'auto' (steps where a checker exists, "
        "else outcome)")
    # 'best' by measurement (`python benchmarks/selftrain_curve.py`, `selftrain run`, seed 0): of
    # the verified solutions ReST-MCTS* harvested at iterations 1-3 with 'all', 10-50 % at 1
    # operation and 21-44 % at 2 reached the right answer through a wrong step; with 'best', 1-2 %
    # and 19-21 %. Held-out greedy accuracy at iterations 1-3: 0.189 / 0.223 / 0.223 with 'best'
    # against 0.189 / 0.182 / 0.149 with 'all' (ReST-EM at the same tokens: 0.149 / 0.189 / 0.142).
    sft_select: str = option("best",
        "which of a tree's verified solutions the policy learns from: 'best' (the one whose lowest "
        "PRM step value is highest: the PRM judges the derivation where the answer check cannot; "
        "trees the PRM did not score, ReST-EM's samples, keep every one) or 'all'")
    sft_balance: str = option("none",
        "'length': repeat the verified solutions of rarer lengths (up to 8 times) so that each "
        "number of steps weighs about equally in SFT (a search verifies short solutions far more "
        "often, and a policy tuned on those learns to stop early); 'none': as harvested")
    sft_from: str = option("base",
        "fine-tune the policy from the 'previous' iteration's or from the 'base' policy (with "
        "accumulate: the base on every solution found so far, as ReST-EM does, so that no solution "
        "is learnt over and over)")
    accumulate: bool = option(True,
        "train on the data harvested by every iteration so far (else this iteration's only)")
    backend: str = option("hf", "policy engine: hf or vllm")
    executor: str = option("local",
        "where the search stages run: local or ray (treesearch.executor)")
    actors: int | None = option(None, "Ray actors (None: one per GPU, else 1)")
    device: str | None = option(None, "torch device of the models (None: auto)")
    threads: int = option(1,
        "torch CPU threads of training and scoring (fixed, so that a run is reproducible; the toy "
        "models gain little from more, and threads that outnumber free cores stall)")
    train_file: str | None = option(None,
        "training problems with answers (JSONL); None: generated toy problems")
    train_problems: int = option(1536,
        "training problems searched per iteration (the same ones every iteration)")
    eval_file: str | None = option(None,
        "held-out problems with answers; None: generated toy problems (other seeds)")
    eval_problems: int = option(300, "held-out problems for greedy accuracy")
    eval_search_problems: int = option(60,
        "held-out problems for search accuracy (a subset of the above)")
    prm_eval_traces: int = option(400,
        "oracle-labelled held-out traces for the PRM's step AUC (toy world only)")
    prm_eval: str = option("policy",
        "whose traces the PRM's AUC is measured on: 'policy' (sampled from the starting policy: the "
        "steps the PRM is asked to judge in this run) or 'scripted' (the scripted policy's slips)")
    min_ops: int = option(1, "generated toy problems: fewest operations")
    max_ops: int = option(2,
        "generated toy problems: most operations (the weak policy almost never finds a sound "
        "3-operation solution, and a harvest of short solutions only teaches it to stop early)")
    batch: int = option(64, "problems searched together (one shard)")
    rest_em_samples: int | None = option(None,
        "rest_em: solutions sampled per problem (None: as many tokens as the tree search spent)")
    # leaf_value 'mean', not the search's 'max': guided by a PRM that is still learning, the best of
    # a leaf's children's values chases its noise. Measured with every other default (`selftrain
    # run`, seed 0): held-out search accuracy at iteration 0 (PRM AUC 0.50) 0.117 with 'mean' against
    # 0.050 with 'max'. From iteration 1 on the two were alike (0.050 each; 279 and 280 traces
    # harvested, PRM AUC 0.648 and 0.640), so 'mean' stays, as before.
    # greedy_child: the weak policy's greedy step is its likeliest right one, and 4 samples at T=1
    # often all miss it, so the tree could end below greedy decoding. Measured on the format-6 PRM
    # (`selftrain run`, seed 0, iterations 0-3): held-out search accuracy 0.283 / 0.367 / 0.267 /
    # 0.233 with it against greedy on the same 60 problems 0.133 / 0.217 / 0.200 / 0.133; without
    # it (measured on the format-5 PRM, so not a clean ablation), search fell below greedy from
    # iteration 1 on (0.200 / 0.233 / 0.167 against 0.250 / 0.257 / 0.196).
    # expansion 'step' (the search's default until session 12, with candidate_value 'q'), not 'rollout': measured with every other default
    # (`benchmarks/selftrain_curve.py --loops rest_mcts,rest_em --set search.expansion=rollout`),
    # ReST-MCTS* at iterations 0-3 gave 0.128 / 0.216 / 0.250 / 0.223 on seed 0 (ReST-EM at its
    # tokens 0.128 / 0.189 / 0.209 / 0.223; with 'step' 0.230 / 0.277 / 0.270 against 0.216 / 0.209 /
    # 0.196), its search only level with greedy at iteration 2; seed 1, 0.199 / 0.199 / 0.255 / 0.277
    # against 0.199 / 0.262 / 0.262 / 0.270.
    # logprob_weight 0: every self-training figure was measured with the PRM's value alone choosing
    # the held-out search's answer (the harvest does not read it); the weight is not measured here.
    # arm_gate 'gated' and no widen_unseen: the search's defaults when every self-training figure of
    # the README was measured. The search's later rules ('until_exhausted' and widen_unseen 0.2,
    # then 'trusted') were chosen on the search benchmark and are not measured in the loops.
    search: SearchConfig = option(factory=lambda: SearchConfig(
        algorithm="mcts_star", simulations=16, width=4, leaf_value="mean", greedy_child=True, expansion="step",
        candidate_value="q", logprob_weight=0.0, arm_gate="gated", widen_unseen=None),
        help="the search of the training problems")
    sft: SFTConfig = option(factory=lambda: SFTConfig(epochs=8.0, lr=3e-4), help="policy fine-tuning (defaults for the toy policy)")
    prm_train: TrainConfig = option(factory=lambda: TrainConfig(epochs=2.0, max_steps=150, batch_size=32, lr=1e-3, save_every=50), help="PRM training")
    alphallm: AlphaLLMConfig = option(factory=AlphaLLMConfig, help="AlphaLLM loop")
    llama_berry: BerryConfig = option(factory=BerryConfig, help="LLaMA-Berry loop")

    def __post_init__(self):
        require(self.algorithm in ALGORITHMS, f"algorithm={self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        require(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        require(self.prm_eval in ("policy", "scripted"), f"prm_eval must be 'policy' or 'scripted', got {self.prm_eval!r}")
        require(self.prm_target in ("labels", "values"), f"prm_target must be 'labels' or 'values', got {self.prm_target!r}")
        require(self.sft_filter in ("outcome", "steps", "auto"),
             f"sft_filter must be 'outcome', 'steps' or 'auto', got {self.sft_filter!r}")
        require(self.sft_select in ("best", "all"), f"sft_select must be 'best' or 'all', got {self.sft_select!r}")
        require(self.sft_balance in ("none", "length"), f"sft_balance must be 'none' or 'length', got {self.sft_balance!r}")
        require(self.sft_from in ("previous", "base"), f"sft_from must be 'previous' or 'base', got {self.sft_from!r}")
        require(self.backend in ("hf", "vllm"), f"backend must be 'hf' or 'vllm', got {self.backend!r}")
        require(self.executor in ("local", "ray"), f"executor must be 'local' or 'ray', got {self.executor!r}")
        for name in ("train_problems", "eval_problems", "batch", "threads", "weak_steps"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.weak_traces is None or self.weak_traces >= 1, f"weak_traces must be None or >= 1, got {self.weak_traces}")
        require(0 <= self.eval_search_problems <= self.eval_problems,
             f"eval_search_problems must be in [0, eval_problems], got {self.eval_search_problems}")
        require(1 <= self.min_ops <= self.max_ops <= 8, f"need 1 <= min_ops <= max_ops <= 8, got {self.min_ops}, {self.max_ops}")
        require(self.name and "/" not in self.name and self.name not in (".", ".."), f"name must be a folder name, got {self.name!r}")

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir) / self.name


# Fields that change where or how fast a run goes, not what it computes: a run may resume with others.
RUNTIME_FIELDS = ("runs_dir", "executor", "actors", "iterations")


def to_dict(config) -> dict:
    """A dataclass tree as plain JSON-able data."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def config_fingerprint(config: RunConfig) -> str:
    """What decides a run's results: every field but RUNTIME_FIELDS."""
    return fingerprint_of(to_dict(config))


def fingerprint_of(data: Mapping[str, Any]) -> str:
    """`config_fingerprint` of a configuration as `to_dict` wrote it (a run folder's config.json)."""
    data = {k: v for k, v in data.items() if k not in RUNTIME_FIELDS}
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=8).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Reading: YAML with line numbers, key=value overrides, type checks


def _where(source: str, line: int | None, key: str) -> str:
    return f"{source}:{line}: {key}" if line is not None else f"{source}: {key}"


def _check_value(value: Any, hint: Any, key: str, where: str) -> Any:
    """`value` converted to the annotated type `hint`, or ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = typing.get_args(hint)[0]
        return tuple(_check_value(v, inner, key, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: cannot read a value of type {hint}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _field_default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _build(cls, data: Mapping, lines: Mapping[str, int], source: str, prefix: str = "", base=None):
    """An instance of dataclass `cls` from a mapping (over the instance `base`, when given); nested
    dataclass fields from nested mappings, over their defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        where = _where(source, lines.get(path), path)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key (known keys{' of ' + prefix[:-1] if prefix else ''}: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
            kwargs[key] = _build(hint, value, lines, source, f"{path}.", base=_field_default(fields[key]))
        else:
            kwargs[key] = _check_value(value, hint, key, where)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as err:
        section = prefix[:-1] or "the run"
        given = [k for k in lines if k.startswith(prefix) and k[len(prefix):] in kwargs]
        named = [k for k in given if re.search(rf"\b{re.escape(k[len(prefix):])}\b", str(err))]
        line = min((lines[k] for k in named or given), default=None)  # the line of the key the error names
        raise ConfigError(f"{_where(source, line, section)}: {err}") from None


def _yaml_lines(node, prefix: str = "", out: dict | None = None) -> dict[str, int]:
    """key path -> 1-based line of every key of a composed YAML mapping."""
    import yaml

    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            out[path] = key.start_mark.line + 1
            _yaml_lines(value, f"{path}.", out)
    return out


class _TooLarge(Exception):
    """A YAML document refused by `_bounded_yaml` (the message says why)."""


def _expanded_size(root, limit: int) -> int:
    """Values of the composed YAML node graph `root` with every alias expanded (each alias counts
    the whole subtree it names, every time), up to `limit`; _TooLarge beyond it or on a cycle."""
    import yaml

    sizes: dict[int, int] = {}
    stack = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            if isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            else:
                kids = node.value
            total = 1 + sum(sizes[id(k)] for k in kids)
            if total > limit:
                raise _TooLarge(f"its anchors and aliases expand to more than {limit:,} values (a YAML alias bomb?)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_:
            raise _TooLarge("an alias refers to the value that holds it (a recursive YAML structure)")
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        open_.add(key)
        stack.append((node, True))
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        for kid in kids:
            if id(kid) in open_:
                raise _TooLarge("an alias refers to the value that holds it (a recursive YAML structure)")
            if id(kid) not in sizes:
                stack.append((kid, False))
    return sizes[id(root)]


def _bounded_yaml(text: str):
    """(data, composed node or None) of one YAML document, safely: yaml.SafeLoader's types only,
    the text at most MAX_YAML_BYTES, at most MAX_YAML_NODES values with aliases expanded (checked
    on the composed graph, before anything is constructed from it). Raises _TooLarge or YAMLError."""
    import yaml

    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise _TooLarge(f"larger than {MAX_YAML_BYTES:,} bytes")
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise _TooLarge("nested too deeply") from None
        if node is None:
            return None, None
        _expanded_size(node, MAX_YAML_NODES)
        try:
            return loader.construct_document(node), node
        except RecursionError:
            raise _TooLarge("nested too deeply") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    import yaml

    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: refused: larger than {MAX_YAML_BYTES:,} bytes (a config is a few hundred)")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    try:
        data, node = _bounded_yaml(text)
        lines = _yaml_lines(node) if data else {}
    except RecursionError:
        raise ConfigError(f"{path}: refused: nested too deeply") from None
    except _TooLarge as err:
        raise ConfigError(f"{path}: refused: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of keys, got {type(data).__name__}")
    return data, lines


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value (e.g. search.simulations=32)")
    key, raw = text.split("=", 1)
    try:
        value = _bounded_yaml(raw)[0] if raw else None
    except _TooLarge as err:
        raise ConfigError(f"--set {key.strip()}: refused: {err}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                sets: list[str] | None = None) -> RunConfig:
    """The run's configuration: defaults, then the YAML file, then `overrides` (top-level keys, e.g.
    from flags), then `sets` ('section.key=value' strings). Raises ConfigError."""
    data: dict = {}
    lines: dict[str, int] = {}
    source = str(path) if path is not None else "command line"
    if path is not None:
        data, lines = _read_yaml(Path(path))
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    for text in sets or []:
        keys, value = _parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return _build(RunConfig, data, lines, source)
