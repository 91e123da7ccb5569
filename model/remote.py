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
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx

from model import engine
from model.engine import CancelToken, Delta, Done, Event, GenerationRequest, ModelInfo
from model.errors import PlaygroundError
from model.registry import CONTEXT_KEYS, DEFAULT_CONTEXT
from model.stops import StopMatcher

log = logging.getLogger(__name__)

Flavor = Literal["auto", "openai", "transformers"]
_OVERFLOW = re.compile(
    r"maximum context length|context length|must be <=|too long|exceeds? .*(context|length)"
    r"|index out of range",
    re.IGNORECASE,
)


class RemoteEngine:
    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        tokenizer: str | None = None,
        context_length: int | None = None,
        api_key: str | None = None,
        flavor: Flavor = "auto",
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
    ):
        """`url`: the server's base URL (with or without /v1). `model`: the name to request
        (default: the server's first model). `tokenizer`: a local folder or Hub id whose
        tokenizer.json gives exact token counts and special tokens (default: `model`)."""
        self.base = url.rstrip("/").removesuffix("/v1")
        self.flavor: Flavor = flavor
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )
        self.model = model or self._first_model()
        self._tok, config, tok_config = _load_tokenizer(tokenizer or self.model)
        self._info = self._build_info(context_length, config, tok_config)

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

    def close(self) -> None:
        self.http.close()

    def stream(self, request: GenerationRequest, cancel: CancelToken) -> Iterator[Event]:
        """Raises PlaygroundError before any event when the server refuses the request
        (validation, context overflow: kind "validation"; overloaded: kind "busy"); a server
        that is down or fails mid-stream ends the stream with Done("error")."""
        p = request.params
        if request.prompt_ids is not None:  # tokenized and checked by the caller
            n_prompt = len(request.prompt_ids)
        else:
            n_prompt = self.count_tokens(request.prompt)
            if self._tok is not None and n_prompt + p.max_new_tokens > self._info.context_length:
                raise self._overflow(n_prompt, p.max_new_tokens)
        specials = [s for s in p.stop if s in self._info.special_tokens]
        texts = tuple(s for s in p.stop if s not in self._info.special_tokens)
        matcher = StopMatcher(texts)
        generated, reason, server_stopped = 0, "length", False
        try:
            with self._open(request, texts, specials) as response:
                for data in _sse_events(response):
                    if cancel.cancelled:
                        break  # closing the response makes the server cancel the request
                    if "error" in data:
                        yield self._error_done(data["error"], n_prompt, generated)
                        return
                    choice = (data.get("choices") or [{}])[0]
                    text = choice.get("text") or ""
                    if text:
                        generated += 1  # one chunk per decoded step on all three servers
                        shown = matcher.feed(text)
                        if shown:
                            yield Delta(shown)
                        if matcher.stopped:
                            break
                    usage = data.get("usage") or {}
                    if usage.get("completion_tokens"):
                        generated = int(usage["completion_tokens"])
                    if usage.get("prompt_tokens"):
                        n_prompt = int(usage["prompt_tokens"])
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
        body = {"model": self.model, "prompt": " ", "max_tokens": 1, "temperature": 0.0}
        try:
            r = self.http.post(f"{self.base}/v1/completions", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            return False, f"{self.base} unreachable: {type(exc).__name__}"
        if r.status_code != 200:
            return False, f"{self.base} answered {r.status_code}"
        return True, "ok"

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self, request: GenerationRequest, texts, specials):
        """POST and return the open streaming response, mapping refusals to PlaygroundError."""
        for _ in range(2):
            body = self._body(request, texts, specials, stream=True)
            # A connection error propagates: stream() turns it into Done("error").
            cm = self.http.stream("POST", f"{self.base}/v1/completions", json=body)
            response = cm.__enter__()
            if response.status_code == 200:
                return _Closing(cm, response)
            detail = _detail(response)
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

    def _body(self, request: GenerationRequest, texts, specials, *, stream: bool) -> dict:
        p = request.params
        body: dict = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": p.max_new_tokens,
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
                "max_new_tokens": p.max_new_tokens,
                "repetition_penalty": p.repetition_penalty,
            }
            if not p.greedy:
                gen.update(temperature=p.temperature, top_p=p.top_p)
            eos = [i for i in (self._token_id(self._info.eos_token),) if i is not None]
            if eos or stop_ids:
                gen["eos_token_id"] = sorted(set(eos + stop_ids))
                gen["pad_token_id"] = (eos or stop_ids)[0]
            body["generation_config"] = json.dumps(gen)
        else:
            # vLLM and TGI accept these extras next to the OpenAI fields.
            body["repetition_penalty"] = p.repetition_penalty
            if stop_ids:
                body["stop_token_ids"] = stop_ids
        return body

    def _token_id(self, token: str | None) -> int | None:
        if self._tok is None or not token:
            return None
        return self._tok.token_to_id(token)

    def _first_model(self) -> str:
        try:
            r = self.http.get(f"{self.base}/v1/models")
            r.raise_for_status()
            return r.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise PlaygroundError(
                f"Could not list the models of the engine server at {self.base} "
                f"({type(exc).__name__}); set the model name explicitly.",
                field="engine_url",
                kind="config",
            ) from exc

    def _build_info(self, context_length, config: dict, tok_config: dict) -> ModelInfo:
        ctx = context_length or _context_from(config, tok_config) or self._server_context()
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
        )

    def _server_context(self) -> int | None:
        try:  # vLLM lists max_model_len with each model
            for m in self.http.get(f"{self.base}/v1/models").json().get("data", []):
                if m.get("id") == self.model and m.get("max_model_len"):
                    return int(m["max_model_len"])
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return None

    # -- errors -----------------------------------------------------------------------------

    def _overflow(self, n_prompt: int, max_new: int) -> PlaygroundError:
        ctx = self._info.context_length
        msg = engine.context_overflow("prompt", n_prompt, max_new, ctx)
        return PlaygroundError(msg, field="prompt", kind="validation")

    def _refusal(self, status: int, detail: str, request: GenerationRequest) -> PlaygroundError:
        if status in (429, 503):
            return PlaygroundError(
                "The model server is busy. Please try again in a minute.", kind="busy"
            )
        if status in (400, 413, 422) and _OVERFLOW.search(detail):
            return self._overflow(self.count_tokens(request.prompt), request.params.max_new_tokens)
        if status in (400, 422):
            return PlaygroundError(
                f"The model server rejected the request: {detail}", kind="validation"
            )
        log.error("engine server %s answered %s: %s", self.base, status, detail)
        return PlaygroundError(
            f"The model server failed (HTTP {status}). Please try again later.", kind="engine"
        )

    def _error_done(self, error, n_prompt: int, generated: int) -> Done:
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        log.error("engine server %s failed mid-stream: %s", self.base, message)
        if _OVERFLOW.search(message):
            text = (
                f"The prompt plus max_new_tokens is too long for the model's context of "
                f"{self._info.context_length} tokens. Shorten the prompt or lower max_new_tokens."
            )
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


