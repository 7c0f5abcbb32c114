"""gpt2: a decoder-only language model with GPT-2's architecture (transformers' GPT2Config),
random weights, nothing downloaded. Measured two ways:

* as a server (benchmarks/llm): prompts of given lengths streamed token by token, giving TTFT,
  TPOT, tokens/s and goodput under arrival rates (`prefill` / `decode` below);
* as `infer` (LoadGen): one forward pass over a prompt of `seq_len` generated token ids, per sample.

Config keys: layers (12), hidden (768), heads (12), vocab (50257), positions (1024): the defaults
are GPT-2 small (124 M parameters); smaller values make a model that is not GPT-2 but runs the same
code, for tests. seq_len (128) for `infer`; batch_size, threads, dtype. Random weights: no quality
column (perplexity of random weights would describe nothing).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset, config_int


def _gpt2_config(config: dict[str, Any]) -> Any:
    from transformers import GPT2Config  # imported here: only generative trials pay for it

    hidden, heads = config_int(config, "hidden", 768), config_int(config, "heads", 12)
    if hidden % heads:
        raise ValueError(f"config 'hidden' ({hidden}) must be a multiple of 'heads' ({heads})")
    vocab = config_int(config, "vocab", 50257)
    return GPT2Config(n_layer=config_int(config, "layers", 12), n_embd=hidden, n_head=heads, vocab_size=vocab,
                      n_positions=config_int(config, "positions", 1024),
                      bos_token_id=vocab - 1, eos_token_id=vocab - 1)


class GPT2(TorchAsset):
    name = "gpt2"
    tasks = ("infer",)
    generated_samples = 64
    description = "GPT-2 architecture (small by default), random weights; served token by token or one forward pass per prompt."

    def build(self, config: dict[str, Any]) -> nn.Module:
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel(_gpt2_config(config))
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        return model.eval()

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        seq = config_int(config, "seq_len", 128)
        vocab = config_int(config, "vocab", 50257)
        if seq > config_int(config, "positions", 1024):
            raise ValueError(f"config 'seq_len' ({seq}) exceeds the model's 'positions'")
        gen = torch.Generator().manual_seed(seed)
        return AssetData(x_test=torch.randint(0, vocab, (self.generated_samples, seq), generator=gen), generated=True)

    def run_batch(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        # the core casts inputs to the model's dtype; token ids must stay integers
        return model(input_ids=batch.long(), use_cache=False).logits[:, -1, :]

    # -- serving: one sequence, token by token, with its key/value cache as the state

    def prefill(self, model: nn.Module, prompt_ids: torch.Tensor) -> tuple[int, Any]:
        out = model(input_ids=prompt_ids, use_cache=True)
        return int(out.logits[0, -1].argmax()), _cache_of(out)

    def decode(self, model: nn.Module, token: int, state: Any) -> tuple[int, Any]:
        ids = torch.tensor([[token]], dtype=torch.long, device=model.lm_head.weight.device)
        kw = getattr(self, "_cache_kw", "past_key_values")
        out = model(input_ids=ids, use_cache=True, **{kw: state})
        return int(out.logits[0, -1].argmax()), _cache_of(out)


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
