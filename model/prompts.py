"""Turns a mode plus user text into the model's prompt: FIM templates per family, the ta-prompt.

Pure string work, torch-free and tokenizer-free: callers pass `count_tokens` where sizes matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.errors import PlaygroundError

FILL_MARKER = "<FILL_HERE>"
TA_PROMPT_PATH = Path(__file__).with_name("ta_prompt.txt")
DIALOGUE_SEPARATOR = "-----"
ASSISTANT_STOPS = ("Human:", "-----", "Assistant:")


# --- fill-in-the-middle --------------------------------------------------------------------


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    template: str  # str.format with prefix/suffix and the three tokens
    stop_tokens: tuple[str, ...]

    def format(self, prefix: str, suffix: str) -> str:
        return self.template.format(
            pre=self.prefix_token,
            suf=self.suffix_token,
            mid=self.middle_token,
            prefix=prefix,
            suffix=suffix,
        )


# Order matters: StarCoder2 is StarCoder's tokens plus <file_sep>, so it is tried first.
FIM_TEMPLATES: tuple[FimTemplate, ...] = (
    FimTemplate(
        "starcoder2",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "{pre}{prefix}{suf}{suffix}{mid}",
        ("<|endoftext|>", "<file_sep>"),
    ),
    FimTemplate(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "{pre}{prefix}{suf}{suffix}{mid}",
        ("<|endoftext|>",),
    ),
    FimTemplate(
        "santacoder",
        "<fim-prefix>",
        "<fim-suffix>",
        "<fim-middle>",
        "{pre}{prefix}{suf}{suffix}{mid}",
        ("<|endoftext|>",),
    ),
    FimTemplate(
        "codellama",
        "▁<PRE>",
        "▁<SUF>",
        "▁<MID>",
        "<PRE> {prefix} <SUF>{suffix} <MID>",
        ("<EOT>",),
    ),
    FimTemplate(
        "deepseek-coder",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        "{pre}{prefix}{suf}{suffix}{mid}",
        ("<|EOT|>", "<｜end▁of▁sentence｜>"),
    ),
)

# Code Llama's tokenizer registers the markers with or without the SentencePiece space.
_CODELLAMA_MARKERS = ({"<PRE>", "<SUF>", "<MID>"}, {"▁<PRE>", "▁<SUF>", "▁<MID>"})


def detect_fim_template(special_tokens: frozenset[str] | set[str]) -> FimTemplate | None:
    """The FIM template whose marker tokens the tokenizer has, or None."""
    for tpl in FIM_TEMPLATES:
        if tpl.family == "codellama":
            if any(m <= special_tokens for m in _CODELLAMA_MARKERS):
                return tpl
            continue
        needed = {tpl.prefix_token, tpl.suffix_token, tpl.middle_token}
        if tpl.family == "starcoder2":
            needed = needed | {"<file_sep>"}
        if needed <= special_tokens:
            return tpl
    return None


def split_fim(code: str) -> tuple[str, str]:
    """Split user code at its single <FILL_HERE> marker into (prefix, suffix)."""
    count = code.count(FILL_MARKER)
    if count != 1:
        raise PlaygroundError(
            f"`prompt` must contain exactly one {FILL_MARKER} marker for fill-in-the-middle; "
            f"found {count}.",
            field="prompt",
        )
    prefix, suffix = code.split(FILL_MARKER)
    return prefix, suffix


def fim_prompt(code: str, template: FimTemplate | None, model_id: str) -> tuple[str, str, str]:
    """Return (model prompt, prefix, suffix) for fill-in-the-middle."""
    prefix, suffix = split_fim(code)
    if template is None:
        raise PlaygroundError(
            f"The model `{model_id}` does not support fill-in-the-middle: its tokenizer has no "
            "FIM tokens (such as <fim_prefix>). Use completion mode, or a FIM-trained model.",
            field="model",
            kind="unsupported",
        )
    return template.format(prefix, suffix), prefix, suffix


# --- tech assistant -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaPrompt:
    """BigCode's ta-prompt format: a preamble, then example dialogues separated by -----."""

    preamble: str
    dialogues: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TaPrompt:
        chunks = [c.strip("\n") for c in _split_dialogues(text)]
        if not chunks or not chunks[0].strip():
            raise PlaygroundError("ta-prompt file has no preamble", field="ta_prompt")
        dialogues = tuple(c for c in chunks[1:] if c.strip())
        for d in dialogues:
            if "Human:" not in d or "Assistant:" not in d:
                raise PlaygroundError(
                    "every ta-prompt dialogue needs `Human:` and `Assistant:` turns",
                    field="ta_prompt",
                )
        return cls(chunks[0], dialogues)

    @classmethod
    def load(cls, path: str | Path | None = None) -> TaPrompt:
        return cls.parse(Path(path or TA_PROMPT_PATH).read_text(encoding="utf-8"))


