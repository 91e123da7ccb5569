"""Fill-in-the-middle by reranking on a remote server that can score a prompt (vLLM).

The same fill as the worker's (model/infill/fim_rerank.py, whose model-free half, model/infill/rerank.py,
both use), with what the completions API offers instead of a KV cache:
  - sample: one greedy line and `k - 1` sampled ones (`n`, `top_k`, `seed`) from the code
    before the gap, ended at the line's end (`stop`); a prefix ending in whitespace is healed
    first (model/engines/remote_heal.py), greedily, so every row starts from the same tokens;
  - score: every candidate in one request, `prefix + middle + suffix head` with `echo`,
    `logprobs` and `max_tokens` 0, i.e. the server's log-probability of each prompt token given
    the ones before it; the tokens past the prefix are summed into log p(middle | prefix) and
    log p(suffix head | prefix + middle) by their `text_offset`, as the worker splits them.
The two samples run side by side, so the server batches them. The scored prefix is cut to its
last SCORE_CONTEXT_TOKENS: every candidate re-reads it, and the server computes a log-softmax
over the whole vocabulary for every prompt token, the prefix's too (the worker scores only the
candidates' tokens, over the prefix's cache). On 40 HumanEval lines, 128 tokens against 512
changed 4 fills, none of them to or from an exact one, and cut the p50 from 13.2 to 9.6 s on a
2-core machine under a load of 15-30 (bench/RESULTS.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx

from model.engine import CancelToken, Done, Event, GenerationRequest
from model.engines import remote_heal
from model.infill.rerank import (
    Candidate,
    Fill,
    candidate_middles,
    fill_events,
    infill_settings,
    split_score,
    suffix_head,
)
from model.prompts.templates import fim_stop_sequences

if TYPE_CHECKING:
    from model.engines.remote import RemoteEngine

SCORE_CONTEXT_TOKENS = 128


def fill(engine: RemoteEngine, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
    gap, s = request.infill, infill_settings(request)
    start = time.perf_counter()
    stops = fim_stop_sequences(gap.prefix, gap.suffix, single_line=True)
    room = s.max_new_tokens + s.suffix_tokens + 8
    context = engine.tail(gap.prefix, engine.info.context_length - room)
    try:
        prompt, removed, healed_text, healed_tokens = context, "", "", 0
        plan = engine.heal_plan(context)
        if plan is not None:  # greedy healing: every row continues the same tokens
            greedy = replace(request, params=replace(request.params, temperature=0.0))
            healed = remote_heal.heal(engine, greedy, plan)
            if healed is not None:
                prompt, removed, healed_text = healed.ids, plan.text, plan.text + healed.shown
                healed_tokens = healed.tokens
        rows = {"prompt": prompt, "max_tokens": s.max_new_tokens, "stop": list(stops)}
        bodies = [{**rows, "temperature": 0.0}]
        if s.k > 1:
            bodies.append(
                {
                    **rows,
                    "n": s.k - 1,
                    "temperature": s.temperature,
                    "top_p": s.top_p,
                    "top_k": s.top_k,
                    "seed": s.seed,
                }
            )
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: engine.post(request, body), bodies))
        if cancel.cancelled:
            yield Done("cancelled")
            return
        choices = [c for a in answers for c in sorted(a["choices"], key=lambda c: c["index"])]
        texts = [healed_text + (c.get("text") or "") for c in choices]
        middles, greedy_text = candidate_middles(
            texts,
            gap.suffix,
            removed=removed,
            greedy_row=0,
            single_line=True,
            stops=stops,
            max_lines=s.max_lines,
        )
        sampled = time.perf_counter()
        scored = engine.tail(context, SCORE_CONTEXT_TOKENS)
        scores = _score(
            engine,
            request,
            scored,
            len(scored) - len(removed),
            middles,
            suffix_head(gap.suffix, s.suffix_lines),
            s.suffix_tokens,
        )
    except httpx.HTTPError as exc:
        yield engine._unreachable(exc, 0, 0)
        return
    if cancel.cancelled:
        yield Done("cancelled")
        return
    candidates = tuple(
        Candidate(m, suf, mid, greedy=m == greedy_text)
        for m, (suf, mid) in zip(middles, scores, strict=True)
    )
    usage = answers[0].get("usage") or {}
    new_tokens = int(usage.get("completion_tokens") or 0) + healed_tokens  # the greedy row's
    if choices[0].get("finish_reason") == "length":
        new_tokens = s.max_new_tokens
    done = time.perf_counter()
    result = Fill(
        candidates,
        sampled - start,
        done - sampled,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        new_tokens=min(new_tokens, s.max_new_tokens),
    )
    yield from fill_events(result, s, request.params.stop)


def _score(engine, request, context: str, cut: int, middles, head: str, suffix_tokens: int):
    """(log p(suffix head | context + middle), log p(middle | context)) per middle. `cut`: where
    the text the middle re-creates starts (the context minus its healed-away end)."""
    prompts = [context + m + head for m in middles]
    body = {"prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0.0}
    answer = engine.post(request, body)
    scores = []
    for m, choice in zip(middles, sorted(answer["choices"], key=lambda c: c["index"]), strict=True):
        lp = choice.get("logprobs") or {}
        boundary = len(context) + len(m)
        values, flags = [], []
        for offset, token, value in zip(
            lp.get("text_offset") or [],
            lp.get("tokens") or [],
            lp.get("token_logprobs") or [],
            strict=False,
        ):
            end = offset + len(token)
            if end <= cut or value is None:
                continue  # the code before the gap: the same for every candidate
            values.append(value)
            flags.append(end > boundary)
        if head and True in flags:  # the suffix head's first tokens only, as the worker scores
            keep = flags.index(True) + suffix_tokens
            values, flags = values[:keep], flags[:keep]
        scores.append(split_score(values, flags))
    return scores
