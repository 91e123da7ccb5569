"""Chat-template prompts without transformers: the web process renders the model's own Jinja
template (from tokenizer_config.json, carried in ModelInfo) the way apply_chat_template does."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from model.errors import PlaygroundError
from model.prompts import AssistantPrompt, Turn, fit_prompt


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


def chat_prompt(
    template: str,
    history: Sequence[Turn],
    message: str,
    *,
    budget_tokens: int,
    count_tokens,
    special: dict[str, str] | None = None,
) -> AssistantPrompt:
    """The conversation through the model's chat template, oldest turns dropped to fit."""
    return fit_prompt(
        lambda _examples, turns: render_chat(
            template, chat_messages(turns, message), special=special
        ),
        (),
        history,
        budget_tokens=budget_tokens,
        count_tokens=count_tokens,
    )
