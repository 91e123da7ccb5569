"""OpenAI-compatible routes for editors and scripts (Continue, llm-vscode, the `openai` client):
`POST /v1/completions` (with `suffix`: fill-in-the-middle), `POST /v1/chat/completions` (the
assistant mode) and `GET /v1/models`. They call the same services and worker queue as the page,
outside Gradio's queue; errors use OpenAI's shape with our precise messages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.metrics import runs_on
from app.parameters import SCHEMA, Schema
from app.services.generate import Generations
from app.services.search import Search
from app.validation import MODES, integer
from app.web.openai_responses import respond
from app.web.openai_shapes import error
from model.engine import MAX_LOGPROBS, CancelToken
from model.errors import PlaygroundError
from model.prompts.templates import Turn

log = logging.getLogger(__name__)

# OpenAI fields we do not honour yet, and the values that mean "not asked for".
# `response_format` and `tool_choice` used to be accepted and ignored: a client asking for JSON
# got prose and could not tell.
_NOT_YET = {"best_of": (None, 1), "logit_bias": (None, {}), "tools": (None, []),
            "functions": (None, []), "frequency_penalty": (None, 0),
            "presence_penalty": (None, 0), "response_format": (None, {"type": "text"}),
            "tool_choice": (None, "none"), "function_call": (None, "none")}  # fmt: skip
# What each route reads besides the schema's parameters; any other field is refused by name
# (a client asking for something silently ignored could not tell). `user` is OpenAI's end-user
# id for abuse reports: it goes to the log. `stream_options`: usage always comes on the last
# chunk, which is what `include_usage` asks for.
_ROUTE_FIELDS = {
    "/v1/completions": {"prompt", "suffix", "echo", "logprobs"},
    "/v1/chat/completions": {"messages", "logprobs", "top_logprobs"},
}
_EVERY_ROUTE = {"model", "n", "stream", "stream_options", "user", "attribution"}
MAX_CHOICES = 16  # prompts x n in one request; each is a generation in the shared queue


def mount_openai_routes(
    app: FastAPI, generate: Generations, search: Search, schema: Schema = SCHEMA
):
    """The routes; API keys are checked in front of them, as of every route (app/web/access.py)."""
    registry = generate.playground.registry
    takes = _fields(schema)

    def attribution(body: dict, choices: int):
        """`attribution: true` asks for the verbatim training-data spans of what was written."""
        if body.get("attribution") is not True:
            return None
        if choices > 1:
            raise PlaygroundError(
                "`attribution` is for one choice; ask for it with one prompt and `n` 1.",
                field="attribution",
                kind="unsupported",
            )
        return search.attribute_output

    def describe(spec, loaded: dict) -> dict:
        model = {"id": spec.id, "object": "model", "created": 0,
                 "owned_by": "starcoder-playground", "max_model_len": spec.context_length,
                 "modes": [m for m in MODES if spec.supports(m)]}  # fmt: skip
        if spec.id in loaded:  # a started model also says what it runs on
            model["engine"] = runs_on(loaded[spec.id].info)
        return model

    async def models(request: Request) -> Response:
        loaded = generate.playground.engines.loaded()
        data = [describe(spec, loaded) for spec in registry]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request, model_id: str) -> Response:
        """One model, as the `openai` client's models.retrieve() (and SDK helpers) ask."""
        if model_id not in registry.ids:
            return error(_no_such_model(model_id, registry))
        return JSONResponse(describe(registry.get(model_id), generate.playground.engines.loaded()))

    async def completions(request: Request) -> Response:
        try:
            body = await _json_object(request, "/v1/completions", takes["/v1/completions"])
            prompts, n = _prompts(body.get("prompt")), _n(body)
            _check_choices(len(prompts) * n, f"{len(prompts)} prompts x `n` {n}")
            suffix = body.get("suffix")
            mode = "completion" if suffix in (None, "") else "fim"
            model = _model(body, registry, mode)
            top = _completion_logprobs(body, mode)
            params, fields = _params(body, registry.choose(model, mode), mode, schema, top)
            if top is not None and body.get("echo") is True:
                params = replace(params, prompt_logprobs=True)  # the echoed prompt's, too
            if mode == "fim" and not (isinstance(suffix, str) and all(map(_is_text, prompts))):
                raise PlaygroundError(
                    "`suffix` takes text, with a `prompt` of text.", field="suffix"
                )
            cancels = [CancelToken() for _ in range(len(prompts) * n)]
            runs = [
                _named(
                    generate.fill(
                        f"{prompt}<FILL_HERE>{suffix}", params, request, model, cancel=token
                    ),
                    fields,
                )
                if mode == "fim"
                else _named(generate.complete(prompt, params, request, model, cancel=token), fields)
                for (prompt, token) in zip(
                    [p for p in prompts for _ in range(n)], cancels, strict=True
                )
            ]
            echo, kind = body.get("echo") is True, "text_completion"
            stream = body.get("stream") is True
            return await respond(
                request, runs, cancels, stream, kind, echo, attribution(body, len(runs))
            )
        except PlaygroundError as exc:
            return error(exc)

    async def chat(request: Request) -> Response:
        try:
            route = "/v1/chat/completions"
            body = await _json_object(request, route, takes[route])
            message, history = _conversation(body.get("messages"))
            model = _model(body, registry, "assistant")
            spec = registry.choose(model, "assistant")
            params, fields = _params(body, spec, "assistant", schema, _chat_logprobs(body))
            n = _n(body)  # at most MAX_CHOICES
            cancels = [CancelToken() for _ in range(n)]
            runs = [
                _named(
                    generate.assist(message, history, params, request, model, cancel=token), fields
                )
                for token in cancels
            ]
            stream = body.get("stream") is True
            return await respond(
                request, runs, cancels, stream, "chat.completion", False, attribution(body, n)
            )
        except PlaygroundError as exc:
            return error(exc)

    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", model, methods=["GET"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"])


