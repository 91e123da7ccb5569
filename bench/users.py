"""Reliability battery: many simulated users on the real app, each text checked against greedy.

    python -m bench.users [--users 50] [--seconds 120] [--rate-limit 0] [--hang-after 180]
                          [--slow-after 60] [--json FILE] [--log-file FILE]

The real app runs in this process as the tests start it (tests/conftest.py `_serve`: worker
processes, Gradio, routes, uvicorn on a free loopback port) with its natural default models
(no `--model`: SmolLM2 for completion and the assistant, tiny-starcoder for FIM), `--device cpu`,
a temporary data folder (so SmolLM2 is converted and the attribution index built there, once,
before anything is timed), and the app's defaults otherwise, except `--rate-limit` (default 0,
no limit, so the load reaches the queue and the batching; pass 30 for the app's own default:
every simulated user shares 127.0.0.1, so most requests then get "Too many generations").

0. Preflight: the plain-HTTP API as Gradio documents it, without a `session_hash`
   (`/call/<api>` and `/call/v2/<api>`), must work (it was refused with 400 before 35fa55c).
1. Reference: every (mode, prompt, max_new_tokens) combination once, one at a time, greedy
   (temperature 0, repetition_penalty 1.0).
2. Soak: `--users` users, each with its own HTTP client (own connections and cookies) and its
   own Gradio `session_hash`, loop for
   `--seconds` over /complete, /fill and /assist (and sometimes /share of what they got, then
   GET of the link, and /search), through Gradio's named API over plain HTTP + SSE:
   `POST /gradio_api/call/<api>` with all positional values, then `GET .../<event_id>`.
   Every successful generation must equal its reference exactly and be complete (completion:
   starts with the prompt; FIM: starts with the prefix and ends with the suffix).
3. After: `GET /healthz` is 200 and one more request of each mode succeeds.

Outcomes: ok, refused (a clear "busy" or "Too many ..." message), error (anything else),
mismatch (ok but not the reference text), incomplete, hang (no final event within
`--hang-after` seconds; the request is then abandoned, which cancels it on the server). A
finished request that took more than `--slow-after` seconds is counted as slow, not as a
failure: 50 users on a 2-core CPU keep SmolLM2's queue full, and a request that streams all
along but finishes after a minute is queueing, not hanging (the first-token column tells them
apart).
Exit status 1 if any error, mismatch, incomplete text or hang occurred (or a post-check failed).

Everything is bounded: every HTTP call has a timeout, users stop starting requests at the
deadline, and traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench.users")

FILL = "<FILL_HERE>"
COMPLETION_PROMPTS = [
    "def fibonacci(n):\n",
    "def is_prime(n: int) -> bool:\n",
    "import json\n\ndef read_json(path):\n",
    "class Stack:\n    def __init__(self):\n",
]
FIM_PROMPTS = [
    f"def add(a, b):\n    {FILL}\n\nprint(add(1, 2))\n",
    f"import os\n\ndef list_files(path):\n    {FILL}\n    return files\n",
    f"def read_lines(path):\n    with open(path) as f:\n        {FILL}\n",
    f"class Point:\n    def __init__(self, x, y):\n        {FILL}\n\n    def norm(self):\n",
]
ASSIST_MESSAGES = [
    "How do I read a JSON file in Python?",
    "What is a list comprehension?",
    "How do I reverse a string in Python?",
    "Write a function that checks if a number is even.",
]
MAX_NEW_TOKENS = [16, 32, 48]
SEARCH_QUERIES = ["json decoder", "socket timeout", "read file", "thread lock", "parse arguments"]
API = {"completion": "complete", "fim": "fill", "assistant": "assist"}
PROMPTS = {"completion": COMPLETION_PROMPTS, "fim": FIM_PROMPTS, "assistant": ASSIST_MESSAGES}
GREEDY = {"temperature": 0, "top_p": 0.9, "repetition_penalty": 1.0}

SHARE_P = 0.15  # chance a user shares what it just got
SEARCH_P = 0.10  # chance a user searches before its next generation
THINK_S = (0.5, 2.0)  # pause after a result
BACKOFF_S = (2.0, 5.0)  # pause after a refusal


def is_refusal(message: str) -> bool:
    return "busy" in message.lower() or message.startswith("Too many")


@dataclass
class Result:
    api: str  # complete, fill, assist, share, search
    outcome: str  # ok, refused, error, mismatch, incomplete, hang
    seconds: float
    key: tuple | None = None
    detail: str = ""
    text: str | None = None
    partials_not_prefix: int = 0
    ttft: float | None = None
    odd_partial: str = ""


@dataclass
class Stats:
    results: list[Result] = field(default_factory=list)

    def add(self, r: Result) -> None:
        self.results.append(r)


# -- one call over plain HTTP + SSE --------------------------------------------------------


class Api:
    """Gradio's named API over plain HTTP: POST /gradio_api/call/<api>, then its SSE stream."""

    def __init__(self, client, params: dict[str, list[dict]], hang_after: float, session: str):
        self.c = client
        # The user's own Gradio session, as a browser tab has: the app refuses a call without
        # one (see session_less_call below).
        self.session = session
        self.params = params  # api -> [{parameter_name, parameter_default, ...}]
        self.hang_after = hang_after

    def data(self, api: str, given: dict) -> list:
        names = [p["parameter_name"] for p in self.params[api]]
        unknown = set(given) - set(names)
        if unknown:
            raise ValueError(f"/{api} has no parameters {sorted(unknown)}; it has {names}")
        return [
            given.get(p["parameter_name"], p.get("parameter_default")) for p in self.params[api]
        ]

    async def call(self, api: str, given: dict) -> tuple[str, object, list, str]:
        """(outcome, final value or message, partial values, last event) of one call.

        outcome is ok, refused, error or hang; a hang is abandoned (the stream is closed)."""
        partials: list = []  # (seconds since the POST, value) of each streamed update
        state = {"event": "post", "t0": time.perf_counter()}
        try:
            return await asyncio.wait_for(self._call(api, given, partials, state),
                                          self.hang_after)  # fmt: skip
        except TimeoutError:
            last = f"{partials[-1][0]:.1f} s" if partials else "never"
            return (
                "hang",
                f"no final event after {self.hang_after:.0f} s ({len(partials)} streamed "
                f"updates, the last at {last})",
                partials,
                state["event"],
            )
        except Exception as exc:  # recorded and reported, never hidden
            return "error", f"{type(exc).__name__}: {exc}"[:500], partials, state["event"]

    async def _call(self, api, given, partials, state):
        body = {"data": self.data(api, given)}
        if self.session:
            body["session_hash"] = self.session
        r = await self.c.post(f"gradio_api/call/{api}", json=body)
        if r.status_code != 200:
            try:
                detail = r.json().get("detail") or r.json().get("error") or r.text
            except ValueError:
                detail = r.text
            detail = str(detail)
            kind = "refused" if is_refusal(detail) else "error"
            return kind, f"POST {r.status_code}: {detail[:400]}", partials, "post"
        event_id = r.json()["event_id"]
        event = None
        async with self.c.stream("GET", f"gradio_api/call/{api}/{event_id}") as sse:
            if sse.status_code != 200:
                return "error", f"GET {sse.status_code}", partials, "get"
            async for line in sse.aiter_lines():
                if line.startswith("event:"):
                    event = state["event"] = line[6:].strip()
                elif line.startswith("data:"):
                    payload = json.loads(line[5:])
                    if event == "generating":
                        t = time.perf_counter() - state["t0"]
                        partials.append((t, payload[0] if payload else None))
                    elif event == "complete":
                        return "ok", payload[0] if payload else None, partials, event
                    elif event == "error":
                        message = payload.get("error") if isinstance(payload, dict) else payload
                        message = str(message)
                        kind = "refused" if is_refusal(message) else "error"
                        return kind, message[:500], partials, event
        return "error", f"stream ended without a final event (last: {event})", partials, event


