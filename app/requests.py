"""Typed requests, validated at the edge. Every message names the field, the limit and the value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from model.engine import GenerationParams
from model.errors import PlaygroundError

MAX_STOPS = 4
MAX_STOP_CHARS = 64
MAX_NEW_TOKENS = 8192
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    max_prompt_bytes: int = 1_000_000


def _err(field: str, msg: str) -> PlaygroundError:
    return PlaygroundError(f"`{field}` {msg}", field=field)


def check_text(field: str, value, limits: Limits, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _err(field, f"must be text; got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise _err(field, "is empty; type some code or a question first.")
    if "\x00" in value:
        raise _err(field, f"contains a NUL byte (at character {value.index(chr(0))}).")
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise _err(field, f"contains a lone surrogate U+{ord(ch):04X} at character {i}.")
    size = len(value.encode("utf-8"))
    if size > limits.max_prompt_bytes:
        raise _err(field, f"is {size:,} bytes; the limit is {limits.max_prompt_bytes:,} bytes.")
    return value


def _number(field: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _err(field, f"must be a number; got {value!r}.") from None
    if math.isnan(x) or math.isinf(x):
        raise _err(field, f"must be a finite number; got {value!r}.")
    below = x <= lo if lo_open else x < lo
    if below or x > hi:
        bracket = "(" if lo_open else "["
        raise _err(field, f"must be in {bracket}{lo:g}, {hi:g}]; got {x:g}.")
    return x


def _integer(field: str, value, lo: int, hi: int) -> int:
    x = _number(field, value, lo, hi)
    if x != int(x):
        raise _err(field, f"must be a whole number; got {x:g}.")
    return int(x)


def parse_stops(value) -> tuple[str, ...]:
    """Stops arrive as a list or as one string with one stop per line."""
    if value in (None, ""):
        return ()
    items: Sequence = value.split("\n") if isinstance(value, str) else value
    stops = tuple(s for s in (str(x) for x in items) if s != "")
    if len(stops) > MAX_STOPS:
        raise _err("stop", f"allows at most {MAX_STOPS} sequences; got {len(stops)}.")
    for s in stops:
        if len(s) > MAX_STOP_CHARS:
            raise _err(
                "stop", f"sequences are limited to {MAX_STOP_CHARS} characters; got {len(s)}."
            )
        check_text("stop", s, Limits())
    return stops


def parse_params(
    *,
    max_new_tokens=256,
    temperature=0.2,
    top_p=0.9,
    repetition_penalty=1.2,
    seed=None,
    stop=None,
) -> GenerationParams:
    seed_value = None if seed in (None, "", -1) else _integer("seed", seed, 0, MAX_SEED)
    return GenerationParams(
        max_new_tokens=_integer("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS),
        temperature=_number("temperature", temperature, 0.0, 1.0),
        top_p=_number("top_p", top_p, 0.0, 1.0, lo_open=True),
        repetition_penalty=_number("repetition_penalty", repetition_penalty, 1.0, 2.0),
        seed=seed_value,
        stop=parse_stops(stop),
    )


def check_context(field: str, prompt_tokens: int, max_new_tokens: int, context: int) -> None:
    """TGI-style: name both numbers when prompt + max_new_tokens exceed the context."""
    if prompt_tokens + max_new_tokens > context:
        raise PlaygroundError(
            f"`{field}` tokens + `max_new_tokens` must be <= {context} (the model's context). "
            f"Given: {prompt_tokens} `{field}` tokens and {max_new_tokens} `max_new_tokens`.",
            field=field,
        )
