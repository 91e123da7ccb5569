"""Typed requests, validated at the edge. Every message names the field, the limit and the value."""

from __future__ import annotations

import math
from collections.abc import Sequence

from app.limits import Limits
from model.engine import context_overflow
from model.errors import PlaygroundError
from model.prompts.templates import Turn

# Editors send their templates' stops (Continue: a dozen for StarCoder's FIM); vLLM sets no cap.
MAX_STOPS = 32
MAX_STOP_CHARS = 64
MAX_NEW_TOKENS = 8192
MAX_SEED = 2**63 - 1


def err(field: str, msg: str) -> PlaygroundError:
    return PlaygroundError(f"`{field}` {msg}", field=field)


MODES = ("completion", "fim", "assistant")


def check_mode(mode) -> str:
    """One of the playground's modes: the share store, /compare and the Compare tab ask."""
    if mode not in MODES:
        raise err("mode", f"must be one of {', '.join(MODES)}; got {str(mode)[:40]!r}.")
    return mode


def check_text(field: str, value, limits: Limits, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise err(field, f"must be text; got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise err(field, "is empty; type some code or a question first.")
    if "\x00" in value:
        raise err(field, f"contains a NUL byte (at character {value.index(chr(0))}).")
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise err(field, f"contains a lone surrogate U+{ord(ch):04X} at character {i}.")
    size = len(value.encode("utf-8"))
    if size > limits.max_prompt_bytes:
        raise err(field, f"is {size:,} bytes; the limit is {limits.max_prompt_bytes:,} bytes.")
    return value


def number(field: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise err(field, f"must be a number; got {value!r}.") from None
    if math.isnan(x) or math.isinf(x):
        raise err(field, f"must be a finite number; got {value!r}.")
    below = x <= lo if lo_open else x < lo
    if below or x > hi:
        bracket = "(" if lo_open else "["
        raise err(field, f"must be in {bracket}{lo:g}, {hi:g}]; got {x:g}.")
    return x


def integer(field: str, value, lo: int, hi: int) -> int:
    """Exact for any size: a float would print 2**63 - 1 as 9.22337e+18 and lose digits."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise err(field, f"must be a whole number; got {type(value).__name__}.")
    if isinstance(value, int):
        x = value
    else:
        real = number(field, value, -math.inf, math.inf)
        if not real.is_integer():
            raise err(field, f"must be a whole number; got {real:g}.")
        x = (
            int(value)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit()
            else int(real)
        )
    if not lo <= x <= hi:
        raise err(field, f"must be in [{lo}, {hi}]; got {x}.")
    return x


def parse_stops(value) -> tuple[str, ...]:
    """Stops arrive as a list or as one string with one stop per line."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: Sequence = value.split("\n")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise err("stop", f"must be a list of strings; got {type(value).__name__}.")
    for x in items:
        if not isinstance(x, str):
            raise err("stop", f"must be a list of strings; got an item of type {type(x).__name__}.")
    stops = tuple(s for s in items if s != "")
    if len(stops) > MAX_STOPS:
        raise err("stop", f"allows at most {MAX_STOPS} sequences; got {len(stops)}.")
    for s in stops:
        if len(s) > MAX_STOP_CHARS:
            raise err(
                "stop", f"sequences are limited to {MAX_STOP_CHARS} characters; got {len(s)}."
            )
        check_text("stop", s, Limits(), allow_empty=True)  # "\n\n" is a fine stop
    return stops


def check_context(field: str, prompt_tokens: int, max_new_tokens: int, context: int) -> None:
    if prompt_tokens + max_new_tokens > context:
        raise PlaygroundError(
            context_overflow(field, prompt_tokens, max_new_tokens, context), field=field
        )


def check_scored(prompt_tokens: int, limit: int) -> None:
    """A prompt scored with `echo` + `logprobs` runs a forward over every token of it."""
    if limit and prompt_tokens > limit:
        raise PlaygroundError(
            f"`prompt` tokens scored with `echo` + `logprobs` must be <= {limit:,} "
            f"(MAX_SCORED_TOKENS). Given: {prompt_tokens:,} `prompt` tokens.",
            field="prompt",
            kind="too_large",
        )


# --- chat history ---------------------------------------------------------------------------

# Each turn costs a token count and prompt text; a context of 8,192 tokens rarely holds more.
MAX_HISTORY_TURNS = 50
_ROLES = ("user", "assistant")


def _history_err(where: str, msg: str) -> PlaygroundError:
    return PlaygroundError(f"`history{where}` {msg}", field="history")


def _kind(value) -> str:
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return "None" if value is None else type(value).__name__


def _count_turns(raw) -> None:
    if not isinstance(raw, list | tuple):
        raise _history_err("", f"must be a list of [user, assistant] pairs; got {_kind(raw)}.")
    if len(raw) > MAX_HISTORY_TURNS:
        raise _history_err(
            "",
            f"has {len(raw)} turns; the limit is {MAX_HISTORY_TURNS}. "
            "Send only the most recent turns.",
        )


def _pair(i: int, item) -> tuple[str, str]:
    """One turn as (user, assistant): a Turn, or a [user, assistant] pair of strings."""
    pair = (item.user, item.assistant) if hasattr(item, "assistant") else item
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise _history_err(f"[{i}]", f"must be a [user, assistant] pair; got {_kind(pair)}.")
    for j, text in enumerate(pair):
        if not isinstance(text, str):
            raise _history_err(
                f"[{i}][{j}]", f"(the {_ROLES[j]}'s text) must be text; got {_kind(text)}."
            )
    return pair[0], pair[1]


def parse_history(raw) -> tuple[Turn, ...]:
    """The API's history, [[user, assistant], ...], as Turns; a wrong shape is named with its
    index. Counted before anything is built, so a huge history costs nothing."""
    if raw is None:
        return ()
    _count_turns(raw)
    return tuple(Turn(*_pair(i, item)) for i, item in enumerate(raw))


def check_history(turns, limits: Limits) -> tuple[Turn, ...]:
    """Bound a conversation before any token is counted: its turns, its UTF-8 bytes (all turns
    together, the same limit as one prompt), each text. Returns it as a tuple of Turns."""
    _count_turns(turns)
    pairs = [_pair(i, item) for i, item in enumerate(turns)]
    # surrogatepass: a lone surrogate must not crash the count; check_text names it below.
    size = sum(len(text.encode("utf-8", "surrogatepass")) for pair in pairs for text in pair)
    if size > limits.max_prompt_bytes:
        raise _history_err(
            "",
            f"is {size:,} bytes; the limit is {limits.max_prompt_bytes:,} bytes. "
            "Send only the most recent turns.",
        )
    for i, pair in enumerate(pairs):
        for j, text in enumerate(pair):
            check_text(f"history[{i}][{j}]", text, limits, allow_empty=True)
    return tuple(Turn(*pair) for pair in pairs)


def recent_turns(turns: list[Turn], limits: Limits) -> list[Turn]:
    """The newest turns of a browser chat that fit the history limits. A long chat in the page
    must keep working: the model's context would drop the oldest turns anyway."""
    kept: list[Turn] = []
    size = 0
    for turn in reversed(turns):
        size += len(turn.user.encode("utf-8", "surrogatepass"))
        size += len(turn.assistant.encode("utf-8", "surrogatepass"))
        if len(kept) == MAX_HISTORY_TURNS or size > limits.max_prompt_bytes:
            break
        kept.append(turn)
    return kept[::-1]