def new_session(who: str) -> str:
    return f"bench-{who}-{uuid.uuid4().hex[:12]}"


# -- checks ------------------------------------------------------------------------------


def request_args(mode: str, prompt: str, max_new: int) -> dict:
    first = "message" if mode == "assistant" else "prompt"
    args = {first: prompt, "max_new_tokens": max_new, **GREEDY}
    if mode == "assistant":
        args["history"] = []
    return args


def completeness(mode: str, prompt: str, text) -> str | None:
    """Why `text` is not a complete result for `prompt`, or None."""
    if not isinstance(text, str):
        return f"result is {type(text).__name__}, not text"
    if mode == "completion" and not text.startswith(prompt):
        return "does not start with the prompt"
    if mode == "fim":
        prefix, suffix = prompt.split(FILL)
        if not text.startswith(prefix):
            return "does not start with the prefix"
        if not text.endswith(suffix):
            return "does not end with the suffix"
    if mode == "assistant" and not text.strip():
        return "empty reply"
    return None


def combos() -> list[tuple[str, str, int]]:
    return [(m, p, n) for m in API for p in PROMPTS[m] for n in MAX_NEW_TOKENS]


async def call_retrying(api: Api, name: str, args: dict, attempts: int = 4):
    """One call; on a rate-limit refusal wait what the server says (at most 65 s) and retry."""
    for attempt in range(attempts):
        outcome, value, partials, event = await api.call(name, args)
        if outcome != "refused" or attempt == attempts - 1:
            return outcome, value, partials, event
        wait = 5.0
        if isinstance(value, str) and "Try again in " in value:
            with contextlib.suppress(IndexError, ValueError):
                wait = float(value.split("Try again in ")[1].split()[0])
        log.info("refused (%s); retrying in %.0f s", value[:60], min(wait, 65) + 1)
        await asyncio.sleep(min(wait, 65) + 1)
    raise AssertionError("unreachable")


