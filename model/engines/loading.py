"""Load a causal LM and its tokenizer: device, dtype, pad token, gated models, offline paths."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from model.engine import ModelInfo
from model.errors import PlaygroundError
from model.registry import CONTEXT_KEYS, DEFAULT_CONTEXT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda" or "cpu"
    dtype: str  # "bfloat16", "float16" or "float32"
    device_map: str | None  # "auto" only when the model spans several GPUs


DTYPES = ("auto", "float32", "bfloat16")  # the DTYPE setting's choices
# /proc/cpuinfo flags of CPUs that compute bf16 natively: AMX tiles (Sapphire Rapids on) or
# AVX512-BF16 (Cooper Lake, Zen 4). Without them torch emulates bf16 matmuls through fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
AMX_FLAG = "amx_bf16"  # where oneDNN computes a prompt's bf16 rows ~5x faster than fp32


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there, e.g. macOS)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def choose_placement(device: str | None = None, dtype: str = "auto") -> Placement:
    """CUDA: bf16 where supported else fp16, sharded only across several GPUs. CPU: bf16 where
    the CPU has AMX or AVX512-BF16, else fp32 (load() keeps fp32 over a checkpoint's codes
    there). `dtype` other than auto (DTYPE) is taken as is."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        device_map = "auto" if torch.cuda.device_count() > 1 else None
        return Placement(device, dtype, device_map)
    if dtype == "auto":
        # Without native bf16, torch converts every bf16 matmul to fp32 and back: slower than
        # fp32 itself (bench/RESULTS.md, "bf16 on CPU").
        dtype = "bfloat16" if cpu_has_bf16() else "float32"
    return Placement("cpu", dtype, None)


def is_local(model_id: str) -> bool:
    return Path(model_id).expanduser().is_dir()