def _sse_events(response: httpx.Response) -> Iterator[dict]:
    """JSON payloads of `data:` lines; ends at `[DONE]` or at the end of the body."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except ValueError:
            log.warning("skipping a malformed event: %.200s", payload)


def _detail(response: httpx.Response) -> str:
    try:
        response.read()
        data = response.json()
    except (ValueError, httpx.HTTPError):
        return response.text[:500] if response.is_closed else ""
    if isinstance(data, dict):
        for key in ("detail", "error", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if value:
                return str(value)[:500]
    return str(data)[:500]


def _load_tokenizer(source: str):
    """(tokenizers.Tokenizer | None, config.json dict, tokenizer_config.json dict), torch-free."""
    folder = Path(source).expanduser()
    files = {}
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file() and not folder.is_dir():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, name))
            except Exception:  # offline, gated or not a Hub id: do without
                continue
        if path.is_file():
            files[name] = path
    tok = None
    if "tokenizer.json" in files:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(files["tokenizer.json"]))
    else:
        log.warning("no tokenizer.json for %s: token counts are estimates", source)

    def read(name: str) -> dict:
        return json.loads(files[name].read_text(encoding="utf-8")) if name in files else {}

    return tok, read("config.json"), read("tokenizer_config.json")


def _context_from(config: dict, tok_config: dict) -> int | None:
    for key in CONTEXT_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    limit = tok_config.get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else None
