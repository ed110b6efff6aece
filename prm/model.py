"""The process reward model (ARCHITECTURE.md): a causal LM backbone with a scalar head.

A trace is read in the policy's own layout (`mcts.policy.hf_policy.plain_prompt`): the problem, the
delimiter, then the steps, each ending with the delimiter. The head reads the backbone's last hidden
state at the last token of every step (the delimiter that closes it) and a sigmoid makes it a value
in [0, 1]:

    <bos> 17 + 5 * 3 \\n 5 * 3 = 15, so 17 + 15 \\n 17 + 15 = 32, so 32 \\n The answer is \\boxed{32}. \\n
                                               ^ v_1                   ^ v_2                       ^ v_3

Texts are tokenised piece by piece (problem line, then each step) and the pieces concatenated, so
the tokens of a prefix are a prefix of the tokens of every longer trace: with causal attention the
value of step k is the same whether it is scored alone (`score`) or inside its whole trace
(`score_traces`), and padding (right-side) changes nothing.

    PRM.from_pretrained(folder, device=None)   a folder written by `save_pretrained` (its own code
                                               runs only with trust_remote_code=True)
    prm.score(prefixes, steps) -> [P] floats    the `StepScorer` protocol: the last step of each pair
    prm.score_traces(prefixes) -> [P][K_p]      every step value of each trace, one pass
    prm.score_outcomes(prefixes) -> [P]         the value at the end of each trace (ORM reading)
    prm.kv_cache                                the incremental cache `score` reads through (None when
                                                `PRMConfig.incremental` is off or the backbone cannot)

`score` is incremental by default (`PRMConfig.incremental`, prm/kv_cache.py): a step whose parent
was scored before costs its own tokens only, with scores equal to a full reading within float
tolerance; a trace longer than `max_length` (whose start a full reading cuts off) is read whole.

Modes: "prm" (trained on every step end) and "orm" (an outcome reward model: trained on the last
step end only, so its value reads the whole trace). Both score the same way; only the training
targets differ (`tokenize_row`). A folder holds the backbone (`save_pretrained`), its tokenizer,
`head.safetensors` and `prm_config.json` (format version, mode, delimiter, reading options).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from prm.reader import PieceReader, pad_right
from mcts.policy.remote_code import check_remote_code
from mcts.options import option

if TYPE_CHECKING:  # for annotations only: importing them loads transformers' modeling code (seconds)
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CONFIG_FILE", "FORMAT_VERSION", "HEAD_FILE", "IGNORE_INDEX", "MODES", "PRM", "PRMConfig", "PRMLoadError",
    "encode_pieces", "load_backbone", "normalize_step", "pad_right", "quiet_transformers", "read_config",
    "resolve_device", "tokenize_row",
]

FORMAT_VERSION = 1
CONFIG_FILE = "prm_config.json"
HEAD_FILE = "head.safetensors"
IGNORE_INDEX = -100.0  # label of a position that carries no loss
MODES = ("prm", "orm", "pairwise")  # "pairwise" folders are read by prm.pairwise.PPRM
PAIR_READINGS = ("joint", "separate")



class PRMLoadError(OSError):
    """A folder that holds no readable PRM; the message names the folder and what is wrong."""


@dataclasses.dataclass(frozen=True)
class PRMConfig:
    """How a PRM reads traces (saved in `prm_config.json`)."""

    mode: str = option("prm",
        "'prm' (a value at every step end), 'orm' (trained on the last step only), 'pairwise' (a PPRM)")
    delimiter: str = option("\n",
        "the step delimiter; a step that does not end with it gets it appended before reading")
    chat_template: bool = option(False,
        "wrap the problem in the tokenizer's chat template (as a chat policy's prompt) instead of "
        "problem + delimiter")
    max_length: int | None = option(None,
        "most tokens read per sequence (longer ones lose their start); None: the backbone's "
        "max_position_embeddings")
    pair_reading: str = option("joint",
        "how a pairwise PPRM reads a pair: 'joint' (both solutions in one sequence, the head at its last "
        "token) or 'separate' (each solution alone, P(a > b) = sigmoid(s(a) - s(b)): a Bradley-Terry "
        "model over one score per solution)")
    batch_size: int = option(64, "sequences per forward pass")
    num_threads: int | None = option(None,
        "torch CPU threads while scoring (restored after); None: leave torch's setting")
    # On by default: on the toy PRM on CPU (benchmarks/prm_throughput.py --repeats 3: 8 trees, 4 children
    # per level, 1 thread) incremental scoring was 1.2x full rescoring's steps/s at depth 1, 1.9x at 4,
    # 4.1x at 16 (reading 1.00 against 8.9 times the tree's unique tokens), with 50 MB of cache at depth 16.
    incremental: bool = option(True,
        "score a step from its parent's cached keys and values (prm/kv_cache.py), reading only the "
        "step's tokens; scores equal a full reading. Off: every step rereads its whole prefix")
    cache_bytes: int = option(1 << 30,
        "byte budget of the incremental cache (keys, values: an LRU over tree nodes)")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.delimiter, str) or not self.delimiter:
            raise ValueError(f"delimiter must be a non-empty string, got {self.delimiter!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"max_length must be None or an int >= 2, got {self.max_length!r}")
        if self.pair_reading not in PAIR_READINGS:
            raise ValueError(f"pair_reading must be one of {PAIR_READINGS}, got {self.pair_reading!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be None or an int >= 1, got {self.num_threads!r}")
        if not isinstance(self.incremental, bool):
            raise ValueError(f"incremental must be true or false, got {self.incremental!r}")
        if not isinstance(self.cache_bytes, int) or isinstance(self.cache_bytes, bool) or self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be an int >= 0, got {self.cache_bytes!r}")


# ---------------------------------------------------------------------------------------------------
# Pure encoding functions (no model): shared by scoring and training


def normalize_step(step: str, delimiter: str) -> str:
    """The step as the PRM reads it: ending with the delimiter (appended when missing)."""
    return step if step.endswith(delimiter) else step + delimiter


def encode_pieces(tokenizer, head_ids: Sequence[int], pieces: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of `head_ids + pieces`, each piece tokenised on its own, and where each piece ends.

    Args:
        tokenizer: any tokenizer whose `__call__(list[str], add_special_tokens=False)` returns
            `{"input_ids": [[int]]}`.
        head_ids: ids that open the sequence (BOS, a rendered chat template, the problem line).
        pieces: [K] texts, each non-empty.

    Returns:
        (ids, ends): ends[k] is the index in `ids` of the last token of piece k ([K]).
    """
    ids = list(head_ids)
    ends = []
    if pieces:
        for k, piece_ids in enumerate(tokenizer(list(pieces), add_special_tokens=False)["input_ids"]):
            if not piece_ids:
                raise ValueError(f"piece {k} ({pieces[k][:40]!r}) tokenises to nothing")
            ids.extend(piece_ids)
            ends.append(len(ids) - 1)
    return ids, ends


