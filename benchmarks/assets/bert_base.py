"""bert-base: BERT-base (uncased vocabulary size) with a 2-class sequence-classification head and
random weights, on generated token ids (inference only).

Built by transformers' `BertForSequenceClassification` from `BertConfig()`, whose defaults are
BERT-base: 12 layers, hidden 768, 12 heads, vocabulary 30522, 109.5 M parameters (85 M of them in
the encoder's Linear layers), about 22.3 GFLOPs per 128-token sequence (2 x 85 M x 128, plus
attention). A sample is `seq_len` token ids drawn uniformly from [0, vocab) (int64); every token is
real, so no attention mask is passed (the same as a mask of ones: no padding). Nothing is
downloaded; rows carry no accuracy. Config keys: batch_size, threads, dtype, engine, quantization,
seq_len (default 128, at most 512), layers (default 12; any other value is not the published model,
for quick tests only).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks.assets.base import AssetData, TorchAsset, config_int
from benchmarks.assets.hf import Logits, transformers_class

VOCAB = 30522
MAX_POSITIONS = 512


class BertBase(TorchAsset):
    name = "bert-base"
    tasks = ("infer",)
    description = ("BERT-base (transformers BertConfig defaults) for 2-class sequence classification, random weights, "
                   "on generated token ids of seq_len (default 128); no labels. cfg layers != 12 is not the published model")

    def seq_len(self, config: dict[str, Any]) -> int:
        n = config_int(config, "seq_len", 128)
        if n > MAX_POSITIONS:
            raise ValueError(f"asset {self.name!r}: config 'seq_len' must be at most {MAX_POSITIONS} (BERT's positions), got {n}")
        return n

    def load_data(self, config: dict[str, Any], seed: int) -> AssetData:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, VOCAB, (self.generated_samples, self.seq_len(config)), generator=gen, dtype=torch.int64)
        return AssetData(x_test=ids, generated=True)

    def build(self, config: dict[str, Any]) -> nn.Module:
        self.seq_len(config)
        cfg = transformers_class("BertConfig")(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, num_labels=2,
                                               num_hidden_layers=config_int(config, "layers", 12))
        return Logits(transformers_class("BertForSequenceClassification")(cfg), "input_ids")
