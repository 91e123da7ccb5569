"""RemoteEngine: an OpenAI-compatible /v1/completions server (vLLM, TGI, `transformers serve`).

Torch-free. The prompt is sent already formatted (FIM included), so every server sees exactly
what the local engine would. Server quirks handled here:
  - `transformers serve` ends a stream without `data: [DONE]`: the end of the body ends it too.
  - `transformers serve` rejects unknown fields (422 "Unexpected fields") and only honours
    do_sample / repetition_penalty through a `generation_config` JSON string. We first speak
    plain OpenAI + vLLM/TGI extras; on that 422 we switch to the generation_config dialect for
    good ("auto" flavor). Pass flavor="openai" or "transformers" to skip the probe.
  - Servers differ on whether a stop string is included in the text: we always run the stop
    matcher on our side too, so the user never sees one.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import httpx

from model import engine
from model.engine import CancelToken, Delta, Done, Event, GenerationRequest, ModelInfo
from model.engines import remote_fill, remote_heal
from model.engines.remote_wire import (
    context_from,
    detail_of,
    load_tokenizer,
    sse_events,
    token_logprobs,
)
from model.errors import PlaygroundError
from model.registry import DEFAULT_CONTEXT
from model.tokens.heal_plan import HealPlan, HealPlanner, needs_healing
from model.tokens.stops import StopMatcher

log = logging.getLogger(__name__)

Flavor = Literal["auto", "openai", "transformers"]
_OVERFLOW = re.compile(
    r"maximum context length|context length|must be <=|too long|exceeds? .*(context|length)"
    r"|index out of range",
    re.IGNORECASE,
)
_SERVER_LIMIT = re.compile(r"maximum context length is (\d+)", re.IGNORECASE)


class RemoteEngine:
    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        tokenizer: str | None = None,
        tokenizer_for: Callable[[Sequence[str]], str | None] | None = None,
        context_length: int | None = None,
        api_key: str | None = None,
        flavor: Flavor = "auto",
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ):
        """`url`: the server's base URL (with or without /v1). `model`: the name to request
        (default: the server's first model). `tokenizer`: a local folder or Hub id whose
        tokenizer.json gives exact token counts, special tokens and healing; unset, the one
        `tokenizer_for(names)` finds for the served model's names (its id, its weights' folder,
        as vLLM lists them), else the served folder itself when it is on this machine."""
        self.base = url.rstrip("/").removesuffix("/v1")
        self.flavor: Flavor = flavor
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )
        served = self._served_model(model)
        self.model = model or served["id"]
        # What the served model is called: the registry recognises a known model by these.
        self.names = tuple(
            dict.fromkeys(
                n for n in (tokenizer, self.model, served.get("root")) if isinstance(n, str) and n
            )
        )
        source = tokenizer or (tokenizer_for(self.names) if tokenizer_for else None)
        if source is None:
            source = next((n for n in self.names if Path(n).is_dir()), self.model)
        self._tok, config, tok_config = load_tokenizer(source)
        self.planner = HealPlanner(self._tok) if self._tok is not None else None
        self.heals = self.planner is not None  # off for good once the server refuses it
        # A server that scores a prompt (`echo` + `logprobs`) can report log-probabilities
        # and fill a gap by reranking; one that cannot keeps the refusal.
        self.scores = self._probe_scoring()
        ctx = context_length or served.get("max_model_len")
        self._info = self._build_info(ctx, config, tok_config)

    # -- Engine -----------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def count_tokens(self, text: str) -> int:
        ids = self.tokenize(text)
        if ids is not None:
            return len(ids)
        # No tokenizer: a conservative estimate; the server's own check stays the authority.
        return math.ceil(len(text.encode("utf-8")) / 3)

    def tokenize(self, text: str) -> list[int] | None:
        return self._tok.encode(text, add_special_tokens=True).ids if self._tok else None

    def detokenize(self, ids) -> str | None:
        return engine.decode_ids(self._tok, ids) if self._tok else None

    def tail(self, text: str, tokens: int) -> str:
        """The end of `text` that fits in `tokens`: the code nearest a gap matters most."""
        ids, tokens = self.tokenize(text), max(tokens, 1)
        if ids is None:
            return text[-tokens * 3 :] if len(text) > tokens * 3 else text
        return text if len(ids) <= tokens else self._tok.decode(ids[-tokens:])

    def heal_plan(self, text: str, ids: Sequence[int] | None = None) -> HealPlan | None:
        """What token healing would back off `text` (a prompt ending in whitespace)."""
        if not (self.heals and self.flavor != "transformers" and needs_healing(text)):
            return None
        return self.planner.plan(ids if ids is not None else self.tokenize(text))

    def close(self) -> None:
        self.http.close()

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        """Raises PlaygroundError before any event when the server refuses the request
        (validation, context overflow: kind "validation"; overloaded: kind "busy"); a server
        that is down or fails mid-stream ends the stream with Done("error")."""
        if request.infill is not None:
            yield from remote_fill.fill(self, request, cancel)
            return
        p = request.params
        if request.prompt_ids is not None:  # tokenized and checked by the caller
            n_prompt = len(request.prompt_ids)
        else:
            n_prompt = self.count_tokens(request.prompt)
            # Without a tokenizer the count is an estimate: the server's check decides.
            if self._tok is not None and n_prompt + p.max_new_tokens > self._info.context_length:
                raise self._overflow(n_prompt, p.max_new_tokens)
        specials = [s for s in p.stop if s in self._info.special_tokens]
        texts = tuple(s for s in p.stop if s not in self._info.special_tokens)
        matcher = StopMatcher(texts, show_first_newline=p.show_first_newline and not p.min_tokens)
        generated, reason, server_stopped = 0, "length", False
        top = p.logprobs or 0
        echo = p.prompt_logprobs and p.logprobs is not None
        try:
            plan = self.heal_plan(request.prompt, request.prompt_ids) if p.heal else None
            healed = remote_heal.heal(self, request, plan) if plan else None
            prompt, healed_tokens = request.prompt, 0
            if healed is not None:
                # The backed-off prompt plus the token(s) that re-made its end: what is past
                # the prompt's own text is the start of the output.
                prompt, generated = healed.ids, healed.tokens
                healed_tokens = healed.tokens  # in the prompt the server counts, not the output
                shown = matcher.feed(healed.shown)
                if shown or healed.logprobs:
                    yield Delta(shown, logprobs=healed.logprobs)
                if matcher.stopped or generated >= p.max_new_tokens:
                    yield Done("stop" if matcher.stopped else "length", n_prompt, generated)
                    return

            def build() -> dict:
                return self._body(
                    request,
                    texts,
                    specials,
                    stream=True,
                    prompt=prompt,
                    max_tokens=p.max_new_tokens - generated,
                )

            with self._open(request, build) as response:
                for data in sse_events(response):
                    if cancel.cancelled:
                        break  # closing the response makes the server cancel the request
                    if "error" in data:
                        yield self._error_done(data["error"], n_prompt, generated, p)
                        return
                    choice = (data.get("choices") or [{}])[0]
                    text = choice.get("text") or ""
                    lp = choice.get("logprobs")
                    first = 0
                    if echo:  # the first chunk carries the prompt, scored, then the output
                        echo = False
                        first = len(choice.get("prompt_token_ids") or ()) or n_prompt
                        scored = token_logprobs(lp, 0, first, top)
                        text = _past_prompt(text, request.prompt, lp, first)
                        yield Delta("", prompt_logprobs=scored)
                    new = (
                        token_logprobs(lp, first, None, top, self._shown_name)
                        if p.logprobs is not None
                        else ()
                    )
                    if text or new:
                        generated += len(new) or 1  # one chunk per decoded step
                        shown = matcher.feed(text)
                        if shown or new:
                            yield Delta(shown, logprobs=new)
                        if matcher.stopped:
                            break
                    usage = data.get("usage") or {}
                    if usage.get("completion_tokens"):
                        generated = int(usage["completion_tokens"]) + healed_tokens
                    if usage.get("prompt_tokens"):
                        n_prompt = int(usage["prompt_tokens"]) - healed_tokens
                    finish = choice.get("finish_reason")
                    if finish:
                        reason = "length" if finish == "length" else "eos"
                        # vLLM names the stop string or token it hit (None for EOS).
                        stop_reason = choice.get("stop_reason")
                        server_stopped = isinstance(stop_reason, str) or (
                            stop_reason is not None and finish == "stop"
                        )
        except httpx.HTTPError as exc:
            yield self._unreachable(exc, n_prompt, generated)
            return
        if cancel.cancelled:
            yield Done("cancelled", n_prompt, generated)
            return
        if matcher.stopped or server_stopped:
            reason = "stop"
        else:
            tail = matcher.flush()
            if tail:
                yield Delta(tail)
        yield Done(reason, n_prompt, generated)

    # -- ops --------------------------------------------------------------------------------

    def health(self, timeout: float = 5.0) -> tuple[bool, str]:
        """(ok, detail): ok when the server generates one token in time."""
        # A prompt any server takes: another playground's /v1 refuses a whitespace-only one,
        # which made a playground behind a playground unhealthy for ever.
        body = {"model": self.model, "prompt": "def", "max_tokens": 1, "temperature": 0.0}
        try:
            r = self.http.post(f"{self.base}/v1/completions", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            return False, f"{self.base} unreachable: {type(exc).__name__}"
        if r.status_code != 200:
            return False, f"{self.base} answered {r.status_code}"
        return True, "ok"

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self, request: GenerationRequest, build: Callable[[], dict]):
        """POST `build()` and return the open streaming response, mapping refusals to
        PlaygroundError (the body is built again after a switch of dialect)."""
        for _ in range(2):
            body = build()
            # A connection error propagates: stream() turns it into Done("error").
            cm = self.http.stream("POST", f"{self.base}/v1/completions", json=body)
            response = cm.__enter__()
            if response.status_code == 200:
                return _Closing(cm, response)
            detail = detail_of(response)
            cm.__exit__(None, None, None)
            if (
                response.status_code == 422
                and self.flavor != "openai"
                and "generation_config" not in body  # (another thread may have switched)
                and "unexpected fields" in detail.lower()
            ):
                log.info("%s wants generation_config (transformers serve); switching", self.base)
                self.flavor = "transformers"
                continue
            raise self._refusal(response.status_code, detail, request)
        raise PlaygroundError(f"The model server refused the request: {detail}", kind="engine")

    def post(self, request: GenerationRequest, body: dict) -> dict:
        """One non-streamed completions call (healing, a fill's samples and scores): the JSON
        answer; refusals raise PlaygroundError, a broken connection httpx.HTTPError."""
        r = self.http.post(f"{self.base}/v1/completions", json={"model": self.model, **body})
        if r.status_code != 200:
            raise self._refusal(r.status_code, detail_of(r), request)
        return r.json()

    def _body(
        self,
        request: GenerationRequest,
        texts,
        specials,
        *,
        stream: bool,
        prompt: str | list[int] | None = None,
        max_tokens: int | None = None,
    ) -> dict:
        p = request.params
        body: dict = {
            "model": self.model,
            "prompt": request.prompt if prompt is None else prompt,
            "max_tokens": p.max_new_tokens if max_tokens is None else max_tokens,
            "stream": stream,
            "temperature": 0.0 if p.greedy else p.temperature,
            "top_p": 1.0 if p.greedy else p.top_p,
        }
        if texts:
            body["stop"] = list(texts)
        if p.seed is not None:
            body["seed"] = p.seed
        stop_ids = [i for i in (self._token_id(s) for s in specials) if i is not None]
        if self.flavor == "transformers":
            # transformers serve: only generation_config carries do_sample and the penalty;
            # it replaces the model's config, so EOS ids travel with it.
            gen = {
                "do_sample": not p.greedy,
                "max_new_tokens": body["max_tokens"],
                "repetition_penalty": p.repetition_penalty,
            }
            if not p.greedy:
                gen.update(temperature=p.temperature, top_p=p.top_p)
            eos = [i for i in (self._token_id(self._info.eos_token),) if i is not None]
            if eos or stop_ids:
                gen["eos_token_id"] = sorted(set(eos + stop_ids))
                gen["pad_token_id"] = (eos or stop_ids)[0]
            body["generation_config"] = json.dumps(gen)
            return body
        # vLLM and TGI accept these extras next to the OpenAI fields.
        body["repetition_penalty"] = p.repetition_penalty
        if stop_ids:
            body["stop_token_ids"] = stop_ids
        if p.min_tokens:  # vLLM's own, as the app's /v1 takes them (benchmarks fix lengths)
            body["min_tokens"] = p.min_tokens
        if p.ignore_eos:
            body["ignore_eos"] = True
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
            body["echo"] = p.prompt_logprobs  # the prompt scored, in the first chunk
        return body

    def _token_id(self, token: str | None) -> int | None:
        if self._tok is None or not token:
            return None
        return self._tok.token_to_id(token)

    def _shown_name(self, token: str) -> str:
        """A generated token's name: "" for an end token, which the text skips (as the
        worker names it), so the names add up to the text."""
        return "" if token in self._info.special_tokens else token

    def token_name(self, token: str) -> str:
        """A token as vLLM names it with `return_tokens_as_token_ids` ("token_id:42"), as text."""
        _, _, number = token.rpartition(":")
        if self._tok is None or not number.isdigit():
            return token
        return self._tok.decode([int(number)], skip_special_tokens=False)

    def _served_model(self, model: str | None) -> dict:
        """The served model's entry in /v1/models (vLLM adds `root`, its weights, and
        `max_model_len`, the context it serves); {"id": model} when the listing fails."""
        try:
            r = self.http.get(f"{self.base}/v1/models")
            r.raise_for_status()
            data = r.json()["data"]
            return next(
                (m for m in data if m.get("id") == model), {"id": model} if model else data[0]
            )
        except (httpx.HTTPError, KeyError, IndexError, ValueError, AttributeError) as exc:
            if model:
                return {"id": model}
            raise PlaygroundError(
                f"Could not list the models of the engine server at {self.base} "
                f"({type(exc).__name__}); set the model name explicitly.",
                field="engine_url",
                kind="config",
            ) from exc

    def _probe_scoring(self) -> bool:
        """Whether the server scores a prompt: `echo` + `logprobs` with `max_tokens` 0 (vLLM
        does; the OpenAI legacy API did). A server that is down counts as able: the first
        request will say what is wrong."""
        if self.flavor == "transformers":
            return False
        body = {"model": self.model, "prompt": "a b", "max_tokens": 0, "echo": True,
                "logprobs": 0, "temperature": 0.0}  # fmt: skip
        try:  # on a connection of its own: `transformers serve` fails (500) and drops it
            r = self.http.post(
                f"{self.base}/v1/completions", json=body, headers={"Connection": "close"}
            )
        except httpx.HTTPError:
            return True
        try:
            values = r.json()["choices"][0]["logprobs"]["token_logprobs"]
            ok = r.status_code == 200 and len(values) >= 2
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            log.info(
                "%s cannot score a prompt: no log-probabilities, no fill by reranking", self.base
            )
        return ok

    def _build_info(self, context_length, config: dict, tok_config: dict) -> ModelInfo:
        # The server's own limit first (vLLM's max_model_len may be below the config's).
        ctx = context_length or context_from(config, tok_config)
        if not ctx:
            log.warning("context length of %s unknown; assuming %d", self.model, DEFAULT_CONTEXT)
            ctx = DEFAULT_CONTEXT
        specials: frozenset[str] = frozenset()
        if self._tok is not None:
            specials = frozenset(
                t.content for t in self._tok.get_added_tokens_decoder().values() if t.special
            )
        eos = tok_config.get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        return ModelInfo(
            model_id=self.model,
            context_length=int(ctx),
            special_tokens=specials,
            eos_token=eos,
            architecture=(config.get("architectures") or ["remote"])[0],
            device=f"remote {self.base}",
            dtype=str(config.get("torch_dtype") or config.get("dtype") or "?"),
            has_chat_template=isinstance(tok_config.get("chat_template"), str),
            chat_template=t if isinstance(t := tok_config.get("chat_template"), str) else None,
            fills_by_rerank=self.scores,
            logprobs=self.scores,
        )

    # -- errors -----------------------------------------------------------------------------

    def _overflow(self, n_prompt: int, max_new: int, ctx: int | None = None) -> PlaygroundError:
        msg = engine.context_overflow("prompt", n_prompt, max_new, ctx or self._info.context_length)
        return PlaygroundError(msg, field="prompt", kind="validation")

    def _refusal(self, status: int, detail: str, request: GenerationRequest) -> PlaygroundError:
        if status in (429, 503):
            return PlaygroundError(
                "The model server is busy. Please try again in a minute.", kind="busy"
            )
        if status in (400, 413, 422) and _OVERFLOW.search(detail):
            # The server's own limit when it names it (vLLM: "maximum context length is N").
            named = _SERVER_LIMIT.search(detail)
            n_prompt = self.count_tokens(request.prompt)
            limit = int(named.group(1)) if named else None
            return self._overflow(n_prompt, request.params.max_new_tokens, limit)
        if status == 404:  # vLLM: "The model `x` does not exist." (ENGINE_MODEL is wrong)
            log.error("engine server %s answered 404: %s", self.base, detail)
            return PlaygroundError(f"The model server cannot serve this: {detail}", kind="config")
        if status in (400, 422):
            return PlaygroundError(
                f"The model server rejected the request: {detail}", kind="validation"
            )
        log.error("engine server %s answered %s: %s", self.base, status, detail)
        return PlaygroundError(
            f"The model server failed (HTTP {status}). Please try again later.", kind="engine"
        )

    def _error_done(self, error, n_prompt: int, generated: int, params) -> Done:
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        log.error("engine server %s failed mid-stream: %s", self.base, message)
        if _OVERFLOW.search(message):
            # The server's limit when it names it; our own guess of it was evidently wrong.
            named = _SERVER_LIMIT.search(message)
            limit = int(named.group(1)) if named else None
            text = engine.context_overflow("prompt", n_prompt, params.max_new_tokens, limit)
            return Done("error", n_prompt, generated, error=text, error_kind="validation")
        text = "The model server failed while generating. The error was logged."
        return Done("error", n_prompt, generated, error=text, error_kind="engine")

    def _unreachable(self, exc: httpx.HTTPError, n_prompt: int, generated: int) -> Done:
        log.error("engine server %s: %s", self.base, exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            text = (
                f"The model server at {self.base} is not reachable. Please try again in a minute."
            )
        else:
            text = f"The connection to the model server broke ({type(exc).__name__}). Try again."
        return Done("error", n_prompt, generated, error=text, error_kind="engine")


class _Closing:
    """Context manager over an already-entered httpx stream (so we can look at the status)."""

    def __init__(self, cm, response: httpx.Response):
        self.cm, self.response = cm, response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *exc) -> None:
        self.cm.__exit__(*exc)


def _past_prompt(text: str, prompt: str, logprobs: dict | None, n_prompt: int) -> str:
    """The output in an echoed chunk: what follows the prompt's own text."""
    if text.startswith(prompt):
        return text[len(prompt) :]
    offsets = (logprobs or {}).get("text_offset") or []
    return text[offsets[n_prompt] :] if len(offsets) > n_prompt else ""
