"""transformers' continuous batching maps generate()'s logits processors to its own per-request
("CB") processors. Ours (model/tokens/sampling.py, RequestSamplingCB) takes the repetition penalty's
place, so per_request_processors=True gives each request our penalty, temperature, top-p,
healing and draw in one processor."""

from __future__ import annotations

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
