"""layer.c's decoder layer (model/engines/fused.py) against transformers' own, on a small random
Llama: the same logits, the same greedy tokens under generate() and continuous batching, and the
layers it must leave alone."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from model.engines import fused, kernel
from model.engines.packing import pack_linears

needs_kernel = pytest.mark.skipif(
    kernel.library() is None, reason="layer.c needs x86-64 with AVX2 + FMA and a C compiler"
)


def small_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """SmolLM2's shape in miniature: grouped-query attention (4 heads on 2), tied embeddings."""
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    )
    settings.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**settings)).eval()
    # Wider weights than the init's: logits far apart, so greedy choices are not near-ties.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    return model


class Calls:
    """Counts layer.c's calls (fused.FusedForward's `lib`), to show which path a step took."""

    def __init__(self, lib):
        self.lib = lib
        names = ("layer_in", "layer_out", "layer_dense", "layer_paged", "prompt_norm")
        self.count = dict.fromkeys(names, 0)

    def __getattr__(self, name):
        fn = getattr(self.lib, name)
        if name not in self.count:
            return fn

        def counted(*args):
            self.count[name] += 1
            return fn(*args)

        return counted


def counting(model) -> Calls:
    calls = Calls(kernel.library())
    for layer in model.model.layers:
        layer.forward.lib = calls
    return calls


def with_and_without(model, run):
    """`run()` under transformers' layers, then under layer.c's: (theirs, ours, layer.c's calls)."""
    with torch.inference_mode():
        theirs = run()
        fused.fuse_layers(model)
        calls = counting(model)
        ours = run()
    return theirs, ours, calls


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 32, 100, 400])
@pytest.mark.parametrize("batch", [1, 3])
def test_fused_layers_give_the_logits_transformers_gives(rows, batch):
    model = small_llama(rows)
    pack_linears(model)
    ids = torch.randint(0, 96, (batch, rows))
    with torch.inference_mode():
        want = model(ids).logits
        assert fused.fuse_layers(model) == 2
        calls = counting(model)
        got = model(ids).logits
    assert calls.count["layer_in"] == 2
    # Causal and unpadded: layer.c's attention up to MAX_QUERIES tokens a row, torch's beyond.
    few = rows <= fused.MAX_QUERIES
    assert (calls.count["layer_dense"], calls.count["layer_out"]) == ((2, 0) if few else (0, 2))
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