async def references(base: str, params, hang_after: float) -> tuple[dict, list[str]]:
    import httpx

    refs: dict[tuple, str] = {}
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=hang_after) as c:
        api = Api(c, params, hang_after, session=new_session("reference"))
        for key in combos():
            mode, prompt, max_new = key
            start = time.perf_counter()
            outcome, value, _, _ = await call_retrying(api, API[mode], request_args(*key))
            took = time.perf_counter() - start
            if outcome != "ok":
                problems.append(f"reference {key!r}: {outcome}: {value}")
                continue
            why = completeness(mode, prompt, value)
            if why:
                problems.append(f"reference {key!r} incomplete: {why}: {value!r}")
            refs[key] = value
            log.info("reference %-10s %2d tokens %5.1f s %r", mode, max_new, took, value[-40:])
    return refs, problems


# -- the soak -----------------------------------------------------------------------------


async def user(i, base, params, refs, stats: Stats, deadline, hang_after, think=True):
    import httpx

    rng = random.Random(1000 + i)
    modes = list(API)
    turn = i % len(modes)
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=base, timeout=hang_after, limits=limits) as c:
        api = Api(c, params, hang_after, session=new_session(f"user{i}"))
        await asyncio.sleep(rng.uniform(0, 2.0))  # users do not all arrive in the same ms
        while time.monotonic() < deadline:
            if rng.random() < SEARCH_P:
                await search(api, rng, stats)
            mode = modes[turn % len(modes)]
            turn += 1
            key = (mode, rng.choice(PROMPTS[mode]), rng.choice(MAX_NEW_TOKENS))
            r = await generate(api, key, refs)
            stats.add(r)
            if r.outcome == "ok" and rng.random() < SHARE_P:
                await share(api, c, base, key, r.text, stats)
            pause = BACKOFF_S if r.outcome == "refused" else THINK_S
            if think:
                await asyncio.sleep(min(rng.uniform(*pause), max(0.0, deadline - time.monotonic())))


async def generate(api: Api, key, refs) -> Result:
    mode, prompt, _max_new = key
    start = time.perf_counter()
    outcome, value, partials, event = await api.call(API[mode], request_args(*key))
    took = time.perf_counter() - start
    r = Result(API[mode], outcome, took, key=key)
    # First token: the first update with generated text in it (completion updates start with
    # the prompt, FIM ones are prefix + middle + suffix).
    frame = len(prompt) if mode == "completion" else len(prompt) - len(FILL) if mode == "fim" else 0
    r.ttft = next((t for t, p in partials if isinstance(p, str) and len(p) > frame), None)
    if outcome != "ok":
        r.detail = f"{value} (last event: {event})"
        return r
    r.text = value
    why = completeness(mode, prompt, value)
    if why:
        r.outcome, r.detail = "incomplete", f"{why}: {value!r}"
    elif value != refs.get(key):
        r.outcome, r.detail = "mismatch", f"got {value!r}, reference {refs.get(key)!r}"
    # Streamed values are the text so far (FIM: prefix + middle so far + suffix); count those
    # the final text does not extend (informational).
    suffix = prompt.split(FILL)[1] if mode == "fim" else ""
    final = value[: len(value) - len(suffix)] if isinstance(value, str) else ""
    # The assistant's final reply is stripped of trailing whitespace, its updates are not.
    trim = str.rstrip if mode == "assistant" else str
    odd = [
        p for _, p in partials if isinstance(p, str)
        and not (p.endswith(suffix) and final.startswith(trim(p[: len(p) - len(suffix)])))
    ]  # fmt: skip
    r.partials_not_prefix = len(odd)
    if odd:
        r.odd_partial = f"update {odd[0]!r}, final {value!r}"
    return r


