"""treesearch.executor: shards searched locally or on Ray give the same records; dead actors lose nothing.

The Ray tests share one local cluster (`init_local_ray(num_cpus=2)`: on 127.0.0.1 only) and run the
scripted policy with the oracle PRM, so a shard takes milliseconds and the time goes to starting actors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import pytest

from mcts.envs.arith import ArithConfig, generate_problems, write_problems
from treesearch.engine import EngineLoadError, EngineSpec, make_shards, shard_seed
from treesearch.executor import ExecutorError, LocalExecutor, RayExecutor, SearchWorker
from treesearch.results import search_problems
from mcts.problems import load_problems
from mcts.config import SearchConfig
from treesearch.cli import main

SPEC = EngineSpec(model="scripted", prm="oracle", seed=3, oracle_noise=0.1,
                  config=SearchConfig(simulations=8, width=2))
BATCH = 4  # 22 problems: shards of 4, 4, 4, 4, 4, 2
FAST = ["--model", "scripted", "--prm", "oracle", "--simulations", "8", "--width", "2", "--oracle-noise", "0.1",
        "--seed", "3", "--batch", str(BATCH)]


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("problems")
    return write_problems(folder / "toy.jsonl", generate_problems(22, seed=5, config=ArithConfig(min_ops=2, max_ops=5)))


@pytest.fixture(scope="module")
def problems(problem_file):
    return load_problems(problem_file)


def timeless(records):
    """Records without their wall times, the one field that differs between two runs."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def reference(problems):
    """The records of an uninterrupted local run."""
    return timeless(search_problems(problems, SPEC, LocalExecutor(), batch=BATCH).records)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from treesearch.executor import init_local_ray

    init_local_ray(num_cpus=2, log_to_driver=False)  # listening on 127.0.0.1 only, no dashboard
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    yield ray
    ray.shutdown()


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------
# Without Ray


def test_shards_cover_the_file_in_order_and_skip_finished_problems(problems):
    shards = make_shards(problems, BATCH)
    assert [s.index for s in shards] == list(range(6))
    assert [p.id for s in shards for p in s.problems] == [p.id for p in problems]
    done = {problems[i].id for i in (0, 1, 2, 3, 5)}  # all of shard 0, part of shard 1
    shards = make_shards(problems, BATCH, done)
    assert shards[0].index == 1 and [p.id for p in shards[0].problems] == [problems[i].id for i in (4, 6, 7)]
    assert len({shard_seed(0, k) for k in range(1000)} | {shard_seed(1, k) for k in range(1000)}) == 2000


def test_reseed_restarts_a_policy_as_a_fresh_one_with_that_seed():
    from mcts.policy.base import Prefix
    from mcts.policy.toy import ScriptedPolicy

    prefixes = [Prefix("12 * 13 - 7 + 4"), Prefix("(8 + 9) * 6")]
    used = ScriptedPolicy(seed=1)
    used.propose(prefixes, 5)
    used.reseed(42)
    assert used.propose(prefixes, 5) == ScriptedPolicy(seed=42).propose(prefixes, 5)


