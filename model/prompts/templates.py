"""Turns a mode plus user text into the model's prompt: FIM templates per family, the ta-prompt.

Pure string work, torch-free and tokenizer-free: callers pass `count_tokens` where sizes matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from model.engine import context_overflow
from model.errors import PlaygroundError
from model.prompts.families import FimTemplate
from model.prompts.families import detect_fim_template as detect_fim_template  # re-exported
from model.tokens.shaping import HoldTrailingSpace, Plain, Reply, whole

FILL_MARKER = "<FILL_HERE>"
TA_PROMPT_PATH = Path(__file__).with_name("ta_prompt.txt")
DIALOGUE_SEPARATOR = "-----"
ASSISTANT_STOPS = ("Human:", "-----", "Assistant:")


# --- fill-in-the-middle --------------------------------------------------------------------


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


SEPARATOR = f"\n\n{DIALOGUE_SEPARATOR}\n\n"


def _render(ta: TaPrompt, examples: Sequence[str], history: Sequence[Turn], message: str) -> str:
    parts = [ta.preamble, *examples]
    convo = [_turn_text(t) for t in history]
    convo.append(_ask_text(message))
    parts.append("\n\n".join(convo))
    return SEPARATOR.join(parts)


def _turn_text(turn: Turn) -> str:
    return f"Human: {turn.user}\n\nAssistant: {turn.assistant}"


def _ask_text(message: str) -> str:
    return f"Human: {message}\n\nAssistant:"


# A sum of piece counts is an estimate: a token can form (or split) where two pieces meet. So the
# assembled prompt is always counted exactly: once as given, then at most this many times.
MAX_EXACT_COUNTS = 3

# () -> (tokens always in the prompt, tokens of each droppable piece newest first: the turns from
# the last, then the examples from the last). Lazy, so pieces too old to fit are never counted.
Measure = Callable[[], tuple[int, Iterable[int]]]


def fit_prompt(
    render: Callable[[Sequence[str], Sequence[Turn]], str],
    examples: Sequence[str],
    history: Sequence[Turn],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    measure: Measure,
    max_new_tokens: int = 0,
) -> AssistantPrompt:
    """Render, dropping the oldest examples first, then the oldest turns, until it fits.

    count_tokens may be a round trip to the model worker, and counting the whole prompt once per
    dropped turn was quadratic (18 s for a 1,000-turn history). Instead each piece that could
    fit is counted once, the sums pick how much to drop, and the assembled prompt is counted
    exactly at most 1 + MAX_EXACT_COUNTS times: O(pieces) calls over O(prompt) text.
    """
    prompt = render(examples, history)
    needed = count_tokens(prompt)
    if needed <= budget_tokens:  # the common case: one count, nothing dropped
        return AssistantPrompt(prompt, 0, 0)
    n, n_examples = len(examples) + len(history), len(examples)
    if n == 0:
        raise _too_long(needed, budget_tokens, max_new_tokens)
    fixed, newest_first = measure()
    # kept[k]: tokens of the pieces left after dropping the k oldest, known for k >= oldest.
    kept, oldest = [0] * (n + 1), n
    for size in newest_first:
        if fixed + kept[oldest] > budget_tokens:
            break  # older pieces only add to a prompt that is already too long
        oldest -= 1
        kept[oldest] = kept[oldest + 1] + max(0, size)

    def first_fit(start: int, per_seam: float) -> int:
        """The fewest drops, from `start`, whose estimate fits; else drop all that can go."""
        for k in range(max(start, oldest), n):
            if fixed + kept[k] + math.ceil(per_seam * (n - k + 1)) <= budget_tokens:
                return k
        return n

    per_seam, d = 0.0, 0
    for attempt in range(1, MAX_EXACT_COUNTS + 1):
        if d >= oldest:
            # What the exact count found beyond the estimate, spread over the seams: the next
            # pick's estimate covers `needed`, so it drops strictly more.
            per_seam = max(per_seam, (needed - fixed - kept[d]) / (n - d + 1))
        d = first_fit(d + 1, per_seam) if attempt < MAX_EXACT_COUNTS else n
        dropped_ex = min(d, n_examples)
        dropped_turns = d - dropped_ex
        prompt = render(examples[dropped_ex:], history[dropped_turns:])
        needed = count_tokens(prompt)
        if needed <= budget_tokens:
            return AssistantPrompt(prompt, dropped_ex, dropped_turns)
        if d == n:
            break
    raise _too_long(needed, budget_tokens, max_new_tokens)


def _too_long(needed: int, budget_tokens: int, max_new_tokens: int) -> PlaygroundError:
    """The one overflow message (model/engine.context_overflow), for the whole prompt."""
    context = budget_tokens + max_new_tokens
    return PlaygroundError(
        context_overflow("message", needed, max_new_tokens, context), field="message"
    )


def assistant_prompt(
    ta: TaPrompt,
    history: Sequence[Turn],
    message: str,
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    max_new_tokens: int = 0,
) -> AssistantPrompt:
    """The ta-prompt chat: preamble, example dialogues, then this conversation."""

    def measure() -> tuple[int, Iterator[int]]:
        # The prompt is exactly: preamble+SEP, (example+SEP)..., (turn+"\n\n")..., the ask.
        extra = count_tokens("")  # what a tokenizer adds to every text (a BOS): counted once
        fixed = count_tokens(ta.preamble + SEPARATOR) + count_tokens(_ask_text(message)) - extra
        newest_first = chain(
            (_turn_text(t) + "\n\n" for t in reversed(history)),
            (e + SEPARATOR for e in reversed(ta.dialogues)),
        )
        return fixed, (count_tokens(p) - extra for p in newest_first)

    return fit_prompt(
        lambda examples, turns: _render(ta, examples, turns, message),
        ta.dialogues,
        history,
        budget_tokens=budget_tokens,
        count_tokens=count_tokens,
        measure=measure,
        max_new_tokens=max_new_tokens,
    )


def clean_reply(text: str) -> str:
    """Trim an assistant reply: stop markers are cut by the engine, whitespace here."""
    return whole(Reply(ASSISTANT_STOPS), text)


# --- where a fill ends ----------------------------------------------------------------------


def fim_gap_is_single_line(suffix: str) -> bool:
    """The gap sits inside a line that has code after it (`x = <FILL_HERE>(y)`): the middle
    belongs to that one line."""
    return bool(suffix.split("\n", 1)[0].strip())


def fim_stop_sequences(
    prefix: str, suffix: str, *, single_line: bool | None = None
) -> tuple[str, ...]:
    """Stops that end a middle where the code after the gap takes over.

    A small FIM model rarely emits its end token at the right place (tiny-starcoder ends 1% of
    middles there) and goes on to re-write the suffix. So a gap inside a line with code after
    it (or `single_line=True`, when the caller knows) ends at the first newline; any other gap
    ends when the model starts the suffix's first non-blank line itself. (A middle that ends
    with the rest of its line, as in `sum(x)` before `)`, may or may not re-write it, so that
    is left alone. `prefix` is in the signature so a rule can look at the gap's line.)
    """
    if fim_gap_is_single_line(suffix) if single_line is None else single_line:
        return ("\n",)
    later = suffix.split("\n")[1:]  # the lines after the gap's own
    first = next((line.rstrip() for line in later if line.strip()), None)
    return ("\n" + first,) if first else ()


def middle_shaper(suffix: str) -> Plain:
    """How a fill's middle is cut: its trailing whitespace goes when the suffix starts on a new
    line, where it could only add blank lines before it (a middle stopped at the suffix's first
    line keeps the blank lines the suffix already has)."""
    rest_of_line, newline, _ = suffix.partition("\n")
    return HoldTrailingSpace() if newline and not rest_of_line.strip() else Plain()


def trim_fim_middle(middle: str, suffix: str) -> str:
    return whole(middle_shaper(suffix), middle)