async def share(api: Api, c, base: str, key, text: str, stats: Stats) -> None:
    mode, prompt, _ = key
    start = time.perf_counter()
    args = {"mode": mode, "prompt": prompt, "output": text, "parameters": dict(GREEDY)}
    outcome, value, _, event = await api.call("share", args)
    if outcome == "ok":
        # The link must reopen it: GET /s/<id> on this server (loopback only).
        if not isinstance(value, str) or "/s/" not in value:
            outcome, value = "error", f"share returned {value!r}"
        else:
            path = "s/" + value.split("/s/", 1)[1]
            try:
                page = await c.get(path)
                if page.status_code != 200:
                    outcome, value = "error", f"GET {path}: {page.status_code}"
            except Exception as exc:
                outcome, value = "error", f"GET {path}: {type(exc).__name__}: {exc}"
    took = time.perf_counter() - start
    stats.add(Result("share", outcome, took, key=key,
                     detail="" if outcome == "ok" else f"{value} (last event: {event})"))  # fmt: skip


async def search(api: Api, rng, stats: Stats) -> None:
    start = time.perf_counter()
    query = rng.choice(SEARCH_QUERIES)
    outcome, value, _, event = await api.call("search", {"query": query})
    if outcome == "ok" and not isinstance(value, list):
        outcome, value = "error", f"search returned {type(value).__name__}"
    took = time.perf_counter() - start
    stats.add(Result("search", outcome, took, key=("search", query, 0),
                     detail="" if outcome == "ok" else f"{value} (last event: {event})"))  # fmt: skip


async def soak(base, params, refs, users: int, seconds: float, hang_after: float) -> Stats:
    stats = Stats()
    deadline = time.monotonic() + seconds
    tasks = [user(i, base, params, refs, stats, deadline, hang_after) for i in range(users)]
    # Bounded: after the deadline each user finishes at most a generation, a share and a
    # search, each abandoned after hang_after.
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 4 * hang_after + 30)
    return stats


async def after(base: str, params, refs, hang_after: float) -> list[str]:
    """Problems after the soak: /healthz and one more request of each mode."""
    import httpx

    problems = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        h = await c.get("healthz")
        if h.status_code != 200:
            problems.append(f"/healthz {h.status_code}: {h.text[:200]}")
        api = Api(c, params, hang_after, session=new_session("after"))
        for mode in API:
            key = (mode, PROMPTS[mode][0], MAX_NEW_TOKENS[0])
            outcome, value, _, _ = await call_retrying(api, API[mode], request_args(*key))
            if outcome != "ok":
                problems.append(f"after the soak, /{API[mode]}: {outcome}: {value}")
            elif value != refs.get(key):
                problems.append(f"after the soak, /{API[mode]}: {value!r} != {refs.get(key)!r}")
    return problems


async def session_less_calls(base: str, params, hang_after: float) -> list[str]:
    """Problems of the plain-HTTP API as Gradio documents it: no session_hash in the body, both
    `POST /gradio_api/call/<api>` ({"data": [...]}) and `/call/v2/<api>` (named arguments)."""
    import httpx

    problems = []
    key = ("completion", COMPLETION_PROMPTS[0], MAX_NEW_TOKENS[0])
    async with httpx.AsyncClient(base_url=base, timeout=hang_after) as c:
        api = Api(c, params, hang_after, session="")
        bodies = {
            "gradio_api/call/complete": {"data": api.data("complete", request_args(*key))},
            "gradio_api/call/v2/complete": request_args(*key),
        }
        for route, body in bodies.items():
            r = await c.post(route, json=body)
            if r.status_code != 200:
                problems.append(f"POST /{route} {json.dumps(body)} (no session_hash): "
                                f"{r.status_code} {r.text[:300]}")  # fmt: skip
                continue
            text = (await c.get(f"{route}/{r.json()['event_id']}")).text
            if "event: complete" not in text:
                problems.append(f"POST /{route} (no session_hash): stream {text[-300:]!r}")
    return problems


