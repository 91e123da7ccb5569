"""Token healing on a remote server (vLLM): the plan of model/tokens/heal_plan.py, carried out with
`allowed_token_ids`.

A server cannot hold only the first token to the backed-off text, so the first token(s) are
asked for one at a time: the backed-off prompt, `max_tokens` 1, only the tokens that continue
the removed text allowed, the request's own sampling settings. vLLM names the token it drew by
id (`return_tokens_as_token_ids`); the rest of the output then continues from those ids (vLLM's
prefix cache makes the repeated prompt cheap). A server that refuses `allowed_token_ids` is not
asked again: its prompts go unhealed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.engine import GenerationRequest, TokenLogprob
from model.engines.remote_wire import token_logprobs
from model.errors import PlaygroundError
from model.tokens.heal_plan import HealPlan

if TYPE_CHECKING:
    from model.engines.remote import RemoteEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Healed:
    ids: list[int]  # the prompt to continue from: the backed-off one plus the healing tokens
    shown: str  # the healing tokens' text past the removed text: the output's start
    logprobs: tuple[TokenLogprob, ...]  # the healing tokens', when the request asks
    tokens: int  # how many were drawn


def heal(engine: RemoteEngine, request: GenerationRequest, plan: HealPlan) -> Healed | None:
    """The healing tokens for `plan`, drawn as `request` samples; None when the server refuses."""
    p = request.params
    vocab = engine.planner.vocab
    ids, made = list(plan.kept), b""
    logprobs: tuple[TokenLogprob, ...] = ()
    while len(made) < len(plan.removed):  # each token adds a byte at least
        body = {
            "prompt": ids,
            "max_tokens": 1,
            "temperature": 0.0 if p.greedy else p.temperature,
            "top_p": 1.0 if p.greedy else p.top_p,
            "repetition_penalty": p.repetition_penalty,
            "allowed_token_ids": vocab.allowed_ids(plan.removed[len(made) :]),
            "logprobs": p.logprobs or 0,
            "return_tokens_as_token_ids": True,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        try:
            choice = engine.post(request, body)["choices"][0]
        except PlaygroundError as exc:
            if exc.kind != "validation":
                raise
            log.warning("%s refused token healing (%s); prompts go unhealed", engine.base, exc)
            engine.heals = False
            return None
        drawn = token_logprobs(choice.get("logprobs"), top=p.logprobs or 0)
        token = (choice.get("logprobs") or {}).get("tokens", [""])[0]
        number = token.rpartition(":")[2]
        piece = vocab.bytes[int(number)] if number.isdigit() else None
        if piece is None:  # not an id, or not a text token: give up healing this prompt
            return None
        # The token is named by what of it the output shows (the rest is the prompt's), as
        # the worker names a healed token, so the names still add up to the text.
        visible = piece[max(0, len(plan.removed) - len(made)) :].decode("utf-8", "replace")
        ids.append(int(number))
        made += piece
        if p.logprobs is not None:
            full = piece.decode("utf-8", "replace")
            logprobs += tuple(
                TokenLogprob.shown_as(
                    full, visible, t.logprob, [(engine.token_name(n), v) for n, v in t.top]
                )
                for t in drawn
            )
    shown = made[len(plan.removed) :].decode("utf-8", errors="replace")
    return Healed(ids, shown, logprobs, len(ids) - len(plan.kept))
