"""Token log-probabilities for GenerationParams.logprobs (imports torch).

Both drivers report the same thing: log softmax of the logits after the repetition penalty and
token healing, before temperature and top-p, i.e. what the model thinks of each token, not how
the sampler reshaped it. The batch records them in its sampler (model/tokens/sampling.py), which sees
every row's logits and its chosen token in the same step; generate() through StepRecorder.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable

import torch
from transformers import LogitsProcessor

from model.engine import TokenLogprob

Record = tuple[int, float, tuple[int, ...], tuple[float, ...]]  # token, logprob, top ids, top lps


def records(logprobs: torch.Tensor, chosen: torch.Tensor, tops: list[int]) -> list[Record]:
    """Per row of `logprobs` [rows, vocab]: the chosen token's logprob and the row's `tops[i]`
    likeliest tokens, as plain numbers (they cross threads and the pipe)."""
    picked = logprobs.gather(1, chosen.view(-1, 1).to(logprobs.device)).squeeze(1).tolist()
    k = max(tops, default=0)
    top_vals, top_ids = logprobs.topk(k, dim=-1) if k else (None, None)
    out = []
    for i, (token, lp) in enumerate(zip(chosen.tolist(), picked, strict=True)):
        n = tops[i]
        ids = tuple(top_ids[i, :n].tolist()) if n else ()
        vals = tuple(top_vals[i, :n].tolist()) if n else ()
        out.append((int(token), float(lp), ids, vals))
    return out


class Namer:
    """Token ids to the text OpenAI-style APIs show for them, cached per id."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._names: dict[int, str] = {}
        # The text skips special tokens; a sampled one's name must too, or the names stop
        # adding up to the text (a `<fim_middle>` drawn at temperature 1 did).
        self._special = set(getattr(tokenizer, "all_special_ids", None) or ())

    def name(self, token: int) -> str:
        text = self._names.get(token)
        if text is None:
            text = self._names[token] = self.tokenizer.decode([token])
        return text

    def entry(self, record: Record, shown: Callable[[str], str] | None = None) -> TokenLogprob:
        """`shown`: what of a generated token's text the user's text has (TokenStream.name);
        None: a prompt's token, all of it, as the user typed it."""
        token, lp, ids, vals = record
        top = tuple((self.name(i), v) for i, v in zip(ids, vals, strict=True))
        if shown is None:
            return TokenLogprob(self.name(token), lp, top)
        name = "" if token in self._special else self.name(token)
        return TokenLogprob.shown_as(name, shown(name), lp, top)


class RecordBook:
    """Records per request id: written by the batch's step, read by the router thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._books: dict[str, collections.deque[Record]] = {}

    def add(self, rid: str, record: Record) -> None:
        with self._lock:
            self._books.setdefault(rid, collections.deque()).append(record)

    def take(self, rid: str, n: int) -> list[Record]:
        """The next `n` records of `rid` (fewer if the step has not written them)."""
        with self._lock:
            book = self._books.get(rid)
            return [book.popleft() for _ in range(min(n, len(book)))] if book else []

    def forget(self, rid: str) -> None:
        with self._lock:
            self._books.pop(rid, None)


class StepRecorder(LogitsProcessor):
    """For generate(): keeps each step's log-probabilities (placed after the penalty and
    healing, before the warpers, which transformers appends after custom processors) until
    the step's token is known to the reader."""

    def __init__(self, top: int) -> None:
        self.top = top
        self._rows: collections.deque[torch.Tensor] = collections.deque()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._rows.append(scores[0].float().log_softmax(-1))
        return scores

    def take(self, token: int) -> Record:
        """The record of the oldest step not read yet, whose token was `token`."""
        row = self._rows.popleft()[None]
        return records(row, torch.tensor([token]), [self.top])[0]


def score_prompt(
    model,
    namer: Namer,
    ids: list[int],
    top: int,
    chunk: int = 256,
    hold=contextlib.nullcontext,
    cancel=None,
):
    """Each prompt token's log-probability given the tokens before it, and `top` alternatives
    (raw: no penalty applies to a prompt). The first token has nothing before it: None.

    Run in chunks over a growing cache, so a 2,048-token prompt holds logits for `chunk`
    positions at a time (all of SmolLM2's at once: 400 MB) and any causal LM scores the same.
    Each chunk runs inside `hold()` (the worker pauses its batch for one chunk at a time, so
    the other streams go on between chunks) and a cancelled request stops between chunks.
    Returns None if cancelled.
    """
    out = [TokenLogprob(namer.name(ids[0]), None)] if ids else []
    device = next(model.parameters()).device
    cache = None
    for start in range(0, len(ids) - 1, chunk):
        if cancel is not None and cancel.cancelled:
            return None
        with hold():
            piece = torch.tensor([ids[start : start + chunk]], device=device)
            result = model(input_ids=piece, cache=cache, use_cache=True)
            cache = result.cache
            targets = torch.tensor(ids[start + 1 : start + 1 + piece.shape[1]])
            rows = result.logits[0, : len(targets)].float().log_softmax(-1)
            out += [namer.entry(r) for r in records(rows, targets, [top] * len(targets))]
    return tuple(out)
