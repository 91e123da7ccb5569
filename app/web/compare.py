"""The Compare tab: one prompt, two columns (two models, or one model at two settings) streamed
together in the same mode, each with its own status, probabilities and sources; one link
(`/?compare=<id>,<id>`, two ordinary shares) reopens both.

`compare_frames`, `stop_compare`, `share_pair` and `open_pair` hold the logic (tested over
FakeEngine in tests/unit/test_compare.py); `build_compare_tab` is layout and wiring only.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

import gradio as gr

from app.errors import INTERNAL, errors_in_status, status_message
from app.parameters import names
from app.render import code_view
from app.services.generate import session_key
from app.services.shares import PENDING
from app.services.together import Failed, together
from app.shares.store import SharePublic
from app.validation import check_mode
from app.web.api import MODEL_LOCK
from app.web.handlers import Handlers
from model.errors import PlaygroundError

log = logging.getLogger(__name__)

SIDES = ("a", "b")
MODES = [
    ("Completion", "completion"),
    ("Fill-in-the-middle", "fim"),
    ("Tech assistant (one question)", "assistant"),
]
AUTO = ""  # as the main picker: each mode's default model


class Column(NamedTuple):
    """One column's news: None where a field keeps what it shows."""

    view: Any
    text: str | None
    status: str
    sources: Any
    probs: Any
    record: dict | None


def tab_of(side: str) -> str:
    """The name Stop and a new comparison cancel a column's generation by."""
    return f"compare-{side}"


def compare_frames(
    handlers: Handlers,
    mode: str,
    prompt: str,
    columns: Sequence[tuple],
    request=None,
    show_probs: bool = False,
) -> Iterator[list[Column | None]]:
    """Runs one generation per column, `columns` being (model, parameter values in the schema's
    order), at once; yields [Column or None (no news)] per frame. A column that fails shows
    why in its status; the other runs on."""
    check_mode(mode)
    # Each column's token, held here: Stop finds it by the column's name (and a new comparison
    # supersedes it), and a page that goes away mid-run cancels both at once.
    cancels = handlers.generate.cancels
    keys = [f"{session_key(request)}/{tab_of(side)}" for side in SIDES]
    tokens = [cancels.start(key) for key in keys]
    streams = [
        handlers.ui_code(
            mode,
            prompt,
            model,
            *values,
            request=request,
            show_probs=show_probs,
            tab=tab_of(side),
            cancel=token,
        )
        for side, (model, values), token in zip(SIDES, columns, tokens, strict=True)
    ]
    try:
        for batch in together(streams):
            frame: list[Column | None] = [None] * len(streams)
            for i, item in batch.items():
                frame[i] = _failed(item.error) if isinstance(item, Failed) else _column(item)
            yield frame
    finally:
        for key, token in zip(keys, tokens, strict=True):
            token.cancel("stopped: the page went away")  # a finished one is not affected
            cancels.finish(key, token)


def _column(item: tuple) -> Column:
    view, text, status, _download, record, sources, probs = item
    return Column(view, text, status, sources, probs, record)


def _failed(exc: Exception) -> Column:
    if isinstance(exc, PlaygroundError):
        message = exc.message
    else:  # a bug: logged, and the column says so without the details
        log.exception("compare column failed", exc_info=exc)
        message = INTERNAL
    # Markdown would take "<FILL_HERE>" in a message for a tag and drop it.
    return Column(None, None, f"**Error:** {html.escape(message)}", None, None, None)


def stop_compare(handlers: Handlers, request) -> None:
    for side in SIDES:  # each generation then reports "stopped by you" in its column
        handlers.generate.stop(request, tab_of(side))


def share_pair(handlers: Handlers, records: Sequence, request) -> tuple[str, list[str]]:
    """Saves each column as an ordinary share; returns the link that reopens both, and the
    private delete links of those that are new."""
    for side, rec in zip(SIDES, records, strict=True):  # all checked before any is saved
        if not rec or rec == PENDING:
            raise PlaygroundError(
                f"Column {side.upper()} has nothing to share yet: run the comparison and let "
                "both columns finish.",
                field="output",
            )
    links = [handlers.share(rec, request) for rec in records]
    base = links[0][0].rsplit("/s/", 1)[0]
    ids = ",".join(url.rsplit("/s/", 1)[1] for url, _ in links)
    return f"{base}/?compare={ids}", [delete for _, delete in links if delete]


