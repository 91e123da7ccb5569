"""Llama decoder layers computed by layer.c (imports torch): for a decode step, one C call per
layer on continuous batching's paged cache; otherwise C before and after the cache update, with
the attention in C too where it is causal over up to MAX_QUERIES tokens a row (a prompt, a
fill's candidates and its scoring rows), else torch's.

Why: once kernel.c read the weights near the machine's bandwidth, a one-row step of SmolLM2
spent about as long in ~1,000 small torch ops (norms, rotary, the paged cache's index_copy and
index_select, SDPA, adds: a few microseconds of dispatch each) as in its linear layers.

Where: a LlamaDecoderLayer whose seven projections all run on kernel.c (fp32, AVX2 + FMA, a C
compiler), with SiLU, no MLP bias and a head size that is a multiple of 8. Everything else
(bf16, oneDNN, GPTBigCode, a GPU, autograd) runs transformers' own forward unchanged.
"""

from __future__ import annotations

import ctypes
import logging
import weakref

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from compat import transformers_cb
from model.engines import kernel
from model.engines.packing import PROMPT_ROWS, PackedLinear

log = logging.getLogger(__name__)

# Tokens of a continuous-batching step that layer.c computes whole on the paged cache (decode
# steps of up to 32 streams); over more (a prefill chunk), torch's attention runs between
# layer.c's two halves, a matrix product there where layer.c's is a loop per query.
MAX_ROWS = 32
# Query tokens per row up to which layer.c computes a causal attention (no mask, or the causal
# one transformers builds) over generate()'s cache (a decode step, a fill's prompt and scoring
# rows): its loop over queries took a 160-token
# prompt in 266-277 ms against SDPA's 285, 256 in 425 against 486, and was level at 512
# (bench/RESULTS.md, part 6).
MAX_QUERIES = 384

_POINTERS = ("norm1", "norm2", "bq", "bk", "bv", "bo")
# layer.c's names of the seven projections, by the names _projections gives them
_WEIGHTS = {"wq": "q", "wk": "k", "wv": "v", "wo": "o", "wg": "gate", "wu": "up", "wd": "down"}
_SIZES = ("hidden", "heads", "kv_heads", "head_dim", "inter")


class LayerWeights(ctypes.Structure):
    """layer.c's layer_t: the norms' and biases' addresses, the packed weights (kernel.Weights)
    and the layer's sizes."""

    _fields_ = [
        *((name, ctypes.c_void_p) for name in _POINTERS),
        *((name, kernel.Weights) for name in _WEIGHTS),
        ("eps", ctypes.c_float),
        ("scale", ctypes.c_float),
        *((name, ctypes.c_int64) for name in _SIZES),
    ]


def _declare(lib: ctypes.CDLL) -> None:
    p, n = ctypes.c_void_p, ctypes.c_int64
    lib.layer_in.argtypes = [p, p, n, p, p, p, p, p, p]
    lib.layer_out.argtypes = [p, p, p, n, p, p]
    lib.layer_paged.argtypes = [p, p, p, n, p, p, p, p, p, p, n, p, p, n, p]
    lib.layer_dense.argtypes = [p, p, p, p, p, n, n, n, n, n, n, n, p, p, p]
    lib.attention_dense.argtypes = [p, p, p, p, n, n, n, n, n, n, n, p, p]
    lib.prompt_norm.argtypes = [p, p, n, p]
    lib.prompt_rotary.argtypes = [p, p, p, n, p, p]
    lib.prompt_mid.argtypes = [p, p, p, n, p, p]
    lib.prompt_silu.argtypes = [p, p, p, n]
    for fn in (lib.layer_in, lib.layer_out, lib.layer_paged, lib.layer_dense, lib.attention_dense,
               lib.prompt_norm, lib.prompt_rotary, lib.prompt_mid, lib.prompt_silu):  # fmt: skip
        fn.restype = None


