"""The core the policy backends share (mcts.policy.generation, SamplingTruncation in mcts.policy.base)
and the refusal of a model folder's own code (mcts.policy.remote_code), through every loader.

The remote-code folder is a config.json with an `auto_map` naming `modeling_x.py`, a module that
writes a marker file when it is imported: without trust_remote_code, every loader must refuse the
folder with one message naming the flag, before transformers reads it (no "[y/N]" prompt: nothing
is read from stdin), and the marker must never appear.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mcts.policy.base import Prefix, SamplingTruncation, Step, check_truncation  # noqa: E402
from mcts.policy.generation import (  # noqa: E402
    REQUEST_SEED_MODULUS,
    ChatPrompt,
    PolicyGenerationConfig,
    PolicyStats,
    finish_step,
    plain_prompt,
    prompt_token_ids,
    request_seed,
    resolve_prompt,
)
from mcts.policy.remote_code import RemoteCodeError, check_remote_code, remote_code_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("max_new_tokens", "delimiter", "chat_template", "system_prompt", "top_k", "top_p", "min_p", "seed",
          "trust_remote_code")


# ---------------------------------------------------------------------------------------------------
# Sampling truncation


def test_sampling_truncation_validates_and_overrides():
    off = SamplingTruncation()
    assert (off.top_p, off.top_k, off.min_p, off.active) == (1.0, 0, 0.0, False)
    assert SamplingTruncation.of() == off and SamplingTruncation.of(top_k=None) == off
    t = off.override(top_p=0.9, top_k=None)
    assert t == SamplingTruncation(top_p=0.9) and t.active
    assert t.override() is t
    assert t.override(min_p=0.1).as_dict() == {"top_p": 0.9, "top_k": 0, "min_p": 0.1}
    for bad in ({"top_p": 0.0}, {"top_p": 1.5}, {"top_p": float("nan")}, {"top_k": -1}, {"top_k": 1.5},
                {"top_k": True}, {"min_p": -0.1}, {"min_p": 2.0}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            SamplingTruncation(**bad)
        with pytest.raises(ValueError, match=name):
            check_truncation(**bad)
        with pytest.raises(ValueError, match=name):
            off.override(**bad)
    check_truncation(None, None, None)  # not set: passes
    check_truncation(top_p=1, top_k=3, min_p=0)


# ---------------------------------------------------------------------------------------------------
# The shared config


def test_both_backend_configs_share_the_core_fields():
    pytest.importorskip("torch")
    from mcts.policy.hf_policy import HFPolicyConfig
    from mcts.policy.vllm_policy import VLLMPolicyConfig

    for cls in (HFPolicyConfig, VLLMPolicyConfig):
        assert issubclass(cls, PolicyGenerationConfig)
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[:len(SHARED)] == list(SHARED)
        config = cls(delimiter="\n", top_p=0.5, top_k=3, min_p=0.1, system_prompt="s", chat_template=False)
        assert config.truncation == SamplingTruncation(top_p=0.5, top_k=3, min_p=0.1)
        assert config.trust_remote_code is False and cls(trust_remote_code=True).trust_remote_code
        for bad in ({"top_p": 0.0}, {"top_k": -1}, {"min_p": 1.5}, {"delimiter": ""}, {"seed": "1"},
                    {"trust_remote_code": "yes"}, {"chat_template": "on"}, {"max_new_tokens": 0}):
            with pytest.raises(ValueError, match=next(iter(bad))):
                cls(**bad)
    assert VLLMPolicyConfig().max_new_tokens == 256 and HFPolicyConfig().max_new_tokens is None
    assert VLLMPolicyConfig(seed=None).seed is None
    with pytest.raises(ValueError, match="seed"):
        HFPolicyConfig(seed=None)  # the transformers backend always seeds its draws
    with pytest.raises(TypeError):
        HFPolicyConfig(256)  # keyword-only: no field is set by position


# ---------------------------------------------------------------------------------------------------
# Prompts


class CharTokenizer:
    chat_template = None

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [([1] if add_special_tokens else []) + [ord(c) for c in t] for t in texts]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<a>" if add_generation_prompt else "")


def test_resolve_prompt_chooses_the_layout():
    tok = CharTokenizer()
    config = PolicyGenerationConfig(delimiter="\n")
    fn, special = resolve_prompt(tok, config)
    assert special and fn(Prefix("1 + 2", ("x\n",))) == plain_prompt(Prefix("1 + 2", ("x\n",)), "\n") == "1 + 2\nx\n"
    assert prompt_token_ids(tok, fn, [Prefix("ab")], special) == [[1, ord("a"), ord("b"), ord("\n")]]
    assert prompt_token_ids(tok, fn, [], special) == []
    with pytest.raises(ValueError, match="MyPolicy: chat_template=True"):
        resolve_prompt(tok, dataclasses.replace(config, chat_template=True), owner="MyPolicy")
    tok.chat_template = "some template"
    fn, special = resolve_prompt(tok, dataclasses.replace(config, system_prompt="be brief"))
    assert isinstance(fn, ChatPrompt) and not special
    assert fn(Prefix("1 + 2", ("x\n",))) == "<system>be brief<user>1 + 2<a>x\n"
    fn, special = resolve_prompt(tok, dataclasses.replace(config, chat_template=False))
    assert not isinstance(fn, ChatPrompt) and special
    own = lambda prefix: prefix.problem  # noqa: E731
    assert resolve_prompt(tok, config, own) == (own, False)  # the caller's, with the template's tokens


# ---------------------------------------------------------------------------------------------------
# Steps and seeds


def test_finish_step_cuts_and_sets_finished():
    step, reason = finish_step("3 + 4 = 7, so 7\nmore", [1, 2, 3], [-0.5, -0.25, -0.25], "delimiter", "\n")
    assert (step, reason) == (Step("3 + 4 = 7, so 7\n", -1.0, 3, False), "delimiter")
    step, reason = finish_step("The answer is \\boxed{7}.\n", [1], -0.5, "delimiter", "\n")
    assert step.finished and reason == "delimiter"
    step, reason = finish_step("12", [5, 6, 2], -1.5, "eos", "\n")
    assert (step.text, step.num_tokens, step.finished, reason) == ("12", 3, True, "eos")
    step, reason = finish_step("ZZZZ", [9] * 4, [-1.0] * 4, "length", "\n")
    assert (step.finished, reason, step.logprob) == (True, "length", -4.0)
    step, reason = finish_step("ab\n", [1, 2, 3], -1.0, "length", "\n")  # came with the last allowed token
    assert (step.finished, reason) == (False, "delimiter")
    step, reason = finish_step("ab", [1, 2], -1.0, "delimiter", "\n")  # another stop than the delimiter
    assert (step.finished, reason) == (True, "eos")
    with pytest.raises(ValueError, match="reason"):
        finish_step("ab", [1], 0.0, "abort", "\n")
    stats = PolicyStats()
    for reason in ("delimiter", "eos", "length"):
        stats.count_step(Step("x", 0.0, 2), reason)
    assert (stats.generated_tokens, stats.eos, stats.truncated) == (6, 1, 1)


def test_request_seed_rule():
    assert request_seed(None, 3) is None
    assert request_seed(5, 0) == 5 * 1_000_003 % REQUEST_SEED_MODULUS
    seeds = [request_seed(5, k) for k in range(4)]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert request_seed(10**12, 7, 2**63) == (10**12 * 1_000_003 + 7) % 2**63


class RecordingLLM:
    """A stand-in for vllm.LLM: every request's sampling parameters recorded, one EOS token back."""

    def __init__(self):
        self.params: list[dict] = []

    def generate(self, prompts, params, use_tqdm=False):
        self.params += params
        out = types.SimpleNamespace(index=0, text="", token_ids=[0], cumulative_logprob=-1.0, logprobs=None,
                                    finish_reason="stop", stop_reason=None)
        return [types.SimpleNamespace(outputs=[out] * p["n"], num_cached_tokens=0) for p in params]


