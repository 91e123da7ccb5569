"""TORCH_THREADS and DTYPE reach the worker, and the app says what each model runs on."""

from __future__ import annotations

import httpx

from tests.conftest import _serve


def test_torch_threads_and_dtype_are_honoured_and_reported(attribution_index, tmp_path_factory):
    serve = _serve(
        [
            "--model",
            "tiny-starcoder",
            "--torch-threads",
            "1",
            "--dtype",
            "bfloat16",
            "--rate-limit",
            "0",
        ],
        attribution_index,
        tmp_path_factory,
    )
    app = next(serve)
    try:
        # The model starts with its first request; it is written by the bf16 model.
        body = {"model": "tiny-starcoder", "prompt": "def f(", "max_tokens": 8, "temperature": 0}
        done = httpx.post(app.url + "v1/completions", json=body, timeout=120).json()
        assert done["usage"]["completion_tokens"] == 8 and done["choices"][0]["text"]
        runs_on = {"device": "cpu", "dtype": "bfloat16", "threads": 1, "threads_policy": "fixed",
                   "linear": _bf16_linear(), "layers": "transformers"}  # fmt: skip
        health = httpx.get(app.url + "healthz", timeout=60).json()
        assert health["engines"] == {"tiny-starcoder": runs_on}
        models = httpx.get(app.url + "v1/models", timeout=60).json()["data"]
        assert [m.get("engine") for m in models if m["id"] == "tiny-starcoder"] == [runs_on]
        # A model not started yet says nothing it does not know.
        assert all("engine" not in m for m in models if m["id"] != "tiny-starcoder")
    finally:
        serve.close()


def _bf16_linear() -> str:
    """What computes bf16 linears on this CPU: kernel.c's bf16 arithmetic where the CPU has
    AVX512-BF16 (on 2 MB pages where the system has them; prompts on oneDNN's bf16 copies where
    it has AMX); else oneDNN, which packs them only where the CPU converts bf16 natively
    (avx_ne_convert or AVX-512 BW/VL/DQ); elsewhere torch's plain BLAS."""
    import torch

    from model.engines import hugepages, kernel, loading
    from model.engines.packing import PackedLinear

    if kernel.bf16_arithmetic():
        pages = " on 2 MB pages" if hugepages.available() else ""
        amx = loading.AMX_FLAG in loading.cpu_flags()
        return f"{kernel.label()} bf16{pages}" + ("; prompts: onednn bf16" if amx else "")
    try:
        return PackedLinear(torch.nn.Linear(64, 8).to(torch.bfloat16)).backend
    except RuntimeError:
        return "plain"