def _projections(layer) -> dict:
    """The layer's seven linear layers by name, each a PackedLinear on kernel.c or None."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    found = {n: getattr(attn, f"{n}_proj", None) for n in ("q", "k", "v", "o")}
    found |= {n: getattr(mlp, f"{n}_proj", None) for n in ("gate", "up", "down")}
    return {
        n: m if isinstance(m, PackedLinear) and m.backend == "kernel" else None
        for n, m in found.items()
    }


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class FusedForward:
    """Takes the place of one LlamaDecoderLayer's `forward`; the layer's own is `self.plain`."""

    def __init__(self, layer, lib: ctypes.CDLL):
        attn, mlp = layer.self_attn, layer.mlp
        self.plain = layer.forward
        self.attn = attn
        self.lib = lib
        self.layer_idx = attn.layer_idx
        self.heads = attn.config.num_attention_heads
        self.kv_heads = attn.config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.hidden = layer.hidden_size
        self.inter = mlp.intermediate_size
        proj = _projections(layer)
        # bf16 copies for prompts on AMX (model/engines/packing.py): a prompt's rows go through
        # them with layer.c's small ops between (_prompt_in, _prompt_out), every decode step
        # through layer.c on kernel.c
        self.prompts = all(m.prompt_weight is not None for m in proj.values())
        self.proj = proj
        norm1 = layer.input_layernorm.weight.detach()  # a tensor of its own on the same memory
        norm2 = layer.post_attention_layernorm.weight.detach()
        packed = {name: m.packed for name, m in proj.items()}
        biases = {name: m.kernel_bias for name, m in proj.items()}
        # layer.c reads these by address: held here, so that a later `param.data = ...` (which
        # would free the old storage) cannot leave it reading freed memory.
        self.holds = (norm1, norm2, packed, biases)
        self.weights = LayerWeights(
            norm1=_address(norm1),
            norm2=_address(norm2),
            bq=_address(biases["q"]),
            bk=_address(biases["k"]),
            bv=_address(biases["v"]),
            bo=_address(biases["o"]),
            **{c: proj[name].kernel_weights for c, name in _WEIGHTS.items()},
            eps=float(layer.input_layernorm.variance_epsilon),
            scale=float(attn.scaling),
            hidden=self.hidden,
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            inter=self.inter,
        )
        self.at = ctypes.addressof(self.weights)
        a, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.paged_scratch = 2 * self.hidden + 2 * a + 2 * kv + 2 * self.inter  # floats per row

    def __call__(
        self,
        hidden_states: torch.Tensor,
        attention_mask=None,
        position_ids=None,
        cache=None,
        use_cache=False,
        position_embeddings=None,
        **kwargs,
    ):
        x = hidden_states
        rows = x.shape[0] * x.shape[1] if x.dim() == 3 else 0
        if (
            rows == 0
            or position_embeddings is None
            or x.dtype != torch.float32
            or torch.is_grad_enabled()
            or kwargs.get("past_key_values") is not None  # the old name: not ours to map
        ):
            return self._plain(
                x, attention_mask, position_ids, cache, use_cache, position_embeddings, kwargs
            )
        x = x.contiguous()
        cos, sin = _rows(position_embeddings, x, self.head_dim)
        prompt = self.prompts and rows >= PROMPT_ROWS
        if rows <= MAX_ROWS and cache is not None and "read_index" in kwargs:
            paged = transformers_cb.paged_layer(cache, self.layer_idx, kwargs)
            if paged is not None and x.shape[0] == 1:
                return self._paged(x, rows, cos, sin, paged, kwargs["cu_seq_lens_q"])
        return self._around_torch(x, rows, cos, sin, attention_mask, cache, kwargs, prompt)

    def _plain(
        self, x, attention_mask, position_ids, cache, use_cache, position_embeddings, kwargs
    ):
        return self.plain(
            x,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )

    def _paged(self, x, rows, cos, sin, paged, cu_q):
        k_rows, v_rows, write_index, read_index, cu_k = paged
        cu_q, cu_k = cu_q.to(torch.int32), cu_k.to(torch.int32)
        y = torch.empty_like(x)
        scratch = torch.empty(rows * self.paged_scratch)
        self.lib.layer_paged(
            self.at,
            x.data_ptr(),
            y.data_ptr(),
            rows,
            cos.data_ptr(),
            sin.data_ptr(),
            k_rows.data_ptr(),
            v_rows.data_ptr(),
            write_index.data_ptr(),
            read_index.data_ptr(),
            read_index.numel(),
            cu_q.data_ptr(),
            cu_k.data_ptr(),
            cu_q.numel() - 1,
            scratch.data_ptr(),
        )
        return y

    def _around_torch(self, x, rows, cos, sin, attention_mask, cache, kwargs, prompt=False):
        """layer.c before and after the cache update; the attention in layer.c too where it is
        causal (layer_dense), else torch's between the halves (layer_out). `prompt`: the rows'
        products on the bf16 copies instead of kernel.c (_prompt_in, _prompt_out)."""
        b, t = x.shape[:2]
        if prompt:
            q, k, v = self._prompt_in(x, rows, cos, sin)
        else:
            q = x.new_empty(b, t, self.heads, self.head_dim)
            k = x.new_empty(b, t, self.kv_heads, self.head_dim)
            v = torch.empty_like(k)
            h = torch.empty_like(x)
            self.lib.layer_in(
                self.at,
                x.data_ptr(),
                rows,
                cos.data_ptr(),
                sin.data_ptr(),
                h.data_ptr(),
                q.data_ptr(),
                k.data_ptr(),
                v.data_ptr(),
            )
        queries = q
        q, k, v = (s.transpose(1, 2) for s in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        y = torch.empty_like(x)
        starts = _causal(attention_mask, b, t, k.shape[2]) if t <= MAX_QUERIES else False
        causal = starts is not False and k.shape[0] == b and _by_position(k) and _by_position(v)
        if causal:
            # Causal (a prompt, a fill's candidate rows, its scoring rows, right-padded or
            # left-padded): the attention in layer.c too.
            over = (queries.data_ptr(), k.data_ptr(), v.data_ptr(), k.stride(0), k.stride(1),
                    v.stride(0), v.stride(1), k.shape[2], b, t,
                    None if starts is None else starts.data_ptr())  # fmt: skip
            if prompt:
                a = x.new_empty(rows, self.heads * self.head_dim)
                self.lib.attention_dense(self.at, *over, a.data_ptr())
                return self._prompt_out(x, a, rows)
            scratch = torch.empty(
                rows * (self.heads * self.head_dim + self.hidden + 2 * self.inter)
            )
            self.lib.layer_dense(self.at, x.data_ptr(), *over, y.data_ptr(), scratch.data_ptr())
            return y
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.attn.config._attn_implementation, _no_interface
        )
        a, _ = attend(
            self.attn, q, k, v, attention_mask, dropout=0.0, scaling=self.attn.scaling, **kwargs
        )
        a = a.reshape(rows, -1).contiguous()
        if prompt:
            return self._prompt_out(x, a, rows)
        scratch = torch.empty(rows * (self.hidden + 2 * self.inter))
        self.lib.layer_out(
            self.at, x.data_ptr(), a.data_ptr(), rows, y.data_ptr(), scratch.data_ptr()
        )
        return y

    def _prompt_in(self, x, rows, cos, sin):
        """A prompt's q, k, v [b, t, heads, D]: layer.c's norm, one bf16 copy of the normed rows
        for the three products, layer.c's rotary."""
        h = torch.empty_like(x)
        self.lib.prompt_norm(self.at, x.data_ptr(), rows, h.data_ptr())
        hb = h.view(rows, -1).bfloat16()
        q, k, v = (self.proj[n].on_copy(hb) for n in ("q", "k", "v"))
        self.lib.prompt_rotary(
            self.at, q.data_ptr(), k.data_ptr(), rows, cos.data_ptr(), sin.data_ptr()
        )
        b, t = x.shape[:2]
        return (
            q.view(b, t, self.heads, self.head_dim),
            k.view(b, t, self.kv_heads, self.head_dim),
            v.view(b, t, self.kv_heads, self.head_dim),
        )

    def _prompt_out(self, x, a, rows):
        """The layer's output from a prompt's attention a [rows, heads * D]: the products on the
        bf16 copies (gate and up from one bf16 copy of the normed rows), layer.c's residual,
        norm and SiLU."""
        o = self.proj["o"].on_copy(a.bfloat16())
        x2, h = torch.empty_like(x), torch.empty_like(x)
        self.lib.prompt_mid(self.at, x.data_ptr(), o.data_ptr(), rows, x2.data_ptr(), h.data_ptr())
        hb = h.view(rows, -1).bfloat16()
        g, u = self.proj["gate"].on_copy(hb), self.proj["up"].on_copy(hb)
        self.lib.prompt_silu(self.at, g.data_ptr(), u.data_ptr(), rows)
        return x2.add_(self.proj["down"].on_copy(g.bfloat16()).view_as(x2))


