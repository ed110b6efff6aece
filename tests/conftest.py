"""Shared test fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def random_llama():
    """A factory of small untrained Llama models with the toy world's character tokenizer:
    `random_llama(max_positions, num_layers, folder=None)` -> (model, tokenizer), saved into
    `folder` (model and tokenizer) when one is given. Seeded: the same arguments, the same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mcts.envs.toy_tokenizer import build_char_tokenizer

    def make(max_positions: int, num_layers: int, folder=None):
        tok = build_char_tokenizer(max_positions)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=num_layers,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if folder is not None:
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        return model, tok

    return make
