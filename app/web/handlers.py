"""What the page's components show: each UI event parses its inputs, calls a service in
app/services/ and shapes the result for its components (highlighted HTML, status, downloads,
the sources panel). ui.py wires these to buttons; api.py exposes the services by name.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from functools import partial

from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from app.attribution import Source, Span
from app.attribution.render import sources_html
from app.parameters import names
from app.probabilities import probabilities_html
from app.render import Mark, code_view, detect_language
from app.services.generate import Generations, throttle
from app.services.search import Search
from app.services.shares import PENDING, Shares, record
from app.validation import recent_turns
from app.web.downloads import Downloads
from model.engine import MAX_LOGPROBS
from model.errors import PlaygroundError
from model.prompts.templates import Turn
from model.registry import Registry

MODE_LABELS = {"completion": "Completion", "fim": "Fill-in-the-middle", "assistant": "Assistant"}
LIVE_HIGHLIGHT_CHARS = 20_000  # ~38 ms to highlight: within a frame


class Handlers:
    def __init__(
        self,
        generate: Generations,
        shares: Shares,
        search: Search,
        downloads_dir: str | None = None,
    ):
        self.generate = generate
        self.shares = shares
        self.search = search
        self.registry: Registry = generate.playground.registry
        self.schema = shares.schema  # the request schema every control and record follows
        self.downloads = Downloads(downloads_dir or tempfile.mkdtemp(prefix="playground-dl-"))

    # -- the code tabs and the chat -----------------------------------------------------------

    def ui_code(
        self,
        mode: str,
        prompt: str,
        model,
        *param_values,
        request=None,
        show_probs: bool = False,
        tab: str | None = None,
        cancel=None,
    ):
        """Yields (code view, exact text, status, download, shareable record, sources panel,
        probabilities view). `tab` (default: the mode's) and `cancel`: what stops it, as
        Generations takes them; Compare asks the assistant one question here too, its reply
        shown as markdown."""
        params = self.params(mode, model, param_values)
        if mode == "assistant":
            language = "markdown"
            run = partial(self.generate.assist, prompt, [])
        else:
            language = detect_language(prompt.replace("<FILL_HERE>", ""))
            run = partial(
                self.generate.complete if mode == "completion" else self.generate.fill, prompt
            )
        note = ""
        if show_probs:
            spec = self.registry.choose(model or None, mode)
            if mode == "fim" and spec.reranks_fim:
                note = (
                    f"Probabilities are not shown for {spec.id}'s fills: it has no FIM "
                    "tokens, and its line is picked from candidates by reranking."
                )
            else:
                params = replace(params, logprobs=MAX_LOGPROBS)
        for out in throttle(run(params, request, model, tab=tab or mode, cancel=cancel)):
            if out.done is None:
                html = self.code_html(
                    mode, out.text, live_language(out.text, language), out.generated_span
                )
                yield html, out.text, out.status, None, PENDING, gr_skip(), gr_skip()
                continue
            spans = self.search.attribute_output(out)
            html = self.code_html(mode, out.text, language, out.generated_span, spans)
            shared = record(out, prompt, params, language, spans, self.schema)
            download = self.downloads.save(f"{out.mode}{extension(language)}", out.text)
            panel = self.sources_panel(spans, out.model)
            probs = probabilities_html(out.logprobs, note) if show_probs else ""
            yield html, out.text, out.status, download, shared, panel, probs

    def ui_assist(self, message: str, chat: list, model, *param_values, request=None):
        """Yields (chat messages, cleared input box, status, shareable record, sources, the
        Continue button: shown under an answer cut off at the token limit)."""
        params = self.params("assistant", model, param_values)
        history = recent_turns(turns_from_messages(chat), self.generate.playground.limits)
        base = [*chat, {"role": "user", "content": message}]
        run = self.generate.assist(message, history, params, request, model, tab="assistant")
        yield from self._chat_frames(run, base, message, params)

    def ui_continue(self, chat: list, model, *param_values, request=None):
        """Continue: the last answer (cut off at the token limit) written on; yields as
        ui_assist does, the last answer growing in place."""
        params = self.params("assistant", model, param_values)
        turns = turns_from_messages(chat)
        if not turns or chat[-1]["role"] != "assistant":
            raise PlaygroundError("There is no answer to continue yet.", field="message")
        *earlier, last = turns
        history = recent_turns(earlier, self.generate.playground.limits)
        base = list(chat[:-1])  # the answer is written again, longer, in its place
        run = self.generate.assist(
            last.user, history, params, request, model, tab="assistant", reply_so_far=last.assistant
        )
        yield from self._chat_frames(run, base, last.user, params)

    def _chat_frames(self, run, base: list, message: str, params):
        for out in throttle(run):
            messages = [*base, {"role": "assistant", "content": out.text}]
            if out.done is None:
                yield messages, "", out.status, PENDING, gr_skip(), gr_update(visible=False)
                continue
            spans = self.search.attribute_output(out)
            shared = record(out, message, params, "markdown", spans, self.schema)
            more = gr_update(visible=out.cut_off)
            yield messages, "", out.status, shared, self.sources_panel(spans, out.model), more

    def params(self, mode: str, model, values):
        """The page's control values (in the schema's order) as validated engine parameters."""
        given = dict(zip(names(self.schema.page), values, strict=True))
        return self.schema.resolve(given, self.registry.choose(model or None, mode), mode)

    @staticmethod
    def code_html(mode: str, text: str, language: str, span: tuple[int, int], spans=()) -> str:
        css = "fim-middle" if mode == "fim" else "generated"
        marks = [Mark(span[0], span[1], css, "generated by the model")]
        marks += [
            Mark(s["start"], s["end"], "attr-span", _source_title(s), (("data-query", _query(s)),))
            for s in spans
        ]
        return code_view(text, language, marks)

    def sources_panel(self, spans: list[dict], model_id: str = "") -> str:
        if self.search.index is None:
            return ""
        scope = self.search.checked_against(model_id)
        return sources_html([_span(s) for s in spans], scope=scope)

    def share(self, shared: dict | None, request) -> tuple[str, str | None]:
        headers = getattr(request, "headers", None) or {}
        url = getattr(getattr(request, "request", None), "url", None)
        scheme = getattr(url, "scheme", None) or "http"
        client = self.generate.client(request)
        return self.shares.share(shared, client, headers.get("host"), scheme)

    # -- models -------------------------------------------------------------------------------

    def model_for(self, model_id: str | None, mode: str) -> str:
        """The model a mode runs with this choice ("automatic": the mode's default)."""
        return self.registry.choose(model_id or None, mode).id

    def defaults(self, model_id: str | None, mode: str = "completion") -> dict:
        """Every parameter's default with this model choice ("automatic": the mode's model's)."""
        return self.schema.defaults(self.registry.choose(model_id or None, mode), mode)

    def context_length(self, model_id: str | None, mode: str) -> int:
        """The context of the model `mode` runs on with this choice: the max-tokens limit."""
        return self.registry.choose(model_id or None, mode).context_length

    def model_card(self, model_id: str | None) -> str:
        """The selected model's card facts; for "automatic", which model each mode uses."""
        if model_id:
            return self.registry.get(model_id).card_markdown()
        return "\n".join(
            f"- {label}: **{self.registry.get(self.registry.default_for(mode)).label}**"
            for mode, label in MODE_LABELS.items()
        )


def extension(language: str) -> str:
    try:
        patterns = get_lexer_by_name(language).filenames
    except ClassNotFound:
        patterns = []
    return next((p[1:] for p in patterns if p.startswith("*.") and "[" not in p), ".txt")


def live_language(text: str, language: str) -> str:
    """How a streaming frame is highlighted. Re-highlighting the whole text every frame cost
    0.18 s at 100k characters and 1.7 s at 1 MB: long texts stream plain (6 ms at 1 MB) and
    are highlighted once, in the final frame."""
    return language if len(text) <= LIVE_HIGHLIGHT_CHARS else "text"


def gr_skip():
    import gradio as gr

    return gr.skip()


def gr_update(**changes):
    import gradio as gr

    return gr.update(**changes)


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


__all__ = ["Handlers", "turns_from_messages"]
