"""A checkpoint's 4-bit and 8-bit codes (model/engines/codes.py) read by kernel.c: found only
where they reproduce every weight to the bit, and then the same outputs, bit for bit, as the
fp32 weights give, on every path kernel.c takes (AVX2's row tiles, narrow and wide panels,
several passes; AVX-512's row tiles) and through layer.c's whole decoder."""

from __future__ import annotations

import pytest
import torch

from model.engines import codes, fused, kernel
from model.engines.packing import PackedLinear, pack_linears, packed_backend
from tests.unit.test_fused import small_llama

needs_kernel = pytest.mark.skipif(
    kernel.library() is None, reason="kernel.c needs x86-64 with AVX2, FMA, F16C and a C compiler"
)


def as_q4(w: torch.Tensor) -> torch.Tensor:
    """w rounded as GGUF's Q4_1 does (per 32 inputs: fp16 minimum and step, 4-bit q), as fp32:
    what model/smollm2.py's conversion writes."""
    b = w.reshape(w.shape[0], -1, 32)
    m = b.amin(-1, keepdim=True).half().float()
    d = ((b.amax(-1, keepdim=True) - m) / 15).half().float()
    q = torch.where(d > 0, (b - m) / d, torch.zeros_like(b)).round().clamp(0, 15)
    return (d * q + m).reshape(w.shape)


def as_q8(w: torch.Tensor) -> torch.Tensor:
    """w rounded as GGUF's Q8_0 does (per 32 inputs: fp16 step, 8-bit q), as fp32."""
    b = w.reshape(w.shape[0], -1, 32)
    d = (b.abs().amax(-1, keepdim=True) / 127).half().float()
    q = torch.where(d > 0, b / d, torch.zeros_like(b)).round().clamp(-127, 127)
    return (d * q).reshape(w.shape)


def codes_llama():
    """SmolLM2's case in miniature: a small Llama whose projections are Q4_1 codes and whose
    tied embedding is Q8_0, as fp32 (unpacked)."""
    model = small_llama()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(as_q8(p) if "embed" in name else as_q4(p))
    return model


def linear_of(weight: torch.Tensor, bias: bool) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


@needs_kernel
@pytest.mark.parametrize(("rounding", "fmt"), [(as_q4, kernel.Q4), (as_q8, kernel.Q8)])
@pytest.mark.parametrize(("out", "inp"), [(7, 96), (50, 64), (192, 576), (576, 1536)])
def test_codes_give_the_fp32_weights_outputs_bit_for_bit(rounding, fmt, out, inp, tiles):
    """On AVX2, rows 1-6 and 9-15 take the row tiles (codes turned into fp32 in registers), 7-8
    the narrow panel and 16 on the wide ones (a chunk of codes turned into fp32 at a time); 300
    x 1536 inputs takes several passes. On AVX-512 every row count takes the row tiles, 8 rows
    at a time (4 outputs up to 4 rows, 2 from 5). 7 and 50 outputs end in a partial block."""
    gen = torch.Generator().manual_seed(out * inp)
    layer = linear_of(rounding(torch.randn(out, inp, generator=gen) * 0.05), bias=True)
    held, plain = PackedLinear(layer), PackedLinear(layer, use_codes=False)
    assert (held.format, plain.format) == (fmt, kernel.F32)
    with torch.inference_mode():
        for rows in (1, 2, 3, 4, 6, 7, 8, 9, 15, 16, 17, 25, 41, 300):
            x = torch.randn(rows, inp, generator=gen)
            assert torch.equal(held(x), plain(x)), rows
            torch.testing.assert_close(held(x), layer(x), atol=1e-4 * inp**0.5, rtol=1e-4)


@needs_kernel
def test_codes_take_a_fifth_of_the_fp32_bytes():
    weight = as_q4(torch.randn(192, 576))
    found = codes.find(weight)
    assert found.format == kernel.Q4
    assert found.packed.numel() == 192 * 576 * 5 // 8  # 4 bits a weight + 2 fp16 per 32
    assert codes.find(as_q8(weight)).packed.numel() == 192 * 576 * 17 // 16


@needs_kernel
def test_weights_that_are_not_exactly_codes_stay_fp32():
    """A model trained in fp32 (tiny-starcoder), one weight off by one unit in the last place,
    inputs not a multiple of 32, another dtype: no codes, so kernel.c reads fp32 and nothing
    changes."""
    torch.manual_seed(0)
    assert codes.find(torch.randn(64, 64)) is None
    nudged = as_q4(torch.randn(64, 64))
    nudged[37, 5] = torch.nextafter(nudged[37, 5], torch.tensor(1.0))
    assert codes.find(nudged) is None
    assert codes.find(as_q4(torch.randn(64, 64))[:, :48]) is None
    assert codes.find(as_q4(torch.randn(64, 64)).bfloat16()) is None
    assert codes.find(torch.empty(0, 64)) is None


@needs_kernel
def test_constant_and_zero_blocks_are_codes_too(tiles):
    """A block whose 32 weights are equal (a zeroed row, a pruned block) has q 0 everywhere."""
    weight = as_q4(torch.randn(8, 64))
    weight[2] = 0.0
    weight[5, :32] = 0.25
    layer = linear_of(weight, bias=False)
    held = PackedLinear(layer)
    assert held.format == kernel.Q4
    with torch.inference_mode():
        x = torch.randn(3, 64)
        assert torch.equal(held(x), PackedLinear(layer, use_codes=False)(x))


@needs_kernel
def test_a_model_of_codes_runs_layer_c_with_the_same_logits_and_tokens(tiles):
    """SmolLM2's case in miniature: Q4_1 projections and a Q8_0 tied embedding. layer.c's
    decoder over codes gives the logits and greedy tokens the fp32 weights give, exactly, and
    the model says what its kernel reads."""
    models = []
    for use_codes in (True, False):
        model = codes_llama()
        pack_linears(model, use_codes=use_codes)
        assert fused.fuse_layers(model) == 2
        models.append(model)
    held, plain = models
    name = kernel.label()
    assert packed_backend(held) == f"{name} (q4+q8)" and packed_backend(plain) == name
    ids = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(held(ids).logits, plain(ids).logits)
        steps = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(held.generate(ids, **steps), plain.generate(ids, **steps))
