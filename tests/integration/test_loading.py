"""Model loading: placement per device, pad token, offline local folders."""

import pytest

from model import loading
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
    assert loading.choose_placement() == expected


def test_cpu_is_always_fp32():
    assert loading.choose_placement("cpu") == loading.Placement("cpu", "float32", None)


def test_local_folder_loads_offline_and_gets_a_pad_token(tmp_path, monkeypatch):
    folder = build_random_model(tmp_path / "m")
    model, tokenizer, info = loading.load(str(folder), device="cpu")
    assert tokenizer.pad_token is not None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert info.architecture == "GPTBigCodeForCausalLM" and info.context_length == 256
    assert "<fim_prefix>" in info.special_tokens and info.dtype == "float32"


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PlaygroundError) as err:
        loading.load(str(tmp_path / "missing"), device="cpu")
    assert "Could not load `MODEL_ID`" in err.value.message and err.value.field == "model"


def test_cpu_layout_keeps_the_models_outputs():
    """load() stores Linear weights transposed on CPU for speed: the logits and the greedy text
    are those of the model as transformers loads it, and tied embeddings stay tied."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = str(TINY_STARCODER_DIR)
    model, tokenizer, _ = loading.load(folder, device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert not model.lm_head.weight.is_contiguous()  # the layout did change
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    ids = tokenizer("def fibonacci(n):\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, atol=1e-4, rtol=0)
        kw = dict(max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(model.generate(ids, **kw), plain.generate(ids, **kw))
