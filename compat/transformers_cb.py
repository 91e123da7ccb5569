"""transformers' continuous batching maps generate()'s logits processors to its own per-request
("CB") processors. Ours (model/tokens/sampling.py, RequestSamplingCB) takes the repetition penalty's
place, so per_request_processors=True gives each request our penalty, temperature, top-p,
healing and draw in one processor."""

from __future__ import annotations

import torch
import transformers
from transformers import RepetitionPenaltyLogitsProcessor
from transformers.generation.continuous_batching import cb_logits_processors as cblp

from compat import require

WRITTEN_FOR = "5.24.0"


def install(cb_processor: type) -> None:
    """Idempotent; the worker calls it before it builds a batching manager."""
    require("transformers", transformers.__version__, WRITTEN_FOR, __name__)
    cblp.CLASSIC_TO_CB_PROCESSORS_MAP[RepetitionPenaltyLogitsProcessor] = cb_processor


def installed(cb_processor: type) -> bool:
    return cblp.CLASSIC_TO_CB_PROCESSORS_MAP.get(RepetitionPenaltyLogitsProcessor) is cb_processor


def before_each_step(manager, hook) -> None:
    """Calls `hook()` on the manager's own thread before each pass of its generation loop
    (start() not yet called): the thread the batch computes on, whose OpenMP team only it can
    size (model/engines/threads.py). Wraps the loop body, a private method of 5.24's manager."""
    require("transformers", transformers.__version__, WRITTEN_FOR, __name__)
    body = manager._generation_loop_body

    def step(*args, **kwargs):
        hook()
        return body(*args, **kwargs)

    manager._generation_loop_body = step


def wake(manager) -> None:
    """Ends the idle loop's wait for requests (up to 0.1 s) now: a hook has work for it."""
    manager._wake_up_loop.set()


def paged_layer(cache, layer_idx: int, kwargs: dict):
    """Layer `layer_idx`'s part of a step on the paged cache, for model/engines/fused.py:
    (key rows, value rows, write_index, read_index, cu_seq_lens_k), each row one token's
    [kv_heads, head_dim]; None where the step or the layer is not on the index path of a full-
    attention layer in fp32 (a block table, a sliding window), which transformers computes."""
    require("transformers", transformers.__version__, WRITTEN_FOR, __name__)
    if kwargs.get("block_table") is not None:
        return None
    allocator = cache.layer_to_allocator[layer_idx]
    if allocator.layer_type != "full_attention":
        return None
    k_rows, v_rows = allocator._kv_token_views[layer_idx]
    if k_rows.dtype != torch.float32 or not (k_rows.is_contiguous() and v_rows.is_contiguous()):
        return None
    write_index = kwargs["write_index"][allocator.index]
    read_index = kwargs["read_index"][allocator.index]
    if write_index.dtype != torch.int64 or read_index.dtype != torch.int64:
        return None
    cu_k = kwargs["cu_seq_lens_k"][allocator.layer_type]
    return k_rows, v_rows, write_index.contiguous(), read_index.contiguous(), cu_k