def open_pair(handlers: Handlers, value: str) -> list[SharePublic]:
    """The two shares a `?compare=` value names, checked: two ids, both found, one mode."""
    ids = [part.strip() for part in (value or "").split(",")]
    if len(ids) != len(SIDES) or not all(ids):
        raise PlaygroundError(
            f"`compare` must be two share ids separated by a comma; got {value[:80]!r}.",
            field="compare",
        )
    shares = [handlers.shares.load(share_id) for share_id in ids]  # an unknown id: not found
    if any(share is None for share in shares):
        raise PlaygroundError("Sharing is not configured on this server.", kind="config")
    if len({share.mode for share in shares}) > 1:
        modes = " and ".join(share.mode for share in shares)
        raise PlaygroundError(
            f"`compare` must name two shares of one mode; got {modes}.", field="compare"
        )
    return shares


def shared_view(handlers: Handlers, share: SharePublic, form: dict) -> tuple[str, str]:
    """A share's output as its column shows it (generated part and copied spans marked), and
    its sources panel."""
    if share.fim:
        span = (share.fim.middle_start, share.fim.middle_end)
    elif share.mode == "assistant":  # the reply alone: all of it generated
        span = (0, len(share.output))
    else:
        span = (len(share.prompt), len(share.output))
    view = handlers.code_html(share.mode, share.output, form["language"], span, share.spans)
    return view, handlers.sources_panel(share.spans, share.model or "")


# -- layout and wiring ------------------------------------------------------------------------


def build_compare_tab(handlers: Handlers, param_inputs, model_updates, following):
    """The tab; ui.py passes its parameter controls' builder and model-default rules (so the
    columns' controls are the code tabs' own). Returns the page-load hook for `?compare=`."""
    choices = [("Automatic: the mode's default model", AUTO), *handlers.registry.choices()]
    columns = []
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(
            "One prompt, two columns: pick two models, or one model at two settings "
            "(each column's **Parameters**), and both stream side by side."
        )
        mode = gr.Radio(MODES, value="completion", label="Mode", elem_id="compare-mode")
        prompt = gr.Textbox(
            lines=8,
            max_lines=30,
            label="Prompt",
            elem_id="compare-prompt",
            placeholder="Code to complete, code with one <FILL_HERE>, or a "
            "question for the assistant",
            elem_classes=["code-input"],
        )
        show_probs = gr.Checkbox(
            False,
            label="Show probabilities",
            elem_id="compare-show-probs",
            info="each token shaded by how likely its model found it",
        )
        with gr.Row():
            run = gr.Button("Compare", variant="primary", elem_id="compare-run")
            stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
            share = gr.Button("Share both", size="sm", elem_id="compare-share")
        link = gr.Textbox(
            label="Link to this comparison", buttons=["copy"], visible=False, elem_id="compare-link"
        )
        deletes = gr.Markdown(visible=False, elem_id="compare-delete")
        with gr.Row(equal_height=False):
            for side in SIDES:
                with gr.Column(min_width=320):
                    columns.append(_column_ui(side, choices, handlers, param_inputs))

    follows = following(handlers)
    for col in columns:
        followers = [col.params[i] for i in follows]

        def on_change(mode_value, model_id, *values):
            return model_updates(handlers, model_id, mode_value, values)

        # `.input`, not `.change`: a reopened comparison sets the model, and must keep its
        # parameters rather than get the model's defaults.
        for trigger in (mode.input, col.model.input):
            trigger(
                on_change,
                [mode, col.model, *followers],
                followers,
                queue=False,
                api_visibility="private",
            )

    n = len(handlers.schema.page)
    shown = [
        c for col in columns for c in (col.view, col.status, col.sources, col.probs, col.record)
    ]

    # A refusal of the whole comparison (an empty prompt) is said in column A's status line.
    @errors_in_status(outputs=len(shown), status=1)
    def generate(request: gr.Request, mode_value, text, probs, *values):
        models, params = values[: len(SIDES)], values[len(SIDES) :]
        pairs = [(models[k], params[k * n : (k + 1) * n]) for k in range(len(SIDES))]
        for frame in compare_frames(handlers, mode_value, text, pairs, request, probs):
            out = []
            for col in frame:
                if col is None:
                    out += [gr.skip()] * 5
                else:
                    out += [
                        _kept(col.view),
                        col.status,
                        _kept(col.sources),
                        _kept(col.probs),
                        col.record,
                    ]
            yield out

    def clear():  # a new comparison starts from a clean slate
        hidden = gr.update(visible=False)
        blank = [code_view("", "text"), "", "", "", None]
        return [hidden, hidden, *blank * len(SIDES)]

    inputs = [mode, prompt, show_probs, *[c.model for c in columns],
              *[p for c in columns for p in c.params]]  # fmt: skip
    run.click(clear, None, [link, deletes, *shown], queue=False, api_visibility="private").then(
        generate, inputs, shown, concurrency_id=MODEL_LOCK, api_visibility="private"
    )

    def do_stop(request: gr.Request) -> None:
        stop_compare(handlers, request)

    stop.click(do_stop, None, None, concurrency_limit=None, api_visibility="private")

    def do_share(request: gr.Request, *records):
        try:
            url, delete_urls = share_pair(handlers, records, request)
        except Exception as exc:  # a refusal shows where the link would (a bug is logged)
            return gr.Textbox(visible=False), gr.Markdown(status_message(exc), visible=True)
        note = (
            "Private delete links (keep them, they are shown once): "
            + " · ".join(f"[{u}]({u})" for u in delete_urls)
            if delete_urls
            else "These exact generations were shared before."
        )
        return gr.Textbox(value=url, visible=True), gr.Markdown(note, visible=True)

    share.click(do_share, [c.record for c in columns], [link, deletes], api_visibility="private")
    return _open_hook(handlers, mode, prompt, columns)


