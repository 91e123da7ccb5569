"""The engine interface the web layer talks to: requests in, text events out.

Torch-free on purpose: app/ imports this module, and the local engine that needs torch lives in
model/engines/local.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from model.errors import PlaygroundError

# "loop": the services stopped a generation that repeated itself (model/tokens/loops.py); engines
# themselves never end with it.
StopReason = Literal["length", "stop", "eos", "cancelled", "error", "loop"]
MAX_LOGPROBS = 5  # alternatives per token, as OpenAI's completions API allows


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings. Defaults are the original StarCoder playground's."""

    # None, for a chat only: what the context leaves once the prompt is built (vLLM's default
    # for a chat request); the services resolve it, so engines always see a number.
    max_new_tokens: int | None = 256
    temperature: float = 0.2  # 0 means greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Token healing (completion mode): back off a trailing whitespace token and let the model
    # re-create it, so "def f():\n" gets a body. Engines that cannot heal ignore it.
    heal: bool = False
    # Show a newline that starts the text at once, although a stop that begins with one may
    # follow it (model/tokens/stops.py). Set by the playground where it asks again after a
    # completion that ended at once; not an API field.
    show_first_newline: bool = False
    # Report each token's log-probability and this many alternatives (0 to MAX_LOGPROBS);
    # None: none. Only engines whose ModelInfo.logprobs is set can.
    logprobs: int | None = None
    # Also score the prompt (the completions API's `echo` with `logprobs`): each prompt token's
    # log-probability given the ones before it, with `logprobs` alternatives. Needs `logprobs`.
    prompt_logprobs: bool = False
    # Write at least this many tokens before an end token, a special-token stop or a stop
    # sequence may end the text (vLLM's `min_tokens`): until then those tokens are held back.
    min_tokens: int = 0
    # Never end at the model's own end-of-text token (vLLM's `ignore_eos`): it is held back, so
    # the text runs to max_new_tokens or a stop. Benchmarks use it to fix the length.
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or math.isclose(self.temperature, 0.0)


# An assistant's answer needs more room than a completion: SmolLM2's greedy answers to five
# everyday questions (the page's examples among them) took 70-358 tokens, 2 of 5 past 256.
MODE_MAX_NEW_TOKENS = {"assistant": 512}


def default_max_new_tokens(mode: str) -> int:
    """`max_new_tokens` when the caller leaves it out (the page's slider starts here too)."""
    return MODE_MAX_NEW_TOKENS.get(mode, GenerationParams.max_new_tokens)


@dataclass(frozen=True)
class Infill:
    """A gap to fill on a model without FIM tokens: sample `candidates` middles from the code
    before the gap and keep the likeliest given both sides (model/infill/fim_rerank.py). Needs the
    model in this machine's worker; one line per gap (multi-line reranking measured too slow
    and too poor on CPU, bench/RESULTS.md)."""

    prefix: str
    suffix: str
    candidates: int  # FIM_CANDIDATES, as the Playground passes it


