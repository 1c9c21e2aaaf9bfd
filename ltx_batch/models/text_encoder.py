"""T5 prompt encoding, as diffusers' LTX pipelines do it.

Prompts are tokenised to exactly ``max_sequence_length`` tokens (padded, truncated, with the end-of-sequence
token), encoded by the T5 encoder with the attention mask, and returned with that mask. The padding matters:
the transformer's cross-attention is masked, and the pipelines' defaults (256 tokens for the condition
pipeline, 128 for the base pipeline) decide what the model sees.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class TextEncoder:
    """A T5 encoder and its tokenizer. Not an ``nn.Module``: it owns a transformers model, it is not one."""

    def __init__(self, model, tokenizer):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, encoder_dir: str | Path, tokenizer_dir: str | Path, *, dtype: torch.dtype, device: torch.device):
        # transformers is imported here so that importing ltx_batch.models stays cheap for stages without T5.
        from transformers import AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-shard bars from every actor would flood the run's output

        model = T5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        return cls(model.to(device), tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def tokenize(self, prompts: list[str], max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids, batch.attention_mask.bool()
        if ids.shape[1] != max_sequence_length:  # a tokenizer that ignored max_length would shift every token
            raise ValueError(f"tokenizer returned {ids.shape[1]} tokens, expected {max_sequence_length}")
        return ids, mask

    @torch.inference_mode()
    def encode(
        self, prompts: list[str], max_sequence_length: int, *, mask_padding: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (embeddings (B, L, C) in the encoder's dtype, mask (B, L) bool), L = max_sequence_length.

        ``mask_padding=False`` lets T5 attend to the padding tokens, as diffusers' ``LTXPipeline`` (the base
        pipeline) encodes; the embeddings of the real tokens then depend on the padded length.
        """
        ids, mask = self.tokenize(prompts, max_sequence_length)
        for p, m in zip(prompts, mask):
            if bool(m[-1]) and len(self.tokenizer(p).input_ids) > max_sequence_length:
                log.warning("prompt truncated to %d tokens: %.60s...", max_sequence_length, p)
        device = self.device
        encoder_mask = mask.to(device) if mask_padding else None
        embeds = self.model(ids.to(device), attention_mask=encoder_mask)[0]
        return embeds, mask.to(device)
