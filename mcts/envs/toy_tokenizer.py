"""The toy policy's character-level tokenizer: one token per character the toy world writes.

    build_char_tokenizer()     a `transformers.PreTrainedTokenizerFast` over `CHARACTERS`, with
                               the special tokens `SPECIAL_TOKENS` (ids 0-3)

A build saves it beside the toy policy's weights (`mcts.envs.tiny_models`), so that any loader
reads it back; tests and benchmarks that need a tokenizer without a model build one with it.
"""

from __future__ import annotations

__all__ = ["CHARACTERS", "SPECIAL_TOKENS", "build_char_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0, 1, 2, 3
# Newline and printable ASCII: every character the toy world writes, and then some.
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def build_char_tokenizer(model_max_length: int = 1024):
    """A character-level tokenizer over `CHARACTERS`, as a `transformers.PreTrainedTokenizerFast`.

    One token per character (a BPE without merges), `<bos>` prepended by the post-processor when
    special tokens are added, no normalisation, and a decoder that fuses the characters back:
    decoding reproduces any text of `CHARACTERS` exactly, spaces and newlines included. Other
    characters become `<unk>` (dropped when special tokens are skipped).
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        clean_up_tokenization_spaces=False, model_max_length=model_max_length)