@dataclass(frozen=True)
class GenerationRequest:
    """A fully formatted model prompt plus how to continue it."""

    prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)
    # Who asked (session hash or IP), for per-client rate limits; "" means anonymous.
    client: str = ""
    # The prompt's token ids, when the caller has them (the web process tokenizes each prompt
    # once, to check it fits): engines then never tokenize it again. None: the engine does.
    prompt_ids: tuple[int, ...] | None = None
    # Set for a fill by reranking (then `prompt` is the code before the gap).
    infill: Infill | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability and the likeliest alternatives, under the
    model's distribution after the repetition penalty and before temperature and top-p (as
    vLLM reports them)."""

    token: str  # the token's own text (may be part of a character)
    logprob: float | None  # natural log; None only for a prompt's first token (nothing before it)
    top: tuple[tuple[str, float], ...] = ()  # (token, logprob), likeliest first

    @classmethod
    def shown_as(cls, name: str, shown: str, logprob, top) -> TokenLogprob:
        """A token the output shows only the end of (token healing: the rest is already the
        prompt's), named by what it shows, and its alternatives cut the same way, so the chosen
        one reads the same in both places (a healed " " came back as "" beside a " ")."""
        removed = name[: len(name) - len(shown)] if name.endswith(shown) else ""
        cut = tuple((n[len(removed) :] if n.startswith(removed) else n, v) for n, v in top)
        return cls(shown, logprob, cut if removed else tuple(top))


@dataclass(frozen=True)
class Delta:
    text: str
    # With GenerationParams.logprobs: the tokens behind this text (a held-back stop or part of
    # a character can make the text lag them by a token or two).
    logprobs: tuple[TokenLogprob, ...] = ()
    # With GenerationParams.prompt_logprobs, once, before any text: the prompt's tokens.
    prompt_logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Done:
    reason: StopReason
    prompt_tokens: int = 0
    generated_tokens: int = 0
    error: str | None = None  # user-facing message when reason == "error"
    error_kind: str | None = None


@dataclass(frozen=True)
class Queued:
    """The request waits for a free slot; `position` 1 is next. Sent only by engines that queue
    (WorkerEngine with report_queue=True), before any Delta, and again when the position moves."""

    position: int


Event = Delta | Done | Queued


class ContextLength(int):
    """A token limit that is an int (validators compare it as one) and can say what lowered it
    below the model's own context, e.g. "KV_CACHE_MB=64", so refusals can name the reason."""

    limited_by: str | None

    def __new__(cls, value: int, limited_by: str | None = None) -> ContextLength:
        self = super().__new__(cls, value)
        self.limited_by = limited_by
        return self

    def __reduce__(self):  # crosses the worker pipe with its reason
        return (ContextLength, (int(self), self.limited_by))


def context_overflow(
    field: str, prompt_tokens: int, max_new_tokens: int, context: int | None
) -> str:
    """The refusal for a request that does not fit: names both numbers and the limit (TGI's
    style), and what lowered the limit when a ContextLength says so. `context` None: a model
    server refused it without saying its limit."""
    why = getattr(context, "limited_by", None)
    what = f"the model's context, limited by {why}" if why else "the model's context"
    limit = f"be <= {context} ({what})" if context else "fit the model server's context"
    return (
        f"`{field}` tokens + `max_new_tokens` must {limit}. "
        f"Given: {prompt_tokens} `{field}` tokens and {max_new_tokens} `max_new_tokens`."
    )


def decode_ids(tokenizer, ids: Sequence[int]) -> str:
    """A prompt given as token ids, as text (special tokens kept), with either kind of
    tokenizer (transformers' or the `tokenizers` library's). An id outside the vocabulary
    is refused by name: the model would index past its embeddings."""
    if hasattr(tokenizer, "get_vocab_size"):
        size = tokenizer.get_vocab_size(with_added_tokens=True)
    else:
        size = len(tokenizer)
    bad = next(
        (i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < size), None
    )
    if bad is not None or not ids:
        got = f"{bad!r:.20}" if bad is not None else "none"
        raise PlaygroundError(
            f"`prompt` token ids must be whole numbers in [0, {size - 1}]; got {got}.",
            field="prompt",
        )
    return tokenizer.decode(list(ids), skip_special_tokens=False)


@dataclass(frozen=True)
class ModelInfo:
    """What the prompt builder and the validator need to know about a model."""

    model_id: str
    # Per request: prompt + max_new_tokens. Below the model's own context when the KV cache
    # budget holds less (then a ContextLength whose `limited_by` names the setting).
    context_length: int
    special_tokens: frozenset[str]
    eos_token: str | None
    architecture: str = ""
    device: str = "cpu"
    dtype: str = "float32"  # the weights' and the KV cache's
    threads: int = 0  # torch CPU threads the worker computes with; 0: not known (a remote server)
    # "auto": `threads` is where it starts, re-sized each second to the cores other
    # processes leave free (TORCH_THREADS unset); "fixed": TORCH_THREADS; "": not known.
    threads_policy: str = ""
    # What computes the linear layers on CPU (model/engines/packing.py): "kernel" (kernel.c),
    # "onednn", or "plain" (torch's BLAS); "": not known (a GPU or a remote server).
    linear: str = ""
    # What computes the decoder layers' other parts: "layer.c" (model/engines/fused.py: norms,
    # rotary, the paged cache and attention of a decode step) or "transformers"; "": not known.
    layers: str = ""
    has_chat_template: bool = False
    chat_template: str | None = (
        None  # Jinja source, rendered in the web process (model/prompts/chat.py)
    )
    bos_token: str | None = None
    # Memory the worker holds for this model (bench/memory.py, logs): weights and paged KV cache.
    weight_bytes: int = 0
    kv_cache_bytes: int = 0
    # Can serve Infill requests: the model runs in this machine's process (not ENGINE_URL).
    fills_by_rerank: bool = False
    # Can report token log-probabilities (GenerationParams.logprobs): the same, for now.
    logprobs: bool = False


class CancelToken:
    """Explicit cancellation: the engine checks it once per decoded token."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._watchers: list[Callable[[], None]] = []
        self.reason = ""  # why, in words for the user; the first cancel() sets it

    def cancel(self, reason: str = "stopped by you") -> None:
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self._event.set()
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher()

    def on_cancel(self, watcher: Callable[[], None]) -> None:
        """Calls `watcher()` once, when the token is cancelled (now, if it already is), so that
        whoever waits for the engine can be woken instead of polling the flag."""
        with self._lock:
            if not self._event.is_set():
                self._watchers.append(watcher)
                return
        watcher()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class Engine(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def count_tokens(self, text: str) -> int: ...

    def tokenize(self, text: str) -> list[int] | None:
        """The ids the model will see for `text` (with its BOS); None when this engine cannot
        tokenize exactly here (a remote server whose tokenizer is not available)."""
        ...

    def detokenize(self, ids: Sequence[int]) -> str | None:
        """The text of a prompt given as ids (decode_ids); None when, as for tokenize(), the
        tokenizer is not available here."""
        ...

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        """Yield Delta events then exactly one Done. Never raises for generation errors."""
        ...

    def close(self) -> None: ...
