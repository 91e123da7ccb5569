"""The three modes as services over an Engine: validate, build the prompt, stream, report.

ui.py and the API endpoints both call these; nothing here knows about Gradio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property, partial

from app.limits import Limits
from app.ratelimit import RateLimiter, TokenBudget
from app.services.deltas import Written
from app.validation import check_context, check_history, check_scored, check_text
from model.engine import (
    CancelToken,
    Delta,
    Done,
    Engine,
    GenerationParams,
    GenerationRequest,
    Infill,
    Queued,
    TokenLogprob,
    default_max_new_tokens,
)
from model.engines.pool import EnginePool
from model.errors import PlaygroundError
from model.prompts.chat import chat_prompt
from model.prompts.templates import (
    ASSISTANT_STOPS,
    TaPrompt,
    Turn,
    assistant_prompt,
    detect_fim_template,
    fim_prompt,
    fim_stop_sequences,
    middle_shaper,
    split_fim,
)
from model.tokens.loops import LoopGuard
from model.tokens.shaping import Plain, Reply

LOOP_STOPPED = "stopped: the model was repeating itself"
FENCE = "\n```"  # a chat-tuned model closes its code with a markdown fence (completion_stops)
# SmolLM2 given `class Stack:` and Enter opened a markdown fence at once, which ends a
# completion: an empty output with "end of text" read as a broken tool.
RERANK_NOTE = "no FIM tokens: temperature, top-p and penalty do not apply"
EMPTY_ANSWER = (
    "the model ended before writing anything (at once its end token or a stop): try a prompt "
    "that ends mid-line or with a comment saying what comes next, a higher temperature, or "
    "another model"
)


@dataclass(frozen=True)
class Output:
    """One streamed state of a generation, as the user should see it: what this frame adds
    (`delta`), and the whole text so far, joined only when an edge reads it."""

    mode: str
    prefix: str = ""  # the text before what the model wrote (completion: the prompt)
    suffix: str = ""  # the text after it (fim: the code after the gap)
    delta: str = ""  # what this frame adds to `generated`
    delta_logprobs: tuple[TokenLogprob, ...] = ()  # the tokens behind it (with logprobs)
    done: Done | None = None
    notice: str | None = None
    seconds: float = 0.0
    queue_position: int | None = None  # set while the request waits for a batch slot
    model: str = ""  # the registry id of the model that wrote it
    candidates: int = 0  # a fill by reranking: the line is the likeliest of this many
    stopped: str = ""  # why a cancelled generation stopped, in words for the user
    # With GenerationParams.prompt_logprobs: the prompt's tokens (the first has no logprob).
    prompt_logprobs: tuple[TokenLogprob, ...] = ()
    # The generation's text so far, shared by all its frames, and how much of it is this one's.
    written: Written = field(default_factory=Written, repr=False, compare=False)
    upto: tuple[int, int] = (0, 0)  # pieces, tokens

    @cached_property
    def generated(self) -> str:
        """Only what the model wrote, so far."""
        return self.written.text(self.upto[0])

    @property
    def text(self) -> str:
        """completion: prompt + continuation; fim: prefix + middle + suffix; chat: the reply."""
        return self.prefix + self.generated + self.suffix

    @cached_property
    def logprobs(self) -> tuple[TokenLogprob, ...]:
        """With GenerationParams.logprobs: every token so far, its log-probability and
        alternatives."""
        return tuple(self.written.tokens[: self.upto[1]])

    def after(self, earlier: Output) -> Output:
        """This frame standing for `earlier` too (a frame skipped is merged, never lost)."""
        return replace(
            self,
            delta=earlier.delta + self.delta,
            delta_logprobs=earlier.delta_logprobs + self.delta_logprobs,
        )

    @property
    def generated_span(self) -> tuple[int, int]:
        return len(self.prefix), len(self.prefix) + len(self.generated)

    @property
    def status(self) -> str:
        if self.queue_position is not None:
            return f"Waiting for a free slot: position {self.queue_position} in the queue…"
        if self.done is None:
            return "Generating…"
        d = self.done
        why = {
            "eos": "end of text",
            "stop": "stop sequence",
            "length": "max_new_tokens reached",
            "cancelled": self.stopped or "stopped by you",
            "loop": LOOP_STOPPED,
        }.get(d.reason, d.reason)
        if d.reason in ("eos", "stop") and not self.generated.strip():
            why = EMPTY_ANSWER
        elif d.reason == "length" and self.mode == "assistant":
            why = "cut off at max_new_tokens: Continue writes more"
        by = f" · {self.model}" if self.model else ""
        notice = f" · {self.notice}" if self.notice else ""
        if self.candidates and d.reason != "cancelled":
            # Its tokens are those of every candidate and of scoring them: a rate of "1.2
            # tokens/s" for one line made the tool look broken.
            what = f"picked the likeliest of {self.candidates} lines, {self.seconds:.1f} s"
            return f"{what}{by} · {RERANK_NOTE}"
        rate = d.generated_tokens / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{d.generated_tokens} tokens in {self.seconds:.1f} s ({rate:.1f} tokens/s) · "
            f"prompt {d.prompt_tokens} tokens · {why}{by}{notice}"
        )

    @property
    def cut_off(self) -> bool:
        """Ended at the max-new-tokens limit: Continue can write more."""
        return self.done is not None and self.done.reason == "length"


class _Counter:
    """An engine's token count that keeps the ids of the last text it counted whole."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._last: tuple[str, list[int] | None] = ("", None)

    def __call__(self, text: str) -> int:
        ids = self.engine.tokenize(text)
        self._last = (text, ids)
        return len(ids) if ids is not None else self.engine.count_tokens(text)

    def ids(self, text: str) -> list[int] | None:
        last, ids = self._last
        return ids if last == text else self.engine.tokenize(text)


