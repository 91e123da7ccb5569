"""The one request schema: every generation parameter, declared once.

Each `Parameter` holds a name, its type and range, where its default comes from, its help text
and its label. Every edge derives from the table: the page's controls and their order
(web/ui.py), the named Gradio endpoints' signatures (web/api.py), `/v1`'s field names
(web/openai_api.py), share records and the share page's form (services/shares.py), validation
messages (here) and the README's parameter table (`python -m app.parameters` prints it; a test
keeps the README in step). Adding a parameter is one row here plus the engine field it sets.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.validation import (
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_STOPS,
    MODES,
    err,
    integer,
    number,
    parse_stops,
)
from model.engine import GenerationParams, default_max_new_tokens
from model.errors import PlaygroundError

_BASE = GenerationParams()


@dataclass(frozen=True)
class Parameter:
    """One generation parameter. `kind` picks its parser and its control:
    "int" and "float" (a slider over [lo, hi]), "seed" (a box; empty means random), "stops"
    (one per line, or a list), "flag" (true or false)."""

    name: str  # the GenerationParams field, and the page's and the named API's name for it
    kind: str
    label: str
    help: str  # one line: the slider's note, the README's table
    lo: float = 0
    hi: float = 0
    lo_open: bool = False  # (lo, hi] rather than [lo, hi]
    step: float = 1
    # The default when a caller leaves it out: a value, or where it comes from. `model`: the
    # model's own (its ModelSpec field of the same name); `mode`: the mode's (a function of it).
    default: Any = None
    model_default: bool = False
    mode_default: Callable[[str], Any] | None = None
    aliases: tuple[str, ...] = ()  # what /v1 calls it, preferred first (OpenAI's names)
    v1_default: Any = None  # /v1's default where it differs from the page's (vLLM's)
    # Where it is offered: the page (a control, a share field, a named-API argument), /v1.
    page: bool = True
    v1: bool = True
    context_bound: bool = False  # a token count: the slider ends at the model's context
    dom_id: str = ""  # the page control's id after the tab's name; default: the name, hyphenated

    @property
    def control_id(self) -> str:
        return self.dom_id or self.name.replace("_", "-")

    def parse(self, value, field: str | None = None) -> Any:
        """The validated value; messages name `field` (the caller's name for it)."""
        try:
            return _PARSERS[self.kind](self, value)
        except PlaygroundError as exc:
            if field is None or field == self.name:
                raise
            raise exc.renamed({self.name: field}) from None

    def default_for(self, spec, mode: str) -> Any:
        """The value a caller who leaves this out gets, with model `spec` in `mode`."""
        if self.model_default:  # no model: the engine's base value (StarCoder playground's)
            return getattr(_BASE if spec is None else spec, self.name)
        if self.mode_default is not None:
            return self.mode_default(mode)
        return self.default

    @property
    def annotation(self) -> Any:
        """Its Python type, for the named API's published signature."""
        return {"int": int, "float": float, "seed": int, "stops": list[str], "flag": bool}[
            self.kind
        ]

    @property
    def range_text(self) -> str:
        if self.kind in ("int", "float"):
            hi = "the model's context" if self.context_bound else f"{self.hi:g}"
            return f"{'(' if self.lo_open else '['}{self.lo:g}, {hi}]"
        return {
            "seed": "0 to 2^63-1, or empty",
            "stops": f"up to {MAX_STOPS}",
            "flag": "true or false",
        }[self.kind]


def _whole(p: Parameter, value) -> int:
    return integer(p.name, value, int(p.lo), int(p.hi))


def _real(p: Parameter, value) -> float:
    return number(p.name, value, p.lo, p.hi, lo_open=p.lo_open)


def _seed(p: Parameter, value) -> int | None:
    return None if value in (None, "", -1) else integer(p.name, value, 0, MAX_SEED)


def _flag(p: Parameter, value) -> bool:
    if not isinstance(value, bool):
        raise err(p.name, f"must be true or false; got {type(value).__name__}.")
    return value


def _stops(p: Parameter, value) -> tuple[str, ...]:
    return parse_stops(value)


_PARSERS: dict[str, Callable[[Parameter, Any], Any]] = {
    "int": _whole, "float": _real, "seed": _seed, "stops": _stops, "flag": _flag,
}  # fmt: skip


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "max_new_tokens", "int", "Max new tokens",
        "the most tokens the model writes; prompt + new tokens must fit the model's context",
        lo=1, hi=MAX_NEW_TOKENS, mode_default=default_max_new_tokens,
        aliases=("max_completion_tokens", "max_tokens"), v1_default=16, context_bound=True,
    ),
    Parameter(
        "temperature", "float", "Temperature",
        "0 means greedy; the selected model's default when left out",
        lo=0, hi=1, step=0.05, model_default=True,
    ),
    Parameter(
        "top_p", "float", "Top-p", "sample only among the likeliest tokens that make up this "
        "much probability", lo=0, hi=1, lo_open=True, step=0.05, default=_BASE.top_p,
    ),
    Parameter(
        "repetition_penalty", "float", "Repetition penalty",
        "above 1 makes tokens already written less likely; the model's default when left out",
        lo=1, hi=2, step=0.05, model_default=True,
    ),
    Parameter(
        "seed", "seed", "Seed", "empty: random; a number repeats a sampled run exactly",
    ),
    Parameter(
        "stop", "stops", f"Stop sequences (one per line, at most {MAX_STOPS})",
        "the text ends before the first of these; they are not shown", default=(),
        dom_id="stop-sequences",  # "-stop" is the tab's Stop button
    ),
    # vLLM's extras, so a benchmark can fix the length of what is written.
    Parameter(
        "min_tokens", "int", "Min tokens", "write at least this many tokens before the text "
        "may end", lo=0, hi=MAX_NEW_TOKENS, default=0, page=False,
    ),
    Parameter(
        "ignore_eos", "flag", "Ignore end of text",
        "run on past the model's end-of-text token, to max_new_tokens or a stop",
        default=False, page=False,
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Schema:
    """A table of parameters and the engine's parameter type they fill in."""

    parameters: tuple[Parameter, ...] = PARAMETERS
    params_type: type = GenerationParams

    @property
    def page(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.page)

    @property
    def v1(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.v1)

    def defaults(self, spec, mode: str) -> dict[str, Any]:
        """Every parameter's value when left out, for `spec` (None: the engine's base values)."""
        return {p.name: p.default_for(spec, mode) for p in self.parameters}

    def resolve(
        self,
        values: Mapping[str, Any],
        spec=None,
        mode: str = "completion",
        fields: Mapping[str, str] | None = None,
        **extra,
    ):
        """Validated engine parameters from `values` (by name); a value left out or None takes
        its default for `spec` in `mode`. `fields` maps a name to the caller's name for it,
        which every message uses. `extra` sets engine fields no caller names (logprobs)."""
        fields = fields or {}
        parsed = {}
        for p in self.parameters:
            value = values.get(p.name)
            if value is None:
                value = p.default_for(spec, mode)
            parsed[p.name] = p.parse(value, fields.get(p.name))
        least, most = parsed.get("min_tokens", 0), parsed.get("max_new_tokens")
        if most is not None and least > most:
            field = fields.get("min_tokens", "min_tokens")
            raise err(field, f"must be at most the token limit, {most}; got {least}.")
        return self.params_type(**parsed, **extra)

    def record(self, params) -> dict[str, Any]:
        """The page's parameters as a share stores them (JSON: stops as a list)."""
        return {p.name: _jsonable(getattr(params, p.name)) for p in self.page}

    def form(self, stored: Mapping[str, Any], spec, mode: str) -> dict[str, Any]:
        """The page's controls' values for stored parameters: a value that does not validate
        keeps the model's default, so every share the store accepted reopens."""
        form = {}
        for p in self.page:
            value = p.default_for(spec, mode)
            if stored.get(p.name) is not None:
                with contextlib.suppress(PlaygroundError):  # the default stands
                    value = p.parse(stored[p.name])
            form[p.name] = _control_value(p, value)
        return form

    def with_parameter(self, parameter: Parameter, params_type: type | None = None) -> Schema:
        return dataclasses.replace(
            self,
            parameters=(*self.parameters, parameter),
            params_type=params_type or self.params_type,
        )

    def readme_table(self) -> str:
        rows = [
            "| parameter | `/v1` name | range | default | what it does |",
            "|---|---|---|---|---|",
        ]
        for p in self.parameters:
            names = ", ".join(f"`{a}`" for a in p.aliases) if p.aliases else f"`{p.name}`"
            v1 = names if p.v1 else "—"
            rows.append(
                f"| `{p.name}`{'' if p.page else ' (API only)'} | {v1} | {p.range_text} | "
                f"{_default_text(p)} | {p.help} |"
            )
        return "\n".join(rows)


SCHEMA = Schema()


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _control_value(p: Parameter, value):
    """A value as the page's control holds it: a seed box holds text, a stops box lines."""
    if p.kind == "seed":
        return "" if value is None else str(value)
    if p.kind == "stops":
        return "\n".join(value)
    return value


def _default_text(p: Parameter) -> str:
    if p.model_default:
        return "the model's"
    if p.mode_default is not None:
        by_mode = {mode: p.mode_default(mode) for mode in MODES}
        common = by_mode["completion"]
        odd = ", ".join(f"{m}: {v}" for m, v in by_mode.items() if v != common)
        text = f"{common}" + (f" ({odd})" if odd else "")
        if p.v1_default is not None:  # vLLM's: a chat left without a limit gets the rest
            rest = " (chat: what the context leaves)" if p.context_bound else ""
            text += f"; `/v1`: {p.v1_default}{rest}"
        return text
    if p.default in (None, ()):
        return "none"
    return f"{p.default}".lower() if isinstance(p.default, bool) else f"{p.default:g}"


def parse_params(**values) -> GenerationParams:
    """Validated parameters from the page's names; one left out takes the engine's base value
    (the original StarCoder playground's defaults)."""
    return SCHEMA.resolve(values, None, "completion")


def names(parameters: Iterable[Parameter]) -> tuple[str, ...]:
    return tuple(p.name for p in parameters)


if __name__ == "__main__":
    print(SCHEMA.readme_table())
