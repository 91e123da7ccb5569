"""Serves Infill requests (model/engine.py) on an in-process model: the rerank fill as events.

A fill by reranking cannot stream its middle: the pick is known only once every candidate is
scored. So one Delta carries the chosen middle, then Done. It runs alone on the model (the
caller holds the model: LocalEngine's lock, or the batch paused in the worker).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from model.engine import CancelToken, Done, Event, GenerationRequest
from model.infill.fim_rerank import Cancelled, RerankFiller
from model.infill.rerank import fill_events, infill_settings

log = logging.getLogger(__name__)


def infill_events(
    model, tokenizer, request: GenerationRequest, cancel: CancelToken
) -> Iterator[Event]:
    spec, p = request.infill, request.params
    settings = infill_settings(request)
    try:
        # On the caller's threads: in the worker, as many as the batch's team uses now
        # (model/engines/threads.py), which is every core unless other processes are busy.
        fill = RerankFiller(model, tokenizer, settings)(
            spec.prefix, spec.suffix, single_line=True, cancel=cancel
        )
    except Cancelled:
        yield Done("cancelled")
        return
    except Exception as exc:
        yield failed(exc)
        return
    yield from fill_events(fill, settings, p.stop)


def failed(exc: BaseException, n_prompt: int = 0, generated: int = 0) -> Done:
    """The Done for a generation (or a fill) that raised inside the model: OOM or not."""
    log.error("generation failed", exc_info=exc)
    if isinstance(exc, torch.OutOfMemoryError):
        msg = "The model ran out of memory. Try a shorter prompt or fewer max_new_tokens."
        kind = "oom"
    else:
        msg = f"Generation failed inside the model ({type(exc).__name__}). The error was logged."
        kind = "engine"
    return Done("error", n_prompt, generated, error=msg, error_kind=kind)
