"""A scored prompt (`echo` + `logprobs`) holds the model a chunk at a time: the worker's batch
pauses per chunk (and takes a step between chunks) instead of for the whole prompt, and a
cancelled request stops between chunks."""

import contextlib

import torch

from model.engine import CancelToken
from model.tokens.logprobs import score_prompt


def test_scoring_holds_the_model_per_chunk_and_gives_the_same_numbers(engine):
    ids = engine.tokenize("def f(x):\n    return x\n" * 60)[:500]
    held = []

    @contextlib.contextmanager
    def hold():
        held.append(len(held))
        yield

    with torch.inference_mode():
        whole = score_prompt(engine.model, engine.namer, ids, 1, chunk=512)
        chunked = score_prompt(engine.model, engine.namer, ids, 1, chunk=128, hold=hold)
    assert len(held) == 4  # 499 positions in chunks of 128
    assert [t.token for t in chunked] == [t.token for t in whole]
    drift = max(
        abs((a.logprob or 0) - (b.logprob or 0)) for a, b in zip(chunked, whole, strict=True)
    )
    # the same sums, grouped otherwise: fp32's rounding, or bf16's (DTYPE=auto on an AMX CPU)
    assert drift < (1e-3 if engine.info.dtype == "float32" else 5e-2)


def test_a_cancelled_scoring_stops_between_chunks(engine):
    ids = engine.tokenize("x = 1\n" * 100)[:400]
    cancel = CancelToken()

    @contextlib.contextmanager
    def hold():
        yield
        cancel.cancel()  # the client went away during the first chunk

    with torch.inference_mode():
        assert (
            score_prompt(engine.model, engine.namer, ids, 0, chunk=64, hold=hold, cancel=cancel)
            is None
        )
