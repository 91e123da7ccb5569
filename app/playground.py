"""The three modes as services over an Engine: validate, build the prompt, stream, report.

ui.py and the API endpoints both call these; nothing here knows about Gradio.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from app.requests import Limits, check_context, check_text
from model.engine import (
    CancelToken,
    Delta,
    Done,
    Engine,
    GenerationParams,
    GenerationRequest,
    Queued,
)
from model.errors import PlaygroundError
from model.prompts import (
    ASSISTANT_STOPS,
    TaPrompt,
    Turn,
    assistant_prompt,
    clean_reply,
    detect_fim_template,
    fim_prompt,
)


@dataclass(frozen=True)
class Output:
    """One streamed state of a generation, as the user should see it."""

    mode: str
    text: str  # completion: prompt + continuation; fim: prefix + middle + suffix; chat: reply
    generated: str  # only what the model wrote
    prefix: str = ""  # the part of `text` before `generated`
    done: Done | None = None
    notice: str | None = None
    seconds: float = 0.0
    queue_position: int | None = None  # set while the request waits for a batch slot

    @property
    def generated_span(self) -> tuple[int, int]:
        return len(self.prefix), len(self.prefix) + len(self.generated)

    @property
    def status(self) -> str:
        if self.queue_position is not None:
            return f"Waiting for a free slot: position {self.queue_position} in the queue…"
        if self.done is None:
            return "Generating…"
        d = self.done
        rate = d.generated_tokens / self.seconds if self.seconds > 0 else 0.0
        why = {
            "eos": "end of text",
            "stop": "stop sequence",
            "length": "max_new_tokens reached",
            "cancelled": "stopped by you",
        }.get(d.reason, d.reason)
        return (
            f"{d.generated_tokens} tokens in {self.seconds:.1f} s ({rate:.1f} tokens/s) · "
            f"prompt {d.prompt_tokens} tokens · {why}"
        )


class Playground:
    def __init__(self, engine: Engine, ta: TaPrompt, limits: Limits | None = None):
        self.engine = engine
        self.ta = ta
        self.limits = limits or Limits()

    # -- modes ------------------------------------------------------------------------------

    def complete(
        self, prompt: str, params: GenerationParams, cancel: CancelToken, client: str = ""
    ) -> Iterator[Output]:
        check_text("prompt", prompt, self.limits)
        self._check_context("prompt", prompt, params)
        yield from self._run(
            "completion", prompt, params, cancel, prefix=prompt, suffix="", client=client
        )

    def fill(
        self, code: str, params: GenerationParams, cancel: CancelToken, client: str = ""
    ) -> Iterator[Output]:
        check_text("prompt", code, self.limits)
        info = self.engine.info
        template = detect_fim_template(info.special_tokens)
        model_prompt, prefix, suffix = fim_prompt(code, template, info.model_id)
        self._check_context("prompt", model_prompt, params)
        params = replace(params, stop=(*params.stop, *template.stop_tokens))
        yield from self._run(
            "fim", model_prompt, params, cancel, prefix=prefix, suffix=suffix, client=client
        )

    def assist(
        self,
        message: str,
        history: Sequence[Turn],
        params: GenerationParams,
        cancel: CancelToken,
        client: str = "",
    ) -> Iterator[Output]:
        check_text("message", message, self.limits)
        budget = self.engine.info.context_length - params.max_new_tokens
        if budget <= 0:
            check_context("message", 0, params.max_new_tokens, self.engine.info.context_length)
        built = assistant_prompt(
            self.ta, history, message, budget_tokens=budget, count_tokens=self.engine.count_tokens
        )
        params = replace(params, stop=(*params.stop, *ASSISTANT_STOPS))
        last = None
        run = self._run(
            "assistant", built.prompt, params, cancel, prefix="", suffix="", client=client
        )
        for out in run:
            reply = clean_reply(out.generated) if out.done else out.generated.lstrip()
            last = replace(out, text=reply, generated=reply, notice=built.notice)
            yield last

    # -- shared -----------------------------------------------------------------------------

    def _check_context(self, field: str, prompt: str, params: GenerationParams) -> None:
        n = self.engine.count_tokens(prompt)
        check_context(field, n, params.max_new_tokens, self.engine.info.context_length)

    def _run(
        self,
        mode: str,
        model_prompt: str,
        params: GenerationParams,
        cancel: CancelToken,
        *,
        prefix: str,
        suffix: str,
        client: str = "",
    ) -> Iterator[Output]:
        start = time.perf_counter()
        generated = ""
        request = GenerationRequest(model_prompt, params, client=client)
        for event in self.engine.stream(request, cancel):
            if isinstance(event, Delta):
                generated += event.text
                yield Output(mode, prefix + generated + suffix, generated, prefix)
            elif isinstance(event, Queued):
                yield Output(mode, prefix + suffix, "", prefix, queue_position=event.position)
            elif event.reason == "error":
                kind = event.error_kind or "engine"
                raise PlaygroundError(event.error or "Generation failed.", kind=kind)
            else:
                elapsed = time.perf_counter() - start
                yield Output(
                    mode, prefix + generated + suffix, generated, prefix, event, seconds=elapsed
                )
