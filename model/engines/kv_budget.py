"""The KV cache's budget: bytes per token, the memory free for it, and the plan (pages, blocks,
per-request limit) that model/engines/batching.py allocates at start.

The budget is KV_CACHE_MB, else a share of the memory transformers counts as free. A request may
use at most what the cache holds, so the plan's `context_length` can sit below the model's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from transformers.generation.continuous_batching import utils as cb_utils

from model.engine import ModelInfo
from model.errors import PlaygroundError

log = logging.getLogger(__name__)

MIB = 2**20
CPU_PAGE = 32  # tokens per cache page on CPU: small pages waste little on short requests
# Default budget: this share of the memory transformers counts as available (it refuses a
# cache whose working set exceeds 0.6 of it on CPU, and that set is up to ~2.2x the cache for
# multi-query models), and at most DEFAULT_CAP_MIB on CPU, or one full context if larger.
# 448 MiB: SmolLM2 holds 10,194 tokens (one full 8,192-token context and more). It was 512;
# the packed output layer (model/engines/packing.py) keeps a 108 MiB copy of the embedding,
# and 64 MiB of that came from here to keep the SmolLM2 worker within 1.5 GiB idle.
DEFAULT_SHARE = 0.2
DEFAULT_CAP_MIB = 448


@dataclass(frozen=True)
class KvPlan:
    """The paged KV cache's size and what it allows per request."""

    page: int  # tokens per block
    num_blocks: int
    bytes_per_token: int  # all layers, K and V
    context_length: int  # per-request limit on prompt + max_new_tokens
    limited_by: str | None  # why context_length is below the model's, for messages

    @property
    def cache_bytes(self) -> int:
        return self.num_blocks * self.page * self.bytes_per_token

    def blocks_for(self, tokens: int) -> int:
        """Blocks one request of `tokens` may occupy (one spare, as transformers writes ahead)."""
        return math.ceil(tokens / self.page) + 1


def kv_bytes_per_token(config, dtype_size: int) -> int:
    """Cache bytes of one token: layers x kv heads x head dim x 2 (K and V) x dtype size."""
    config = config.get_text_config()
    heads = cb_utils.find_num_key_value_heads(config)
    return config.num_hidden_layers * heads * cb_utils.find_head_dim(config) * 2 * dtype_size


def available_memory() -> int:
    """Bytes transformers counts as free for the cache (on CPU: RAM capped by the NUMA node's
    MemTotal, minus our RSS), and on CPU no more than the OS says is available right now."""
    device, total, reserved, allocated = cb_utils.get_device_and_memory_breakdown()
    free = total - max(allocated, reserved)
    if device.type == "cpu" and cb_utils.is_psutil_available():
        import psutil  # accelerate's dependency; transformers reads RAM through it too

        free = min(free, psutil.virtual_memory().available)
    return max(0, free)


def plan_kv_cache(
    config,
    dtype_size: int,
    *,
    max_batch: int,
    context_length: int,
    kv_cache_mb: float | None,
    available: int,
    page: int = CPU_PAGE,
) -> KvPlan:
    """Blocks for the budget (KV_CACHE_MB, else a default from `available`), never more than
    `max_batch` full contexts need; the per-request limit is what the cache holds, at most
    the model's context. Raises PlaygroundError if it cannot hold one page plus the spare."""
    per_token = kv_bytes_per_token(config, dtype_size)
    block = page * per_token
    full_context = (math.ceil(context_length / page) + 1) * block
    if kv_cache_mb is None:
        cap = max(DEFAULT_CAP_MIB * MIB, full_context)
        budget = min(max_batch * full_context, cap, int(DEFAULT_SHARE * available))
        setting = f"KV_CACHE_MB={budget / MIB:.0f}, derived from this machine's memory"
    else:
        budget = int(kv_cache_mb * MIB)
        setting = f"KV_CACHE_MB={kv_cache_mb:g}"
    num_blocks = min(budget // block, max_batch * (full_context // block))
    if num_blocks < 2:
        raise PlaygroundError(
            f"The KV cache ({setting}) holds {budget // per_token} tokens; this model needs "
            f"at least {2 * page} ({2 * block / MIB:.2f} MiB). Raise KV_CACHE_MB.",
            field="kv_cache_mb",
            kind="config",
        )
    limit = min(context_length, (num_blocks - 1) * page)
    limited_by = setting if limit < context_length else None
    return KvPlan(page, num_blocks, per_token, limit, limited_by)


def plan_for_model(
    model, info: ModelInfo, max_batch: int, kv_cache_mb: float | None
) -> KvPlan | None:
    """The cache plan; None on a GPU without KV_CACHE_MB (transformers sizes it from memory)."""
    cpu = model.device.type == "cpu"
    if not cpu and kv_cache_mb is None:
        return None
    plan = plan_kv_cache(
        model.config,
        model.dtype.itemsize,
        max_batch=max_batch,
        context_length=info.context_length,
        kv_cache_mb=kv_cache_mb,
        available=available_memory(),
        page=CPU_PAGE if cpu else 256,
    )
    log.info(
        "KV cache: %.0f MiB, %d blocks of %d tokens (%d bytes per token); requests up to %d tokens",
        plan.cache_bytes / MIB,
        plan.num_blocks,
        plan.page,
        plan.bytes_per_token,
        plan.context_length,
    )
    return plan


def no_room(plan: KvPlan | None, kv_cache_mb: float | None, exc: MemoryError) -> str:
    size = f"{plan.cache_bytes / MIB:.0f} MiB" if plan is not None else "memory-derived"
    setting = f"KV_CACHE_MB={kv_cache_mb:g}" if kv_cache_mb is not None else "the default"
    return (
        f"The model's KV cache ({size}, {setting}) does not fit in the memory available to "
        f"this worker ({exc}). Set a smaller KV_CACHE_MB."
    )
