"""Chat-template prompts without transformers: the web process renders the model's own Jinja
template (from tokenizer_config.json, carried in ModelInfo) the way apply_chat_template does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from model.errors import PlaygroundError
from model.prompts.templates import AssistantPrompt, Turn, fit_prompt


def _raise(message: str):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(template: str):
    # The same sandbox and options transformers uses for chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def chat_messages(history: Sequence[Turn], message: str) -> list[dict]:
    messages = []
    for turn in history:
        messages += [
            {"role": "user", "content": turn.user},
            {"role": "assistant", "content": turn.assistant},
        ]
    messages.append({"role": "user", "content": message})
    return messages


def render_chat(template: str, messages: list[dict], *, special: dict[str, str] | None = None):
    """The prompt for `messages`, ending with the assistant's turn opened."""
    try:
        return _compile(template).render(
            messages=messages, add_generation_prompt=True, **(special or {})
        )
    except TemplateError as exc:
        raise PlaygroundError(
            f"The model's chat template could not format this conversation: {exc}",
            field="message",
            kind="engine",
        ) from exc


# Each turn is measured in a conversation of its own with this stand-in for the message, so the
# count never re-tokenizes the message (up to 128 KiB) or the other turns.
STAND_IN = "x"


def chat_prompt(
    template: str,
    history: Sequence[Turn],
    message: str,
    *,
    budget_tokens: int,
    count_tokens,
    special: dict[str, str] | None = None,
    max_new_tokens: int = 0,
) -> AssistantPrompt:
    """The conversation through the model's chat template, oldest turns dropped to fit."""

    def render(turns: Sequence[Turn], ask: str) -> str:
        return render_chat(template, chat_messages(turns, ask), special=special)

    def measure() -> tuple[int, Iterator[int]]:
        # A turn's tokens: the template with it minus without it. The template's own text
        # (system prompt, BOS) cancels out, whatever the template puts around turns.
        bare = count_tokens(render((), STAND_IN))
        sizes = (count_tokens(render((t,), STAND_IN)) - bare for t in reversed(history))
        return count_tokens(render((), message)), sizes

    return fit_prompt(
        lambda _examples, turns: render(turns, message),
        (),
        history,
        budget_tokens=budget_tokens,
        count_tokens=count_tokens,
        measure=measure,
        max_new_tokens=max_new_tokens,
    )