def test_reseed_of_the_transformers_policy():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from mcts.envs.toy_tokenizer import build_char_tokenizer
    from mcts.policy.base import Prefix
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig

    tokenizer = build_char_tokenizer(model_max_length=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval()

    def policy(seed):
        config = HFPolicyConfig(delimiter="\n", max_new_tokens=6, device="cpu", num_threads=1, seed=seed)
        return HFPolicy(model, tokenizer, config)

    prefixes = [Prefix("1 + 2"), Prefix("3 * 4")]
    used = policy(1)
    used.propose(prefixes, 3)
    used.reseed(42)
    assert used.propose(prefixes, 3) == policy(42).propose(prefixes, 3)


def test_a_shard_gives_the_same_records_whatever_ran_before_it(problems, reference):
    """The reseed at the start of every shard: shards run backwards give the same records."""
    shards = make_shards(problems, BATCH)
    results = {}
    LocalExecutor().run(SPEC, shards[::-1], lambda r: results.setdefault(r.index, r))
    records = [r for k in sorted(results) for r in results[k].records]
    assert timeless(records) == reference


def test_resume_after_a_crash_gives_the_records_of_an_uninterrupted_run(problems, reference, tmp_path):
    out = tmp_path / "r.jsonl"

    class Crash(Exception):
        pass

    def crash_after_two_shards(record):
        if record["id"] == problems[2 * BATCH].id:
            raise Crash

    with pytest.raises(Crash):
        search_problems(problems, SPEC, LocalExecutor(), batch=BATCH, out_path=out, on_record=crash_after_two_shards)
    assert len(read_jsonl(out)) == 3 * BATCH  # written before the hook ran
    run = search_problems(problems, SPEC, LocalExecutor(), batch=BATCH, out_path=out, resume=True)
    assert run.searched == len(problems) - 3 * BATCH
    assert timeless(read_jsonl(out)) == reference


def test_executor_ray_without_ray_says_how_to_install_it(problem_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "r.jsonl"
    assert main(["--problem-file", str(problem_file), "--out", str(out), "--executor", "ray", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--executor ray" in err and "pip install" in err and not out.exists()
    assert main(["--problem-file", str(problem_file), "--out", str(out), "--actors", "2", *FAST]) == 2
    assert "--actors and --ray-address need --executor ray" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# On a local Ray cluster


def test_ray_gives_the_records_of_the_local_executor(ray_cluster, problems, reference, tmp_path):
    executor = RayExecutor(actors=2, keep_actors=True)
    shards = make_shards(problems, BATCH)
    spec = dataclasses.replace(SPEC, golds={p.problem: p.answer for p in problems})
    executor.start(spec)
    assert len(executor.stats.actor_start) == 2 and len(executor.live) == 2
    for _ in range(2):  # the second run reuses the actors of the first
        results = []
        executor.run(spec, shards, results.append)
        assert sorted(r.index for r in results) == list(range(len(shards)))  # each shard once
        assert len({r.worker for r in results}) == 2  # both actors searched
        records = [rec for r in sorted(results, key=lambda r: r.index) for rec in r.records]
        assert timeless(records) == reference
    assert executor.stats.restarts == 0 and len(executor.stats.actor_start) == 2 and len(executor.live) == 2
    executor.close()
    assert not executor.live


def test_more_actors_than_the_cluster_holds_and_a_bad_model_fail_nothing_silently(ray_cluster, problems, reference,
                                                                                   tmp_path):
    # a third actor cannot start on 2 CPUs: the two that can do every shard
    run = search_problems(problems, SPEC, RayExecutor(actors=3), batch=BATCH)
    assert timeless(run.records) == reference
    # a policy that cannot load fails once, with the loader's message, and is not retried
    bad = dataclasses.replace(SPEC, model=str(tmp_path / "no-model"), backend="nope")  # fails before any import
    executor = RayExecutor(actors=2)
    with pytest.raises(EngineLoadError, match="backend='nope'") as err:
        search_problems(problems, bad, executor, batch=BATCH)
    assert err.value.part == "model" and executor.stats.restarts == 0 and not executor.live
    with pytest.raises(ExecutorError, match="GPUs"):
        RayExecutor(actors=1, num_gpus_per_actor=1).run(SPEC, make_shards(problems, BATCH), print)


def test_the_cli_on_ray_writes_what_the_local_cli_writes(ray_cluster, problem_file, tmp_path, capsys):
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    trees = tmp_path / "trees"
    assert main(["--problem-file", str(problem_file), "--out", str(local), *FAST]) == 0
    assert main(["--problem-file", str(problem_file), "--out", str(remote), "--executor", "ray", "--actors", "2",
                 "--trees-out", str(trees), *FAST]) == 0
    assert timeless(read_jsonl(remote)) == timeless(read_jsonl(local))
    assert len(list(trees.glob("*.json"))) == 22
    assert "problems / s" in capsys.readouterr().out
    assert ray_cluster.is_initialized()  # the CLI leaves a Ray it did not start running


def test_an_actor_that_dies_mid_shard_is_replaced_and_its_shard_searched_again(ray_cluster, problems, reference,
                                                                                tmp_path):
    marker = str(tmp_path / "crashed")

    class DiesOnShardTwoOnce(SearchWorker):
        def search(self, shard):
            if shard.index == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:  # the second attempt
                    pass
                else:
                    os._exit(1)
            return super().search(shard)

    out = tmp_path / "r.jsonl"
    executor = RayExecutor(actors=2, worker_cls=DiesOnShardTwoOnce)
    seen = []
    run = search_problems(problems, SPEC, executor, batch=BATCH, out_path=out, on_record=seen.append)
    assert os.path.exists(marker)
    assert executor.stats.restarts == 1 and executor.stats.requeued == [2]
    assert sorted(r["id"] for r in seen) == sorted(p.id for p in problems)  # every problem exactly once
    assert timeless(read_jsonl(out)) == timeless(run.records) == reference


def test_killing_an_actor_while_it_searches_loses_nothing(ray_cluster, problems, reference, tmp_path):
    out = tmp_path / "r.jsonl"
    executor = RayExecutor(actors=2)
    killed = []

    def kill_a_busy_actor(record):
        if not killed:
            busy = [actor for actor, shard in executor.live.items() if shard is not None]
            assert busy, executor.live
            ray_cluster.kill(busy[0])
            killed.append(busy[0])

    seen = []
    spec = dataclasses.replace(SPEC, golds={p.problem: p.answer for p in problems})  # as search_problems fills it
    executor.start(spec)  # both actors ready: when the first shard is back, the other one is searching
    search_problems(problems, spec, executor, batch=BATCH, out_path=out,
                    on_record=lambda r: (kill_a_busy_actor(r), seen.append(r)))
    assert killed and executor.stats.restarts >= 1
    assert sorted(r["id"] for r in seen) == sorted(p.id for p in problems)
    assert timeless(read_jsonl(out)) == reference


def test_models_load_before_the_search_is_timed(problems, monkeypatch):
    """A slow model load (a build on first use) is not counted in the search's time or shown on its bar."""
    build = EngineSpec.build

    def slow_build(spec):
        time.sleep(0.5)
        return build(spec)

    monkeypatch.setattr(EngineSpec, "build", slow_build)
    executor = LocalExecutor()
    run = search_problems(problems[:4], SPEC, executor, batch=BATCH)
    assert run.searched == 4 and run.seconds < 0.5  # the scripted search itself takes milliseconds
    assert executor._engine is not None


# ---------------------------------------------------------------------------------------------------
# Self-training's searches: every loop's search runs through the executor, on Ray as locally


def _loop_specs():
    """The search stage of each self-training loop, as the loop builds it (scripted policy, oracle)."""
    import dataclasses

    from selftrain.alphallm import EtaSearch
    from selftrain.config import AlphaLLMConfig, BerryConfig
    from selftrain.llama_berry import SRSearch
    from selftrain.rest_em import SampledChains

    tree = SearchConfig(algorithm="mcts_star", simulations=6, width=2, max_depth=10)
    return {
        "rest_mcts": SPEC,
        "alphallm": dataclasses.replace(SPEC, config=tree, runner=EtaSearch(None, None, AlphaLLMConfig(max_width=3))),
        "llama_berry": dataclasses.replace(SPEC, config=tree, runner=SRSearch(
            None, BerryConfig(rollouts=3, initial_solutions=2, rewrites=2))),
        "rest_em": dataclasses.replace(SPEC, config=dataclasses.replace(tree, algorithm="self_consistency",
                                                                        simulations=3),
                                       runner=SampledChains()),
    }


def _records_and_trees(problems, spec, executor):
    results = []
    executor.run(spec, make_shards(problems[:8], BATCH, trees=True), results.append)
    results.sort(key=lambda result: result.index)
    return ([r for result in results for r in timeless(result.records)],
            [tree for result in results for tree in result.trees])


@pytest.mark.parametrize("loop", ["rest_mcts", "alphallm", "llama_berry", "rest_em"])
def test_each_loops_search_gives_on_ray_the_records_and_trees_of_the_local_executor(ray_cluster, problems, loop):
    spec = _loop_specs()[loop]
    local_records, local_trees = _records_and_trees(problems, spec, LocalExecutor())
    executor = RayExecutor(actors=2, keep_actors=True)
    try:
        ray_records, ray_trees = _records_and_trees(problems, spec, executor)
    finally:
        executor.close()
    assert ray_records == local_records and ray_trees == local_trees
    assert {r["algorithm"] for r in local_records} == {
        {"rest_mcts": "mcts_star", "alphallm": "eta_mcts", "llama_berry": "sr_mcts", "rest_em": "rest_em"}[loop]}
    assert all(tree is not None for tree in local_trees)
