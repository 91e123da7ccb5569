"""FAKE engines for the fast unit tests: in memory, no model, no torch, no worker process.

`FakeEngine` implements the Engine protocol (model/engine.py) with a reply the test scripts, so
a test of the services layer asserts what a user sees (text, status, errors) in milliseconds.
It is not a model: tests of generation itself use the real tiny model (tests/integration/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from app.services.playground import Playground
from app.settings import Settings
from model.engine import (
    CancelToken,
    Delta,
    Done,
    Engine,
    Event,
    GenerationRequest,
    ModelInfo,
    Queued,
)
from model.engines.pool import EnginePool
from model.errors import PlaygroundError
from model.prompts.families import ENDOFTEXT, STARCODER_SPECIAL_TOKENS
from model.prompts.templates import TaPrompt
from model.registry import Registry

# The app's defaults, for what a test leaves out (lower layers have none of their own).
APP_DEFAULTS = Settings.load([], env={})
TEST_DATA_DIR = "data"  # a pool of ready engines never writes there

FAKE_INFO = ModelInfo(
    model_id="fake/fake-coder",
    context_length=4096,  # characters: BigCode's ta-prompt (1.2k) fits with room to talk
    special_tokens=frozenset(STARCODER_SPECIAL_TOKENS),  # StarCoder's FIM tokens: fills work
    eos_token=ENDOFTEXT,
    architecture="fake",
)


class FakeEngine:
    """A FAKE Engine, scripted by the test. One token is one character, which keeps counts easy
    to reason about: count_tokens(text) == len(text), tokenize(text) is the code points, and
    each Delta carries one character.

    - `reply`: what the "model" writes, or a function of the model prompt that returns it.
    - It ends as the real engines do: at the earliest of the request's text `stop`s ("stop";
      the stop itself is not shown), after `max_new_tokens` characters ("length"), at the end
      of the reply ("eos"), or when the CancelToken is set before the next character
      ("cancelled").
    - `error`: end with Done("error", error=error, error_kind=error_kind) after `error_after`
      characters, as an engine reports a failed generation (it never raises).
    - `queued`: queue positions to report before the first character, as WorkerEngine does.
    - `tokenizes=False`: tokenize() returns None, as a remote engine without its tokenizer.
    - `info`: ModelInfo fields to change, e.g. context_length=64 or special_tokens=frozenset().

    It records what it was asked: `requests` and the matching `cancels`, and `closed`;
    `open_streams` counts the streams not yet ended or closed (the slots a real engine holds).
    """

    def __init__(
        self,
        reply: str | Callable[[str], str] = "",
        *,
        error: str | None = None,
        error_kind: str = "engine",
        error_after: int = 0,
        queued: tuple[int, ...] = (),
        tokenizes: bool = True,
        **info,
    ):
        self._reply = reply
        self._error = error
        self._error_kind = error_kind
        self._error_after = error_after
        self._queued = queued
        self._tokenizes = tokenizes
        self._info = replace(FAKE_INFO, **info)
        self.requests: list[GenerationRequest] = []
        self.cancels: list[CancelToken] = []
        self.closed = False
        self.open_streams = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        return len(text)

    def tokenize(self, text: str) -> list[int] | None:
        return [ord(c) for c in text] if self._tokenizes else None

    def detokenize(self, ids) -> str | None:
        if not self._tokenizes:
            return None
        if not all(isinstance(i, int) and 0 <= i < 0x110000 for i in ids):
            raise PlaygroundError("`prompt` token ids must be code points here.", field="prompt")
        return "".join(map(chr, ids))

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        # A slot held until the generator ends or is closed, as WorkerEngine frees its batch
        # slot in its generator's `finally`.
        self.open_streams += 1
        try:
            yield from self._stream(request, cancel)
        finally:
            self.open_streams -= 1

    def _stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        self.requests.append(request)
        self.cancels.append(cancel)
        ids = request.prompt_ids
        n_prompt = len(ids) if ids is not None else self.count_tokens(request.prompt)
        for position in self._queued:
            yield Queued(position)
        text, reason = self._script(request)
        if self._error is not None:
            text, reason = text[: self._error_after], "error"
        sent = 0
        for char in text:
            if cancel.cancelled:
                yield Done("cancelled", n_prompt, sent)
                return
            yield Delta(char)
            sent += 1
        if reason == "error":
            yield Done("error", n_prompt, sent, error=self._error, error_kind=self._error_kind)
        else:
            yield Done(reason, n_prompt, sent)

    def _script(self, request: GenerationRequest) -> tuple[str, str]:
        """What is written and why it ends, before cancellation is taken into account."""
        reply = self._reply(request.prompt) if callable(self._reply) else self._reply
        limit = request.params.max_new_tokens
        hits = [(reply.find(s), s) for s in request.params.stop if s and s in reply]
        if hits:
            at, stop = min(hits)
            if at + len(stop) <= limit:  # the stop is written within the token budget
                return reply[:at], "stop"
        if len(reply) > limit:
            return reply[:limit], "length"
        return reply, "eos"

    def close(self) -> None:
        self.closed = True


def fake_pool(*engines: FakeEngine, data_dir: str = TEST_DATA_DIR) -> EnginePool:
    """An EnginePool offering each fake as one model (its id: the last part of info.model_id),
    built from ModelInfo as EnginePool.single builds a pool of one real engine. The first
    engine that can do a mode is that mode's default."""
    specs = [next(iter(EnginePool.single(engine, data_dir).registry)) for engine in engines]
    by_id = {spec.id: engine for spec, engine in zip(specs, engines, strict=True)}
    return EnginePool(Registry(specs, data_dir=data_dir), lambda spec: by_id[spec.id])


def fake_playground(*engines: FakeEngine, **kwargs) -> Playground:
    """The real Playground (app/services/playground.py) over fakes; kwargs as Playground's."""
    return _playground(fake_pool(*engines), **kwargs)


def playground_over(engine: Engine, **kwargs) -> Playground:
    """The real Playground over one ready engine, real or fake; kwargs as Playground's."""
    return _playground(EnginePool.single(engine, TEST_DATA_DIR), **kwargs)


def _playground(pool: EnginePool, **kwargs) -> Playground:
    kwargs.setdefault("fim_candidates", APP_DEFAULTS.fim_candidates)
    return Playground(pool, TaPrompt.load(), **kwargs)
