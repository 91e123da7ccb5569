"""OpenAI-compatible routes for editors and scripts (Continue, llm-vscode, the `openai` client):
`POST /v1/completions` (with `suffix`: fill-in-the-middle), `POST /v1/chat/completions` (the
assistant mode) and `GET /v1/models`. They call the same services and worker queue as the page,
outside Gradio's queue; errors use OpenAI's shape with our precise messages.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.requests import parse_params
from app.services.generate import Generations
from app.services.playground import Output
from app.services.search import Search
from model.engine import GenerationParams
from model.errors import PlaygroundError
from model.prompts import Turn

_STATUS = {"validation": 400, "unsupported": 400, "not_found": 404, "too_large": 413,
           "rate_limit": 429, "busy": 503, "config": 503, "engine": 503, "oom": 503,
           "cancelled": 503, "unauthorized": 401}  # fmt: skip
_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
_BASE = GenerationParams()
Attribute = Callable[[Output], list]
# OpenAI fields we do not honour yet, and the values that mean "not asked for".
_NOT_YET = {"logprobs": (None, False, 0), "best_of": (None, 1), "logit_bias": (None, {}),
            "tools": (None, []), "functions": (None, [])}  # fmt: skip
MAX_OPENAI_TEMPERATURE = 1.0  # our models are sampled in [0, 1]; OpenAI allows up to 2


def mount_openai_routes(
    app: FastAPI, generate: Generations, search: Search, api_keys: tuple[str, ...] = ()
):
    registry = generate.playground.registry

    def attribution(body: dict):
        """`attribution: true` asks for the verbatim training-data spans of what was written."""
        return search.attribute_output if body.get("attribution") is True else None

    def authorized(request: Request) -> None:
        if not api_keys:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not any(hmac.compare_digest(given, key) for key in api_keys):
            raise PlaygroundError(
                "A valid API key is required: send `Authorization: Bearer <key>`.",
                field="authorization",
                kind="unauthorized",
            )

    async def models(request: Request) -> Response:
        try:
            authorized(request)
        except PlaygroundError as exc:
            return _error(exc)
        data = [{"id": s.id, "object": "model", "created": 0, "owned_by": "starcoder-playground",
                 "max_model_len": s.context_length,
                 "modes": [m for m in ("completion", "fim", "assistant") if s.supports(m)]}
                for s in registry]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def completions(request: Request) -> Response:
        try:
            authorized(request)
            body = await _json_object(request)
            prompt = _one_prompt(body.get("prompt"))
            suffix = body.get("suffix")
            mode = "completion" if suffix in (None, "") else "fim"
            model = _model(body, registry, mode)
            params = _params(body, registry.choose(model, mode))
            if mode == "fim":
                if not isinstance(suffix, str):
                    raise PlaygroundError(f"`suffix` must be text; got {type(suffix).__name__}.",
                                          field="suffix")  # fmt: skip
                run = generate.fill(f"{prompt}<FILL_HERE>{suffix}", params, request, model)
            else:
                run = generate.complete(prompt, params, request, model)
            echo = prompt if body.get("echo") is True else ""
            kind = "text_completion"
            return await _respond(run, body.get("stream") is True, kind, echo, attribution(body))
        except PlaygroundError as exc:
            return _error(exc)

    async def chat(request: Request) -> Response:
        try:
            authorized(request)
            body = await _json_object(request)
            message, history = _conversation(body.get("messages"))
            model = _model(body, registry, "assistant")
            params = _params(body, registry.choose(model, "assistant"))
            run = generate.assist(message, history, params, request, model)
            stream = body.get("stream") is True
            return await _respond(run, stream, "chat.completion", "", attribution(body))
        except PlaygroundError as exc:
            return _error(exc)

    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"])


# -- requests -------------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise PlaygroundError("The request body must be a JSON object.", field="body") from None
    except RecursionError:
        raise PlaygroundError("The request body nests too deeply.", field="body") from None
    if not isinstance(body, dict):
        raise PlaygroundError(
            f"The request body must be a JSON object; got {type(body).__name__}.", field="body"
        )
    for name, off in _NOT_YET.items():
        if body.get(name) not in off:
            raise PlaygroundError(f"`{name}` is not supported here yet.", field=name,
                                  kind="unsupported")  # fmt: skip
    if body.get("n", 1) != 1:
        raise PlaygroundError(f"`n` must be 1; got {body.get('n')!r}.", field="n")
    return body


def _one_prompt(prompt) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise PlaygroundError(
            f"`prompt` must be one string; got {type(prompt).__name__}.", field="prompt"
        )
    return prompt


def _model(body: dict, registry, mode: str) -> str:
    model = body.get("model")
    if model in (None, "", "default"):
        return registry.default_for(mode)
    if not isinstance(model, str):
        raise PlaygroundError(f"`model` must be text; got {type(model).__name__}.", field="model")
    if model not in registry.ids:
        raise PlaygroundError(
            f"The model `{model[:100]}` does not exist here. Models: {', '.join(registry.ids)}.",
            field="model",
            kind="not_found",
        )
    return model


def _params(body: dict, spec) -> GenerationParams:
    """OpenAI's names onto ours; a field left out takes the model's default."""
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > MAX_OPENAI_TEMPERATURE:
        raise PlaygroundError(f"`temperature` must be in [0, 1] here; got {temperature:g}.",
                              field="temperature")  # fmt: skip
    stop = body.get("stop")
    return parse_params(
        max_new_tokens=_given(body, "max_tokens", _BASE.max_new_tokens),
        temperature=spec.temperature if temperature is None else temperature,
        top_p=_given(body, "top_p", _BASE.top_p),
        repetition_penalty=_given(body, "repetition_penalty", spec.repetition_penalty),
        seed=body.get("seed"),
        stop=[stop] if isinstance(stop, str) else stop,
    )


def _given(body: dict, name: str, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlaygroundError(f"`{name}` must be a number; got {type(value).__name__}.",
                              field=name)  # fmt: skip
    return value


def _conversation(messages) -> tuple[str, list[Turn]]:
    """OpenAI messages as (the last user message, earlier [user, assistant] turns). System
    messages are put before the first user message: the ta-prompt has no system role."""
    if not isinstance(messages, list) or not messages:
        raise PlaygroundError("`messages` must be a non-empty list of {role, content}.",
                              field="messages")  # fmt: skip
    system, turns, pending = [], [], None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise PlaygroundError(f"`messages[{i}]` must be {{role, content}} with text content.",
                                  field="messages")  # fmt: skip
        role, content = m.get("role"), m["content"]
        if role == "system":
            system.append(content)
        elif role == "user":
            if pending is not None:
                raise PlaygroundError(f"`messages[{i}]`: two user messages in a row.",
                                      field="messages")  # fmt: skip
            pending = content
        elif role == "assistant" and pending is not None:
            turns.append(Turn(pending, content))
            pending = None
        else:
            raise PlaygroundError(
                f"`messages[{i}].role` must be system, user or assistant after a user message; "
                f"got {str(role)[:20]!r}.",
                field="messages",
            )
    if pending is None:
        raise PlaygroundError("The last message must be the user's.", field="messages")
    if system:
        head = "\n\n".join(system)
        if turns:
            turns[0] = Turn(f"{head}\n\n{turns[0].user}", turns[0].assistant)
        else:
            pending = f"{head}\n\n{pending}"
    return pending, turns


# -- responses ------------------------------------------------------------------------------


async def _respond(run: Iterator[Output], stream: bool, kind: str, echo: str,
                   attribute: Attribute | None) -> Response:  # fmt: skip
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
        threading.Thread(target=self._produce, args=(run,), daemon=True).start()

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
    sent = ""
    out = first
    try:
        if chat:
            yield _event(rid, created, first, {"delta": {"role": "assistant", "content": ""}}, kind)
        elif echo:
            yield _event(rid, created, first, {"text": echo}, kind)
        while out is not None:
            text = out.generated
            if text.startswith(sent) and len(text) > len(sent):
                delta = text[len(sent) :]
                sent = text
                choice = {"delta": {"content": delta}} if chat else {"text": delta}
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


def _complete_body(out: Output, rid: str, created: int, kind: str, echo: str) -> dict:
    finish = _FINISH.get(out.done.reason, "stop") if out and out.done else "stop"
    if kind.startswith("chat"):
        choice = {"index": 0, "message": {"role": "assistant", "content": out.generated},
                  "logprobs": None, "finish_reason": finish}  # fmt: skip
    else:
        choice = {"index": 0, "text": echo + out.generated, "logprobs": None,
                  "finish_reason": finish}  # fmt: skip
    return {"id": rid, "object": kind, "created": created, "model": out.model,
            "choices": [choice], "usage": _usage(out)}  # fmt: skip


def _usage(out: Output) -> dict:
    done = out.done
    prompt, completion = (done.prompt_tokens, done.generated_tokens) if done else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def _error_body(exc: PlaygroundError) -> dict:
    kind = "invalid_request_error" if _STATUS.get(exc.kind, 400) < 500 else "server_error"
    return {"error": {"message": exc.message, "type": kind, "param": exc.field, "code": exc.kind}}


def _error(exc: PlaygroundError) -> JSONResponse:
    status = _STATUS.get(exc.kind, 400)
    headers = {}
    if exc.kind == "rate_limit" and getattr(exc, "retry_after_s", None):
        headers["Retry-After"] = str(int(exc.retry_after_s + 0.999))
    return JSONResponse(_error_body(exc), status_code=status, headers=headers)
