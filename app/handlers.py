"""Gradio-facing functions: parse inputs, run a Playground mode, shape outputs for components.

ui.py wires these to buttons; the named API endpoints are thin typed wrappers over the same code.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from app.attribution import AttributionIndex, Source, Span
from app.attribution.render import sources_html
from app.downloads import Downloads
from app.links import PublicLinks
from app.playground import Output, Playground
from app.ratelimit import client_address
from app.render import Mark, code_view, detect_language
from app.requests import parse_params, recent_turns
from app.sessions import CancelRegistry
from app.share_routes import create_share
from app.store import Store
from model.engine import GenerationParams
from model.errors import PlaygroundError
from model.prompts import Turn


def session_key(request) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def extension(language: str) -> str:
    try:
        patterns = get_lexer_by_name(language).filenames
    except ClassNotFound:
        patterns = []
    ext = next((p[1:] for p in patterns if p.startswith("*.") and "[" not in p), ".txt")
    return ext


class Handlers:
    def __init__(
        self,
        playground: Playground,
        downloads_dir: str | None = None,
        store: Store | None = None,
        links: PublicLinks | None = None,
        attribution: AttributionIndex | None = None,
        trusted_proxy_header: str | None = None,
        indexed_model: str | None = None,
    ):
        self.playground = playground
        self.indexed_model = indexed_model  # whose training data the attribution index holds
        self.attribution = attribution
        self.store = store
        self.links = links or PublicLinks()
        self.trusted_proxy_header = trusted_proxy_header
        self.cancels = CancelRegistry()
        self.downloads = Downloads(downloads_dir or tempfile.mkdtemp(prefix="playground-dl-"))

    def client(self, request) -> str:
        """Who asked, for rate limits: the client's address, never a client-chosen id."""
        peer = getattr(getattr(request, "client", None), "host", None)
        return client_address(peer, getattr(request, "headers", None), self.trusted_proxy_header)

    @contextmanager
    def _cancel_scope(self, request, tab: str | None):
        # A UI tab's generation can be stopped or superseded; an API call is its own scope.
        key = f"{session_key(request)}/{tab or 'api-' + uuid.uuid4().hex}"
        token = self.cancels.start(key)
        try:
            yield token
        finally:
            # Explicit: whatever ended this request (done, error, Stop, disconnect) frees the model.
            token.cancel("finished")
            self.cancels.finish(key, token)

    def stop(self, request, tab: str) -> bool:
        return self.cancels.cancel(f"{session_key(request)}/{tab}")

    # -- streams of Output, shared by the UI and the API --------------------------------------

    def run_complete(self, prompt, params, request, model=None, tab=None) -> Iterator[Output]:
        with self._cancel_scope(request, tab) as token:
            run = self.playground.complete(prompt, params, token, self.client(request), model)
            yield from _said_if_stopped(run, tab)

    def run_fill(self, prompt, params, request, model=None, tab=None) -> Iterator[Output]:
        with self._cancel_scope(request, tab) as token:
            run = self.playground.fill(prompt, params, token, self.client(request), model)
            yield from _said_if_stopped(run, tab)

    def run_assist(self, message, history: list[Turn], params, request, model=None, tab=None):
        with self._cancel_scope(request, tab) as token:
            client = self.client(request)
            run = self.playground.assist(message, history, params, token, client, model)
            yield from _said_if_stopped(run, tab)

    # -- UI shapes ----------------------------------------------------------------------------

    def save_download(self, out: Output, language: str) -> str:
        return self.downloads.save(f"{out.mode}{extension(language)}", out.text)

    def ui_code(self, mode: str, prompt: str, model, *param_values, request=None):
        """Yields (code view, exact text, status, download, shareable record, sources panel)."""
        params = parse_params(**_param_kwargs(param_values))
        language = detect_language(prompt.replace("<FILL_HERE>", ""))
        run = self.run_complete if mode == "completion" else self.run_fill
        for out in throttle(run(prompt, params, request, model, tab=mode)):
            if out.done is None:
                html = self.code_html(mode, out.text, live_language(out.text, language),
                                      out.generated_span)  # fmt: skip
                yield html, out.text, out.status, None, PENDING, gr_skip()
                continue
            spans = self.attribute_output(out)
            html = self.code_html(mode, out.text, language, out.generated_span, spans)
            record = self._record(out, prompt, params, language, spans)
            download = self.save_download(out, language)
            panel = self.sources_panel(spans, out.model)
            yield html, out.text, out.status, download, record, panel

    @staticmethod
    def code_html(mode: str, text: str, language: str, span: tuple[int, int], spans=()) -> str:
        css = "fim-middle" if mode == "fim" else "generated"
        marks = [Mark(span[0], span[1], css, "generated by the model")]
        marks += [
            Mark(s["start"], s["end"], "attr-span", _source_title(s), (("data-query", _query(s)),))
            for s in spans
        ]
        return code_view(text, language, marks)

    def model_for(self, model_id: str | None, mode: str) -> str:
        """The model a mode runs with this choice ("automatic": the mode's default)."""
        return self.playground.registry.choose(model_id or None, mode).id

    def defaults(self, model_id: str | None, mode: str = "completion") -> tuple[float, float]:
        """The model's default (temperature, repetition penalty); "automatic": the mode's model's."""
        spec = self.playground.registry.choose(model_id or None, mode)
        return spec.temperature, spec.repetition_penalty

    def context_length(self, model_id: str | None, mode: str) -> int:
        """The context of the model `mode` runs on with this choice: the max-tokens limit."""
        return self.playground.registry.choose(model_id or None, mode).context_length

    def model_card(self, model_id: str | None) -> str:
        """The selected model's card facts; for "automatic", which model each mode uses."""
        registry = self.playground.registry
        if model_id:
            return registry.get(model_id).card_markdown()
        modes = {"completion": "Completion", "fim": "Fill-in-the-middle", "assistant": "Assistant"}
        return "\n".join(
            f"- {label}: **{registry.get(registry.default_for(mode)).label}**"
            for mode, label in modes.items()
        )

    # -- attribution --------------------------------------------------------------------------

    def attribute_output(self, out: Output) -> list[dict]:
        """Verbatim training-data spans of the output that touch what the model generated."""
        if self.attribution is None or not out.generated:
            return []
        start, end = out.generated_span
        spans = self.attribution.attribute(out.text)
        return [s.to_dict() for s in spans if s.end > start and s.start < end]

    def sources_panel(self, spans: list[dict], model_id: str = "") -> str:
        if self.attribution is None:
            return ""
        return sources_html([_span(s) for s in spans], scope=self._checked_against(model_id))

    def _checked_against(self, model_id: str) -> str:
        """Which data the check covered: an empty result says nothing about another model's."""
        summary = self.index_summary()
        if not self.indexed_model or model_id == self.indexed_model:
            return f"Checked against: {summary}"
        return (
            f"Checked against {self.indexed_model}'s training data only ({summary}). "
            f"{model_id}'s own training data is not indexed here, so this check cannot show "
            "what it may have copied from it."
        )

    def index_summary(self) -> str:
        return self.attribution.stats().summary if self.attribution else "No attribution index."

    def search(self, query, repo=None, license=None, lang=None, page=1, exact=False) -> list:
        if self.attribution is None:
            raise PlaygroundError("Search is not available: no attribution index.", kind="config")
        query = check_search_text("query", query, MAX_QUERY_CHARS)
        filters = {name: check_search_text(name, value, MAX_FILTER_CHARS, optional=True)
                   for name, value in (("repo", repo), ("license", license), ("lang", lang))}  # fmt: skip
        if not isinstance(exact, bool | None):
            raise PlaygroundError(
                f"`exact` must be true or false; got {type(exact).__name__}.", field="exact"
            )
        return self.attribution.search(query, page=parse_page(page), exact=bool(exact), **filters)

    def _record(self, out: Output, prompt: str, params, language: str, spans=()) -> dict:
        """What Share saves: the user's prompt, the output, and how it was made."""
        start, end = out.generated_span
        return {
            "mode": out.mode,
            "prompt": prompt,
            "output": out.text,
            "parameters": {**share_parameters(params), "language": language},
            "model": out.model,
            "fim": {"middle_start": start, "middle_end": end} if out.mode == "fim" else None,
            "spans": list(spans),
        }

    # -- sharing ------------------------------------------------------------------------------

    def share(self, record: dict | None, request) -> tuple[str, str | None]:
        """Save a generation; returns (link, private delete link or None if shared before)."""
        if self.store is None:
            raise PlaygroundError("Sharing is not configured on this server.", kind="config")
        if record == PENDING:
            raise PlaygroundError(
                "The generation is still running: share it once it has finished.",
                field="output",
            )
        if not record:
            raise PlaygroundError("Generate something first, then share it.", field="output")
        link = create_share(self.store, client_id=self.client(request), **record)
        return self.absolute(link.path, request), (
            self.absolute(link.delete_path, request) if link.delete_path else None
        )

    def absolute(self, path: str, request) -> str:
        headers = getattr(request, "headers", None) or {}
        url = getattr(getattr(request, "request", None), "url", None)
        scheme = getattr(url, "scheme", None) or "http"
        return self.links.base(headers.get("host"), scheme) + path

    def load_share(self, share_id: str | None):
        if not share_id or self.store is None:
            return None
        share = self.store.get(share_id)
        if share is None:
            raise PlaygroundError(
                f"The shared generation `{share_id}` does not exist or was deleted.",
                field="share",
                kind="not_found",
            )
        return share

    def share_form(self, share) -> dict:
        """The parameter widgets' values for a share, whatever its `parameters` hold.

        A share made through the API may carry any JSON object (or none): each value that would
        not pass validation falls back to the default of the share's model, so every share the
        store accepted reopens.
        """
        stored = share.parameters if isinstance(share.parameters, dict) else {}
        try:
            temperature, repetition_penalty = self.defaults(share.model, share.mode)
        except PlaygroundError:  # a model this server does not offer
            temperature, repetition_penalty = self.defaults(None, share.mode)
        base = GenerationParams()
        form = {
            "max_new_tokens": base.max_new_tokens, "temperature": temperature,
            "top_p": base.top_p, "repetition_penalty": repetition_penalty, "seed": None, "stop": (),
        }  # fmt: skip
        for name in PARAM_NAMES:
            if stored.get(name) is None:
                continue
            # A value that does not validate keeps the default: the share still opens.
            with contextlib.suppress(PlaygroundError):
                form[name] = getattr(parse_params(**{name: stored[name]}), name)
        form["seed"] = "" if form["seed"] is None else str(form["seed"])
        form["stop"] = "\n".join(form["stop"])
        language = stored.get("language")
        form["language"] = language if isinstance(language, str) and language else "python"
        return form

    def ui_assist(self, message: str, chat: list, model, *param_values, request=None):
        """Yields (chat messages, cleared input box, status, shareable record, sources)."""
        params = parse_params(**_param_kwargs(param_values))
        history = recent_turns(turns_from_messages(chat), self.playground.limits)
        base = [*chat, {"role": "user", "content": message}]
        run = self.run_assist(message, history, params, request, model, tab="assistant")
        for out in throttle(run):
            status = out.status + (f" · {out.notice}" if out.notice and out.done else "")
            messages = [*base, {"role": "assistant", "content": out.text}]
            if out.done is None:
                yield messages, "", status, PENDING, gr_skip()
                continue
            spans = self.attribute_output(out)
            record = self._record(out, message, params, "markdown", spans)
            yield messages, "", status, record, self.sources_panel(spans, out.model)