def tokenize_row(tokenizer, head_ids: Sequence[int], steps: Sequence[str], targets: Sequence[float], *,
                 delimiter: str, mode: str = "prm", max_length: int | None = None) -> dict:
    """One training row: token ids, and a float label at the last token of every step.

    Every other position is `IGNORE_INDEX` (-100.0): only step ends carry loss. In "orm" mode only
    the last step's end does (its target is the trace's outcome). A row longer than `max_length`
    loses its first tokens; targets of steps whose end falls off are dropped.

    Args:
        tokenizer: see `encode_pieces`.
        head_ids: ids of BOS + problem line (`PRM.head_ids(problem)`).
        steps: [K] step texts (the delimiter is appended where missing).
        targets: [K] values in [0, 1] (0/1 labels or soft values).
        delimiter: the step delimiter.
        mode: "prm" or "orm".
        max_length: None or the most tokens kept.

    Returns:
        {"input_ids": [T] ints, "labels": [T] floats}.
    """
    if len(steps) != len(targets):
        raise ValueError(f"{len(steps)} steps but {len(targets)} targets")
    ids, ends = encode_pieces(tokenizer, head_ids, [normalize_step(s, delimiter) for s in steps])
    labels = [IGNORE_INDEX] * len(ids)
    keep = range(len(ends)) if mode == "prm" else range(len(ends) - 1, len(ends))
    for k in keep:
        labels[ends[k]] = float(targets[k])
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return {"input_ids": ids, "labels": labels}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or 'auto': CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _special_head(tokenizer) -> list[int]:
    """The ids a tokenizer puts before a text by itself (BOS for Llama-like models, none for others)."""
    with_special = tokenizer("", add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    return [t for t in with_special if t != eos]


@contextlib.contextmanager
def quiet_transformers():
    """transformers' info/warning logs and progress bars off for a block (load reports of a
    backbone read from a causal LM folder list its unused LM head; missing keys are checked)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(folder: Path, dtype: torch.dtype, *, trust_remote_code: bool = False):
    """(base model, tokenizer) of a local folder; raises ValueError when weights are missing.

    The folder's own code (an `auto_map` in its config.json) runs only with `trust_remote_code=True`;
    without it such a folder raises `PRMLoadError` before transformers reads it.
    """
    check_remote_code(folder, trust_remote_code, error=PRMLoadError)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        backbone, info = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                                   output_loading_info=True, trust_remote_code=trust_remote_code)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"the backbone's weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    return backbone, tokenizer


# ---------------------------------------------------------------------------------------------------
# The model


class PRM(PieceReader):
    """A causal LM backbone + a linear head on the last hidden state; implements `StepScorer`
    (the reading and scoring calls are `prm.reader.PieceReader`'s).

    Attributes:
        backbone: a transformers base model (`AutoModel`); a causal LM given here is replaced by
            its base model.
        head: Linear(hidden_size, 1), float32.
        tokenizer: the backbone's tokenizer.
        config: the `PRMConfig`.
    """

    expected_mode: str | None = None  # None: "prm" or "orm"; subclasses name theirs

    def __init__(self, backbone: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                 config: PRMConfig | None = None, head: nn.Linear | None = None):
        super().__init__()
        self.config = PRMConfig(mode=self.expected_mode or "prm") if config is None else config
        _check_mode(type(self), self.config.mode)
        # A causal LM is read through its base model: the LM head is not needed.
        self.backbone = getattr(backbone, "base_model", backbone)
        self.tokenizer = tokenizer
        hidden = backbone.config.hidden_size
        if head is None:
            head = nn.Linear(hidden, 1)
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden))
            nn.init.zeros_(head.bias)
        self.head = head.float()
        if self.config.chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("PRMConfig.chat_template=True but the tokenizer has no chat template")
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        limit = getattr(backbone.config, "max_position_embeddings", None)
        self.max_length = self.config.max_length or limit
        self._special = _special_head(tokenizer)
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()

    # -------------------------------------------------------------------------------------------
    # Construction, saving and loading

    @classmethod
    def from_backbone(cls, path: str | Path, config: PRMConfig | None = None, *, device=None,
                      dtype: torch.dtype | None = None, seed: int = 0, trust_remote_code: bool = False) -> "PRM":
        """A new PRM (fresh head) on the backbone and tokenizer of a local model folder.

        Args:
            path: a transformers model folder (a causal LM or base model, with its tokenizer).
            config: reading options (default `PRMConfig()`).
            device: None/'auto' (CUDA when available), 'cpu', 'cuda', ...
            dtype: backbone dtype (default float32).
            seed: seed of the head's initialisation.
            trust_remote_code: let the folder run its own code (an `auto_map` in its config.json);
                False: such a folder raises `PRMLoadError` naming the flag, before it is read.
        """
        folder = _check_folder(path)
        check_remote_code(folder, trust_remote_code, error=PRMLoadError)
        try:
            backbone, tokenizer = load_backbone(folder, dtype or torch.float32, trust_remote_code=trust_remote_code)
        except Exception as err:  # transformers raises many kinds; name the folder, keep the cause
            raise PRMLoadError(f"cannot load a backbone and tokenizer from {str(folder)!r}: "
                               f"{type(err).__name__}: {err}") from err
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            prm = cls(backbone, tokenizer, config)
        return prm.to(resolve_device(device))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Writes the backbone, tokenizer, head weights and `prm_config.json` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.backbone.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(folder / HEAD_FILE))
        record = {"format_version": FORMAT_VERSION, "kind": "treesearch prm",
                  "head": {"in_features": self.head.in_features, "out_features": self.head.out_features},
                  **dataclasses.asdict(self.config)}
        (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, *,
                        dtype: torch.dtype | None = None, trust_remote_code: bool = False, **overrides) -> "PRM":
        """Loads a PRM saved by `save_pretrained` from a local folder (never from a hub).

        Args:
            path: the folder.
            device: None/'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ...
            dtype: backbone dtype; default float32 on CPU, bfloat16 (else float16) on CUDA.
            trust_remote_code: let the folder run its own code (an `auto_map` in its config.json);
                never read from the folder itself.
            **overrides: `PRMConfig` fields to replace (batch_size, num_threads, max_length).

        Returns:
            The PRM in eval mode. Raises `PRMLoadError` (an OSError) naming the folder when it is
            missing, holds no PRM of this format, or asks to run its own code without
            trust_remote_code.
        """
        folder = _check_folder(path)
        check_remote_code(folder, trust_remote_code, error=PRMLoadError)
        config, record = read_config(folder)
        try:
            _check_mode(cls, config.mode)
        except ValueError as err:
            raise PRMLoadError(f"{str(folder)!r}: {err}") from None
        config = dataclasses.replace(config, **overrides)
        dev = resolve_device(device)
        if dtype is None:
            dtype = torch.float32 if dev.type != "cuda" else (
                torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        try:
            backbone, tokenizer = load_backbone(folder, dtype, trust_remote_code=trust_remote_code)
            state = load_file(str(folder / HEAD_FILE))
            head = nn.Linear(record["head"]["in_features"], record["head"]["out_features"])
            head.load_state_dict(state)
        except Exception as err:
            raise PRMLoadError(f"cannot load the PRM in {str(folder)!r}: {type(err).__name__}: {err}") from err
        model = cls(backbone, tokenizer, config, head=head)
        return model.to(dev).eval()

    # -------------------------------------------------------------------------------------------
    # Encoding

    def _head_ids(self, problem: str) -> list[int]:
        """BOS + `problem + delimiter`, or the chat template's rendering of the problem."""
        if self.config.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": problem}],
                                                      tokenize=False, add_generation_prompt=True)
            return encode_pieces(self.tokenizer, [], [text])[0]
        return encode_pieces(self.tokenizer, self._special, [problem + self.config.delimiter])[0]

    def encode(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """(ids, step-end indices) of a trace, as the PRM reads it (see `encode_pieces`)."""
        delimiter = self.config.delimiter
        return encode_pieces(self.tokenizer, self.head_ids(problem), [normalize_step(s, delimiter) for s in steps])

    def piece_ids(self, step: str, index: int) -> tuple[list[int], int]:
        """(ids, read offset) of one step as `encode` tokenises it: the piece contract of
        prm/kv_cache.py (the value is read at the piece's last token). Cached per text."""
        ids = self._pieces.get(step)
        if ids is None:
            ids = encode_pieces(self.tokenizer, [], [normalize_step(step, self.config.delimiter)])[0]
            self._pieces[step] = ids
            if len(self._pieces) > 65536:
                self._pieces.popitem(last=False)
        else:
            self._pieces.move_to_end(step)
        return ids, -1

    # -------------------------------------------------------------------------------------------
    # Forward and reading

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] logits of the value at every position (sigmoid gives the value)."""
        return self.head_logits(self.hidden_states(input_ids, attention_mask))

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[...] logits of the value of [..., H] hidden states."""
        return self.head(hidden.float()).squeeze(-1)

    def reading(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N] values in [0, 1] of [N, H] last hidden states at step ends."""
        return torch.sigmoid(self.head_logits(hidden))

    def with_config(self, **changes) -> "PRM":
        """A PRM on this one's backbone, tokenizer and head with `PRMConfig` fields replaced (e.g.
        incremental=False), in eval mode, with a cache of its own."""
        return type(self)(self.backbone, self.tokenizer, dataclasses.replace(self.config, **changes),
                          head=self.head).eval()


# ---------------------------------------------------------------------------------------------------
# Folder helpers


def _check_mode(cls: type, mode: str) -> None:
    if cls.expected_mode is None and mode == "pairwise":
        raise ValueError("this model is a pairwise PPRM (mode 'pairwise'): load it with prm.pairwise.PPRM")
    if cls.expected_mode is not None and mode != cls.expected_mode:
        raise ValueError(f"{cls.__name__} needs mode {cls.expected_mode!r}, got {mode!r}")


def _check_folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PRMLoadError(f"model folder {str(folder)!r} does not exist or is not a folder")
    return folder


def read_config(folder: str | Path) -> tuple[PRMConfig, dict[str, Any]]:
    """The `PRMConfig` and raw record of a saved PRM folder; `PRMLoadError` naming it otherwise."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PRMLoadError(f"{str(folder)!r} holds no PRM: {CONFIG_FILE} is missing "
                           f"(is it a plain model folder? train a PRM with python -m prm.train)") from None
    except (OSError, ValueError) as err:
        raise PRMLoadError(f"cannot read {str(path)!r}: {err}") from None
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        got = record.get("format_version") if isinstance(record, dict) else None
        raise PRMLoadError(f"{str(path)!r} has format_version {got!r}; this code reads version {FORMAT_VERSION}")
    fields = {f.name for f in dataclasses.fields(PRMConfig)}
    try:
        config = PRMConfig(**{k: v for k, v in record.items() if k in fields})
    except (TypeError, ValueError) as err:
        raise PRMLoadError(f"bad settings in {str(path)!r}: {err}") from None
    if "head" not in record:
        raise PRMLoadError(f"{str(path)!r} lacks the 'head' entry")
    return config, record