_last_rows: tuple = (None, None)  # (the step's cos/sin, their rows): every layer gets the same
# Kept after the step ends (until the next): only a decode step's or a short prompt's, so that
# an idle worker does not hold a long prompt's cos/sin.
MEMO_ROWS = 4096


def _rows(position_embeddings, x: torch.Tensor, head_dim: int):
    """cos and sin [batch or 1, T, head_dim] as [batch * T, head_dim] rows, contiguous; made
    once per step, as transformers computes them once for all the layers."""
    global _last_rows
    source, rows = _last_rows
    if source is not position_embeddings:
        shape = (x.shape[0], x.shape[1], head_dim)
        rows = tuple(
            t.to(torch.float32).expand(shape).reshape(-1, head_dim).contiguous()
            for t in position_embeddings
        )
        if rows[0].shape[0] <= MEMO_ROWS:
            _last_rows = (position_embeddings, rows)  # one tuple: a thread sees both or neither
    return rows


# (a weak reference to the step's mask, what _causal found for it): checked once per step,
# and not keeping the mask alive after it
_last_mask: tuple = (lambda: None, False)


def _causal(mask: torch.Tensor | None, b: int, t: int, n: int) -> torch.Tensor | bool | None:
    """Whether a step's mask lets query i of row r see exactly keys s_r .. n - t + i, as
    layer.c computes: None (every s_r 0) for no mask at all or the one transformers builds for
    an unpadded or right-padded batch; the starts s_r (int64 [b]) for a left-padded one (a
    fill's scoring rows that take different numbers of tokens from their sampled rows); False
    for any other mask, which keeps torch's SDPA. Checked once per step."""
    global _last_mask
    if mask is None:
        return None
    source, found = _last_mask
    if source() is mask:
        return found
    found = False
    if mask.dim() == 4 and tuple(mask.shape[-2:]) == (t, n) and mask.shape[0] in (1, b):
        allowed = (mask if mask.dtype == torch.bool else mask == 0)[:, 0].cpu()
        starts = allowed[:, -1].to(torch.int8).argmax(-1).to(torch.int64)  # first key seen
        keys = torch.arange(n)
        want = (keys <= torch.arange(t)[:, None] + (n - t)) & (keys >= starts[:, None, None])
        if starts.max() <= n - t and bool((allowed == want).all()):
            found = None if not starts.any() else starts.expand(b).contiguous()
    _last_mask = (weakref.ref(mask), found)
    return found


