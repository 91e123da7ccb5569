"""The wire side of RemoteEngine, torch-free: server-sent events, error bodies, log-probabilities
in the completions API's shape, and the tokenizer and config files a remote model is read with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx

from model.engine import TokenLogprob
from model.registry import CONTEXT_KEYS

log = logging.getLogger(__name__)


def token_logprobs(
    logprobs: dict | None, start: int = 0, end: int | None = None, top: int = 0, name=None
) -> tuple[TokenLogprob, ...]:
    """Entries `start:end` of a choice's `logprobs` ({tokens, token_logprobs, top_logprobs}, as
    vLLM sends them) as TokenLogprobs, each with its `top` likeliest alternatives (vLLM adds the
    chosen token to them when it is not among them: it is dropped again). `name`: maps a
    token as sent to its text (for `return_tokens_as_token_ids`)."""
    if not logprobs:
        return ()
    name = name or (lambda token: token)
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i in range(start, len(tokens) if end is None else end):
        alternatives = tops[i] if i < len(tops) and tops[i] else {}
        ranked = sorted(alternatives.items(), key=lambda kv: -kv[1])[:top]
        value = values[i] if i < len(values) else None
        out.append(
            TokenLogprob(
                name(tokens[i]),
                None if value is None else float(value),
                tuple((name(t), float(v)) for t, v in ranked),
            )
        )
    return tuple(out)


def sse_events(response: httpx.Response) -> Iterator[dict]:
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


def detail_of(response: httpx.Response) -> str:
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


def load_tokenizer(source: str):
    """(tokenizers.Tokenizer | None, config.json dict, tokenizer_config.json dict with the chat
    template), torch-free."""
    folder = Path(source).expanduser()
    files = {}
    # transformers 5 saves a chat template in a file of its own, beside tokenizer_config.json.
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "chat_template.jinja"):
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

    tok_config = read("tokenizer_config.json")
    if "chat_template.jinja" in files and not tok_config.get("chat_template"):
        tok_config["chat_template"] = files["chat_template.jinja"].read_text(encoding="utf-8")
    return tok, read("config.json"), tok_config


def context_from(config: dict, tok_config: dict) -> int | None:
    for key in CONTEXT_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    limit = tok_config.get("model_max_length")
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else None
