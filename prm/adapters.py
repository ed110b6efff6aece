"""Adapters for the open process reward models: their folders read as `StepScorer`s.

Each format reads a trace the way its model family's public inference recipe does (`prm.recipes`:
the input and the read-out) and scores it with plain transformers, without running a folder's own
code. Every format is the same machine: a base model's last hidden states, a small head on them at
each step's read position, and a reading (softmax or sigmoid) that makes a score in [0, 1]:

    format          folder                                          head at the read position
    math_shepherd   a causal LM whose tokenizer holds " ки"         LM-head rows of "+" and "-"
    qwen_prm        Qwen2.5-Math-PRM: Qwen2 weights + `score.0/2`   its Linear-ReLU-Linear (read natively;
                    (Qwen2ForProcessRewardModel), or a Qwen2        the config's auto_map is not needed)
                    token classifier (`score`)
    rlhflow         a causal chat LM (RLHFlow/Llama3.1-8B-PRM-*)    LM-head rows of "+" and "-"
    value_head      a base or causal LM + `v_head.summary.weight`   Linear(hidden, 1), sigmoid
                    and `.bias` in its safetensors (Skywork-o1-
                    Open-PRM's layout) or in `value_head.safetensors`
    generative      any causal LM (the prompt: `prm.recipes`)       LM-head rows of " True" and " False"
    treesearch      this project's own (`prm.model.PRM`)            as there

    PRM_FORMATS                     the format names ('treesearch' first)
    detect_format(folder) -> str    the format a folder's files say it is; PRMLoadError naming
                                    --prm-format when they do not
    load_adapter(folder, fmt, ...)  an `AdapterPRM` (the non-treesearch formats)
    AdapterPRM                      score(prefixes, steps) -> [P], score_traces(prefixes) -> [P][K],
                                    score_outcomes(prefixes) -> [P]; and, for the key/value cache,
                                    head_ids(problem), piece_ids(step, index), backbone,
                                    reading(hidden [N, H]) -> [N] scores (prm.reader.PieceReader)

`score` reads through the incremental key/value cache of prm/kv_cache.py by default
(`AdapterConfig.incremental`), as the project's own PRM does: a step costs its own tokens only.
    AdapterConfig                   batch_size, num_threads, max_length, system_prompt

An LM head is read as a linear map of the last hidden state (two of its rows), so a model whose
logits are soft-capped (`final_logit_softcapping`, Gemma 2) is refused rather than misread.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mcts.options import option, require
from mcts.policy.remote_code import TRUST_REMOTE_CODE_FLAG, remote_code_files
from prm.model import CONFIG_FILE, PRMLoadError, quiet_transformers, resolve_device
from prm.reader import PieceReader
from prm.recipes import RECIPES, PieceError, check_pieces, encode_trace

__all__ = ["ADAPTER_FORMATS", "AdapterConfig", "AdapterPRM", "PRM_FORMATS", "detect_format", "load_adapter"]

ADAPTER_FORMATS = tuple(RECIPES)  # math_shepherd, qwen_prm, rlhflow, value_head, generative
PRM_FORMATS = ("treesearch", *ADAPTER_FORMATS)
FORMAT_FLAG = "--prm-format"
VALUE_HEAD_FILE = "value_head.safetensors"
LM_FORMATS = ("math_shepherd", "rlhflow", "generative")  # read through two rows of the LM head
QWEN_PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """How an adapter reads traces."""

    batch_size: int = option(16, "sequences per forward pass")
    num_threads: int | None = option(None, "torch CPU threads while scoring (restored after); None: unchanged")
    max_length: int | None = option(None,
        "most tokens read per sequence (longer ones lose their start; a step cut off reads NaN); None: "
        "the backbone's max_position_embeddings")
    system_prompt: str | None = option(None, "qwen_prm: the system prompt (None: the model card's)")
    incremental: bool = option(True,
        "score a step from its parent's cached keys and values (prm/kv_cache.py, as PRMConfig.incremental), "
        "reading only the step's tokens; scores equal a full reading. Off: every step rereads its prefix")
    cache_bytes: int = option(1 << 30, "byte budget of the incremental cache (an LRU over tree nodes)")

    def __post_init__(self):
        require(isinstance(self.batch_size, int) and self.batch_size >= 1,
                f"batch_size must be an int >= 1, got {self.batch_size!r}")
        require(self.num_threads is None or (isinstance(self.num_threads, int) and self.num_threads >= 1),
                f"num_threads must be None or an int >= 1, got {self.num_threads!r}")
        require(self.max_length is None or (isinstance(self.max_length, int) and self.max_length >= 2),
                f"max_length must be None or an int >= 2, got {self.max_length!r}")
        require(isinstance(self.cache_bytes, int) and self.cache_bytes >= 0,
                f"cache_bytes must be an int >= 0, got {self.cache_bytes!r}")


class AdapterPRM(PieceReader):
    """A base model, a head on its last hidden states and a recipe; implements `StepScorer` (the
    reading and scoring calls are `prm.reader.PieceReader`'s).

    Attributes:
        format: the format name.
        backbone: the transformers base model (called with input_ids, attention_mask, and
            past_key_values/use_cache by a key/value cache).
        head: maps [N, H] float32 hidden states to [N, C] outputs.
        recipe: the format's `prm.recipes` recipe (its tokenizer is `tokenizer`).
    """

    def __init__(self, fmt: str, backbone, tokenizer, recipe, head: nn.Module, config: AdapterConfig | None = None):
        super().__init__()
        self.format = fmt
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.head = head.float()
        self.config = config or AdapterConfig()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.max_length = self.config.max_length or getattr(backbone.config, "max_position_embeddings", None)

    # -------------------------------------------------------------------------------------------
    # Encoding (the piece contract: head + one independently tokenised piece per step)

    def _head_ids(self, problem: str) -> list[int]:
        return self.recipe.head_ids(problem)

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        """(ids of step `index`, the offset inside them where its score is read)."""
        return self.recipe.piece_ids(step, index)

    def encode(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """(ids, read positions) of a trace."""
        return encode_trace(self.recipe, problem, steps, head=self.head_ids(problem))

    # -------------------------------------------------------------------------------------------
    # Reading

    def reading(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N] scores in [0, 1] from [N, H] hidden states at read positions."""
        out = self.head(hidden.float())
        reading = self.recipe.reading
        if reading.kind == "sigmoid":
            return torch.sigmoid(out[:, 0])
        return torch.softmax(out, dim=-1)[:, reading.index]

    def with_config(self, **changes) -> "AdapterPRM":
        """An adapter on this one's weights and recipe with `AdapterConfig` fields replaced (e.g.
        incremental=False), in eval mode, with a cache of its own."""
        return type(self)(self.format, self.backbone, self.tokenizer, self.recipe, self.head,
                          dataclasses.replace(self.config, **changes)).eval()


# ---------------------------------------------------------------------------------------------------
# Folders: what they hold, and loading


def _json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _weight_files(folder: Path) -> dict[str, Path]:
    """{tensor name: safetensors file} over the folder's weights (sharded or not) and its value head."""
    names: dict[str, Path] = {}
    index = _json(folder / "model.safetensors.index.json").get("weight_map")
    if isinstance(index, dict):
        names.update({k: folder / v for k, v in index.items()})
    from safetensors import safe_open

    for path in [folder / "model.safetensors", folder / VALUE_HEAD_FILE]:
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                names.update({k: path for k in f.keys()})
    return names


def _tensors(folder: Path, names: Sequence[str]) -> dict[str, torch.Tensor] | None:
    """The named tensors of the folder's safetensors, or None when one is missing."""
    from safetensors import safe_open

    files = _weight_files(folder)
    if not all(n in files for n in names):
        return None
    out = {}
    for n in names:
        with safe_open(str(files[n]), framework="pt") as f:
            out[n] = f.get_tensor(n)
    return out


def _holds_step_tag(folder: Path) -> bool:
    """Whether the folder's tokenizer writes Math-Shepherd's " ки" tag as one token."""
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
        return False
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception:  # an unreadable tokenizer is the loader's to report
        return False
    return len(tok(" ки", add_special_tokens=False)["input_ids"]) == 1


def detect_format(folder: str | Path) -> str:
    """The format a folder says it holds: `prm_config.json` -> treesearch; a Qwen2 process reward
    model or token classifier whose tokenizer has `<extra_0>` -> qwen_prm; a `v_head` in its
    weights -> value_head; a tokenizer holding " ки" -> math_shepherd. rlhflow and generative
    folders are plain causal LMs and must be named. Raises PRMLoadError naming --prm-format."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return "treesearch"
    config = _json(folder / "config.json")
    architectures = config.get("architectures") or []
    added = json.dumps(_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {}))
    added += json.dumps(_json(folder / "tokenizer.json").get("added_tokens", []))
    if QWEN_PRM_ARCHITECTURE in architectures or (
            any(a.endswith("ForTokenClassification") for a in architectures) and "<extra_0>" in added):
        return "qwen_prm"
    if config and any(k.startswith("v_head.") for k in _weight_files(folder)):
        return "value_head"
    if config and _holds_step_tag(folder):
        return "math_shepherd"
    raise PRMLoadError(f"{folder}: cannot tell which reward-model format it holds (no {CONFIG_FILE}, no "
                       f"{QWEN_PRM_ARCHITECTURE}, no v_head, no ' ки' token); pass {FORMAT_FLAG} with one of "
                       f"{', '.join(PRM_FORMATS)}")


def _check_code(folder: Path, fmt: str, trust_remote_code: bool) -> None:
    """Refuses a folder that asks to run its own code unless trusted; qwen_prm's config.json
    auto_map is not needed (its model is read natively) and so not refused."""
    if trust_remote_code:
        return
    files = remote_code_files(folder)
    if fmt == "qwen_prm":
        files = [f for f in files if f != "config.json"]
    if files:
        raise PRMLoadError(f"{folder}: its {' and '.join(files)} ask(s) to run the folder's own code (auto_map); "
                           f"pass {TRUST_REMOTE_CODE_FLAG} (trust_remote_code=True) to allow it")


def _two_rows(lm_head: nn.Module, token_ids: Sequence[int]) -> nn.Linear:
    """A Linear(H, len(token_ids)) holding the LM head's rows (and bias) of those tokens."""
    weight = lm_head.weight.detach()[list(token_ids)].float()
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=getattr(lm_head, "bias", None) is not None)
    head.weight.data.copy_(weight)
    if head.bias is not None:
        head.bias.data.copy_(lm_head.bias.detach()[list(token_ids)].float())
    return head