def test_per_call_truncation_reaches_the_vllm_requests():
    from mcts.policy.vllm_policy import VLLMPolicy, VLLMPolicyConfig

    tok = CharTokenizer()
    tok.eos_token_id = 0
    policy = VLLMPolicy(RecordingLLM(), tok, VLLMPolicyConfig(delimiter="\n", top_p=0.8, top_k=4),
                        sampling_params_cls=dict)
    policy.propose([Prefix("A")], 2, temperature=1.0, top_k=1, min_p=0.1)
    policy.propose([Prefix("A")], 2, temperature=1.0)
    assert [(p["top_p"], p["top_k"], p["min_p"]) for p in policy.llm.params] == [(0.8, 1, 0.1), (0.8, 4, 0.0)]
    with pytest.raises(ValueError, match="top_k"):
        policy.propose([Prefix("A")], 1, temperature=1.0, top_k=-2)


# ---------------------------------------------------------------------------------------------------
# Remote code: the folder check


def remote_code_folder(folder: Path, marker: Path, *, tokenizer: bool = False) -> Path:
    """A model folder whose config.json (or tokenizer_config.json) names its own `modeling_x.py`,
    which writes `marker` when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    auto_map = {"AutoConfig": "modeling_x.XConfig", "AutoModel": "modeling_x.XModel",
                "AutoModelForCausalLM": "modeling_x.XModel"}
    config = {"model_type": "x-custom", "hidden_size": 8}
    if tokenizer:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"auto_map": {"AutoTokenizer": ["modeling_x.XTokenizer", None]}}))
    else:
        config["auto_map"] = auto_map
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text(textwrap.dedent(f"""\
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("the folder's code ran")
        from transformers import PretrainedConfig

        class XConfig(PretrainedConfig):
            model_type = "x-custom"
        """))
    return folder


def test_check_remote_code_names_the_files_and_the_flag(tmp_path):
    marker = tmp_path / "ran"
    folder = remote_code_folder(tmp_path / "m", marker)
    assert remote_code_files(folder) == ["config.json"]
    with pytest.raises(RemoteCodeError, match="--trust-remote-code") as info:
        check_remote_code(folder, False)
    assert str(info.value) == (f"{folder}: its config.json asks to run the folder's own code (auto_map); pass "
                               f"--trust-remote-code (trust_remote_code=True) to allow it")
    assert isinstance(info.value, ValueError)
    check_remote_code(folder, True)  # trusted: passes
    with pytest.raises(OSError, match="config.json"):
        check_remote_code(folder, False, error=OSError)
    both = remote_code_folder(tmp_path / "t", marker, tokenizer=True)
    (both / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "modeling_x.XConfig"}}))
    assert remote_code_files(both) == ["config.json", "tokenizer_config.json"]
    with pytest.raises(RemoteCodeError, match="config.json and tokenizer_config.json ask"):
        check_remote_code(both, False)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{ not json")  # left to the loader to report
    assert remote_code_files(plain) == [] and remote_code_files(tmp_path / "missing") == []
    check_remote_code(plain, False)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Remote code: every loader


@pytest.fixture
def no_stdin(monkeypatch):
    """A prompt on stdin fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"something asked on stdin: {args}")

    monkeypatch.setattr("builtins.input", refuse)


