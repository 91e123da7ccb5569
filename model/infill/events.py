"""Serves Infill requests (model/engine.py) on an in-process model: the rerank fill as events.

A fill by reranking cannot stream its middle: the pick is known only once every candidate is
scored. So one Delta carries the chosen middle, then Done. It runs alone on the model (the
caller holds the model: LocalEngine's lock, or the batch paused in the worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from model.engine import CancelToken, Done, Event, GenerationRequest
from model.infill.fim_rerank import Cancelled, RerankFiller
from model.infill.rerank import fill_events, infill_settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _every_core(model):
    """A fill runs alone (the batch is paused), so on a CPU it may use every core. The worker
    otherwise keeps few threads, so that spinning ones do not starve the web process
    (model/engines/worker_process.py); during a fill the web process only waits."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if next(model.parameters()).device.type != "cpu" or (cores or 1) <= before:
        yield
        return
    torch.set_num_threads(cores)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def infill_events(
    model, tokenizer, request: GenerationRequest, cancel: CancelToken
) -> Iterator[Event]:
    spec, p = request.infill, request.params
    settings = infill_settings(request)
    try:
        with _every_core(model):
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
