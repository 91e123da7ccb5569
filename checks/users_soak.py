"""The soak of checks/users.py: each simulated user loops over generations, and sometimes shares
what it got (then opens the link) or searches, until the deadline."""

from __future__ import annotations

import asyncio
import random
import time

from checks.users_client import Api, new_session
from checks.users_report import Result, Stats
from checks.users_workload import (
    API,
    FILL,
    GREEDY,
    MAX_NEW_TOKENS,
    PROMPTS,
    SEARCH_QUERIES,
    completeness,
    request_args,
)

SHARE_P = 0.15  # chance a user shares what it just got
SEARCH_P = 0.10  # chance a user searches before its next generation
THINK_S = (0.5, 2.0)  # pause after a result
BACKOFF_S = (2.0, 5.0)  # pause after a refusal


async def user(i, base, params, refs, stats: Stats, deadline, hang_after, think=True, source=None):
    """One user; `source` is a loopback address to connect from (127.x.y.z), so that behind a
    proxy each user is its own client address (checks/scale_drill.py)."""
    import httpx

    rng = random.Random(1000 + i)
    modes = list(API)
    turn = i % len(modes)
    limits = httpx.Limits(max_connections=4)
    transport = httpx.AsyncHTTPTransport(local_address=source, limits=limits)
    async with httpx.AsyncClient(base_url=base, timeout=hang_after, transport=transport) as c:
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
        p
        for _, p in partials
        if isinstance(p, str)
        and not (p.endswith(suffix) and final.startswith(trim(p[: len(p) - len(suffix)])))
    ]
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
    stats.add(
        Result(
            "share",
            outcome,
            took,
            key=key,
            detail="" if outcome == "ok" else f"{value} (last event: {event})",
        )
    )


async def search(api: Api, rng, stats: Stats) -> None:
    start = time.perf_counter()
    query = rng.choice(SEARCH_QUERIES)
    outcome, value, _, event = await api.call("search", {"query": query})
    if outcome == "ok" and not isinstance(value, list):
        outcome, value = "error", f"search returned {type(value).__name__}"
    took = time.perf_counter() - start
    stats.add(
        Result(
            "search",
            outcome,
            took,
            key=("search", query, 0),
            detail="" if outcome == "ok" else f"{value} (last event: {event})",
        )
    )


async def soak(
    base,
    params,
    refs,
    users: int,
    seconds: float,
    hang_after: float,
    sources: list[str] | None = None,
) -> Stats:
    stats = Stats()
    deadline = time.monotonic() + seconds
    tasks = [
        user(
            i,
            base,
            params,
            refs,
            stats,
            deadline,
            hang_after,
            source=sources[i] if sources else None,
        )
        for i in range(users)
    ]
    # Bounded: after the deadline each user finishes at most a generation, a share and a
    # search, each abandoned after hang_after.
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 4 * hang_after + 30)
    return stats