def _qwen_head(folder: Path) -> nn.Module:
    mlp = _tensors(folder, ["score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"])
    if mlp is not None:
        hidden, labels = mlp["score.0.weight"].shape[0], mlp["score.2.weight"].shape[0]
        head = nn.Sequential(nn.Linear(mlp["score.0.weight"].shape[1], hidden), nn.ReLU(), nn.Linear(hidden, labels))
        head.load_state_dict({k.removeprefix("score."): v for k, v in mlp.items()})
    else:
        linear = _tensors(folder, ["score.weight"])
        if linear is None:
            raise ValueError("no score head (score.0/score.2 of Qwen2ForProcessRewardModel, or score of a "
                             "token classifier) in its weights")
        bias = _tensors(folder, ["score.bias"])
        head = nn.Linear(linear["score.weight"].shape[1], linear["score.weight"].shape[0], bias=bias is not None)
        head.load_state_dict({"weight": linear["score.weight"], **({"bias": bias["score.bias"]} if bias else {})})
    labels = head[-1].out_features if isinstance(head, nn.Sequential) else head.out_features
    if labels != 2:
        raise ValueError(f"the score head has {labels} outputs; qwen_prm reads a two-class head")
    return head


def _value_head(folder: Path) -> nn.Linear:
    found = _tensors(folder, ["v_head.summary.weight", "v_head.summary.bias"])
    if found is None:
        raise ValueError(f"no value head: v_head.summary.weight and .bias are in neither its weights nor "
                         f"{VALUE_HEAD_FILE}")
    weight = found["v_head.summary.weight"]
    if weight.shape[0] != 1:
        raise ValueError(f"the value head has {weight.shape[0]} outputs, not 1")
    head = nn.Linear(weight.shape[1], 1)
    head.load_state_dict({"weight": weight, "bias": found["v_head.summary.bias"].reshape(1)})
    return head


