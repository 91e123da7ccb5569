"""Gradio Blocks: layout and event wiring only. Components get their values from handlers.py;
the named API is api.py."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from app.attribution.render import search_results_html
from app.errors import errors_in_status, status_message
from app.parameters import Parameter, names
from app.render import code_view
from app.web.api import MODEL_LOCK, build_api
from app.web.compare import build_compare_tab
from app.web.handlers import Handlers
from model.errors import PlaygroundError

# A click on a highlighted verbatim span runs an exact search for it in the Search tab.
CLICK_TO_SEARCH = """
element.addEventListener('click', (ev) => {
  const mark = ev.target.closest('mark.attr-span');
  if (!mark) return;
  const query = mark.dataset.query || mark.innerText;
  const tab = [...document.querySelectorAll('button[role=tab]')]
    .find((b) => b.innerText.includes('Search training data'));
  if (tab) tab.click();
  // The tab renders lazily: wait for its inputs before filling them in.
  const fill = (tries) => {
    const box = document.querySelector('#search-query textarea, #search-query input');
    const exact = document.querySelector('#search-exact input');
    const run = document.querySelector('#search-run');
    if (!box || !exact || !run) { if (tries > 0) setTimeout(() => fill(tries - 1), 100); return; }
    box.value = query;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    if (!exact.checked) exact.click();
    setTimeout(() => run.click(), 200);
  };
  fill(50);
});
"""

# Each example gives a good result with the default model, greedy (tests/integration/
# test_model_choice.py runs them all): `import os ... def main():` and `class Stack:` ran on
# to the token limit and cut mid-statement; CSV reading answered with broken code.
COMPLETION_EXAMPLES = [
    ['def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'],
    ['def is_palindrome(s):\n    """Return True if s reads the same forwards and backwards."""\n'],
    [
        "def celsius_to_fahrenheit(celsius):\n"
        '    """Convert a temperature from Celsius to Fahrenheit."""\n'
    ],
]
FIM_EXAMPLES = [
    [
        'def add(a, b):\n    """Return the sum of a and b."""\n    <FILL_HERE>\n\n\nprint(add(1, 2))\n'
    ],
    ['def is_even(n):\n    """Whether n is even."""\n    return <FILL_HERE>\n'],
    [
        'import json\n\n\ndef load(path):\n    """Read the JSON file at `path`."""\n'
        "    with open(path) as f:\n        <FILL_HERE>\n"
    ],
]
ASSIST_EXAMPLES = [
    ["Write a Python function that checks whether a string is a palindrome."],
    ["Write a Python function that counts the vowels in a string."],
    ["How do I sort a list of dictionaries by a key in Python?"],
]

NOTE = (
    "**Intended use.** This playground demonstrates code models; generated code may be wrong, "
    "insecure, or reproduce training data verbatim, whose license may require attribution. "
    "Review code before you use it. The models' licenses and data are listed on their model cards."
)


def _param_inputs(mode: str, handlers: Handlers, ids: str = "") -> list:
    """A tab's own parameters, one control per parameter of the request schema, in its order:
    a max-tokens limit set for a long completion must not silently cut the assistant's answers
    short. Defaults and the context are those of the tab's model. `ids`: the controls' id
    prefix where it is not the mode (Compare's columns)."""
    defaults = handlers.defaults(AUTO, mode)
    context_length = handlers.context_length(AUTO, mode)
    ids = ids or mode
    controls = []
    with gr.Accordion("Parameters", open=False, elem_id=f"{ids}-params"):
        page = handlers.schema.page
        for pair in (page[i : i + 2] for i in range(0, len(page), 2)):
            with gr.Row():
                controls += [_control(p, defaults[p.name], ids, context_length) for p in pair]
    return controls


def _control(p: Parameter, default, mode: str, context_length: int):
    elem_id = f"{mode}-{p.control_id}"
    if p.kind in ("int", "float"):
        hi = context_length if p.context_bound else p.hi
        value = min(default, context_length // 2) if p.context_bound else default
        lo = p.lo + p.step if p.lo_open else p.lo
        return gr.Slider(lo, hi, value, step=p.step, label=p.label, info=p.help, elem_id=elem_id)
    if p.kind == "flag":
        return gr.Checkbox(default, label=p.label, info=p.help, elem_id=elem_id)
    lines = 2 if p.kind == "stops" else 1
    return gr.Textbox("", label=p.label, placeholder=p.help, lines=lines, elem_id=elem_id)


def _stop_button(mode: str):
    # Quiet and disabled until something runs: a red Stop as big as Generate read as an alarm.
    return gr.Button(
        "Stop",
        variant="secondary",
        interactive=False,
        scale=1,
        min_width=80,
        elem_id=f"{mode}-stop",
        elem_classes=["stop-button"],
    )


def _wire_run(triggers, handlers: Handlers, tab: str, stop, status, hide, run, **event):
    """Generate (or Send, Continue): Stop comes alive and the status says so at once, the
    generation streams with no Gradio progress overlay (the status line says what happens),
    and Stop goes quiet again unless a newer generation in this tab still runs."""

    def start():
        return gr.Button(interactive=True), "Starting…", *[gr.update(visible=False)] * len(hide)

    def settle(request: gr.Request):
        return gr.Button(interactive=handlers.generate.running(request, tab))

    for trigger in triggers:
        trigger(
            start,
            None,
            [stop, status, *hide],
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        ).then(
            run,
            **event,
            concurrency_id=MODEL_LOCK,
            api_visibility="private",
            show_progress="hidden",
        ).then(settle, None, stop, queue=False, api_visibility="private", show_progress="hidden")

    def do_stop(request: gr.Request) -> None:
        handlers.generate.stop(request, tab)  # the generation itself reports "stopped by you"

    # Queued (for the session hash) but outside the model's concurrency group, so it never waits.
    stop.click(
        do_stop,
        None,
        None,
        concurrency_limit=None,
        api_visibility="private",
        show_progress="hidden",
    )


def _share(mode: str, handlers: Handlers, record: gr.State, share: gr.Button):
    """Share's link and its private delete link, below the row that holds the Share button."""
    link = gr.Textbox(label="Share link", buttons=["copy"], visible=False, elem_id=f"{mode}-link")
    delete = gr.Markdown(visible=False, elem_id=f"{mode}-delete")

    def do_share(rec, request: gr.Request):
        try:
            url, delete_url = handlers.share(rec, request)
        except Exception as exc:  # a refusal shows where the link would (a bug is logged)
            return gr.Textbox(visible=False), gr.Markdown(status_message(exc), visible=True)
        note = (
            f"Private delete link (keep it, it is shown once): [{delete_url}]({delete_url})"
            if delete_url
            else "This exact generation was shared before; this is its link."
        )
        return gr.Textbox(value=url, visible=True), gr.Markdown(note, visible=True)

    share.click(do_share, [record], [link, delete], api_visibility="private")
    return link, delete


def _share_button(mode: str):
    return gr.Button("Share", size="sm", elem_id=f"{mode}-share")


def _side(mode: str, examples, inputs, handlers: Handlers):
    """The side column (below the output on a phone): examples, then the parameters."""
    with gr.Column(scale=2, min_width=300, elem_classes=["side"]):
        gr.Examples(examples, inputs=inputs, label="Examples", elem_id=f"{mode}-examples")
        show_probs = None
        if mode != "assistant":
            show_probs = gr.Checkbox(
                False,
                label="Show probabilities",
                info="each token shaded by how likely the model found it",
                elem_id=f"{mode}-show-probs",
            )
        params = _param_inputs(mode, handlers)
    return show_probs, params


def _code_tab(mode, label, examples, placeholder, handlers: Handlers, model):
    ui = SimpleNamespace(mode=mode)
    with gr.Tab(label, id=mode), gr.Row(elem_classes=["tab-body"]):
        with gr.Column(scale=5, min_width=300):
            ui.prompt = gr.Textbox(
                lines=10,
                max_lines=40,
                label="Code",
                placeholder=placeholder,
                elem_id=f"{mode}-prompt",
                elem_classes=["code-input"],
            )
            with gr.Row(elem_classes=["run-row"]):
                run = gr.Button(
                    "Generate", variant="primary", scale=3, min_width=120, elem_id=f"{mode}-run"
                )
                stop = _stop_button(mode)
            ui.status = gr.Markdown("", elem_id=f"{mode}-status", elem_classes=["status-line"])
            ui.view = gr.HTML(
                code_view("", "text"),
                elem_id=f"{mode}-output",
                elem_classes=["code-output"],
                js_on_load=CLICK_TO_SEARCH,
            )
            ui.probs = gr.HTML("", elem_id=f"{mode}-probs")
            ui.record = gr.State(None)
            with gr.Row(elem_classes=["actions"]):
                copy = gr.Button("Copy", size="sm", elem_id=f"{mode}-copy")
                download = gr.DownloadButton("Download", size="sm", elem_id=f"{mode}-download")
                share = _share_button(mode)
            link, delete = _share(mode, handlers, ui.record, share)
            ui.sources = gr.HTML("", elem_id=f"{mode}-sources")
            # Exactly what was generated, for Copy: in the page, never shown a second time.
            ui.raw = gr.Textbox(visible="hidden", elem_id=f"{mode}-raw")
        ui.show_probs, ui.params = _side(mode, examples, [ui.prompt], handlers)
        params = ui.params

    @errors_in_status(outputs=7, status=2)
    def generate(request: gr.Request, prompt_text, model_id, show_probs, *values):
        # `request` first: Gradio passes it only as a positional parameter before `*values`,
        # the parameters' controls in the schema's order
        yield from handlers.ui_code(
            mode, prompt_text, model_id, *values, request=request, show_probs=show_probs
        )

    _wire_run(
        [run.click],
        handlers,
        mode,
        stop,
        ui.status,
        [link, delete],
        generate,
        inputs=[ui.prompt, model, ui.show_probs, *params],
        outputs=[ui.view, ui.raw, ui.status, download, ui.record, ui.sources, ui.probs],
    )
    copy.click(None, [ui.raw], None, js="(t) => { navigator.clipboard.writeText(t); return []; }")
    return ui


def _assist_tab(handlers: Handlers, model):
    ui = SimpleNamespace(mode="assistant")
    with gr.Tab("Tech assistant", id="assistant"), gr.Row(elem_classes=["tab-body"]):
        with gr.Column(scale=5, min_width=300):
            ui.chat = gr.Chatbot(
                label="Tech assistant", height=420, elem_id="assistant-chat", buttons=["copy"]
            )
            more = gr.Button(
                "Continue the answer", size="sm", visible=False, elem_id="assistant-continue"
            )
            message = gr.Textbox(
                label="Message",
                lines=2,
                placeholder="Ask a programming question",
                elem_id="assistant-message",
            )
            with gr.Row(elem_classes=["run-row"]):
                send = gr.Button(
                    "Send", variant="primary", scale=3, min_width=120, elem_id="assistant-run"
                )
                stop = _stop_button("assistant")
                clear = gr.Button("Clear", scale=1, min_width=80, elem_id="assistant-clear")
            ui.status = gr.Markdown("", elem_id="assistant-status", elem_classes=["status-line"])
            ui.record = gr.State(None)
            with gr.Row(elem_classes=["actions"]):
                share = _share_button("assistant")
            link, delete = _share("assistant", handlers, ui.record, share)
            ui.sources = gr.HTML("", elem_id="assistant-sources")
        _, ui.params = _side("assistant", ASSIST_EXAMPLES, [message], handlers)
        params = ui.params

    @errors_in_status(outputs=6, status=2)
    def respond(request: gr.Request, text, history, model_id, *values):
        yield from handlers.ui_assist(text, history, model_id, *values, request=request)

    @errors_in_status(outputs=6, status=2)
    def go_on(request: gr.Request, history, model_id, *values):
        yield from handlers.ui_continue(history, model_id, *values, request=request)

    outputs = [ui.chat, message, ui.status, ui.record, ui.sources, more]
    hidden = [link, delete, more]
    _wire_run(
        [send.click, message.submit],
        handlers,
        "assistant",
        stop,
        ui.status,
        hidden,
        respond,
        inputs=[message, ui.chat, model, *params],
        outputs=outputs,
    )
    _wire_run(
        [more.click],
        handlers,
        "assistant",
        stop,
        ui.status,
        hidden,
        go_on,
        inputs=[ui.chat, model, *params],
        outputs=outputs,
    )
    clear.click(
        lambda: ([], "", None, gr.update(visible=False)),
        None,
        [ui.chat, ui.status, ui.record, more],
        queue=False,
        api_visibility="private",
    )
    return ui


def _search_tab(handlers: Handlers):
    with gr.Tab("Search training data", id="search"):
        gr.Markdown(handlers.search.summary(), elem_id="index-summary")
        with gr.Row():
            query = gr.Textbox(
                label="Search",
                placeholder="words, or an exact phrase",
                scale=4,
                elem_id="search-query",
            )
            exact = gr.Checkbox(label="Exact phrase", elem_id="search-exact")
        with gr.Row():
            repo = gr.Textbox(label="Repository", placeholder="any", elem_id="search-repo")
            license_ = gr.Textbox(label="License", placeholder="any", elem_id="search-license")
            lang = gr.Textbox(label="Language", placeholder="any", elem_id="search-lang")
            page = gr.Number(1, label="Page", precision=0, minimum=1, elem_id="search-page")
        run = gr.Button("Search", variant="primary", elem_id="search-run")
        results = gr.HTML("", elem_id="search-results")

    @errors_in_status(outputs=1, status=0)  # in the results box, not a toast and a badge
    def do_search(q, ex, rp, lic, lg, pg):
        return search_results_html(handlers.search.search(q, rp, lic, lg, pg, ex))

    inputs = [query, exact, repo, license_, lang, page]
    for trigger in (run.click, query.submit):
        trigger(do_search, inputs, results, concurrency_limit=4, api_visibility="private")


def _open_share(handlers: Handlers, tabs, code_tabs, chat_tab):
    """`/?share=<id>` loads a shared generation: its mode, prompt, parameters and output."""
    outputs = [tabs, chat_tab.chat, chat_tab.status]
    for t in code_tabs:
        outputs += [t.prompt, t.view, t.raw, t.status]
    all_tabs = [*code_tabs, chat_tab]
    for t in all_tabs:
        outputs += t.params

    # An unknown or deleted share is said in the Completion tab's status line.
    status = next(i for i, o in enumerate(outputs) if o is code_tabs[0].status)

    @errors_in_status(outputs=len(outputs), status=status)
    def load(request: gr.Request):
        share = handlers.shares.load(request.query_params.get("share"))
        if share is None:
            return [gr.skip()] * len(outputs)
        form = handlers.shares.form(share)
        values = [gr.Tabs(selected=share.mode)]
        note = f"Opened shared generation `{share.id}` from {share.created_at:%Y-%m-%d %H:%M} UTC."
        if share.mode == "assistant":
            chat = [{"role": "user", "content": share.prompt},
                    {"role": "assistant", "content": share.output}]  # fmt: skip
            values += [chat, note]
        else:
            values += [gr.skip(), gr.skip()]
        for t in code_tabs:
            if t.mode != share.mode:
                values += [gr.skip()] * 4
                continue
            span = (
                (share.fim.middle_start, share.fim.middle_end)
                if share.fim
                else (len(share.prompt), len(share.output))
            )
            html = handlers.code_html(t.mode, share.output, form["language"], span)
            values += [share.prompt, html, share.output, note]
        for t in all_tabs:
            if t.mode == share.mode:
                values += [form[name] for name in names(handlers.schema.page)]
            else:
                values += [gr.skip()] * len(handlers.schema.page)
        return values

    return load, outputs


AUTO = ""  # the dropdown's "automatic" entry: each mode's default model


def _model_picker(handlers: Handlers):
    registry = handlers.registry
    choices = [("Automatic (each mode's default)", AUTO), *registry.choices()]
    # Each at least 300 px wide: on a phone the card goes under the picker, not into a sliver.
    with gr.Row(elem_classes=["model-row"]):
        model = gr.Dropdown(
            choices, value=AUTO, label="Model", scale=2, min_width=300, elem_id="model"
        )
        with gr.Column(scale=3, min_width=300):  # a Markdown's own min_width does not wrap
            info = gr.Markdown(handlers.model_card(AUTO), elem_id="model-card")
    model.change(handlers.model_card, model, info, queue=False, api_visibility="private")
    return model


def _wire_model_defaults(model, handlers: Handlers, tabs: list) -> None:
    """Picking a model brings its defaults to every tab it can serve (and its context as the
    max-tokens limit); "automatic" brings each tab's own model's."""
    follows = _following(handlers)
    outputs = [t.params[i] for t in tabs for i in follows]
    current = [t.params[i] for t in tabs for i in follows]

    def on_model(model_id, *values):
        updates = []
        for n, t in enumerate(tabs):
            mine = values[n * len(follows) : (n + 1) * len(follows)]
            updates += _model_updates(handlers, model_id, t.mode, mine)
        return updates

    model.change(on_model, [model, *current], outputs, queue=False, api_visibility="private")


def _following(handlers: Handlers) -> list[int]:
    """Which of a tab's parameters follow its model: its defaults, and its context as a limit."""
    return [i for i, p in enumerate(handlers.schema.page) if p.model_default or p.context_bound]


def _model_updates(handlers: Handlers, model_id, mode: str, values) -> list:
    """The following parameters' updates for `model_id` in `mode` (`values`: theirs now)."""
    follows = _following(handlers)
    try:
        defaults = handlers.defaults(model_id, mode)
        context = handlers.context_length(model_id, mode)
    except PlaygroundError:  # a model that cannot serve this tab: leave the tab alone
        return [gr.skip()] * len(follows)
    updates = []
    for i, value in zip(follows, values, strict=True):
        p = handlers.schema.page[i]
        if p.context_bound:  # keep the user's limit, within the new context
            updates.append(gr.Slider(maximum=context, value=min(int(value or 1), context)))
        else:
            updates.append(defaults[p.name])
    return updates


def build_ui(handlers: Handlers) -> gr.Blocks:
    with gr.Blocks(title="StarCoder Playground", analytics_enabled=False) as demo:
        gr.HTML(
            '<div class="header"><h1>StarCoder Playground</h1>'
            "<p>Complete code, fill in the middle, or ask the tech assistant.</p></div>"
        )
        model = _model_picker(handlers)
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # no tab hidden behind a "..." menu
            completion = _code_tab(
                "completion",
                "Completion",
                COMPLETION_EXAMPLES,
                "def fibonacci(n):",
                handlers,
                model,
            )
            fim = _code_tab(
                "fim",
                "Fill-in-the-middle",
                FIM_EXAMPLES,
                "Write code with one <FILL_HERE> where the model should fill in.",
                handlers,
                model,
            )
            chat = _assist_tab(handlers, model)
            open_compare, compared = build_compare_tab(
                handlers, _param_inputs, _model_updates, _following
            )
            _search_tab(handlers)
        _wire_model_defaults(model, handlers, [completion, fim, chat])
        gr.Markdown(NOTE, elem_id="license-note")
        load, outputs = _open_share(handlers, tabs, [completion, fim], chat)
        # Outside Gradio's queue: they run as the page opens instead of at the queue's next
        # look (compat/gradio_queue.py, up to 20 ms later). Until the share's answer came, a
        # parameter the user had already changed was set back when it came, even when there
        # was no share to open.
        page_opens = dict(api_visibility="private", show_progress="hidden", queue=False)
        demo.load(load, None, outputs, **page_opens)
        demo.load(open_compare, None, [tabs, *compared], **page_opens)
        build_api(handlers)
    return demo


__all__ = ["build_ui"]
