"""A checkpoint's 4-bit and 8-bit codes, found again in its fp32 weights (imports torch).

SmolLM2 ships as a GGUF file of codes: every Linear weight in Q4_1 (per 32 inputs, an fp16
step d and minimum m, and a 4-bit q: w = d q + m) and its embedding, the tied output layer, in
Q8_0 (an fp16 step and an 8-bit q: w = d q). model/smollm2.py turns them into an fp32 folder
once; loaded from there, a decode step read 4 bytes a weight for what 0.63 (or 1.06) hold.

`find()` recovers the codes from the fp32 values (codes.c, ~0.1 s for SmolLM2) and keeps them
only if every block of 32 reproduces its weights to the bit (d q is exact in fp32, so d q + m
rounds once, as kernel.c's FMA does). kernel.c then turns them back into those fp32 values in
registers and adds the products in the order it adds fp32 weights: the outputs are the same,
bit for bit, with a fifth of the bytes read and held. Any other weight (a model trained in fp32
or bf16, a block that does not fit) stays fp32: `find()` returns None.

    found = find(weight)     # None, or Codes(format, packed) for kernel.linear
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.engines import kernel

GROUP = 32  # inputs per block of codes (GGUF's Q4_1 and Q8_0)
GROUP_BYTES = {kernel.Q4: 80, kernel.Q8: 136}  # kernel.h's Q4_GROUP and Q8_GROUP


@dataclass(frozen=True)
class Codes:
    format: int  # kernel.Q4 or kernel.Q8
    packed: torch.Tensor  # uint8, in kernel.h's layout of groups


def find(weight: torch.Tensor) -> Codes | None:
    """The weight's codes in kernel.c's layout, if every block of 32 inputs is exactly a Q4_1
    or Q8_0 block; else None (the weight stays fp32, as where kernel.c does not run)."""
    lib = kernel.library()
    if (
        lib is None
        or weight.dtype != torch.float32
        or weight.device.type != "cpu"
        or weight.dim() != 2
        or weight.shape[1] % GROUP
        or not weight.numel()
    ):
        return None
    weight = weight.detach().contiguous()
    out, inp = weight.shape
    blocks = -(-out // kernel.BLOCK_ROWS)
    for fmt in (kernel.Q4, kernel.Q8):
        packed = torch.zeros(blocks * inp // GROUP * GROUP_BYTES[fmt], dtype=torch.uint8)
        if lib.find_codes(weight.data_ptr(), out, inp, fmt, packed.data_ptr()):
            return Codes(fmt, packed)
    return None
