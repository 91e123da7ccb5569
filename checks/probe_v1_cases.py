"""The probe's cases for the OpenAI-compatible routes (/v1/completions, /v1/chat/completions,
/v1/models): malformed bodies and a wrong type or a hostile value for each field. Every
refusal must be a 4xx naming the field; every accepted case writes at most GENERATE_TOKENS."""

from __future__ import annotations

import json

from checks.probe_cases import GENERATE_TOKENS
from checks.probe_checks import INJECT
from checks.probe_client import Probe


def v1_cases(p: Probe) -> None:
    base = {"model": "tiny-starcoder", "prompt": "def f(x):\n", "max_tokens": GENERATE_TOKENS,
            "temperature": 0}  # fmt: skip

    def c(name, refuse=True, fld=None, url="v1/completions", body=None, headers=None, **kw):
        content = body if body is not None else json.dumps({**base, **kw}).encode()
        headers = {"content-type": "application/json", **(headers or {})}
        return p.request(
            f"/{url}",
            name,
            "POST",
            url,
            content=content,
            headers=headers,
            expect_refusal=refuse,
            field_=fld,
        )

    c("baseline", refuse=False)
    c("prompt with HTML, streamed", refuse=False, prompt=INJECT, stream=True)
    c("body not JSON", fld="body", body=b"{not json")
    c("body a JSON list", fld="body", body=b"[1, 2]")
    c("body nested 100,000 deep", fld="body", body=b"[" * 100_000 + b"]" * 100_000)
    c(
        "temperature NaN (Python's JSON reads it)",
        fld="temperature",
        body=json.dumps({**base, "temperature": "X"}).replace('"X"', "NaN").encode(),
    )
    for name, value in (
        ("missing", None),
        ("a number", 7),
        ("an object", {"a": 1}),
        ("empty list", []),
        ("[[]]", [[]]),
        ("ids out of range", [10**12] * 3),
        ("ids and text mixed", [1, "x"]),
        ("17 prompts", ["x"] * 17),
        ("negative id", [-1]),
        ("a bool id", [True]),
    ):
        c(f"prompt {name}", fld="prompt|n", prompt=value)
    for field, values in {
        "max_tokens": (-5, 0, 10**12, "8", True, 1.5),
        "temperature": (-1, 5, "hot"),
        "top_p": (0, 2, "x"),
        "seed": (-5, 2**70, "abc", 1.5),
        "logprobs": (6, -1, "3", True),
        "n": (0, -1, 17, "2", True, 10**9),
        "stop": (5, ["x"] * 33, ["x" * 10_000], [None], {"a": 1}),
        "suffix": (5, ["x"]),
        "model": (INJECT, "x" * 10_000, 5),
        "frequency_penalty": (1,),
        "presence_penalty": (-2,),
        "logit_bias": ({"1": 100},),
        "best_of": (3,),
        "repetition_penalty": (0, 100, "x"),
    }.items():
        for value in values:
            c(f"{field} {str(value)[:20]!r}", fld=field, **{field: value})
    c("echo + logprobs + suffix", fld="echo", echo=True, logprobs=1, suffix="\n")
    c("attribution with n 2", fld="attribution", n=2, attribution=True)
    c("a refusal asked as a stream", fld="temperature", stream=True, temperature=9)
    c("prompt 200 KB", fld="prompt", prompt="x" * 200_000)
    c("echo + logprobs on token ids", refuse=False, prompt=[1, 2, 3], echo=True, logprobs=2)
    c("2 prompts x n 2, streamed", refuse=False, prompt=["x = 1", "y = 2"], n=2, stream=True)
    c(
        "bearer token given, none configured",
        refuse=False,
        headers={"authorization": "Bearer " + INJECT},
    )

    chat = {"model": "tiny-starcoder", "max_tokens": GENERATE_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": "How do I sort a list?"}]}  # fmt: skip

    def h(name, refuse=True, fld=None, **kw):
        return c(
            name, refuse, fld, url="v1/chat/completions", body=json.dumps({**chat, **kw}).encode()
        )

    h("chat baseline", refuse=False)
    h("chat with HTML", refuse=False, messages=[{"role": "user", "content": INJECT}])
    for name, value in (
        ("missing", None),
        ("empty", []),
        ("a string", "hi"),
        ("robot role", [{"role": "robot", "content": "x"}]),
        ("content a number", [{"role": "user", "content": 5}]),
        (
            "an image part",
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        ),
        ("two users in a row", [{"role": "user", "content": "a"}] * 2),
        (
            "ends with the assistant",
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        ),
        (
            "10,000 turns",
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 5_000
            + [{"role": "user", "content": "c"}],
        ),
    ):
        h(f"messages {name}", fld="messages|history", messages=value)
    h("logprobs 'yes'", fld="logprobs", logprobs="yes")
    h("top_logprobs without logprobs", fld="top_logprobs", top_logprobs=2)
    h("top_logprobs 9", fld="top_logprobs", logprobs=True, top_logprobs=9)
    h("max_completion_tokens -1", fld="max_completion_tokens", max_completion_tokens=-1)
    h("n 2, streamed", refuse=False, n=2, stream=True)
    p.request("/v1/models", "GET", "GET", "v1/models")
    p.request(
        "/v1/models", "DELETE (method not allowed)", "DELETE", "v1/models", expect_refusal=True
    )