def _said_if_stopped(outputs: Iterator[Output], tab: str | None) -> Iterator[Output]:
    """A stopped generation says so: in a tab its status does; an API call fails with why,
    rather than return its partial text as if it were the answer."""
    for out in outputs:
        if tab is None and out.done is not None and out.done.reason == "cancelled":
            raise PlaygroundError(
                f"The generation was stopped before it finished ({out.stopped or 'cancelled'}).",
                kind="cancelled",
            )
        yield out


UI_FRAME_SECONDS = 0.05
LIVE_HIGHLIGHT_CHARS = 20_000  # ~38 ms to highlight: within a frame


def live_language(text: str, language: str) -> str:
    """How a streaming frame is highlighted. Re-highlighting the whole text every frame cost
    0.18 s at 100k characters and 1.7 s at 1 MB: long texts stream plain (6 ms at 1 MB) and
    are highlighted once, in the final frame."""
    return language if len(text) <= LIVE_HIGHLIGHT_CHARS else "text"


PENDING = {"pending": True}  # the share record while a generation is still streaming


def throttle(outputs: Iterator[Output], every: float = UI_FRAME_SECONDS) -> Iterator[Output]:
    """At most one update per frame (the first and the final one always pass).

    Re-rendering highlighted HTML for every token kept the browser so busy that a click on Stop
    waited seconds for its turn. The API endpoints send the whole text so far in each message,
    so one message per token cost O(n^2) bytes and, at 8 streams of the tiny model, more CPU in
    the web stack than the model itself used; 20 frames a second is still live to a reader.
    """
    last = 0.0
    for out in outputs:
        now = time.monotonic()
        if out.done is not None or now - last >= every:
            last = now
            yield out