def _split_dialogues(text: str) -> list[str]:
    chunks, current = [], []
    for line in text.splitlines():
        if line.strip() == DIALOGUE_SEPARATOR:
            chunks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    chunks.append("\n".join(current))
    return chunks


@dataclass(frozen=True)
class Turn:
    user: str
    assistant: str


@dataclass(frozen=True)
class AssistantPrompt:
    prompt: str
    dropped_examples: int
    dropped_turns: int

    @property
    def notice(self) -> str | None:
        parts = []
        if self.dropped_examples:
            parts.append(f"{self.dropped_examples} example dialogue(s)")
        if self.dropped_turns:
            parts.append(f"the {self.dropped_turns} oldest turn(s) of this conversation")
        if not parts:
            return None
        return (
            "The conversation outgrew the model's context, so "
            + " and ".join(parts)
            + (" were left out of the prompt.")
        )


def _render(ta: TaPrompt, examples: Sequence[str], history: Sequence[Turn], message: str) -> str:
    parts = [ta.preamble, *examples]
    convo = [f"Human: {t.user}\n\nAssistant: {t.assistant}" for t in history]
    convo.append(f"Human: {message}\n\nAssistant:")
    parts.append("\n\n".join(convo))
    return f"\n\n{DIALOGUE_SEPARATOR}\n\n".join(parts)


def fit_prompt(
    render: Callable[[Sequence[str], Sequence[Turn]], str],
    examples: Sequence[str],
    history: Sequence[Turn],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> AssistantPrompt:
    """Render, dropping the oldest examples first, then the oldest turns, until it fits."""
    examples, turns = list(examples), list(history)
    dropped_ex = dropped_turns = 0
    while True:
        prompt = render(examples, turns)
        needed = count_tokens(prompt)
        if needed <= budget_tokens:
            return AssistantPrompt(prompt, dropped_ex, dropped_turns)
        if examples:
            examples.pop(0)
            dropped_ex += 1
        elif turns:
            turns.pop(0)
            dropped_turns += 1
        else:
            raise PlaygroundError(
                f"`message` is too long for the model's context: the prompt needs {needed} "
                f"tokens but only {budget_tokens} are left after `max_new_tokens`. Shorten the "
                "message or lower max_new_tokens.",
                field="message",
            )


def assistant_prompt(
    ta: TaPrompt,
    history: Sequence[Turn],
    message: str,
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
) -> AssistantPrompt:
    """The ta-prompt chat: preamble, example dialogues, then this conversation."""
    return fit_prompt(
        lambda examples, turns: _render(ta, examples, turns, message),
        ta.dialogues,
        history,
        budget_tokens=budget_tokens,
        count_tokens=count_tokens,
    )


def clean_reply(text: str) -> str:
    """Trim an assistant reply: stop markers are cut by the engine, whitespace here."""
    for stop in ASSISTANT_STOPS:
        idx = text.find(stop)
        if idx != -1:
            text = text[:idx]
    return text.strip()