def _column_ui(side: str, choices, handlers: Handlers, param_inputs):
    col = SimpleNamespace()
    ids = tab_of(side)
    col.model = gr.Dropdown(
        choices, value=AUTO, label=f"Model {side.upper()}", elem_id=f"{ids}-model"
    )
    col.params = param_inputs("completion", handlers, ids)
    col.view = gr.HTML(code_view("", "text"), elem_id=f"{ids}-output", elem_classes=["code-output"])
    col.status = gr.Markdown("", elem_id=f"{ids}-status")
    col.sources = gr.HTML("", elem_id=f"{ids}-sources")
    col.probs = gr.HTML("", elem_id=f"{ids}-probs")
    col.record = gr.State(None)
    return col


def _kept(value):
    return gr.skip() if value is None else value


def _open_hook(handlers: Handlers, mode, prompt, columns):
    """`/?compare=<id>,<id>`: both shares back in their columns, and the tab selected."""
    page = names(handlers.schema.page)
    outputs = [mode, prompt]
    for col in columns:
        outputs += [col.model, col.view, col.status, col.sources, *col.params]
    models = {spec.id for spec in handlers.registry}

    def load(request: gr.Request):
        value = request.query_params.get("compare")
        if value is None:
            return [gr.skip()] * (len(outputs) + 1)
        try:
            shares = open_pair(handlers, value)
        except Exception as exc:  # a bad link is said in the tab, in column A's status line
            said = [gr.skip()] * (len(outputs) + 1)
            said[0], said[1 + outputs.index(columns[0].status)] = (
                gr.Tabs(selected="compare"),
                status_message(exc),
            )
            return said
        values = [gr.Tabs(selected="compare"), shares[0].mode, shares[0].prompt]
        for share in shares:
            form = handlers.shares.form(share)
            view, sources = shared_view(handlers, share, form)
            note = (
                f"Opened shared generation `{share.id}` from {share.created_at:%Y-%m-%d %H:%M} UTC."
            )
            model = share.model if share.model in models else AUTO
            values += [model, view, note, sources, *[form[name] for name in page]]
        return values

    return load, outputs
