"""Prompt encoding against diffusers' two LTX pipelines on the debug T5.

``LTXConditionPipeline`` encodes 256 tokens with the attention mask; ``LTXPipeline`` encodes 128 tokens and
lets T5 attend to the padding (no mask), which changes the real tokens' embeddings too. Ours must match each
when asked to (``mask_padding``), for prompts of different lengths, one of them truncated.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import LTXConditionPipeline, LTXPipeline  # noqa: E402

from ltx_batch.weights.checkpoint import open_checkpoint  # noqa: E402

# "a" alone, a sentence, and one far longer than either limit (truncated by both pipelines)
PROMPTS = [
    "a",
    "a cat walks on the street at night, slow motion, close up",
    " ".join(["the red car moves under a blue sky"] * 60),
    "",
]


@pytest.fixture(scope="module")
def encoder(debug_dir):
    return open_checkpoint(str(debug_dir)).load_text_encoder(dtype=torch.float32)


@pytest.mark.parametrize(
    "pipeline_cls, max_len, mask_padding",
    [(LTXConditionPipeline, 256, True), (LTXPipeline, 128, False)],
    ids=["condition", "base"],
)
def test_encode_matches_diffusers(debug_dir, encoder, pipeline_cls, max_len, mask_padding):
    pipe = pipeline_cls.from_pretrained(str(debug_dir), dtype=torch.float32)
    # the long prompt really is longer than the limit: truncation is exercised
    assert len(pipe.tokenizer(PROMPTS[2]).input_ids) > max_len
    with torch.no_grad():  # as the pipelines' __call__ runs it (grad mode changes SDPA's rounding)
        want_embeds, want_mask = pipe._get_t5_prompt_embeds(
            PROMPTS, max_sequence_length=max_len, device=torch.device("cpu"), dtype=torch.float32
        )
    embeds, mask = encoder.encode(PROMPTS, max_len, mask_padding=mask_padding)

    assert embeds.shape == want_embeds.shape == (len(PROMPTS), max_len, embeds.shape[-1])
    assert mask.dtype == want_mask.dtype == torch.bool
    assert torch.equal(mask, want_mask)
    assert mask[2].all() and mask[0].sum() == 2 and mask[3].sum() == 1  # truncated: no padding; "a </s>"; "</s>"
    torch.testing.assert_close(embeds, want_embeds, rtol=1e-5, atol=1e-5)

    # the other masking gives different embeddings: the flag is what makes each pipeline's encoding
    other, _ = encoder.encode(PROMPTS, max_len, mask_padding=not mask_padding)
    assert not torch.allclose(other[0], want_embeds[0], atol=1e-4)


def test_one_prompt_alone_equals_it_in_a_batch(encoder):
    batch, batch_mask = encoder.encode(PROMPTS, 256)
    alone, alone_mask = encoder.encode(PROMPTS[1:2], 256)
    assert torch.equal(alone_mask[0], batch_mask[1])
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-5, atol=1e-6)
