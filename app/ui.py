"""Gradio Blocks: layout and event wiring only. Logic lives in handlers.py and playground.py."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from app.errors import user_errors
from app.handlers import Handlers, turns_from_messages
from app.requests import parse_params
from model.engine import GenerationParams
from model.prompts import Turn

MODEL_LOCK = "model"  # one concurrency group: every generation shares the model

COMPLETION_EXAMPLES = [
    ["def fibonacci(n):\n"],
    ["import os\nimport sys\n\n\ndef main():\n"],
    ['class Stack:\n    """A last-in, first-out stack."""\n\n    def __init__(self):\n'],
]
FIM_EXAMPLES = [
    ["def add(a, b):\n    <FILL_HERE>\n\n\nprint(add(1, 2))\n"],
    ["import json\n\n\ndef load(path):\n    with open(path) as f:\n        <FILL_HERE>\n"],
]
ASSIST_EXAMPLES = [
    ["Write a Python function that checks whether a string is a palindrome."],
    ["How do I read a CSV file in Python?"],
]

NOTE = (
    "**Intended use.** This playground demonstrates code models; generated code may be wrong, "
    "insecure, or reproduce training data verbatim, whose license may require attribution. "
    "Review code before you use it. The models' licenses and data are listed on their model cards."
)


def _param_inputs(context_length: int) -> list:
    d = GenerationParams()
    default_new = min(d.max_new_tokens, context_length // 2)
    with gr.Accordion("Parameters", open=False, elem_id="params"):
        with gr.Row():
            temperature = gr.Slider(0, 1, d.temperature, step=0.05, label="Temperature",
                                    info="0 means greedy", elem_id="temperature")  # fmt: skip
            max_new = gr.Slider(1, context_length, default_new, step=1, label="Max new tokens",
                                info=f"prompt + new tokens must fit the model's {context_length}",
                                elem_id="max-new-tokens")  # fmt: skip
        with gr.Row():
            top_p = gr.Slider(0.05, 1, d.top_p, step=0.05, label="Top-p", elem_id="top-p")
            rep = gr.Slider(1, 2, d.repetition_penalty, step=0.05, label="Repetition penalty")
        with gr.Row():
            seed = gr.Textbox("", label="Seed", placeholder="empty: random; a number repeats a run",
                              elem_id="seed")  # fmt: skip
            stop = gr.Textbox(label="Stop sequences (one per line, at most 4)", lines=2,
                              elem_id="stop")  # fmt: skip
    return [max_new, temperature, top_p, rep, seed, stop]


def _wire_stop(button, handlers: Handlers) -> None:
    def stop(request: gr.Request) -> None:
        handlers.stop(request)  # the generation itself reports "stopped by you"

    # Queued (for the session hash) but outside the model's concurrency group, so it never waits.
    button.click(stop, None, None, concurrency_limit=None, api_visibility="private")


def _code_tab(mode: str, label: str, examples, placeholder: str, handlers: Handlers, params):
    with gr.Tab(label, id=mode):
        prompt = gr.Textbox(lines=12, max_lines=40, label="Code", placeholder=placeholder,
                            elem_id=f"{mode}-prompt", elem_classes=["code-input"])  # fmt: skip
        with gr.Row():
            run = gr.Button("Generate", variant="primary", elem_id=f"{mode}-run")
            stop = gr.Button("Stop", variant="stop", elem_id=f"{mode}-stop")
        view = gr.HTML("", elem_id=f"{mode}-output", elem_classes=["code-output"])
        status = gr.Markdown("", elem_id=f"{mode}-status")
        with gr.Row():
            copy = gr.Button("Copy", size="sm", elem_id=f"{mode}-copy")
            download = gr.DownloadButton("Download", size="sm", elem_id=f"{mode}-download")
        with gr.Accordion("Exact text", open=False):
            raw = gr.Textbox(label="Exactly what was generated", lines=6, interactive=False,
                             elem_id=f"{mode}-raw", elem_classes=["code-input"])  # fmt: skip
        gr.Examples(examples, inputs=[prompt])

    @user_errors(as_html=True)
    def generate(prompt_text, max_new, temperature, top_p, rep, seed, stop, request: gr.Request):
        values = (max_new, temperature, top_p, rep, seed, stop)
        yield from handlers.ui_code(mode, prompt_text, *values, request=request)

    event = run.click(generate, [prompt, *params], [view, raw, status, download],
                      concurrency_id=MODEL_LOCK, api_visibility="private")  # fmt: skip
    _wire_stop(stop, handlers)
    copy.click(None, [raw], None, js="(t) => { navigator.clipboard.writeText(t); return []; }")
    return event


def _assist_tab(handlers: Handlers, params):
    with gr.Tab("Tech assistant", id="assistant"):
        chat = gr.Chatbot(label="Tech assistant", height=420, elem_id="assistant-chat",
                          buttons=["copy"])  # fmt: skip
        message = gr.Textbox(label="Message", lines=2, placeholder="Ask a programming question",
                             elem_id="assistant-message")  # fmt: skip
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="assistant-run")
            stop = gr.Button("Stop", variant="stop", elem_id="assistant-stop")
            clear = gr.Button("Clear conversation", elem_id="assistant-clear")
        status = gr.Markdown("", elem_id="assistant-status")
        gr.Examples(ASSIST_EXAMPLES, inputs=[message])

    @user_errors(as_html=True)
    def respond(text, history, max_new, temperature, top_p, rep, seed, stop, request: gr.Request):
        values = (max_new, temperature, top_p, rep, seed, stop)
        yield from handlers.ui_assist(text, history, *values, request=request)

    for trigger in (send.click, message.submit):
        trigger(respond, [message, chat, *params], [chat, message, status],
                concurrency_id=MODEL_LOCK, api_visibility="private")  # fmt: skip
    _wire_stop(stop, handlers)
    clear.click(lambda: ([], ""), None, [chat, status], queue=False, api_visibility="private")


def _api(handlers: Handlers) -> None:
    """Named endpoints for gradio_client; each streams partial text when called with submit()."""

    @user_errors
    def complete(
        prompt: str,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
        stop: list[str] | None = None,
        request: gr.Request = None,
    ) -> Iterator[str]:
        """Continue `prompt`; returns prompt + continuation."""
        params = parse_params(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              repetition_penalty=repetition_penalty, seed=seed, stop=stop)  # fmt: skip
        for out in handlers.run_complete(prompt, params, request):
            yield out.text

    @user_errors
    def fill(
        prompt: str,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
        stop: list[str] | None = None,
        request: gr.Request = None,
    ) -> Iterator[str]:
        """Fill the single <FILL_HERE> in `prompt`; returns prefix + middle + suffix."""
        params = parse_params(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              repetition_penalty=repetition_penalty, seed=seed, stop=stop)  # fmt: skip
        for out in handlers.run_fill(prompt, params, request):
            yield out.text

    @user_errors
    def assist(
        message: str,
        history: list[list[str]] | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.2,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
        stop: list[str] | None = None,
        request: gr.Request = None,
    ) -> Iterator[str]:
        """Answer `message` as the tech assistant; `history` is [[user, assistant], ...]."""
        params = parse_params(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              repetition_penalty=repetition_penalty, seed=seed, stop=stop)  # fmt: skip
        turns = [Turn(str(u), str(a)) for u, a in (history or [])]
        for out in handlers.run_assist(message, turns, params, request):
            yield out.text

    for fn in (complete, fill, assist):
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODEL_LOCK)


def build_ui(handlers: Handlers, *, model_line: str, context_length: int) -> gr.Blocks:
    with gr.Blocks(title="StarCoder Playground", analytics_enabled=False) as demo:
        gr.HTML(
            '<div class="header"><h1>StarCoder Playground</h1>'
            "<p>Complete code, fill in the middle, or ask the tech assistant.</p></div>"
        )
        gr.Markdown(model_line, elem_id="model-info")
        with gr.Tabs():
            params_slot = gr.Column(render=False)
            with params_slot:
                params = _param_inputs(context_length)
            _code_tab("completion", "Completion", COMPLETION_EXAMPLES,
                      "def fibonacci(n):", handlers, params)  # fmt: skip
            _code_tab("fim", "Fill-in-the-middle", FIM_EXAMPLES,
                      "Write code with one <FILL_HERE> where the model should fill in.",
                      handlers, params)  # fmt: skip
            _assist_tab(handlers, params)
        params_slot.render()
        gr.Markdown(NOTE, elem_id="license-note")
        _api(handlers)
    return demo


__all__ = ["build_ui", "turns_from_messages"]
