"""The three modes as services over an Engine: validate, build the prompt, stream, report.

ui.py and the API endpoints both call these; nothing here knows about Gradio.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, replace

from app.limits import Limits
from app.ratelimit import RateLimiter, TokenBudget
from app.requests import check_context, check_history, check_scored, check_text
from model.chat import chat_prompt
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
)
from model.errors import PlaygroundError
from model.loops import LoopGuard
from model.pool import EnginePool
from model.prompts import (
    ASSISTANT_STOPS,
    TaPrompt,
    Turn,
    assistant_prompt,
    clean_reply,
    detect_fim_template,
    fim_prompt,
    fim_stop_sequences,
    split_fim,
    trim_fim_middle,
)

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
    """One streamed state of a generation, as the user should see it."""

    mode: str
    text: str  # completion: prompt + continuation; fim: prefix + middle + suffix; chat: reply
    generated: str  # only what the model wrote
    prefix: str = ""  # the part of `text` before `generated`
    done: Done | None = None
    notice: str | None = None
    seconds: float = 0.0
    queue_position: int | None = None  # set while the request waits for a batch slot
    model: str = ""  # the registry id of the model that wrote it
    candidates: int = 0  # a fill by reranking: the line is the likeliest of this many
    stopped: str = ""  # why a cancelled generation stopped, in words for the user
    # With GenerationParams.logprobs: every token so far, its log-probability and alternatives.
    logprobs: tuple[TokenLogprob, ...] = ()
    # With GenerationParams.prompt_logprobs: the prompt's tokens (the first has no logprob).
    prompt_logprobs: tuple[TokenLogprob, ...] = ()

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


class Playground:
    def __init__(
        self,
        engines: EnginePool,
        ta: TaPrompt,
        limits: Limits | None = None,
        rate_limit_per_min: int = 0,
        fim_candidates: int = 8,
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
        params = replace(params, heal=heal, stop=(*params.stop, *spec.completion_stops))
        run = self._run(
            engine, spec.id, "completion", prompt, params, cancel, prefix=prompt, suffix="",
            client=client, prompt_ids=ids,
        )  # fmt: skip
        with closing(run):
            for out in run:
                if not (out.done and self._opened_fence(spec, out, text, params)):
                    yield out
                    continue
                # It opened a markdown fence before any code (SmolLM2 after `class Stack:` and
                # Enter). Asked again inside an opened fence, it writes the body; the fence is
                # not shown. Only then: greedy fibonacci went wrong with the fence given first.
                fenced = FENCE.lstrip("\n") + "\n" + prompt
                fenced_ids = self._tokenize(engine, "prompt", fenced, params)
                yield from self._run(
                    engine, spec.id, "completion", fenced, params, cancel, prefix=prompt,
                    suffix="", client=client, prompt_ids=fenced_ids,
                )  # fmt: skip

    @staticmethod
    def _opened_fence(spec, out: Output, text: bool, params: GenerationParams) -> bool:
        return (
            text and not params.prompt_logprobs and FENCE in spec.completion_stops
            and out.done.reason == "stop" and not out.generated.strip()
        )  # fmt: skip

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
            # No FIM tokens: one line, reranked in the worker (model/infill.py). The worker
            # reads the code nearest the gap, so no prompt is too long for the context.
            prefix, suffix = split_fim(code)
            infill = Infill(prefix, suffix, self.fim_candidates)
            run = self._run(
                engine, spec.id, "fim", prefix, params, cancel, prefix=prefix, suffix=suffix,
                client=client, infill=infill,
            )  # fmt: skip
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
        run = self._run(
            engine, spec.id, "fim", model_prompt, params, cancel, prefix=prefix, suffix=suffix,
            client=client, prompt_ids=ids,
        )  # fmt: skip
        with closing(run):
            for out in run:
                # Streamed frames are trimmed too: a newline shown and then taken back flickers.
                middle = trim_fim_middle(out.generated, suffix)
                yield replace(out, text=prefix + middle + suffix, generated=middle)

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
        written = engine.count_tokens(reply_so_far) if reply_so_far else 0
        budget = info.context_length - params.max_new_tokens - written
        if budget <= 0:  # no room for any prompt: say how big the message alone is
            n = engine.count_tokens(message) + written
            check_context("message", n, params.max_new_tokens, info.context_length)
        if info.chat_template:
            # Instruct models: their own chat template; the end-of-turn token is their EOS.
            special = {"bos_token": info.bos_token or "", "eos_token": info.eos_token or ""}
            built = chat_prompt(
                info.chat_template, history, message, budget_tokens=budget,
                count_tokens=engine.count_tokens, special=special,
            )  # fmt: skip
            opened = built.prompt + reply_so_far
        else:
            built = assistant_prompt(
                self.ta, history, message, budget_tokens=budget, count_tokens=engine.count_tokens
            )
            params = replace(params, stop=(*params.stop, *ASSISTANT_STOPS))
            # The ta-prompt's turns read "Assistant: text"; the space was trimmed from the reply.
            opened = built.prompt + (" " + reply_so_far if reply_so_far else "")
        ids = engine.tokenize(opened)  # fitted to the budget above: no check needed
        run = self._run(
            engine, spec.id, "assistant", opened, params, cancel, prefix="", suffix="",
            client=client, prompt_ids=tuple(ids) if ids is not None else None,
        )  # fmt: skip
        with closing(run):
            for out in run:
                # Every frame as the final one will be (trailing whitespace held back until
                # text follows it): a reply ending in whitespace used to stream it, then lose it
                # in the final text, so /v1's stream and its plain answer differed.
                reply = clean_reply(reply_so_far + out.generated)
                yield replace(out, text=reply, generated=reply, notice=built.notice)

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
                field="prompt", kind="unsupported",
            )  # fmt: skip
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
    ) -> Iterator[Output]:
        if params.logprobs is not None and (infill is not None or not engine.info.logprobs):
            where = "a fill by reranking" if infill else "a model on a remote server (ENGINE_URL)"
            raise PlaygroundError(
                f"`logprobs` cannot be reported for {where}; ask without them.",
                field="logprobs", kind="unsupported",
            )  # fmt: skip
        self.limiter.check(client)
        charge = self._charge(engine, client, model_prompt, params, prompt_ids, infill)
        try:
            yield from self._stream(
                engine, model_id, mode, model_prompt, params, cancel, prefix, suffix, client,
                prompt_ids, infill, charge,
            )  # fmt: skip
        finally:
            charge.settle(charge.used)

    def _charge(self, engine, client, model_prompt, params, prompt_ids, infill):
        """Reserve the generation's cost in the client's token budget (see TokenBudget)."""
        info = engine.info
        if infill is not None:  # the worker reads the code nearest the gap: at most a context
            prompt = min(engine.count_tokens(model_prompt), info.context_length)
            new = infill.candidates * params.max_new_tokens
        else:
            prompt = (
                len(prompt_ids) if prompt_ids is not None else engine.count_tokens(model_prompt)
            )
            new = params.max_new_tokens
        charge = self.budget.charge(client, prompt, new)
        charge.used = prompt  # the prompt is read whatever happens next
        charge.per_token = infill.candidates if infill is not None else 1
        return charge

    def _stream(self, engine, model_id, mode, model_prompt, params, cancel, prefix, suffix,
                client, prompt_ids, infill, charge) -> Iterator[Output]:  # fmt: skip
        start = time.perf_counter()
        generated = ""
        request = GenerationRequest(
            model_prompt, params, client=client, prompt_ids=prompt_ids, infill=infill
        )
        logprobs: tuple[TokenLogprob, ...] = ()
        scored: tuple[TokenLogprob, ...] = ()
        loops = LoopGuard() if self.stop_loops and infill is None else None
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
                    generated += event.text
                    logprobs += event.logprobs
                    scored = event.prompt_logprobs or scored
                    yield Output(mode, prefix + generated + suffix, generated, prefix,
                                 model=model_id, logprobs=logprobs,
                                 prompt_logprobs=scored)  # fmt: skip
                elif isinstance(event, Queued):
                    yield Output(mode, prefix + suffix, "", prefix, model=model_id,
                                 queue_position=event.position)  # fmt: skip
                elif event.reason == "error":
                    kind = event.error_kind or "engine"
                    raise PlaygroundError(event.error or "Generation failed.", kind=kind)
                else:
                    elapsed = time.perf_counter() - start
                    yield Output(
                        mode, prefix + generated + suffix, generated, prefix, event,
                        seconds=elapsed, model=model_id, stopped=cancel.reason,
                        logprobs=logprobs, prompt_logprobs=scored,
                    )  # fmt: skip
