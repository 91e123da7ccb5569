"""OpenAI's JSON shapes for the /v1 routes: whole bodies, stream chunks per choice,
log-probabilities, usage and errors (app/web/openai_responses.py sends them)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi.responses import JSONResponse

from app.services.playground import Output
from model.engine import TokenLogprob
from model.errors import PlaygroundError

_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop", "loop": "stop"}


def chunk(rid, created, model: str, index: int, choice: dict, kind: str, extra=None) -> str:
    obj = "chat.completion.chunk" if kind.startswith("chat") else "text_completion"
    body = {"id": rid, "object": obj, "created": created, "model": model,
            "choices": [{"index": index, "logprobs": None, "finish_reason": None, **choice}],
            **(extra or {})}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n"


class ChoiceStream:
    """One choice of a streamed response: each Output in, the chunks it adds out (the echo
    once, new text with the tokens behind it, the finish)."""

    def __init__(self, index: int, rid: str, created: int, kind: str, echo: bool):
        self.index, self.rid, self.created, self.kind = index, rid, created, kind
        self.chat = kind.startswith("chat")
        self.echoed = not echo
        self.offset = 0  # where the next token starts in the returned text

    def opening(self, model: str) -> list[str]:
        role = {"delta": {"role": "assistant", "content": ""}}
        return (
            [chunk(self.rid, self.created, model, self.index, role, self.kind)] if self.chat else []
        )

    def chunks(self, out: Output, extra: dict | None = None) -> list[str]:
        """`extra`: top-level fields for the finish chunk (usage, once all choices ended)."""
        events = []
        if not self.echoed and out.queue_position is None:  # scored once it left the queue
            self.echoed, choice = True, {"text": out.prefix}
            if out.prompt_logprobs:
                choice["logprobs"] = logprobs(out.prompt_logprobs, self.chat, 0)
            events.append(self._chunk(out, choice))
            self.offset = len(out.prefix)
        delta, new_tokens = out.delta, out.delta_logprobs  # as the services passed them on
        if delta or new_tokens:
            choice = (
                {"delta": {"content": delta} if delta else {}} if self.chat else {"text": delta}
            )
            if new_tokens:  # each chunk carries the tokens behind its text
                choice["logprobs"] = logprobs(new_tokens, self.chat, self.offset)
                self.offset += sum(len(t.token) for t in new_tokens)
            events.append(self._chunk(out, choice))
        if out.done is not None:
            finish = {"delta": {}} if self.chat else {"text": ""}
            finish["finish_reason"] = _FINISH.get(out.done.reason, "stop")
            events.append(self._chunk(out, finish, extra))
        return events

    def _chunk(self, out: Output, choice: dict, extra: dict | None = None) -> str:
        return chunk(self.rid, self.created, out.model, self.index, choice, self.kind, extra)


def complete_body(outs: Sequence[Output], rid: str, created: int, kind: str, echo: bool) -> dict:
    chat = kind.startswith("chat")
    choices = []
    for index, out in enumerate(outs):
        finish = _FINISH.get(out.done.reason, "stop") if out.done else "stop"
        echoed = out.prefix if echo else ""
        tokens = (out.prompt_logprobs if echo else ()) + out.logprobs
        start = 0 if echo and out.prompt_logprobs else len(echoed)
        shape = logprobs(tokens, chat, start) if tokens else None
        if chat:
            choice = {"message": {"role": "assistant", "content": out.generated}}
        else:
            choice = {"text": echoed + out.generated}
        choices.append({"index": index, **choice, "logprobs": shape, "finish_reason": finish})
    return {"id": rid, "object": kind, "created": created, "model": outs[0].model,
            "choices": choices, "usage": usage(outs)}  # fmt: skip


def logprobs(tokens: tuple[TokenLogprob, ...], chat: bool, offset: int) -> dict:
    """OpenAI's two shapes: chat's `content` list, or the completions API's parallel lists
    (`text_offset` counts characters of the returned text, from `offset`)."""
    if chat:

        def entry(token: str, lp: float) -> dict:
            return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

        return {"content": [{**entry(t.token, t.logprob),
                             "top_logprobs": [entry(a, v) for a, v in t.top]} for t in tokens]}  # fmt: skip
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) if t.logprob is not None else None for t in tokens],
            "text_offset": offsets}  # fmt: skip


def usage(outs: Sequence[Output]) -> dict:
    done = [out.done for out in outs if out.done]
    prompt = sum(d.prompt_tokens for d in done)
    completion = sum(d.generated_tokens for d in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def error(exc: PlaygroundError, openai: bool = True) -> JSONResponse:
    """A refusal as an HTTP response: /v1's OpenAI shape, or every other route's plain one."""
    body = exc.openai_body() if openai else exc.body()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)