async def metric(base: str, name: str) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        for line in (await c.get("metrics")).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# -- the app -----------------------------------------------------------------------------


def app_argv(args, data: str) -> list[str]:
    argv = ["--data-dir", data, "--port", "0", "--device", "cpu",
            "--rate-limit", str(args.rate_limit)]  # fmt: skip
    if args.share_rate is not None:
        argv += ["--share-rate", str(args.share_rate)]
    return argv


def run(args) -> int:
    import httpx

    from app.server import BackgroundServer, build_app, build_engines, open_attribution
    from app.settings import Settings

    data = tempfile.mkdtemp(prefix="bench-users-")
    argv = app_argv(args, data)
    settings = Settings.load(argv, env={})
    engines = build_engines(settings)
    registry = engines.registry
    models = {m: registry.default_for(m) for m in API}
    log.info("data dir %s; default models %s; argv %s", data, models, argv)
    try:
        t0 = time.perf_counter()
        warm = engines.warm(list(dict.fromkeys(models.values())))
        attribution = open_attribution(settings)
        built = build_app(Settings.load(argv, env={}), engines, attribution)
        warm.join(600)
        with BackgroundServer(built.fastapi) as server:
            base = server.url
            assert base.startswith("http://127.0.0.1:"), base
            # The engines load in the background; /healthz is 200 once they can generate.
            deadline = time.monotonic() + 600
            while httpx.get(f"{base}healthz", timeout=30).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the app did not become healthy in 10 minutes")
                time.sleep(1)
            log.info("app ready at %s in %.0f s", base, time.perf_counter() - t0)
            info = httpx.get(f"{base}gradio_api/info", timeout=30).json()["named_endpoints"]
            params = {api.strip("/"): e["parameters"] for api, e in info.items()}
            return asyncio.run(battery(args, base, params, models))
    finally:
        engines.close()