@needs_kernel
def test_generate_writes_the_same_tokens_with_padding_and_a_cache():
    """Left-padded rows of different lengths (a fill's candidates), decoded over DynamicCache."""
    model = small_llama(1)
    pack_linears(model)
    ids = torch.randint(3, 96, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :2] = 0
    cfg = GenerationConfig(max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        want = model.generate(ids, attention_mask=mask, generation_config=cfg)
        fused.fuse_layers(model)
        calls = counting(model)
        got = model.generate(ids, attention_mask=mask, generation_config=cfg)
    assert torch.equal(got, want)
    # The prompt's mask (pad queries that see nothing) keeps torch's attention between
    # layer.c's halves; each of the 19 decode steps' (left-padded, causal) runs layer.c's from
    # each row's first real key.
    assert calls.count["layer_out"] == 2
    assert calls.count["layer_dense"] == 2 * 19


def test_a_left_padded_causal_mask_gives_each_rows_first_key_and_other_masks_keep_sdpa():
    t, n = 2, 6
    keys, queries = torch.arange(n), torch.arange(t)[:, None] + (n - t)
    causal = keys <= queries  # [t, n]
    left = torch.stack([causal & (keys >= s) for s in (0, 3, 1)])[:, None]  # [3, 1, t, n]
    assert torch.equal(fused._causal(left, 3, t, n), torch.tensor([0, 3, 1]))
    assert fused._causal(causal[None, None].expand(3, 1, t, n).clone(), 3, t, n) is None
    # As transformers builds it in float: 0 where seen, the dtype's minimum elsewhere
    additive = torch.zeros(3, 1, t, n).masked_fill(~left, torch.finfo(torch.float32).min)
    assert torch.equal(fused._causal(additive, 3, t, n), torch.tensor([0, 3, 1]))
    holes = left.clone()
    holes[1, 0, :, 4] = False  # a key masked inside a row: not layer.c's pattern
    assert fused._causal(holes, 3, t, n) is False
    assert fused._causal(None, 3, t, n) is None


@needs_kernel
def test_unpadded_rows_over_a_shared_prefix_decode_in_layer_c():
    """A fill's shape: one prompt's cache repeated for 5 rows, sampled greedily step by step."""
    model = small_llama(5)
    pack_linears(model)
    ids = torch.randint(3, 96, (1, 12))

    def decode():
        out = model(ids, use_cache=True)
        cache = out.cache
        cache.batch_repeat_interleave(5)
        tokens = torch.tensor([[3], [17], [29], [41], [60]])
        steps = []
        for _ in range(12):
            out = model(input_ids=tokens, cache=cache, use_cache=True)
            cache, tokens = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            steps.append(out.logits[:, -1])
        return torch.stack(steps)

    want, got, calls = with_and_without(model, decode)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    assert calls.count["layer_dense"] == 2 * 13  # the prefill and every step


@needs_kernel
def test_continuous_batching_writes_the_same_tokens_on_the_paged_cache():
    """Several requests of different lengths in one batch: each reads its own pages, causally."""
    model = small_llama(2)
    pack_linears(model)
    # One prompt longer than MAX_ROWS: its prefill puts torch's attention between layer.c's halves.
    prompts = [[5, 9, 13], [7] * 11, [40, 41, 42, 43, 44, 45], [88], list(range(3, 43))]
    cfg = GenerationConfig(max_new_tokens=24, do_sample=False, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(page_size=16, num_blocks=64, max_batch_tokens=64)

    def run():
        out = model.generate_batch(prompts, cfg, cb, warmup=False)
        return sorted((o.prompt_ids, o.generated_tokens) for o in out.values())

    with torch.inference_mode():
        want = run()
        fused.fuse_layers(model)
        calls = counting(model)
        got = run()
    assert got == want
    assert all(len(tokens) == 24 for _, tokens in got)
    assert calls.count["layer_paged"] >= 2 * 20  # the decode steps ran in layer.c
    assert calls.count["layer_in"] == calls.count["layer_out"] >= 2  # the long prefill


@needs_kernel
def test_layers_layer_c_cannot_compute_are_left_to_transformers():
    bf16 = small_llama(3).to(torch.bfloat16)
    pack_linears(bf16)  # oneDNN, not kernel.c
    assert fused.fuse_layers(bf16) == 0
    onednn = small_llama(3)
    pack_linears(onednn, use_kernel=False)
    assert fused.fuse_layers(onednn) == 0
    assert fused.fuse_layers(small_llama(3)) == 0  # plain nn.Linear: nothing packed
    odd_heads = small_llama(3, hidden_size=60, num_attention_heads=6, num_key_value_heads=2)
    pack_linears(odd_heads)  # head size 10: not a multiple of 8
    assert fused.fuse_layers(odd_heads) == 0
    gelu = small_llama(3, hidden_act="gelu")
    pack_linears(gelu)
    assert fused.fuse_layers(gelu) == 0


@needs_kernel
def test_training_mode_and_gradients_use_transformers_forward():
    model = small_llama(4)
    pack_linears(model)
    fused.fuse_layers(model)
    calls = counting(model)
    ids = torch.randint(0, 96, (1, 4))
    with torch.no_grad():
        model(ids)
    assert calls.count["layer_in"] == 2
    with torch.enable_grad():
        model(ids)
    assert calls.count["layer_in"] == 2  # grad enabled: the plain forward


@needs_kernel
def test_fusing_twice_changes_nothing_and_unfusing_restores_transformers():
    model = small_llama(6)
    pack_linears(model)
    assert fused.fuse_layers(model) == 2
    first = [layer.forward for layer in model.model.layers]
    assert fused.fuse_layers(model) == 2
    assert [layer.forward for layer in model.model.layers] == first  # not wrapped again
    calls = counting(model)  # on the fused forwards: they count if they still run
    fused.unfuse_layers(model)
    assert all(not isinstance(layer.forward, fused.FusedForward) for layer in model.model.layers)
    with torch.inference_mode():
        model(torch.randint(0, 96, (1, 4)))
    assert calls.count == dict.fromkeys(calls.count, 0)


@needs_kernel
def test_a_fills_scoring_forward_runs_layer_c_attention_under_transformers_causal_mask():
    """Several tokens per row over a repeated prompt cache, no padding mask: transformers builds
    a causal mask, which layer.c recognises and computes; the logits are transformers'."""
    model = small_llama(7)
    pack_linears(model)
    prompt, rows = torch.randint(3, 96, (1, 9)), torch.randint(3, 96, (3, 6))

    def score():
        cache = model(prompt, use_cache=True).cache
        cache.batch_repeat_interleave(3)
        return model(input_ids=rows, cache=cache, use_cache=True).logits

    want, got, calls = with_and_without(model, score)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    assert calls.count["layer_dense"] == 2 * 2  # the prompt's forward and the scoring's
