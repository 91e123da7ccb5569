"""Model loading: placement per device, pad token, offline local folders."""

import pytest

from model.engines import kernel, loading
from model.errors import PlaygroundError
from model.registry import TINY_STARCODER_DIR
from tests.random_model import build_random_model


class FakeCuda:
    """A stand-in for torch.cuda: no GPU can run on these machines."""

    def __init__(self, gpus: int, bf16: bool):
        self.gpus, self.bf16 = gpus, bf16

    def is_available(self):
        return self.gpus > 0

    def is_bf16_supported(self):
        return self.bf16

    def device_count(self):
        return self.gpus


@pytest.mark.parametrize(
    "gpus,bf16,expected",
    [
        (0, False, loading.Placement("cpu", "float32", None)),
        (1, True, loading.Placement("cuda", "bfloat16", None)),
        (1, False, loading.Placement("cuda", "float16", None)),
        (4, True, loading.Placement("cuda", "bfloat16", "auto")),
    ],
)
def test_placement_per_device(monkeypatch, gpus, bf16, expected):
    import torch

    monkeypatch.setattr(torch, "cuda", FakeCuda(gpus, bf16))
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert loading.choose_placement() == expected


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"avx2", "fma", "avx512f"}, "float32"),  # bf16 only emulated: slower than fp32
        ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),  # Cooper Lake, Zen 4
        ({"avx2", "amx_tile", "amx_bf16", "amx_int8"}, "bfloat16"),  # Sapphire Rapids on
    ],
)
def test_auto_dtype_on_cpu_follows_the_cpus_bf16_support(monkeypatch, flags, expected):
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset(flags))
    assert loading.choose_placement("cpu") == loading.Placement("cpu", expected, None)


@pytest.mark.parametrize("amx", [True, False])
def test_auto_keeps_fp32_over_a_checkpoints_codes_and_bf16_for_other_models(
    tmp_path, monkeypatch, amx
):
    """On a CPU with bf16, DTYPE=auto loads a model whose weights are a checkpoint's codes
    (SmolLM2's case, here a small Llama rounded to Q4_1/Q8_0) in fp32, with kernel.c reading the
    codes, and bf16 copies for prompts where the CPU has AMX; a model trained in fp32
    (tiny-starcoder) becomes bf16, as before."""
    import shutil

    import torch

    from model.engines import kernel
    from tests.unit.test_codes import codes_llama

    if kernel.library() is None:  # built before the flags below are faked
        pytest.skip("kernel.c does not run here (needs x86-64 AVX2 + FMA + F16C and a compiler)")
    if amx and not loading.cpu_has_bf16():  # the copies need oneDNN's bf16, which this CPU lacks
        pytest.skip("bf16 copies need a CPU with AMX or AVX512-BF16")
    flags = {"avx2", "fma", "f16c", "avx512f", "avx512_bf16"} | ({"amx_bf16"} if amx else set())
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset(flags))
    model = codes_llama()
    folder = tmp_path / "codes"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_STARCODER_DIR / name, folder / name)
    loaded, _, info = loading.load(str(folder), device="cpu")
    assert info.dtype == "float32" and info.layers == "layer.c"
    prompts = "; prompts: onednn bf16" if amx else ""
    assert info.linear == f"{kernel.label()} (q4+q8)" + prompts
    with torch.inference_mode():  # the fp32 model's logits, for a decode step's rows
        ids = torch.randint(0, 96, (1, 8))
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-4, rtol=0)
    _, _, tiny = loading.load(str(TINY_STARCODER_DIR), device="cpu")
    assert tiny.dtype == "bfloat16"