async def battery(args, base, params, models) -> int:
    preflight = await session_less_calls(base, params, args.hang_after)
    for problem in preflight:
        log.warning("%s", problem)
    t = time.perf_counter()
    refs, ref_problems = await references(base, params, args.hang_after)
    ref_s = time.perf_counter() - t
    log.info("references: %d of %d in %.0f s", len(refs), len(combos()), ref_s)
    tokens0 = await metric(base, "playground_generated_tokens_total")
    t = time.perf_counter()
    log.info("soak: %d users for %.0f s", args.users, args.seconds)
    stats = await soak(base, params, refs, args.users, args.seconds, args.hang_after)
    wall = time.perf_counter() - t
    tokens = await metric(base, "playground_generated_tokens_total") - tokens0
    post = await after(base, params, refs, args.hang_after)
    report = summarize(
        args, stats, wall, tokens, refs, preflight + ref_problems + post, models, ref_s
    )
    print(report["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    failed = report["totals"]["error"] + report["totals"]["mismatch"] + report["totals"][
        "incomplete"] + report["totals"]["hang"] + len(report["problems"])  # fmt: skip
    return 1 if failed else 0


def _pct(values, q):
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


OUTCOMES = ["ok", "refused", "error", "mismatch", "incomplete", "hang"]


def summarize(args, stats: Stats, wall, tokens, refs, problems, models, ref_s) -> dict:
    rows, totals = [], dict.fromkeys(["requests", *OUTCOMES, "slow"], 0)
    for api in ["complete", "fill", "assist", "share", "search"]:
        rs = [r for r in stats.results if r.api == api]
        counts = {o: sum(r.outcome == o for r in rs) for o in OUTCOMES}
        done = [r.seconds for r in rs if r.outcome in ("ok", "mismatch", "incomplete")]
        refused = [r.seconds for r in rs if r.outcome == "refused"]
        ttft = [r.ttft for r in rs if r.ttft is not None and r.outcome != "hang"]
        rows.append({"api": api, "requests": len(rs), **counts,
                     "slow": sum(s > args.slow_after for s in done),
                     "ttft_p50": _pct(ttft, 50), "ttft_p95": _pct(ttft, 95),
                     "p50": _pct(done, 50), "p95": _pct(done, 95),
                     "max": max(done, default=float("nan")),
                     "refused_p50": _pct(refused, 50),
                     "partials_not_prefix": sum(r.partials_not_prefix for r in rs)})  # fmt: skip
        totals["requests"] += len(rs)
        for o in [*OUTCOMES, "slow"]:
            totals[o] += rows[-1][o]
    generated = sum(r["requests"] for r in rows[:3])
    lines = [
        f"{args.users} users, {args.seconds:.0f} s (soak wall {wall:.0f} s), "
        f"--rate-limit {args.rate_limit}; models: {models}",
        f"references: {len(refs)} combinations, sequential, {ref_s:.0f} s",
        "",
        "| endpoint | requests | ok | clear refusals | other errors | mismatches | incomplete "
        f"| hangs (>{args.hang_after:.0f} s) | slow (>{args.slow_after:.0f} s) | first token "
        "p50 / p95 s | p50 s | p95 s | max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        first = f"{r['ttft_p50']:.1f} / {r['ttft_p95']:.1f}" if r["api"] in API.values() else ""
        lines.append(
            f"| /{r['api']} | {r['requests']} | {r['ok']} | {r['refused']} | {r['error']} | "
            f"{r['mismatch']} | {r['incomplete']} | {r['hang']} | {r['slow']} | {first} | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} |"
        )
    lines.append(
        f"| all | {totals['requests']} | {totals['ok']} | {totals['refused']} | "
        f"{totals['error']} | {totals['mismatch']} | {totals['incomplete']} | {totals['hang']} "
        f"| {totals['slow']} | | | | |"
    )
    lines += [
        "",
        f"generations started: {generated}; tokens generated during the soak: {tokens:.0f} "
        f"({tokens / wall:.1f} tokens/s)"
        if wall
        else "",
        "latency: POST to final SSE event, of finished generations (ok, mismatch, incomplete); "
        "refusals' p50: "
        + (
            ", ".join(f"/{r['api']} {r['refused_p50']:.2f} s" for r in rows if r["refused"])
            or "none"
        ),
        "streamed values the final text does not extend (informational): "
        + ", ".join(f"/{r['api']} {r['partials_not_prefix']}" for r in rows[:3]),
    ]
    odd = [r for r in stats.results if r.odd_partial]
    if odd:
        lines += ["", "Streamed values the final text does not extend (first 3):"]
        lines += [f"- /{r.api} {r.key!r}: {r.odd_partial}" for r in odd[:3]]
    bad = [r for r in stats.results if r.outcome not in ("ok", "refused")]
    if bad:
        lines += ["", "Failures (first 20):"]
        for r in bad[:20]:
            lines.append(f"- /{r.api} {r.outcome} after {r.seconds:.1f} s, {r.key!r}: {r.detail}")
    refusals = sorted({_shape(r.detail) for r in stats.results if r.outcome == "refused"})
    if refusals:
        lines += ["", "Refusal messages seen:", *[f"- {m}" for m in refusals[:10]]]
    if problems:
        lines += ["", "Problems outside the soak:", *[f"- {p}" for p in problems]]
    return {"rows": rows, "totals": totals, "problems": problems, "tokens": tokens,
            "wall_s": wall, "failures": [r.__dict__ for r in bad],
            "table": "\n".join(lines)}  # fmt: skip


def _shape(message: str) -> str:
    """A refusal message with its numbers blanked, so identical kinds collapse into one line."""
    import re

    return re.sub(r"\d+", "N", message.split(" (last event")[0])[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.users", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seconds", type=float, default=120.0, help="soak length")
    p.add_argument("--rate-limit", type=int, default=0,
                   help="the app's --rate-limit (generations per client per minute; 0: none; "
                        "the app's own default is 30)")  # fmt: skip
    p.add_argument(
        "--share-rate",
        type=int,
        default=None,
        help="the app's --share-rate (default: the app's, 30)",
    )
    p.add_argument(
        "--hang-after",
        type=float,
        default=180.0,
        help="a request with no final event after this many seconds is a hang (and abandoned)",
    )
    p.add_argument(
        "--slow-after",
        type=float,
        default=60.0,
        help="finished requests that took longer than this are counted as slow (not a failure)",
    )
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--log-file", default=None, help="the server's log (default: a temp file)")
    args = p.parse_args(argv)
    logfile = args.log_file or tempfile.mktemp(prefix="bench-users-", suffix=".log")
    logging.basicConfig(level="INFO", filename=logfile, filemode="w",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    console = logging.StreamHandler()
    console.setLevel(logging.INFO)
    console.addFilter(lambda r: r.name == "bench.users" or r.levelno >= logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log.info("server log: %s", logfile)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
