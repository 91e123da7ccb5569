"""kernel.c, the CPU linear layer decoding runs on (model/engines/kernel.py), against F.linear;
and the oneDNN fallback where it cannot be built."""

from __future__ import annotations

import pytest
import torch

from model.engines import kernel
from model.engines.packing import PackedLinear

needs_kernel = pytest.mark.skipif(
    kernel.library() is None, reason="kernel.c needs x86-64 with AVX2 + FMA and a C compiler"
)


@needs_kernel
@pytest.mark.parametrize("rows", [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 25, 33, 41, 65, 300])
@pytest.mark.parametrize(("out", "inp"), [(1, 8), (5, 64), (50, 64), (192, 576), (7, 1536)])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_computes_what_f_linear_does(rows, out, inp, bias, tiles):
    """Every row count a step can have (decode 1-8, prefill chunks, a ragged last tile) and
    output counts that are not a multiple of the 4-row block. On AVX2, from 16 rows kernel.c
    packs x in panels of 24: 16/17 are its first, 25/33/41 end in a panel of 1/9/17 rows (each
    register count), and 300 x 1536 inputs takes several passes. AVX-512's tiles take inputs
    that are a multiple of 32 (8 and 1536's 8 and 64 go to AVX2's), rows 8 at a time."""
    gen = torch.Generator().manual_seed(rows * 1000 + out)
    linear = torch.nn.Linear(inp, out, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out, inp, generator=gen))
    x = torch.randn(rows, inp, generator=gen)
    packed = PackedLinear(linear)
    assert packed.backend == "kernel"
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), atol=2e-4 * inp**0.5, rtol=1e-4)


@needs_kernel
def test_an_input_of_the_wrong_width_is_refused_not_read_past():
    packed = PackedLinear(torch.nn.Linear(64, 24))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="weight takes 64"):
        packed(torch.randn(3, 48))  # 144 values: read as 2 rows of 64, written as 3 of 24


@needs_kernel
def test_kernel_keeps_the_leading_dimensions_and_reads_strided_input():
    linear = torch.nn.Linear(64, 24)
    x = torch.randn(2, 5, 128)[..., ::2]  # [batch, time, features], not contiguous
    with torch.inference_mode():
        got = PackedLinear(linear)(x)
        assert got.shape == (2, 5, 24)
        torch.testing.assert_close(got, linear(x), atol=1e-4, rtol=1e-4)


def test_without_a_compiler_the_layer_falls_back_to_onednn(monkeypatch, tmp_path):
    """A machine with no C compiler (a slim image) still runs, on oneDNN's packed layer."""
    monkeypatch.setattr(kernel, "_loaded", {})
    monkeypatch.setattr(kernel, "_dirs", lambda: [tmp_path])
    monkeypatch.setattr(kernel, "_compiler", lambda: None)
    linear = torch.nn.Linear(64, 24)
    packed = PackedLinear(linear)
    assert kernel.library() is None and packed.backend == "onednn"
    x = torch.randn(3, 64)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), atol=1e-4, rtol=1e-4)


@needs_kernel
def test_the_build_goes_to_the_first_writable_place(monkeypatch, tmp_path):
    """The package's build/ folder may not be writable (an installed copy): the user's cache
    then. (A file where the folder should be fails for root too, as read-only would not.)"""
    locked = tmp_path / "build"
    locked.write_text("not a folder")
    monkeypatch.setattr(kernel, "_loaded", {})
    monkeypatch.setattr(kernel, "_dirs", lambda: [locked, tmp_path / "cache"])
    assert kernel.library() is not None
    assert [p.name[:7] for p in (tmp_path / "cache").iterdir()] == ["kernel-"]


def test_a_user_without_a_home_still_finds_the_package_build(monkeypatch):
    """A container's arbitrary uid without HOME: Path.home() raises; only build/ is looked in."""

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(kernel.Path, "home", staticmethod(no_home))
    assert kernel._dirs() == [kernel.SOURCE.with_name("build")]


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 49152), (3, 29, 49152), (5, 13), (2, 1), (0, 7)])
def test_logsumexp_is_torchs_over_logits_of_any_shape(shape, monkeypatch):
    """A fill's log-probabilities divide by it: row widths not a multiple of 8, several
    leading dimensions, logits of a model's size (tens) and one row far larger than the rest."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen) * 12
    if x.numel() > 2:
        x.view(-1)[1] = 300.0
    lib, calls = kernel.library(), []
    c_function = lib.logsumexp_rows
    monkeypatch.setattr(lib, "logsumexp_rows", lambda *a: calls.append(a) or c_function(*a))
    got = kernel.logsumexp(x)
    assert got.shape == shape[:-1]
    assert len(calls) == (1 if x.numel() else 0)  # layer.c's, not torch's
    torch.testing.assert_close(got, x.logsumexp(-1), atol=1e-5, rtol=1e-6)


@needs_kernel
def test_logsumexp_keeps_torchs_answer_for_rows_of_infinities_and_other_inputs():
    x = torch.tensor([[-float("inf")] * 9, [0.0] * 8 + [float("inf")], [1.0] * 9])
    torch.testing.assert_close(kernel.logsumexp(x), x.logsumexp(-1))
    strided = torch.randn(4, 24)[:, ::2]  # not contiguous: copied first
    torch.testing.assert_close(kernel.logsumexp(strided), strided.logsumexp(-1))
    for other in (x[2:].to(torch.bfloat16), torch.randn(2, 8, requires_grad=True)):
        torch.testing.assert_close(kernel.logsumexp(other), other.logsumexp(-1))  # torch's own


@needs_kernel
def test_the_avx512_tiles_run_exactly_where_the_cpu_has_avx512f():
    """The library picks its tiles at run time (one build for every x86-64 CPU with AVX2), and
    the worker's `linear` says which: "kernel avx512" only on a CPU with AVX-512F; asking for
    them elsewhere gives AVX2's."""
    from model.engines.loading import cpu_flags

    lib = kernel.library()
    has = "avx512f" in cpu_flags()
    assert kernel.tiles(lib) == (kernel.AVX512 if has else kernel.AVX2)
    assert kernel.label() == ("kernel avx512" if has else "kernel")
    try:
        assert kernel.tiles(lib, kernel.AVX512_ALL) == (kernel.AVX512_ALL if has else kernel.AVX2)
        assert kernel.tiles(lib, kernel.AVX2) == kernel.AVX2
        assert kernel.label() == "kernel"
    finally:
        kernel.tiles(lib, kernel.AVX512)