@pytest.mark.parametrize("tokenizer", [False, True])
def test_loaders_refuse_a_folder_with_its_own_code(tmp_path, no_stdin, monkeypatch, tokenizer):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from mcts.policy.hf_policy import HFPolicy, HFPolicyConfig
    from mcts.policy.vllm_policy import VLLMPolicy
    from prm.model import PRM, PRMLoadError
    from prm.pairwise import PPRM

    marker = tmp_path / "ran"
    folder = remote_code_folder(tmp_path / "model", marker, tokenizer=tokenizer)
    with pytest.raises(RemoteCodeError, match="trust-remote-code"):
        HFPolicy.from_pretrained(folder)
    with pytest.raises(RemoteCodeError, match="trust-remote-code"):
        HFPolicy.from_pretrained(folder, HFPolicyConfig(device="cpu"), delimiter="\n")

    engines = []
    fake_vllm = types.ModuleType("vllm")
    fake_vllm.LLM = lambda **kwargs: engines.append(kwargs)
    fake_vllm.SamplingParams = dict
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    with pytest.raises(RemoteCodeError, match="trust-remote-code"):
        VLLMPolicy.from_pretrained(folder)
    assert engines == []  # the engine was never started

    (folder / "prm_config.json").write_text(json.dumps({"format_version": 1, "mode": "prm", "head": {}}))
    for load in (PRM.from_pretrained, PRM.from_backbone):
        with pytest.raises(PRMLoadError, match="trust-remote-code") as info:
            load(folder)
        assert str(info.value).startswith(f"{folder}: its ")  # one line, not wrapped in another
    (folder / "prm_config.json").write_text(json.dumps({"format_version": 1, "mode": "pairwise", "head": {}}))
    with pytest.raises(PRMLoadError, match="trust-remote-code"):
        PPRM.from_pretrained(folder)
    assert not marker.exists()