class Playground:
    def __init__(
        self,
        engines: EnginePool,
        ta: TaPrompt,
        limits: Limits | None = None,
        *,
        fim_candidates: int,  # FIM_CANDIDATES; the settings table holds its default
        rate_limit_per_min: int = 0,
        token_budget_per_min: int = 0,
        max_scored_tokens: int = 0,
        stop_loops: bool = True,
    ):
        self.engines = engines
        self.fim_candidates = fim_candidates  # per fill by reranking (FIM_CANDIDATES)
        self.ta = ta
        self.limits = limits or Limits()
        # Keyed on the client's address; checked after validation, so a typo costs no budget.
        self.limiter = RateLimiter(rate_limit_per_min, what="generations")
        self.budget = TokenBudget(token_budget_per_min)
        self.max_scored_tokens = max_scored_tokens  # 0: no cap (MAX_SCORED_TOKENS)
        self.stop_loops = stop_loops  # STOP_LOOPS: end a generation that repeats itself

    @property
    def registry(self):
        return self.engines.registry

    # -- modes ------------------------------------------------------------------------------

    def complete(
        self,
        prompt: str | Sequence[int],
        params: GenerationParams,
        cancel: CancelToken,
        client: str = "",
        model: str | None = None,
    ) -> Iterator[Output]:
        """`prompt`: text, or token ids (the completions API allows them; used as sent)."""
        text = not isinstance(prompt, list | tuple)  # anything else is checked as text
        if text:
            check_text("prompt", prompt, self.limits)  # before a model is chosen (and loaded)
        spec, engine = self.engines.choose(model, "completion")
        if text:
            ids = self._tokenize(engine, "prompt", prompt, params)
        else:
            prompt, ids = self._decode(engine, prompt, params)
        if params.prompt_logprobs and ids is not None:
            check_scored(len(ids), self.max_scored_tokens)
        # Token healing: a prompt ending in whitespace (a header and Enter) still gets a body;
        # not when the prompt is scored: what follows it must follow the tokens as sent.
        heal = not params.prompt_logprobs
        retries = text and not params.prompt_logprobs and FENCE in spec.completion_stops
        # A first newline is shown at once where only our fence stop could take it back (it
        # asks again then, after the newline); a caller's own stop that begins with one keeps
        # its meaning. Not after a prompt that ends a line: there a newline is a blank line,
        # and asked again after one SmolLM2 wrote `class Stack:`'s methods at the top level.
        first = (
            retries
            and not prompt.endswith("\n")
            and not any(s.startswith("\n") for s in params.stop)
        )
        stop = (*params.stop, *spec.completion_stops)
        params = replace(params, heal=heal, stop=stop, show_first_newline=first)
        run = self._run(
            engine,
            spec.id,
            "completion",
            prompt,
            params,
            cancel,
            prefix=prompt,
            suffix="",
            client=client,
            prompt_ids=ids,
        )
        with closing(run):
            for out in run:
                if not (retries and out.done and self._opened_fence(out)):
                    yield out
                    continue
                # It opened a markdown fence before any code (SmolLM2 after `class Stack:` and
                # Enter). Asked again inside an opened fence, it writes the body; the fence is
                # not shown. Only then: greedy fibonacci went wrong with the fence given first.
                # Whitespace it wrote before the fence was shown at once (holding it cost every
                # completion that starts with a newline its first token's latency), so the
                # second try goes on after it, into the same text.
                # Both tries are one completion: `max_new_tokens` bounds them together, and the
                # usage counts the first try's tokens too.
                shown, spent = out.generated, out.done.generated_tokens
                fenced = FENCE.lstrip("\n") + "\n" + prompt + shown
                fenced_ids = self._tokenize(engine, "prompt", fenced, params)
                left = max(1, params.max_new_tokens - spent)
                again = replace(
                    params, max_new_tokens=left, min_tokens=min(params.min_tokens, left)
                )
                second = self._run(
                    engine,
                    spec.id,
                    "completion",
                    fenced,
                    again,
                    cancel,
                    prefix=prompt,
                    suffix="",
                    client=client,
                    prompt_ids=fenced_ids,
                    written=out.written,
                )
                with closing(second):
                    for later in second:
                        if later.done:
                            total = later.done.generated_tokens + spent
                            later = replace(later, done=replace(later.done, generated_tokens=total))
                        yield later

    @staticmethod
    def _opened_fence(out: Output) -> bool:
        """Ended at the fence stop before writing anything but whitespace."""
        return out.done.reason == "stop" and not out.generated.strip()

    def fill(
        self,
        code: str,
        params: GenerationParams,
        cancel: CancelToken,
        client: str = "",
        model: str | None = None,
    ) -> Iterator[Output]:
        check_text("prompt", code, self.limits)
        split_fim(code)  # marker errors first: they are the user's to fix whatever the model
        spec, engine = self.engines.choose(model, "fim")
        info = engine.info
        template = detect_fim_template(info.special_tokens)
        if template is None and info.fills_by_rerank:
            # No FIM tokens: one line, reranked in the worker (model/infill/events.py). The worker
            # reads the code nearest the gap, so no prompt is too long for the context.
            prefix, suffix = split_fim(code)
            infill = Infill(prefix, suffix, self.fim_candidates)
            run = self._run(
                engine,
                spec.id,
                "fim",
                prefix,
                params,
                cancel,
                prefix=prefix,
                suffix=suffix,
                client=client,
                infill=infill,
            )
            notice = (
                f"one line, the likeliest of {infill.candidates} candidates given the code on "
                f"both sides ({RERANK_NOTE})"
            )
            with closing(run):  # a consumer that stops early frees the engine at once
                for out in run:
                    yield replace(out, notice=notice, candidates=infill.candidates)
            return
        model_prompt, prefix, suffix = fim_prompt(code, template, spec.id)
        ids = self._tokenize(engine, "prompt", model_prompt, params)
        # End the middle where the code after the gap takes over (the line's end, or the
        # suffix's next line): small FIM models seldom emit their end token there (issue 13).
        stops = fim_stop_sequences(prefix, suffix)
        params = replace(params, stop=(*params.stop, *template.stop_tokens, *stops))
        # Streamed pieces are trimmed too: a newline shown and then taken back flickers.
        yield from self._run(
            engine,
            spec.id,
            "fim",
            model_prompt,
            params,
            cancel,
            prefix=prefix,
            suffix=suffix,
            client=client,
            prompt_ids=ids,
            shaper=middle_shaper(suffix),
        )

    def assist(
        self,
        message: str,
        history: Sequence[Turn],
        params: GenerationParams,
        cancel: CancelToken,
        client: str = "",
        model: str | None = None,
        reply_so_far: str = "",
    ) -> Iterator[Output]:
        """`reply_so_far`: Continue. The answer to `message` that was cut off at the token limit;
        the model goes on writing it (the reply streamed is the whole answer)."""
        check_text("message", message, self.limits)
        # Bounded before any token is counted: 1,000 turns once took 18 s of shared CPU to fit.
        history = check_history(history, self.limits)
        spec, engine = self.engines.choose(model, "assistant")
        info = engine.info
        # No limit given (/v1 chat, as vLLM): the reply gets what the context leaves once the
        # prompt is built, and the history is fitted leaving room for a typical answer.
        rest = params.max_new_tokens is None
        room = min(default_max_new_tokens("assistant"), info.context_length // 2)
        reserved = room if rest else params.max_new_tokens
        written = engine.count_tokens(reply_so_far) if reply_so_far else 0
        budget = info.context_length - reserved - written
        if budget <= 0:  # no room for any prompt: say how big the message alone is
            n = engine.count_tokens(message) + written
            check_context("message", n, reserved, info.context_length)
        # The prompt is fitted by counting it whole; the last count is of the prompt built, and
        # its ids travel with the request, so nothing tokenizes it again.
        count = _Counter(engine)
        if info.chat_template:
            # Instruct models: their own chat template; the end-of-turn token is their EOS.
            special = {"bos_token": info.bos_token or "", "eos_token": info.eos_token or ""}
            built = chat_prompt(
                info.chat_template,
                history,
                message,
                budget_tokens=budget,
                count_tokens=count,
                special=special,
                max_new_tokens=reserved,
            )
            opened = built.prompt + reply_so_far
        else:
            built = assistant_prompt(
                self.ta,
                history,
                message,
                budget_tokens=budget,
                count_tokens=count,
                max_new_tokens=reserved,
            )
            params = replace(params, stop=(*params.stop, *ASSISTANT_STOPS))
            # The ta-prompt's turns read "Assistant: text"; the space was trimmed from the reply.
            opened = built.prompt + (" " + reply_so_far if reply_so_far else "")
        ids = count.ids(opened)  # fitted to the budget above: no check needed
        if rest:
            n = len(ids) if ids is not None else engine.count_tokens(opened)
            params = replace(params, max_new_tokens=max(1, info.context_length - n))
        # Trailing whitespace is held back until text follows it: a reply ending in whitespace
        # used to stream it, then lose it in the final text, so /v1's stream and its plain
        # answer differed. A continued answer is shown whole: what was written, then the rest.
        run = self._run(
            engine,
            spec.id,
            "assistant",
            opened,
            params,
            cancel,
            prefix=reply_so_far,
            suffix="",
            client=client,
            prompt_ids=tuple(ids) if ids is not None else None,
            shaper=Reply(ASSISTANT_STOPS, started=bool(reply_so_far)),
        )
        with closing(run):
            for out in run:
                yield replace(out, notice=built.notice)

    # -- shared -----------------------------------------------------------------------------

    @staticmethod
    def _tokenize(
        engine: Engine, field: str, prompt: str, params: GenerationParams
    ) -> tuple[int, ...] | None:
        """The prompt's ids, once: checked against the context here, and carried in the request
        so no engine tokenizes it again. None: the engine cannot tokenize here (a remote server
        without its tokenizer), and the estimate is checked instead."""
        ids = engine.tokenize(prompt)
        n = len(ids) if ids is not None else engine.count_tokens(prompt)
        check_context(field, n, params.max_new_tokens, engine.info.context_length)
        return tuple(ids) if ids is not None else None

    def _decode(
        self, engine: Engine, ids: Sequence[int], params: GenerationParams
    ) -> tuple[str, tuple[int, ...]]:
        """A prompt sent as token ids: its text (shown, echoed, checked) and the ids."""
        text = engine.detokenize(ids)
        if text is None:
            raise PlaygroundError(
                "A prompt of token ids needs the model's tokenizer here; send the text instead.",
                field="prompt",
                kind="unsupported",
            )
        check_text("prompt", text, self.limits)
        check_context("prompt", len(ids), params.max_new_tokens, engine.info.context_length)
        return text, tuple(ids)

    def _run(
        self,
        engine: Engine,
        model_id: str,
        mode: str,
        model_prompt: str,
        params: GenerationParams,
        cancel: CancelToken,
        *,
        prefix: str,
        suffix: str,
        client: str = "",
        prompt_ids: tuple[int, ...] | None = None,
        infill: Infill | None = None,
        shaper: Plain | None = None,
        written: Written | None = None,
    ) -> Iterator[Output]:
        """`shaper`: the mode's clean-up of the pieces as they stream (model/tokens/shaping.py);
        `written`: text already shown that this generation goes on from (a second try)."""
        if params.logprobs is not None and (infill is not None or not engine.info.logprobs):
            where = "a fill by reranking" if infill else "a model on a remote server (ENGINE_URL)"
            raise PlaygroundError(
                f"`logprobs` cannot be reported for {where}; ask without them.",
                field="logprobs",
                kind="unsupported",
            )
        self.limiter.check(client)
        request = GenerationRequest(
            model_prompt, params, client=client, prompt_ids=prompt_ids, infill=infill
        )
        charge = self._charge(engine, request)
        written = written or Written()
        frame = partial(Output, mode, prefix, suffix, model=model_id, written=written)
        try:
            yield from self._stream(
                engine, request, cancel, charge, shaper or Plain(), written, frame
            )
        finally:
            charge.settle(charge.used)

    def _charge(self, engine: Engine, request: GenerationRequest):
        """Reserve the generation's cost in the client's token budget (see TokenBudget)."""
        info, infill, new = engine.info, request.infill, request.params.max_new_tokens
        if infill is not None:  # the worker reads the code nearest the gap: at most a context
            prompt = min(engine.count_tokens(request.prompt), info.context_length)
            new *= infill.candidates
        elif request.prompt_ids is not None:
            prompt = len(request.prompt_ids)
        else:
            prompt = engine.count_tokens(request.prompt)
        charge = self.budget.charge(request.client, prompt, new)
        charge.used = prompt  # the prompt is read whatever happens next
        charge.per_token = infill.candidates if infill is not None else 1
        return charge

    def _stream(
        self,
        engine: Engine,
        request: GenerationRequest,
        cancel: CancelToken,
        charge,
        shaper: Plain,
        written: Written,
        frame: Callable[..., Output],
    ) -> Iterator[Output]:
        """The engine's events as Outputs: `frame` makes one of this generation (its mode, the
        text around what is written, its model), `written` holds its text so far."""
        start = time.perf_counter()
        scored: tuple[TokenLogprob, ...] = ()
        loops = LoopGuard() if self.stop_loops and request.infill is None else None
        # Closed on every way out (an error event raises here): the engine frees the request's
        # slot in its generator's `finally`, which a suspended generator never reaches.
        events = engine.stream(request, cancel)
        with closing(events) if hasattr(events, "close") else nullcontext():
            for event in events:
                if isinstance(event, Done):
                    charge.used = event.prompt_tokens + event.generated_tokens * charge.per_token
                    if loops is not None and loops.looping and event.reason == "cancelled":
                        event = replace(event, reason="loop")  # we stopped it, not the user
                if isinstance(event, Delta):
                    if loops is not None and loops.feed(event.text) and not cancel.cancelled:
                        cancel.cancel(LOOP_STOPPED)  # ends within a decode step, like Stop
                    piece = shaper.feed(event.text)
                    scored = event.prompt_logprobs or scored
                    yield frame(
                        delta=piece,
                        delta_logprobs=event.logprobs,
                        upto=written.add(piece, event.logprobs),
                        prompt_logprobs=scored,
                    )
                elif isinstance(event, Queued):
                    yield frame(queue_position=event.position, upto=written.add("", ()))
                elif event.reason == "error":
                    kind = event.error_kind or "engine"
                    raise PlaygroundError(event.error or "Generation failed.", kind=kind)
                else:
                    tail = shaper.finish()
                    yield frame(
                        delta=tail,
                        done=event,
                        seconds=time.perf_counter() - start,
                        stopped=cancel.reason,
                        upto=written.add(tail, ()),
                        prompt_logprobs=scored,
                    )
