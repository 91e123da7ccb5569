"""kernel.c's bf16 arithmetic (kernel512.c; DTYPE=bfloat16 on a CPU with AVX512-BF16): x rounded
to bf16 and multiplied with bf16 weights, or with a checkpoint's 4-bit codes as they are, summed
in fp32; exact fp32 where it should stay so (8-bit codes, steps of more than 2 rows of codes)."""

from __future__ import annotations

import pytest
import torch

from model.engines import fused, kernel
from model.engines.packing import PackedLinear, computes_in_bf16, pack_linears, packed_backend
from tests.unit.test_codes import as_q4, as_q8, codes_llama, linear_of
from tests.unit.test_fused import small_llama

needs_bf16 = pytest.mark.skipif(
    not kernel.bf16_arithmetic(), reason="needs kernel.c on a CPU with AVX512-BF16 and AVX512-BW"
)
ROWS = [1, 2, 3, 4, 5, 8, 9, 13, 33]  # decode steps of 1-8 streams, a ragged 8 + 1, 8 + 5, more
BF16X_ROWS = 2  # kernel.c's: codes in bf16 arithmetic up to this many rows, exact fp32 above


def bf16_reference(x: torch.Tensor, layer: torch.nn.Linear, round_weights: bool):
    """What bf16 arithmetic computes: x (and the weights, where stored as bf16) rounded to bf16,
    the products summed in fp64 here (kernel.c's fp32 sums differ by rounding only)."""
    w = layer.weight.detach()
    w = w.bfloat16().double() if round_weights else w.double()
    y = x.bfloat16().double() @ w.T
    return (y if layer.bias is None else y + layer.bias.detach().double()).float()


@needs_bf16
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("out", "inp"), [(5, 64), (192, 576), (576, 1536)])
@pytest.mark.parametrize("bias", [True, False])
def test_bf16_weights_compute_bf16_products_summed_in_fp32(rows, out, inp, bias):
    """A weight that is not a checkpoint's codes is stored as bf16 (half fp32's bytes); an
    output count that is not a multiple of 4 is padded."""
    gen = torch.Generator().manual_seed(rows * 7 + out)
    layer = linear_of(torch.randn(out, inp, generator=gen) * 0.05, bias)
    packed = PackedLinear(layer, bf16=True)
    assert (packed.format, packed.bf16) == (kernel.BF16, True)
    assert packed.packed_bytes == -(-out // 4) * 4 * inp * 2
    x = torch.randn(rows, inp, generator=gen)
    with torch.inference_mode():
        got = packed(x)
    want = bf16_reference(x, layer, round_weights=True)
    torch.testing.assert_close(got, want, atol=1e-5 * inp**0.5, rtol=1e-5)
    # and it is bf16, not fp32: the rounding shows against the fp32 weights
    assert not torch.allclose(got, layer(x), atol=1e-6, rtol=1e-6)


@needs_bf16
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("out", "inp"), [(7, 96), (192, 576), (576, 1536)])
def test_q4_codes_multiply_bf16_x_up_to_2_rows_and_stay_exact_above(rows, out, inp):
    """The codes themselves (no bf16 copy of the weights): 128 + q as bf16, the step and the
    minimum applied per group of 32 in fp32, so the result is x's rounding only. From 3 rows
    the exact fp32 tiles compute, bit for bit what the fp32 packing gives."""
    gen = torch.Generator().manual_seed(rows * 11 + out)
    layer = linear_of(as_q4(torch.randn(out, inp, generator=gen) * 0.05), bias=True)
    bf16, exact = PackedLinear(layer, bf16=True), PackedLinear(layer)
    assert bf16.format == kernel.Q4 | kernel.BF16X and bf16.packed_bytes == exact.packed_bytes
    x = torch.randn(rows, inp, generator=gen)
    with torch.inference_mode():
        got = bf16(x)
        if rows <= BF16X_ROWS:
            want = bf16_reference(x, layer, round_weights=False)
            # the offset 128 costs a few bits of fp32's 24 against the sums: far below bf16's 8
            torch.testing.assert_close(got, want, atol=3e-5 * inp**0.5, rtol=1e-5)
            assert not torch.equal(got, exact(x))
        else:
            assert torch.equal(got, exact(x))


@needs_bf16
def test_q8_codes_stay_exact_fp32():
    layer = linear_of(as_q8(torch.randn(96, 576) * 0.05), bias=False)
    packed = PackedLinear(layer, bf16=True)
    assert packed.format == kernel.Q8 and not packed.bf16
    x = torch.randn(1, 576)
    with torch.inference_mode():
        assert torch.equal(packed(x), PackedLinear(layer)(x))


@needs_bf16
def test_a_model_in_bf16_arithmetic_says_so_and_writes_nearly_fp32s_logits():
    """SmolLM2's case in miniature through layer.c: the label names the bf16 arithmetic, and the
    logits of a 2-token step (as a decode step of 2 streams) stay within bf16's rounding of the
    exact model's."""
    bf16, exact = codes_llama(), codes_llama()
    assert pack_linears(bf16, bf16=True) and pack_linears(exact)
    assert fused.fuse_layers(bf16) and fused.fuse_layers(exact)
    assert packed_backend(bf16).startswith(f"{kernel.label()} bf16 (q4+q8)")
    ids = torch.randint(0, 96, (1, BF16X_ROWS), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a, b = bf16(ids).logits, exact(ids).logits
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, atol=0.02 * b.abs().max().item(), rtol=0.02)


@needs_bf16
def test_a_plain_model_packs_bf16_weights_at_half_the_bytes():
    model, plain = small_llama(), small_llama()
    assert pack_linears(model, bf16=True) and pack_linears(plain)
    assert packed_backend(model).startswith(f"{kernel.label()} bf16")
    assert "(" not in packed_backend(model)  # no codes to name
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    fp32 = [m for m in plain.modules() if isinstance(m, PackedLinear)]
    assert all(m.format == kernel.BF16 for m in layers)
    assert sum(m.packed_bytes for m in layers) * 2 == sum(m.packed_bytes for m in fp32)


@needs_bf16
def test_a_model_whose_inputs_are_not_multiples_of_32_stays_fp32_and_says_so():
    """bf16 tiles take groups of 32 inputs: a model with 40 and 72 inputs keeps kernel.c's
    fp32 (loading.py then reports float32, not bfloat16)."""
    odd = small_llama(hidden_size=40, intermediate_size=72)
    assert pack_linears(odd, bf16=True)
    assert not computes_in_bf16(odd)
    assert " bf16" not in packed_backend(odd)
    even = small_llama()
    assert pack_linears(even, bf16=True) and computes_in_bf16(even)


@pytest.mark.skipif(kernel.library() is None, reason="kernel.c does not run here")
def test_without_avx512_bf16_the_bf16_setting_packs_exact_fp32(monkeypatch):
    """A CPU without AVX512-BF16 (an AVX2 machine, or AVX-512 without BF16): bf16=True changes
    nothing, the layers stay on kernel.c's exact fp32."""
    monkeypatch.setattr(kernel, "bf16_arithmetic", lambda: False)
    layer = linear_of(as_q4(torch.randn(64, 576) * 0.05), bias=False)
    packed = PackedLinear(layer, bf16=True)
    assert packed.format == kernel.Q4 and not packed.bf16