def gr_skip():
    import gradio as gr

    return gr.skip()


MAX_PAGE = 1000
MAX_QUERY_CHARS = 1000
MAX_FILTER_CHARS = 200


def parse_page(value) -> int:
    if value is None or value == "":
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlaygroundError(
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got {type(value).__name__}.",
            field="page",
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer() or not 1 <= number <= MAX_PAGE:
        raise PlaygroundError(
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got {str(value)[:40]!r}.",
            field="page",
        )
    return int(number)


def check_search_text(field: str, value, limit: int, *, optional: bool = False) -> str | None:
    """Search text and filters are plain strings: an object such as {"$ne": 1} is refused."""
    if value is None or (optional and value == ""):
        if optional:
            return None
        value = ""
    if not isinstance(value, str):
        raise PlaygroundError(f"`{field}` must be text; got {type(value).__name__}.", field=field)
    if len(value) > limit:
        raise PlaygroundError(
            f"`{field}` is {len(value):,} characters; the limit is {limit:,}.", field=field
        )
    if "\x00" in value:
        raise PlaygroundError(f"`{field}` contains a NUL character.", field=field)
    return value


def _span(d: dict) -> Span:
    sources = tuple(Source(**src) for src in d.get("sources", []))
    return Span(d["start"], d["end"], d["text"], sources)


def _source_title(span: dict) -> str:
    src = span.get("sources") or []
    if not src:
        return "verbatim training data"
    more = f" (+{len(src) - 1} more)" if len(src) > 1 else ""
    first = src[0]
    return f"Verbatim from {first['repo']}/{first['path']} ({first['license']}){more}"


def _query(span: dict) -> str:
    """What a click on the span searches for: its first ~200 characters, exact."""
    return _span(span).search_text()


PARAM_NAMES = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "seed", "stop")


def share_parameters(params) -> dict:
    """The generation parameters as a share stores them (the UI's parameter names)."""
    values = {name: getattr(params, name) for name in PARAM_NAMES}
    return {**values, "stop": list(params.stop)}


def _param_kwargs(values) -> dict:
    kwargs = dict(zip(PARAM_NAMES, values, strict=False))
    if kwargs.get("seed") in ("", None):
        kwargs["seed"] = None
    return kwargs


def turns_from_messages(chat: list) -> list[Turn]:
    """Pair up a Chatbot's messages into (user, assistant) turns; an unanswered turn is dropped."""
    turns, pending = [], None
    for msg in chat or []:
        role, content = msg["role"], _text(msg["content"])
        if role == "user":
            pending = content
        elif role == "assistant" and pending is not None:
            turns.append(Turn(pending, content))
            pending = None
    return turns


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio 6 may hand back [{"type": "text", "text": ...}]
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content)
