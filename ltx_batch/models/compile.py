"""Optional ``torch.compile`` of the transformer's repeated block (job key ``model.compile``).

Only the blocks are compiled: they hold nearly all of a step's work, and every block runs the same code, so
dynamo traces one and the others reuse its graph (their parameters are graph inputs, not constants): the
compile cost does not grow with depth. ``dynamic=True`` makes every size symbolic from the first call, so new
token counts (frames, height, width), text lengths and batch sizes reuse the graph instead of compiling one
per row shape. What does compile once more is a change of kind, because PyTorch specialises sizes 0 and 1:
a batch of one, per-video versus per-token timesteps, a text mask or none.

The eager fast paths step aside under compilation (``torch.compiler.is_compiling()``): linears run as plain
``nn.Linear`` instead of oneDNN's private op, which inductor cannot lower, and RoPE rotates in real
arithmetic instead of a complex multiply, for which inductor generates no code. fp8 and GGUF linears and
their LoRA side paths compile too (the dequantisation becomes part of the graph). Torch only.
"""

from __future__ import annotations

import torch.fx.experimental._config as shape_config

from ltx_batch.models.transformer import LTXVideoTransformer


def compile_blocks(model: LTXVideoTransformer) -> LTXVideoTransformer:
    """Compile every transformer block in place (state-dict keys unchanged); returns ``model``.

    Compilation itself happens at the first forward (seconds to minutes, once per process and input kind).
    """
    # Duck shaping gives sizes that happen to be equal at the first call one symbol: a batch of 2 would be tied
    # to RoPE's (cos, sin) pair axis, or a token count to the model width, and specialised with it, so the next
    # shape would compile again. Turning it off is always sound (only more symbols). It is process-wide and
    # read when a frame compiles, after this call.
    shape_config.use_duck_shape = False
    for block in model.transformer_blocks:
        block.compile(dynamic=True)
    return model