def load(
    model_id: str, *, device: str | None = None, hf_token: str | None = None, dtype: str = "auto"
):
    """Return (model, tokenizer, ModelInfo). A local folder never touches the network.

    `dtype` (DTYPE) is the weights' and so the KV cache's: the paged cache takes the model's;
    except for DTYPE=bfloat16 on a CPU with AVX512-BF16, which keeps the model fp32 for kernel.c
    and layer.c and has kernel.c compute its linear layers in bf16 (model/engines/packing.py).
    DTYPE=auto on a CPU with bf16 loads fp32 first: where its weights are a checkpoint's codes
    (SmolLM2's; model/engines/codes.py), it stays fp32, since kernel.c then computes the exact
    fp32 outputs over a fifth of the bytes, ~1.9x bf16's one stream (bench/RESULTS.md, part 8),
    with prompts on bf16 copies where the CPU has AMX; any other model becomes bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.engines import kernel
    from model.engines.fused import fuse_layers
    from model.engines.packing import computes_in_bf16, pack_linears, packed_backend

    local = is_local(model_id)
    source = str(Path(model_id).expanduser()) if local else model_id
    common = {"local_files_only": local, "token": None if local else hf_token}
    placement = choose_placement(device, dtype)
    codes_first = dtype == "auto" and placement.device == "cpu" and placement.dtype == "bfloat16"
    # DTYPE=bfloat16 on a CPU where kernel.c computes in bf16 (AVX512-BF16): fp32 loaded, then
    # packed for its bf16 arithmetic (weights as bf16, or a checkpoint's codes as they are)
    bf16_kernel = dtype == "bfloat16" and placement.device == "cpu" and kernel.bf16_arithmetic()
    load_as = "float32" if codes_first or bf16_kernel else placement.dtype
    log.info("loading %s on %s (%s)", source, placement.device, load_as)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=getattr(torch, load_as),
            device_map=placement.device_map,
            **common,
        )
    except OSError as exc:
        raise PlaygroundError(
            f"Could not load `MODEL_ID` {model_id!r}: it is not a local model folder, and the "
            f"Hugging Face Hub could not provide it ({exc.__class__.__name__}). Gated models "
            "need HF_TOKEN; offline machines need a local folder.",
            field="model",
            kind="config",
        ) from exc
    if placement.device_map is None:
        model.to(placement.device)
    model.eval()
    codes_kept = codes_first and holds_codes(model)
    if codes_kept:
        placement = Placement("cpu", "float32", None)
    elif codes_first:
        model.to(torch.bfloat16)
    # bf16 copies for prompts (model/engines/packing.py) beside kernel.c's fp32 or bf16 layers
    prompts = (codes_kept or bf16_kernel) and AMX_FLAG in cpu_flags()
    linear = layers = ""
    if placement.device == "cpu":
        # Packed for kernel.c or oneDNN where it can (model/engines/packing.py), else the layout
        # plain BLAS handles best; either way the plain checkpoint copies go.
        if pack_linears(model, prompts=prompts, bf16=bf16_kernel):
            linear = packed_backend(model)
        else:
            column_major_linears(model)
            linear = "plain"
        if bf16_kernel and not computes_in_bf16(model):
            # no layer kernel.c can take in bf16 (inputs not a multiple of 32): fp32, and said so
            log.warning("DTYPE=bfloat16: no linear layer of this model computes in bf16 here")
            placement = Placement("cpu", "float32", None)
        release_checkpoint(model)
        # A decode step's small ops in C around kernel.c, where it computes every layer. After
        # the copies above: layer.c keeps the addresses of the norms' weights.
        layers = "layer.c" if fuse_layers(model) else "transformers"
        # Grouped-query attention straight on the KV heads: transformers otherwise copies
        # them to every query head (repeat_kv) whenever there is a mask, which continuous
        # batching always has; torch's CPU flash kernel takes the groups as they are. 8
        # SmolLM2 streams: 6 ms of 92 per step were those copies (bench/RESULTS.md). Read by
        # transformers at each call; CUDA's kernels fall back to math with a mask, so CPU only.
        os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        # Softmax over a low-temperature row underflows into denormals, which x86 handles
        # ~10x slower: 8 x 8,192 logits took 196 us, 56 us flushed to zero. They are far
        # below any probability that can be drawn.
        torch.set_flush_denormal(True)
    if tokenizer.pad_token is None:
        # Generation with padding needs a pad id; EOS is the conventional stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else None
    info = ModelInfo(
        model_id=model_id,
        context_length=context_length(model.config, tokenizer),
        special_tokens=frozenset(tokenizer.all_special_tokens)
        | frozenset(t.content for t in tokenizer.added_tokens_decoder.values()),
        eos_token=tokenizer.eos_token,
        architecture=(model.config.architectures or [type(model).__name__])[0],
        device=placement.device,
        dtype=placement.dtype,
        has_chat_template=template is not None,
        chat_template=template,
        bos_token=tokenizer.bos_token,
        linear=linear,
        layers=layers,
        fills_by_rerank=True,  # in process: model/infill/events.py can sample and score here
        logprobs=True,
    )
    return model, tokenizer, info


def holds_codes(model) -> bool:
    """Whether the model's first Linear weight is a checkpoint's codes kernel.c reads."""
    import torch

    from model.engines import codes

    first = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
    return first is not None and codes.find(first.weight) is not None


def column_major_linears(model) -> None:
    """Store every Linear weight transposed in memory (same values, same shape).

    On CPU, F.linear with a row-major [out, in] weight takes a slow GEMM path for the few rows a
    decode step has: at 8 rows the tiny model's output projection took 0.91 ms, 0.36 ms with the
    transposed layout, and SmolLM2's MLP 0.44 vs 0.21 ms (bench/RESULTS.md). Tied embeddings
    share the parameter and index it the same either way.
    """
    import torch

    done: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and id(weight) not in done:
            done.add(id(weight))
            weight.data = weight.data.t().contiguous().t()


def release_checkpoint(model) -> None:
    """Copy every tensor that still lives in the checkpoint file's memory map into our memory.

    On CPU transformers hands out views of the mmapped safetensors file, and one view (a 2 KB
    norm weight) keeps the whole mapping, read once while loading, in our RSS: SmolLM2's
    worker held its 0.54 GB of weights twice, once as the transposed copies column_major_linears
    made and once as file pages (bench/RESULTS.md, "Worker memory"). The copies are small: the
    Linear weights were copied already.
    """
    import torch

    copied = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    for t in (*model.parameters(), *model.buffers()):  # a tied tensor comes once
        if id(t) not in copied:
            t.data = t.data.clone()


def context_length(config, tokenizer) -> int:
    for attr in CONTEXT_KEYS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else DEFAULT_CONTEXT
