"""The named API (`/complete`, `/fill`, `/assist`, `/share`, `/attribute`, `/search`), each a
thin typed wrapper over a service. Every generation endpoint's signature (which Gradio publishes
for gradio_client) is built from the request schema's page parameters (app/parameters.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from app.errors import user_errors
from app.parameters import Schema, names
from app.services.generate import throttle
from app.services.together import Failed, together
from app.validation import check_mode, parse_history
from app.web.handlers import Handlers
from model.errors import PlaygroundError

MODEL_LOCK = "model"  # one concurrency group: every generation goes to the engine's queue


def generation_parameters(schema: Schema) -> list[tuple[str, Any, Any]]:
    """(name, type, default) of the endpoints' parameters after their own: the model, then the
    page's parameters. None means "the model's (or the mode's) default"."""
    params: list[tuple[str, Any, Any]] = [("model", str | None, None)]
    for p in schema.page:
        fixed = not p.model_default and p.mode_default is None and p.default not in (None, ())
        params.append(
            (p.name, p.annotation if fixed else p.annotation | None, p.default if fixed else None)
        )
    return params


def generation_params(handlers: Handlers, mode: str, values: dict):
    """Validated parameters; any left out (or null over plain HTTP) take the model's defaults."""
    spec = handlers.registry.choose(values["model"] or None, mode)
    return handlers.schema.resolve(values, spec, mode)


def _generation_endpoint(
    name: str, doc: str, leading: list[tuple[str, Any, Any]], run: Callable, schema: Schema
):
    """An endpoint whose signature is `leading` + the generation parameters + request;
    `run(values, request)` yields Outputs and the endpoint streams their text."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [
        inspect.Parameter(pname, kind, annotation=ptype, default=pdefault)
        for pname, ptype, pdefault in (*leading, *generation_parameters(schema))
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
        fn = _generation_endpoint(name, doc, leading, run, handlers.schema)
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
    def compare(
        prompt: str,
        mode: str = "completion",
        model_a: str | None = None,
        model_b: str | None = None,
        parameters_a: dict | None = None,
        parameters_b: dict | None = None,
        request: gr.Request = None,
    ) -> Iterator[list[str]]:
        """The Compare tab's run: `prompt` in `mode` (completion, fim or assistant: one
        question) on two models, or one model at two settings, at once; streams [text A,
        text B]. `parameters_a`/`_b`: generation parameters by name; left out, the defaults."""
        columns = [("a", model_a, parameters_a), ("b", model_b, parameters_b)]
        runs = [_column_run(handlers, mode, prompt, *column, request) for column in columns]
        texts = ["", ""]
        for batch in together(runs):
            for i, out in batch.items():
                if isinstance(out, Failed):  # one column's refusal fails the call, named
                    raise _in_column(columns[i][0], out.error)
                texts[i] = out.text
            yield list(texts)

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

    gr.api(compare, api_name="compare", concurrency_id=MODEL_LOCK)
    gr.api(share, api_name="share", concurrency_limit=None)
    gr.api(attribute, api_name="attribute", concurrency_limit=4)
    gr.api(search, api_name="search", concurrency_limit=4)


def _column_run(handlers: Handlers, mode: str, prompt: str, side: str, model, given, request):
    """One column of /compare: its parameters checked by name against the schema's."""
    check_mode(mode)
    field = f"parameters_{side}"
    if given is not None and not isinstance(given, dict):
        raise PlaygroundError(f"`{field}` must be an object of parameters by name.", field=field)
    known = names(handlers.schema.page)
    for name in given or {}:
        if name not in known:
            raise PlaygroundError(
                f"`{field}.{str(name)[:40]}` is not a generation parameter; they are: "
                f"{', '.join(known)}.",
                field=field,
            )
    spec = handlers.registry.choose(model or None, mode)
    fields = {name: f"{field}.{name}" for name in known}
    params = handlers.schema.resolve(given or {}, spec, mode, fields)
    generate = handlers.generate
    if mode == "assistant":
        return generate.assist(prompt, [], params, request, model)
    run = generate.complete if mode == "completion" else generate.fill
    return run(prompt, params, request, model)


def _in_column(side: str, exc: Exception) -> Exception:
    if not isinstance(exc, PlaygroundError):
        return exc
    return exc.reworded(f"Column {side.upper()}: {exc.message}", exc.field)