# -- requests -------------------------------------------------------------------------------


async def _json_object(request: Request, route: str, takes: frozenset[str]) -> dict[str, Any]:
    """The body, refusing any field the route does not take (`takes`) by name."""
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
            raise PlaygroundError(
                f"`{name}` is not supported here yet.", field=name, kind="unsupported"
            )
    for name in body:
        if name not in takes and name not in _NOT_YET:
            raise PlaygroundError(
                f"`{str(name)[:40]}` is not a field of {route} here; it takes: "
                f"{', '.join(sorted(takes))}.",
                field=str(name)[:40],
                kind="unsupported",
            )
    if isinstance(body.get("user"), str):
        log.info("%s for user %r", route, body["user"][:64])
    return body


def _fields(schema: Schema) -> dict[str, frozenset[str]]:
    """The fields each route takes: its own, every route's, and the schema's by /v1 name."""
    names = {name for p in schema.v1 for name in p.aliases or (p.name,)}
    return {route: frozenset(own | _EVERY_ROUTE | names) for route, own in _ROUTE_FIELDS.items()}


def _is_text(prompt) -> bool:
    return isinstance(prompt, str)


def _is_ids(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(i, int) for i in prompt)


def _prompts(prompt) -> list[str | list[int]]:
    """The prompts, one choice each: a string or a list of token ids, alone or in a list
    (the ids' range is the engine's to check: model/engine.decode_ids)."""
    if _is_text(prompt) or _is_ids(prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(_is_text(p) or _is_ids(p) for p in prompt):
        return prompt
    got = type(prompt).__name__ if not isinstance(prompt, list) else "a list of other items"
    raise PlaygroundError(
        f"`prompt` must be a string, a list of token ids, or a non-empty list of those; got {got}.",
        field="prompt",
    )


def _n(body: dict) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise PlaygroundError(
            f"`n` must be a whole number in [1, {MAX_CHOICES}]; got {n!r:.20}.", field="n"
        )
    return n


def _check_choices(count: int, given: str) -> None:
    if count > MAX_CHOICES:
        raise PlaygroundError(
            f"A request makes at most {MAX_CHOICES} choices; got {count} ({given}).", field="n"
        )


def _model(body: dict, registry, mode: str) -> str:
    model = body.get("model")
    if model in (None, "", "default"):
        return registry.default_for(mode)
    if not isinstance(model, str):
        raise PlaygroundError(f"`model` must be text; got {type(model).__name__}.", field="model")
    if model not in registry.ids:
        raise _no_such_model(model, registry)
    return model


def _no_such_model(model: str, registry) -> PlaygroundError:
    return PlaygroundError(
        f"The model `{model[:100]}` does not exist here. Models: {', '.join(registry.ids)}.",
        field="model",
        kind="not_found",
    )


def _params(body: dict, spec, mode: str, schema: Schema, logprobs=None):
    """OpenAI's names onto ours, and the name the caller used for each (refusals use it); a
    field left out takes the model's default, `max_tokens` vLLM's."""
    values, fields = {}, {}
    for p in schema.v1:
        names = p.aliases or (p.name,)
        given = next((name for name in names if body.get(name) is not None), None)
        fields[p.name] = given or names[-1]
        if given is None:
            continue
        value = body[given]
        if p.kind in ("int", "float", "seed") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise PlaygroundError(
                f"`{given}` must be a number; got {type(value).__name__}.", field=given
            )
        values[p.name] = [value] if p.kind == "stops" and isinstance(value, str) else value
    # Left out, a chat reply gets what the context leaves (vLLM's default): resolved once the
    # prompt is built (GenerationParams.max_new_tokens None).
    rest_of_context = "max_new_tokens" not in values and mode == "assistant"
    for p in schema.v1:
        if p.name in values or p.v1_default is None:
            continue
        if not (rest_of_context and p.name == "max_new_tokens"):
            values[p.name] = p.v1_default
    params = schema.resolve(values, spec, mode, fields, logprobs=logprobs)
    if rest_of_context:
        params = replace(params, max_new_tokens=None)
    return params, fields


def _named(run, fields: dict[str, str]):
    """A generation whose refusals use the caller's names (`max_tokens`, not `max_new_tokens`)."""
    try:
        yield from run
    except PlaygroundError as exc:
        raise exc.renamed(fields) from None
    finally:
        run.close()


def _completion_logprobs(body: dict, mode: str):
    """The completions API's `logprobs`: alternatives per token (0: the chosen token's only);
    with `echo`, the prompt's tokens are scored too (as evaluation harnesses ask)."""
    top = body.get("logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int)):
        raise PlaygroundError(
            f"`logprobs` must be a whole number in [0, {MAX_LOGPROBS}]; got {top!r:.20}.",
            field="logprobs",
        )
    if top is not None:
        integer("logprobs", top, 0, MAX_LOGPROBS)
    if top is not None and body.get("echo") is True and mode == "fim":
        raise PlaygroundError(
            "`echo` with `logprobs` scores a prompt, not a fill: leave out `suffix` or `echo`.",
            field="echo",
            kind="unsupported",
        )
    return top


def _chat_logprobs(body: dict):
    """Chat's `logprobs: true` and `top_logprobs` (alternatives per token)."""
    asked = body.get("logprobs")
    if asked not in (None, True, False):
        raise PlaygroundError(
            f"`logprobs` must be true or false; got {type(asked).__name__}.", field="logprobs"
        )
    if asked is not True:
        if body.get("top_logprobs") is not None:
            raise PlaygroundError("`top_logprobs` needs `logprobs: true`.", field="top_logprobs")
        return None
    top = body.get("top_logprobs", 0)
    top = 0 if top is None else top
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_LOGPROBS:
        raise PlaygroundError(
            f"`top_logprobs` must be a whole number in [0, {MAX_LOGPROBS}]; got {top!r:.40}.",
            field="top_logprobs",
        )
    return top


def _text(content, i: int) -> str:
    """A message's text: a string, or a list of text parts (as editors send them)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise PlaygroundError(
                    f"`messages[{i}].content[{j}]` must be a text part; got {str(kind)[:20]!r} "
                    "(these models read text only).",
                    field="messages",
                )
        return "".join(part["text"] for part in content)
    raise PlaygroundError(
        f"`messages[{i}]` must be {{role, content}} with text content.", field="messages"
    )


def _conversation(messages) -> tuple[str, list[Turn]]:
    """OpenAI messages as (the last user message, earlier [user, assistant] turns). System
    messages are put before the first user message: the ta-prompt has no system role."""
    if not isinstance(messages, list) or not messages:
        raise PlaygroundError(
            "`messages` must be a non-empty list of {role, content}.", field="messages"
        )
    system, turns, pending = [], [], None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise PlaygroundError(
                f"`messages[{i}]` must be {{role, content}} with text content.", field="messages"
            )
        role, content = m.get("role"), _text(m.get("content"), i)
        if role in ("system", "developer"):  # "developer": OpenAI's newer name for system
            system.append(content)
        elif role == "user":
            if pending is not None:
                raise PlaygroundError(
                    f"`messages[{i}]`: two user messages in a row.", field="messages"
                )
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