def _load_parts(folder: Path, fmt: str, dtype: torch.dtype, trust_remote_code: bool):
    """(tokenizer, base model, LM head or None) of a folder in format `fmt`."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        if fmt in LM_FORMATS:
            if getattr(config, "final_logit_softcapping", None):
                raise ValueError("its logits are soft-capped (final_logit_softcapping): two LM-head rows do not "
                                 "give its softmax")
            model, info = AutoModelForCausalLM.from_pretrained(
                folder, config=config, local_files_only=True, dtype=dtype, output_loading_info=True,
                trust_remote_code=trust_remote_code)
            backbone, lm_head = model.get_decoder(), model.get_output_embeddings()
        else:
            backbone, info = AutoModel.from_pretrained(folder, config=config, local_files_only=True, dtype=dtype,
                                                       output_loading_info=True, trust_remote_code=trust_remote_code)
    missing = [k for k in info.get("missing_keys") or [] if not k.startswith(("score", "v_head"))]
    if missing:
        raise ValueError(f"its weights lack {len(missing)} tensors of the model, e.g. {missing[:3]}")
    return tokenizer, backbone, (lm_head if fmt in LM_FORMATS else None)


def load_adapter(path: str | Path, fmt: str, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, trust_remote_code: bool = False, **overrides) -> AdapterPRM:
    """An `AdapterPRM` of the folder `path` read as format `fmt` (one of ADAPTER_FORMATS).

    Args:
        device: None/'auto' (CUDA when available), 'cpu', 'cuda:1', ...
        dtype: the base model's dtype; default float32 on CPU, bfloat16 (else float16) on CUDA.
        trust_remote_code: let the folder run its own code (auto_map); without it such a folder is
            refused naming --trust-remote-code (qwen_prm's model code is not needed: read natively).
        **overrides: `AdapterConfig` fields.

    Raises PRMLoadError (an OSError) naming the folder and what is wrong.
    """
    folder = Path(path).expanduser()
    if fmt not in ADAPTER_FORMATS:
        raise ValueError(f"prm_format {fmt!r} is not one of {', '.join(ADAPTER_FORMATS)}")
    if not folder.is_dir():
        raise PRMLoadError(f"model folder {str(folder)!r} does not exist or is not a folder")
    _check_code(folder, fmt, trust_remote_code)
    try:
        config = AdapterConfig(**overrides)
    except (TypeError, ValueError) as err:
        raise ValueError(f"adapter options: {err}") from None
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.float32 if dev.type != "cuda" else (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    try:
        tokenizer, backbone, lm_head = _load_parts(folder, fmt, dtype, trust_remote_code)
        recipe_cls = RECIPES[fmt]
        recipe = recipe_cls(tokenizer, config.system_prompt) if fmt == "qwen_prm" else recipe_cls(tokenizer)
        check_pieces(recipe)
        if fmt in LM_FORMATS:
            head = _two_rows(lm_head, recipe.token_ids)
        else:
            head = _qwen_head(folder) if fmt == "qwen_prm" else _value_head(folder)
    except PRMLoadError:
        raise
    except (PieceError, Exception) as err:  # transformers raises many kinds; name the folder, keep the cause
        raise PRMLoadError(f"cannot load {str(folder)!r} as {fmt}: {type(err).__name__}: {err}") from err
    return AdapterPRM(fmt, backbone, tokenizer, recipe, head, config).to(dev).eval()