def test_an_explicit_dtype_is_taken_as_is(monkeypatch):
    import torch

    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert loading.choose_placement("cpu", "float32").dtype == "float32"
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"avx2"}))
    assert loading.choose_placement("cpu", "bfloat16").dtype == "bfloat16"
    monkeypatch.setattr(torch, "cuda", FakeCuda(1, True))
    assert loading.choose_placement("cuda", "float32").dtype == "float32"


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert loading.cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert loading.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bf16_writes_what_fp32_writes_within_a_tolerance():
    """DTYPE=bfloat16 on the tiny model: teacher-forced over fp32's greedy text, bf16 picks the
    same next token almost everywhere and gives fp32's tokens nearly the same log-probability."""
    import torch

    folder = str(TINY_STARCODER_DIR)
    fp32, tokenizer, _ = loading.load(folder, device="cpu", dtype="float32")
    bf16, _, info = loading.load(folder, device="cpu", dtype="bfloat16")
    assert info.dtype == "bfloat16"
    if kernel.bf16_arithmetic():  # kernel.c computes in bf16 around an fp32 model
        assert info.linear.startswith(f"{kernel.label()} bf16") and bf16.dtype == torch.float32
    else:
        assert bf16.dtype == torch.bfloat16
    prompt = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        kw = dict(max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = fp32.generate(ids, **kw)
        a = fp32(text).logits.float().log_softmax(-1)[0, :-1]
        b = bf16(text).logits.float().log_softmax(-1)[0, :-1]
    chosen = text[0, 1:, None]  # each position's next token, as fp32 wrote or read it
    drift = (a.gather(-1, chosen) - b.gather(-1, chosen)).abs().max().item()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    assert drift < 0.15, f"bf16 moved a token's log-probability by {drift:.3f}"
    assert agree >= 0.9, f"bf16 picked fp32's next token at only {agree:.0%} of positions"


@pytest.mark.skipif(not kernel.bf16_arithmetic(), reason="needs kernel.c with AVX512-BF16")
def test_bf16_on_a_model_kernel_c_cannot_take_in_bf16_reports_fp32(tmp_path):
    """kernel.c's bf16 tiles take inputs in groups of 32: a model of 36 and 144 inputs stays on
    its fp32, and the worker says float32 rather than a bfloat16 it does not compute."""
    folder = build_random_model(tmp_path / "m", n_embd=36)
    _, _, info = loading.load(str(folder), device="cpu", dtype="bfloat16")
    assert info.dtype == "float32" and f"{kernel.label()} bf16" not in info.linear
    _, _, even = loading.load(
        str(build_random_model(tmp_path / "e")), device="cpu", dtype="bfloat16"
    )
    assert even.dtype == "bfloat16" and even.linear.startswith(f"{kernel.label()} bf16")


def test_local_folder_loads_offline_and_gets_a_pad_token(tmp_path, monkeypatch):
    folder = build_random_model(tmp_path / "m")
    model, tokenizer, info = loading.load(str(folder), device="cpu")
    assert tokenizer.pad_token is not None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert info.architecture == "GPTBigCodeForCausalLM" and info.context_length == 256
    assert "<fim_prefix>" in info.special_tokens
    assert info.dtype == loading.choose_placement("cpu").dtype  # DTYPE=auto: by the CPU


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PlaygroundError) as err:
        loading.load(str(tmp_path / "missing"), device="cpu")
    assert "Could not load `MODEL_ID`" in err.value.message and err.value.field == "model"


@pytest.mark.parametrize("layout", ["kernel", "onednn", "column-major"])
def test_cpu_layout_keeps_the_models_outputs(layout, monkeypatch):
    """load() packs Linear weights for kernel.c (or oneDNN where kernel.c cannot run) on CPU,
    or, where neither can, stores them transposed, for speed: the logits and the greedy text
    are those of the model as transformers loads it, and the input embedding a tied output
    layer reads stays whole."""
    import torch
    from transformers import AutoModelForCausalLM

    from model.engines import kernel, packing

    packed = layout != "column-major"
    if layout == "kernel" and kernel.library() is None:
        pytest.skip("kernel.c does not run here (needs x86-64 AVX2 + FMA and a C compiler)")
    if layout == "onednn":
        monkeypatch.setattr(kernel, "library", lambda: None)
    if not packed:
        monkeypatch.setattr(packing, "can_pack", lambda model: False)
    folder = str(TINY_STARCODER_DIR)
    # fp32, as the plain model below (DTYPE=auto is bf16 on a CPU with AMX or AVX512-BF16)
    model, tokenizer, _ = loading.load(folder, device="cpu", dtype="float32")
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if packed:  # the layout did change: no plain Linear is left
        assert not linears and isinstance(model.lm_head, packing.PackedLinear)
        assert {m.backend for m in model.modules() if isinstance(m, packing.PackedLinear)} == {
            layout
        }
    else:
        assert not model.lm_head.weight.is_contiguous()  # the transposed layout
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(model.transformer.wte.weight, plain.transformer.wte.weight)
    ids = tokenizer("def fibonacci(n):\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, atol=1e-4, rtol=0)
        kw = dict(max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(model.generate(ids, **kw), plain.generate(ids, **kw))