def test_a_folder_cannot_trust_itself(tmp_path):
    pytest.importorskip("torch")
    from mcts.policy.hf_policy import POLICY_FILE, HFPolicy, read_policy_defaults, write_policy_defaults

    folder = remote_code_folder(tmp_path / "model", tmp_path / "ran")
    (folder / POLICY_FILE).write_text(json.dumps({"delimiter": "\n", "trust_remote_code": True}))
    with pytest.raises(ValueError, match="cannot declare trust_remote_code"):
        read_policy_defaults(folder)
    with pytest.raises(ValueError, match="cannot declare trust_remote_code"):
        HFPolicy.from_pretrained(folder)
    with pytest.raises(ValueError, match="trust_remote_code"):
        write_policy_defaults(folder, trust_remote_code=True)
    assert not (tmp_path / "ran").exists()


LOAD_ALL = """
import sys
from mcts.policy.hf_policy import HFPolicy
from prm.model import PRM
from prm.pairwise import PPRM
folder = sys.argv[1]
for load in (HFPolicy.from_pretrained, PRM.from_pretrained, PRM.from_backbone, PPRM.from_pretrained):
    try:
        load(folder)
    except (ValueError, OSError) as err:
        print(type(err).__name__, "|", err)
    else:
        print("loaded")
"""


def _run(code: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


def test_refusal_reads_nothing_from_stdin(tmp_path):
    """In a fresh process with stdin from /dev/null: a prompt there would fail with EOFError."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    marker = tmp_path / "ran"
    folder = remote_code_folder(tmp_path / "model", marker)
    (folder / "prm_config.json").write_text(json.dumps({"format_version": 1, "mode": "pairwise", "head": {}}))
    result = _run(LOAD_ALL, str(folder), env_extra={"HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4, result.stdout
    want = f"{folder}: its config.json asks to run the folder's own code (auto_map); pass --trust-remote-code"
    assert [line.split(" | ")[0] for line in lines] == ["RemoteCodeError", "PRMLoadError", "PRMLoadError",
                                                        "PRMLoadError"]
    assert all(line.split(" | ")[1].startswith(want) for line in lines), lines
    assert "[y/N]" not in result.stdout + result.stderr
    assert not marker.exists()


TRUSTED = """
import sys
from mcts.policy.hf_policy import HFPolicy
try:
    HFPolicy.from_pretrained(sys.argv[1], trust_remote_code=True)
except OSError as err:
    print("OSError")
"""


def test_trust_remote_code_reaches_transformers(tmp_path):
    """Asked for by name, the folder's code runs (here it then fails to make a model: OSError)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    marker = tmp_path / "ran"
    folder = remote_code_folder(tmp_path / "model", marker)
    result = _run(TRUSTED, str(folder), env_extra={"HF_MODULES_CACHE": str(tmp_path / "modules"),
                                                   "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OSError"
    assert marker.read_text() == "the folder's code ran"
