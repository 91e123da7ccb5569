"""kernel.c's weights on 2 MB pages (model/engines/hugepages.py, packing.onto_huge_pages): the same
values in memory the TLB covers with a few entries, where the system has transparent huge
pages; the same outputs either way, and the worker's `linear` says which it got."""

from __future__ import annotations

import gc

import pytest
import torch

from model.engines import fused, hugepages, kernel
from model.engines.packing import PackedLinear, onto_huge_pages, pack_linears, packed_backend
from tests.unit.test_fused import small_llama

needs_kernel = pytest.mark.skipif(
    kernel.library() is None, reason="kernel.c needs x86-64 with AVX2, FMA, F16C and a C compiler"
)


def test_copies_hold_the_same_values_on_huge_pages_where_the_system_has_them():
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(1024, 768, generator=gen),  # 3 MB
        torch.randint(0, 255, (1001,), dtype=torch.uint8, generator=gen),  # an odd size
        torch.randn(7, 96, generator=gen),
    ]
    copies = hugepages.copy_in(tensors)
    assert copies is not None or not hugepages.available()
    if copies is None:
        pytest.skip("no transparent huge pages here")
    for t, c in zip(tensors, copies, strict=True):
        assert c.dtype == t.dtype and c.shape == t.shape and torch.equal(c, t)
        assert c.data_ptr() % hugepages.ALIGN == 0 and c.data_ptr() != t.data_ptr()
    assert copies[0].data_ptr() % hugepages.PAGE == 0
    assert hugepages.huge_bytes(copies[0]) >= hugepages.PAGE
    del tensors, copies[1:]
    gc.collect()
    copies[0].add_(1)  # the mapping lives as long as a copy does
    assert hugepages.huge_bytes(copies[0]) >= hugepages.PAGE


def test_less_than_a_page_stays_where_it_is():
    assert hugepages.copy_in([torch.zeros(1000)]) is None
    assert hugepages.huge_bytes(torch.zeros(1000)) == 0


def big_llama():
    """small_llama with ~4 MB of fp32 weights a layer: more than a huge page to stream."""
    return small_llama(hidden_size=256, intermediate_size=1024, vocab_size=512)


@needs_kernel
def test_a_packed_model_reads_its_moved_weights_with_the_same_outputs(monkeypatch):
    """pack_linears moves kernel.c's weights onto huge pages before layer.c takes their
    addresses: logits and greedy tokens as on torch's memory, bit for bit, and the old copies
    are no longer read (they are zeroed here and nothing changes)."""
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    steps = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    plain = big_llama()
    with monkeypatch.context() as m:
        m.setattr(hugepages, "available", lambda: False)
        pack_linears(plain)
    moved = big_llama()
    with monkeypatch.context() as m:
        m.setattr(hugepages, "available", lambda: False)
        pack_linears(moved)
    layers = [m for m in moved.modules() if isinstance(m, PackedLinear)]
    old = [m.packed for m in layers]
    onto_huge_pages(layers)
    assert fused.fuse_layers(plain) == fused.fuse_layers(moved) == 2
    huge = hugepages.huge_bytes(layers[0].packed) > 0
    assert huge == hugepages.available()
    if huge:
        assert all(m.packed.data_ptr() != o.data_ptr() for m, o in zip(layers, old, strict=True))
        for o in old:
            o.zero_()
    name = packed_backend(plain)
    assert packed_backend(moved) == (f"{name} on 2 MB pages" if huge else name)
    assert "pages" not in name
    with torch.inference_mode():
        assert torch.equal(moved(ids).logits, plain(ids).logits)
        assert torch.equal(moved.generate(ids, **steps), plain.generate(ids, **steps))


@needs_kernel
def test_packing_puts_the_streamed_weights_on_huge_pages_where_the_system_has_them():
    model = big_llama()
    pack_linears(model)
    streamed = [m.packed for m in model.modules() if isinstance(m, PackedLinear)]
    on_huge = [hugepages.huge_bytes(t) > 0 for t in streamed]
    assert all(on_huge) if hugepages.available() else not any(on_huge)
    assert packed_backend(model).endswith(" on 2 MB pages") == hugepages.available()
