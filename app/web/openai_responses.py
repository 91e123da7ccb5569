"""Responses of the OpenAI-compatible routes (app/web/openai_api.py): whole bodies, server-sent
event streams fed by one producer thread per generation, log-probabilities and errors in
OpenAI's shapes."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.services.playground import Output
from model.engine import TokenLogprob
from model.errors import PlaygroundError

_STATUS = {"validation": 400, "unsupported": 400, "not_found": 404, "too_large": 413,
           "rate_limit": 429, "busy": 503, "config": 503, "engine": 503, "oom": 503,
           "cancelled": 503, "unauthorized": 401}  # fmt: skip
_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
Attribute = Callable[[Output], list]
# Reused producer threads: starting one per request cost its first token ~0.3 ms, more under
# load. Generations are bounded by the engine queue well below this; past it, refusals wait.
_PRODUCERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="v1-stream")


async def respond(run: Iterator[Output], stream: bool, kind: str, echo: bool,
                  attribute: Attribute | None) -> Response:  # fmt: skip
    """`echo`: the completion's text starts with its prompt (Output.prefix: the text, also of a
    prompt sent as token ids)."""
    rid = f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not stream:
        final = await anyio.to_thread.run_sync(_last, run)
        body = _complete_body(final, rid, created, kind, echo)
        if attribute:
            body["attribution"] = await anyio.to_thread.run_sync(attribute, final)
        return JSONResponse(body)
    pump = _Pump(run)
    first = await pump.next()  # a refusal raises here: an HTTP error, before any event
    return StreamingResponse(
        _chunks(pump, first, rid, created, kind, echo, attribute), media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


def _last(run: Iterator[Output]) -> Output:
    return collections.deque(run, maxlen=1)[0]  # every run ends with a final Output


class _Pump:
    """A generation's Outputs, produced by one thread of its own and read by the event loop.

    A thread hop per token (to_thread for each next()) took 8 streams to 3.3x where the engine
    alone does 5.1x; here the loop takes whatever arrived since it last looked, as one event.
    """

    def __init__(self, run: Iterator[Output]):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._held: tuple | None = None
        self._stop = threading.Event()
        _PRODUCERS.submit(self._produce, run)

    def _produce(self, run: Iterator[Output]) -> None:
        put = self._queue.put_nowait
        try:
            for out in run:
                self._loop.call_soon_threadsafe(put, ("out", out))
                if self._stop.is_set():
                    break
        except Exception as exc:  # handed to the reader, who raises it
            self._loop.call_soon_threadsafe(put, ("err", exc))
        finally:
            run.close()  # a client that went away: this cancels its request at the next step
            self._loop.call_soon_threadsafe(put, ("end", None))

    async def next(self) -> Output | None:
        """The latest Output (None at the end); raises what the generation raised."""
        item = self._held or await self._queue.get()
        self._held = None
        while item[0] == "out" and not item[1].done and not self._queue.empty():
            following = self._queue.get_nowait()
            if following[0] != "out":
                self._held = following
                break
            item = following
        if item[0] == "err":
            raise item[1]
        return item[1]

    def stop(self) -> None:
        self._stop.set()


async def _chunks(pump: _Pump, first, rid, created, kind, echo, attribute) -> AsyncIterator[str]:
    chat = kind.startswith("chat")
    sent, shown = "", 0  # text and tokens (log-probabilities) sent so far
    offset = len(first.prefix) if echo else 0  # where the next token starts in the text
    out, echoed = first, not echo
    try:
        if chat:
            yield _event(rid, created, first, {"delta": {"role": "assistant", "content": ""}}, kind)
        while out is not None:
            if not echoed and out.queue_position is None:  # scored once it left the queue
                echoed, choice = True, {"text": out.prefix}
                if out.prompt_logprobs:
                    choice["logprobs"] = _logprobs(out.prompt_logprobs, chat, 0)
                yield _event(rid, created, out, choice, kind)
            text, delta = out.generated, ""
            if text.startswith(sent) and len(text) > len(sent):
                delta, sent = text[len(sent) :], text
            new_tokens = out.logprobs[shown:]
            if delta or new_tokens:
                choice = {"delta": {"content": delta} if delta else {}} if chat else {"text": delta}
                if new_tokens:  # each chunk carries the tokens behind its text
                    choice["logprobs"] = _logprobs(new_tokens, chat, offset)
                    shown = len(out.logprobs)
                    offset += sum(len(t.token) for t in new_tokens)
                yield _event(rid, created, out, choice, kind)
            if out.done is not None:
                finish = _FINISH.get(out.done.reason, "stop")
                choice = {"delta": {}} if chat else {"text": ""}
                extra = {"usage": _usage(out)}
                if attribute:
                    extra["attribution"] = await anyio.to_thread.run_sync(attribute, out)
                yield _event(rid, created, out, {**choice, "finish_reason": finish}, kind, extra)
                break
            out = await pump.next()
    except PlaygroundError as exc:
        yield f"data: {json.dumps(_error_body(exc))}\n\n"
    finally:
        pump.stop()
    yield "data: [DONE]\n\n"


def _event(rid, created, out, choice, kind, extra: dict | None = None) -> str:
    obj = "chat.completion.chunk" if kind.startswith("chat") else "text_completion"
    body = {"id": rid, "object": obj, "created": created, "model": out.model if out else "",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **choice}],
            **(extra or {})}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n"


def _complete_body(out: Output, rid: str, created: int, kind: str, echo: bool) -> dict:
    finish = _FINISH.get(out.done.reason, "stop") if out and out.done else "stop"
    chat = kind.startswith("chat")
    echoed = out.prefix if echo else ""
    tokens = (out.prompt_logprobs if echo else ()) + out.logprobs
    logprobs = _logprobs(tokens, chat, 0 if echo and out.prompt_logprobs else len(echoed))
    logprobs = logprobs if tokens else None
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": out.generated},
                  "logprobs": logprobs, "finish_reason": finish}  # fmt: skip
    else:
        choice = {"index": 0, "text": echoed + out.generated, "logprobs": logprobs,
                  "finish_reason": finish}  # fmt: skip
    return {"id": rid, "object": kind, "created": created, "model": out.model,
            "choices": [choice], "usage": _usage(out)}  # fmt: skip


def _logprobs(tokens: tuple[TokenLogprob, ...], chat: bool, offset: int) -> dict:
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


def _usage(out: Output) -> dict:
    done = out.done
    prompt, completion = (done.prompt_tokens, done.generated_tokens) if done else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def _error_body(exc: PlaygroundError) -> dict:
    kind = "invalid_request_error" if _STATUS.get(exc.kind, 400) < 500 else "server_error"
    return {"error": {"message": exc.message, "type": kind, "param": exc.field, "code": exc.kind}}


def error(exc: PlaygroundError) -> JSONResponse:
    status = _STATUS.get(exc.kind, 400)
    headers = {}
    if exc.kind == "rate_limit" and getattr(exc, "retry_after_s", None):
        headers["Retry-After"] = str(int(exc.retry_after_s + 0.999))
    return JSONResponse(_error_body(exc), status_code=status, headers=headers)
