"""The one token pipeline every in-process driver runs (LocalEngine, the batch in the worker).

    prepared = prepare(tokenizer, info, base_eos, request)   # ids, healing, EOS ids, stops
    stream = TokenStream(tokenizer, prepared)
    text = stream.push(token_id)   # what is safe to show; stream.ended once EOS or a stop hit
    tail = stream.finish()         # at the end: the decoder's and the stop matcher's rest

A request normally carries the prompt's ids already (`GenerationRequest.prompt_ids`: the web
process tokenized it once, to check it fits), so nothing is tokenized twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from model.engine import Done, GenerationRequest, ModelInfo, context_overflow
from model.tokens.decoding import IncrementalDecoder
from model.tokens.healing import Healing, heal_request
from model.tokens.stops import StopMatcher


@dataclass(frozen=True)
class EndHold:
    """End tokens a request may not write yet (min_tokens, ignore_eos): every end id until
    `min_tokens` tokens are written, and the model's own EOS ids (`ignored`) for good.
    Both drivers apply it before the draw: generate() through min_new_tokens and
    suppress_tokens (LocalEngine), the batch through RequestSamplingCB."""

    min_tokens: int
    end_ids: tuple[int, ...]
    ignored: tuple[int, ...]

    def blocked(self, generated: int) -> tuple[int, ...]:
        """The ids the next token may not be, with `generated` tokens written so far."""
        return self.end_ids if generated < self.min_tokens else self.ignored


@dataclass(frozen=True)
class Prepared:
    """A request made ready for a model: what to feed it and how to read what it writes."""

    ids: list[int]  # the prompt, healed (backed off) when healing applies
    eos_ids: list[int]  # ids that end the generation: the model's EOS and special-token stops
    text_stops: tuple[str, ...]  # stop sequences matched on the decoded text
    healing: Healing | None
    hold: EndHold | None = None  # with min_tokens or ignore_eos
    show_first_newline: bool = False  # GenerationParams.show_first_newline


def model_eos_ids(model, tokenizer) -> list[int]:
    """The ids that end any generation: the generation config's EOS and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def split_stops(
    tokenizer, info: ModelInfo, base_eos: Iterable[int], stops: Iterable[str]
) -> tuple[list[int], tuple[str, ...]]:
    """Stops that are special tokens end by id; the rest are matched on the text."""
    ids, texts = list(base_eos), []
    for s in stops:
        if s in info.special_tokens:
            ids.append(tokenizer.convert_tokens_to_ids(s))
        else:
            texts.append(s)
    return sorted(set(ids)), tuple(texts)


def prepare(
    tokenizer, info: ModelInfo, base_eos: Iterable[int], request: GenerationRequest
) -> Prepared:
    ids = request.prompt_ids
    if ids is None:  # a caller that did not tokenize (a benchmark, a test): do it here
        ids = tokenizer(request.prompt, add_special_tokens=True)["input_ids"]
    ids = list(ids)
    healing = heal_request(tokenizer, request, ids)
    if healing is not None:
        ids = list(healing.input_ids)
    p = request.params
    eos_ids, text_stops = split_stops(tokenizer, info, base_eos, p.stop)
    hold = None
    if p.min_tokens or p.ignore_eos:
        # A special token the caller named as a stop still ends the text (vLLM's stop ids).
        asked = set(split_stops(tokenizer, info, (), p.stop)[0])
        ignored = tuple(i for i in base_eos if i not in asked) if p.ignore_eos else ()
        hold = EndHold(p.min_tokens, tuple(eos_ids), ignored)
    return Prepared(ids, eos_ids, text_stops, healing, hold, p.show_first_newline)


def overflow(prepared: Prepared, request: GenerationRequest, context: int) -> Done | None:
    """The worker's one context check, for the batch and for a request run alone (seeded or
    scored): past the position table the forward fails, and in the batch it fails every other
    request with it. The app checks first (app/requests.check_context); this is for callers
    that did not, with the same words."""
    n, most = len(prepared.ids), request.params.max_new_tokens
    if n + most <= context:
        return None
    msg = context_overflow("prompt", n, most, context)
    return Done("error", n, 0, error=msg, error_kind="validation")


class TokenStream:
    """Token ids in, text out: EOS, incremental decoding, the healed text dropped (the prompt
    the user sees already has it), stop sequences held back and cut."""

    def __init__(self, tokenizer, prepared: Prepared):
        self._eos = set(prepared.eos_ids)
        self._decoder = IncrementalDecoder(tokenizer)
        # Stops are looked for only once min_tokens are written: the text they first see does
        # not start the output then.
        first = prepared.show_first_newline and prepared.hold is None
        self._matcher = StopMatcher(prepared.text_stops, show_first_newline=first)
        h = prepared.healing
        self._strip: Callable[[str], str] = h.stripper().feed if h is not None else str
        # The same, for the names of the tokens (log-probabilities): they add up to the text.
        self.name: Callable[[str], str] = h.stripper().feed if h is not None else str
        self.generated = 0  # tokens taken, EOS included
        # vLLM looks for stop sequences only once min_tokens are written; so do we.
        self._min_tokens = prepared.hold.min_tokens if prepared.hold is not None else 0
        self.reason = "length"  # "eos" or "stop" once one ends it

    @property
    def ended(self) -> bool:
        return self.reason != "length"

    def push(self, token: int) -> str:
        """The text this token makes safe to show ("" once ended)."""
        if self.ended:
            return ""
        self.generated += 1
        if token in self._eos:
            self.reason = "eos"
            return ""
        text = self._strip(self._decoder.push(token))
        if self.generated < self._min_tokens:
            return text
        text = self._matcher.feed(text)
        if self._matcher.stopped:
            self.reason = "stop"
        return text

    def finish(self) -> str:
        """The rest held back, once no more tokens come (unless a stop cut it)."""
        if self.reason == "stop":
            return ""
        tail = self._matcher.feed(self._strip(self._decoder.flush()))
        if self._matcher.stopped:
            self.reason = "stop"
            return tail
        return tail + self._matcher.flush()