def _by_position(t: torch.Tensor) -> bool:
    """[batch, heads, positions, head_dim] with each position's head_dim values side by side."""
    return t.dtype == torch.float32 and t.stride(3) == 1 and t.stride(2) == t.shape[3]


def _no_interface(*args, **kwargs):
    raise RuntimeError("no attention implementation")


def fusible(layer) -> bool:
    """Whether layer.c computes this decoder layer exactly as transformers' forward does."""
    if type(layer).__name__ != "LlamaDecoderLayer":
        return False
    proj = _projections(layer)
    if any(m is None for m in proj.values()):
        return False
    attn, mlp = layer.self_attn, layer.mlp
    config = attn.config
    return (
        type(mlp.act_fn).__name__ in ("SiLU", "SiLUActivation")
        and all(proj[n].bias is None for n in ("gate", "up", "down"))
        and attn.head_dim % 8 == 0
        and config.num_attention_heads % config.num_key_value_heads == 0
        and getattr(config, "sliding_window", None) is None
        and layer.input_layernorm.weight.dtype == torch.float32
    )


def fuse_layers(model) -> int:
    """Has layer.c compute every decoder layer it can; returns how many."""
    lib = kernel.library()
    layers = getattr(getattr(model, "model", None), "layers", None)
    if lib is None or layers is None:
        return 0
    _declare(lib)
    done = 0
    for layer in layers:
        if isinstance(layer.__dict__.get("forward"), FusedForward):
            done += 1  # already (idempotent: the bench switches back and forth)
        elif fusible(layer):
            layer.forward = FusedForward(layer, lib)
            done += 1
    return done


def unfuse_layers(model) -> None:
    """Back to transformers' own forward for every layer (bench/cpu_decode.py compares them)."""
    for layer in getattr(getattr(model, "model", None), "layers", None) or ():
        if isinstance(layer.__dict__.get("forward"), FusedForward):
            del layer.forward
