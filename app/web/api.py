"""The named API (`/complete`, `/fill`, `/assist`, `/share`, `/attribute`, `/search`), each a
thin typed wrapper over a service. The generation parameters are declared once, here, and every
generation endpoint's signature (which Gradio publishes for gradio_client) is built from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app.errors import user_errors
from app.requests import parse_history, parse_params
from app.services.generate import throttle
from app.web.handlers import Handlers
from model.engine import GenerationParams, default_max_new_tokens

MODEL_LOCK = "model"  # one concurrency group: every generation goes to the engine's queue

_BASE = GenerationParams()
# (name, type, default): None means "the model's own default" where a model has one.
GENERATION_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    ("model", str | None, None),
    ("max_new_tokens", int | None, None),
    ("temperature", float | None, None),
    ("top_p", float, _BASE.top_p),
    ("repetition_penalty", float | None, None),
    ("seed", int | None, None),
    ("stop", list[str] | None, None),
)


def generation_params(handlers: Handlers, mode: str, values: dict) -> GenerationParams:
    """Validated parameters; any left out (or null over plain HTTP) take the model's defaults."""
    temperature, repetition_penalty = handlers.defaults(values["model"], mode)
    given = {name: values[name] for name, _, _ in GENERATION_PARAMETERS if name != "model"}
    fallback = {"temperature": temperature, "repetition_penalty": repetition_penalty,
                "max_new_tokens": default_max_new_tokens(mode), "top_p": _BASE.top_p}  # fmt: skip
    for name, default in fallback.items():
        if given[name] is None:
            given[name] = default
    return parse_params(**given)


def _generation_endpoint(name: str, doc: str, leading: list[tuple[str, Any, Any]], run: Callable):
    """An endpoint whose signature is `leading` + GENERATION_PARAMETERS + request; `run(values,
    params, request)` yields Outputs and the endpoint streams their text."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [
        inspect.Parameter(pname, kind, annotation=ptype, default=pdefault)
        for pname, ptype, pdefault in (*leading, *GENERATION_PARAMETERS)
    ]
    parameters.append(inspect.Parameter("request", kind, annotation=gr.Request, default=None))
    signature = inspect.Signature(parameters, return_annotation=Iterator[str])

    def endpoint(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        request = values.pop("request")
        for out in throttle(run(values, request)):
            yield out.text

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = doc
    endpoint.__signature__ = signature
    endpoint.__annotations__ = {p.name: p.annotation for p in parameters}
    endpoint.__annotations__["return"] = Iterator[str]
    return user_errors(endpoint)


def build_api(handlers: Handlers) -> None:
    """Register the named endpoints on the current Blocks; each streams with submit()."""
    generate = handlers.generate

    def complete(values, request):
        params = generation_params(handlers, "completion", values)
        return generate.complete(values["prompt"], params, request, values["model"])

    def fill(values, request):
        params = generation_params(handlers, "fim", values)
        return generate.fill(values["prompt"], params, request, values["model"])

    def assist(values, request):
        params = generation_params(handlers, "assistant", values)
        turns = parse_history(values["history"])
        return generate.assist(values["message"], turns, params, request, values["model"])

    empty = inspect.Parameter.empty
    endpoints = [
        ("complete", "Continue `prompt`; returns prompt + continuation.",
         [("prompt", str, empty)], complete),
        ("fill", "Fill the single <FILL_HERE> in `prompt`; returns prefix + middle + suffix.",
         [("prompt", str, empty)], fill),
        ("assist", "Answer `message` as the tech assistant; `history` is [[user, assistant], ...].",
         [("message", str, empty), ("history", list[list[str]] | None, None)], assist),
    ]  # fmt: skip
    for name, doc, leading, run in endpoints:
        fn = _generation_endpoint(name, doc, leading, run)
        gr.api(fn, api_name=name, concurrency_id=MODEL_LOCK)

    @user_errors
    def share(
        mode: str,
        prompt: str,
        output: str,
        parameters: dict | None = None,
        model: str | None = None,
        request: gr.Request = None,
    ) -> str:
        """Save a generation (mode: completion, fim or assistant); returns its /s/<id> link."""
        shared = {"mode": mode, "prompt": prompt, "output": output,
                  "parameters": parameters, "model": model, "fim": None}  # fmt: skip
        return handlers.share(shared, request)[0]

    @user_errors
    def attribute(text: str) -> list[dict]:
        """Spans of `text` found verbatim in the training data, each with its sources."""
        return handlers.search.attribute(text)

    @user_errors
    def search(
        query: str,
        repo: str | None = None,
        license: str | None = None,
        lang: str | None = None,
        page: int = 1,
        exact: bool = False,
    ) -> list[dict]:
        """Full-text (BM25) search of the training data; `exact` matches the phrase verbatim."""
        hits = handlers.search.search(query, repo, license, lang, page, exact)
        return [h.to_dict() for h in hits]

    gr.api(share, api_name="share", concurrency_limit=None)
    gr.api(attribute, api_name="attribute", concurrency_limit=4)
    gr.api(search, api_name="search", concurrency_limit=4)
