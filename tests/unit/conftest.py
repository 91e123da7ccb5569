"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest

from model.engines import kernel


@pytest.fixture(params=[kernel.AVX2, kernel.AVX512_ALL], ids=["avx2", "avx512"])
def tiles(request):
    """kernel.c on each set of tiles this CPU runs: AVX2's, and AVX-512's for every format and
    size (skipped on a CPU without AVX-512F); the machine's own choice again afterwards."""
    lib = kernel.library()
    if lib is None:
        pytest.skip("kernel.c needs x86-64 with AVX2 + FMA and a C compiler")
    before = kernel.tiles(lib)
    try:
        if kernel.tiles(lib, request.param) != request.param:
            pytest.skip("this CPU lacks AVX-512F")
        yield request.param
    finally:
        kernel.tiles(lib, before)
