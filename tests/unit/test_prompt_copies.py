"""Prompts on bf16 copies (model/engines/packing.py, `prompts=True`, which DTYPE=auto picks on
AMX CPUs over a checkpoint's codes): more than PROMPT_ROWS rows run on oneDNN's bf16 copy,
every decode step stays on kernel.c's exact fp32, and a model's greedy text is unchanged."""

from __future__ import annotations

import pytest
import torch

from model.engines import fused, kernel, loading
from model.engines.packing import PROMPT_ROWS, PackedLinear, pack_linears, packed_backend
from tests.unit.test_codes import as_q4, codes_llama, linear_of
from tests.unit.test_fused import counting

# the copies run on oneDNN's bf16, which DTYPE=auto uses only where the CPU has AMX
needs_kernel = pytest.mark.skipif(
    kernel.library() is None or not loading.cpu_has_bf16(),
    reason="needs kernel.c (x86-64 with AVX2, FMA, F16C, a C compiler) and a CPU with bf16",
)


@needs_kernel
def test_a_prompts_rows_use_the_bf16_copy_and_a_decode_steps_the_exact_kernel():
    gen = torch.Generator().manual_seed(1)
    layer = linear_of(as_q4(torch.randn(192, 576, generator=gen) * 0.05), bias=True)
    both, exact = PackedLinear(layer, prompts=True), PackedLinear(layer)
    assert both.prompt_weight is not None and exact.prompt_weight is None
    assert both.packed_bytes == exact.packed_bytes + 192 * 576 * 2  # the bf16 copy
    with torch.inference_mode():
        for rows in (1, 8, 32, PROMPT_ROWS - 1):  # up to 32 decode streams: kernel.c, exact
            x = torch.randn(rows, 576, generator=gen)
            assert torch.equal(both(x), exact(x)), rows
        for rows in (PROMPT_ROWS, 170):  # a prompt: bf16, about as exact as bf16 is
            x = torch.randn(rows, 576, generator=gen)
            got, want = both(x), layer(x)
            assert not torch.equal(got, exact(x))
            torch.testing.assert_close(got, want, atol=0.02 * want.abs().max(), rtol=0.02)


@needs_kernel
def test_a_prompt_runs_on_the_copies_with_layer_c_between_and_decode_steps_on_kernel_c():
    """A 40-token prompt: its products on the bf16 copies with layer.c's small ops between
    (prompt_norm once a layer, no kernel.c layer_in/layer_dense for it); each decode step after
    it through layer.c on kernel.c; the greedy text is the exact model's."""
    models = []
    for prompts in (True, False):
        model = codes_llama()
        pack_linears(model, prompts=prompts)
        fused.fuse_layers(model)
        models.append(model)
    both, exact = models
    assert packed_backend(both) == f"{kernel.label()} (q4+q8); prompts: onednn bf16"
    ids = torch.randint(0, 96, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        calls = counting(both)
        both(ids)
        assert calls.count["prompt_norm"] == 2  # 2 layers, once each
        assert calls.count["layer_in"] == calls.count["layer_dense"] == 0
        steps = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
        out = both.generate(ids, **steps)
        assert calls.count["layer_dense"] == 2 * 9  # 2 layers x the 9 steps after the prompt
        assert torch.equal(out, exact.generate(ids, **steps))


@needs_kernel
@pytest.mark.parametrize("batch", [1, 3])
def test_the_prompt_path_computes_what_transformers_layers_do_over_the_same_copies(batch):
    """Logits of a 40-token prompt (one row, and three rows of 40, as a fill's scoring) through
    layer.c's prompt path against transformers' own layers over the same bf16 copies: the same
    up to the order of fp32 additions, which can move an input across a bf16 rounding boundary
    (measured: 0.3-0.8% of the largest logit); and against the exact fp32 model within bf16's
    rounding (1.9% here)."""
    model, exact = codes_llama(), codes_llama()
    pack_linears(model, prompts=True)
    pack_linears(exact)
    fused.fuse_layers(model)
    fused.fuse_layers(exact)
    ids = torch.randint(0, 96, (batch, 40), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ours = model(ids).logits
        fused.unfuse_layers(model)
        theirs = model(ids).logits
        want = exact(ids).logits
    torch.testing.assert_close(ours, theirs, atol=0.01 * theirs.abs().max().item(), rtol=0.01)
    torch.testing.assert_close(ours, want, atol=0.03 * want.abs().max().item(), rtol=0.03)


@pytest.mark.skipif(kernel.library() is None, reason="kernel.c does not run here")
def test_where_onednn_cannot_make_the_copies_the_layers_are_packed_without_them(monkeypatch):
    """A CPU that reports AMX but whose torch cannot reorder bf16 weights: the model still runs
    on kernel.c, exactly, with no copies (not left unpacked)."""

    def refuse(weight, *args):
        if weight.dtype == torch.bfloat16:
            raise RuntimeError("bf16 path needs the cpu support avx512bw, avx512vl and avx512dq")
        return real(weight, *args)

    real = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    model = codes_llama()
    assert pack_linears(model, prompts=True) > 0
    assert packed_backend(model) == f"{kernel.label()} (q4+q8)"
