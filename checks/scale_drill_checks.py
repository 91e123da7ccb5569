"""The scale drill's checks, each a table row (checks/chaos_harness.Row): modes through every
target, shares across replicas, client addresses and the shared rate limit, and the faults.

Clients connect from their own loopback addresses (127.x.y.z; Linux routes all of 127/8 to lo), so
behind the proxy each simulated client is its own client address, as real users are.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from checks.chaos_harness import Row
from checks.users_client import Api, new_session
from checks.users_workload import API, PROMPTS, completeness, request_args

HANG_S = 120.0
REPLICA_COOKIE = "PLAYGROUND_REPLICA"  # deploy/haproxy.cfg: a1 or a2


def client(base: str, source: str | None = None, timeout: float = HANG_S) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
    return httpx.AsyncClient(base_url=base, timeout=timeout, transport=transport)


def replica_of(c: httpx.AsyncClient) -> str:
    return c.cookies.get(REPLICA_COOKIE) or "?"


def _v1_text(body: dict) -> str:
    choice = body["choices"][0]
    return choice.get("text") or (choice.get("message") or {}).get("content") or ""


async def v1(c: httpx.AsyncClient, route: str, model: str, max_tokens: int = 16) -> httpx.Response:
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if route == "completions":
        body["prompt"] = "def add(a, b):\n"
    else:
        body["messages"] = [{"role": "user", "content": "What is a list comprehension?"}]
    return await c.post(f"v1/{route}", json=body)


async def modes(targets: dict[str, str], params, model: str) -> Row:
    """Completion, FIM, the assistant and search through the Gradio API, and both /v1 routes,
    through each target; greedy texts must be the same everywhere (one engine behind them all)."""
    row, texts = Row("every mode", ", ".join(targets)), {}
    for name, base in targets.items():
        async with client(base) as c:
            api = Api(c, params, HANG_S, session=new_session(f"modes-{name}"))
            for mode, api_name in API.items():
                prompt = PROMPTS[mode][0]
                outcome, value, _, _ = await api.call(api_name, request_args(mode, prompt, 16))
                ok = row.check(outcome == "ok", f"{name} /{api_name}: {outcome}: {value}")
                if ok:
                    row.check(
                        completeness(mode, prompt, value) is None,
                        f"{name} /{api_name} incomplete: {value!r}",
                    )
                    texts.setdefault(api_name, {})[name] = value
            outcome, value, _, _ = await api.call("search", {"query": "json decoder"})
            hits = len(value) if outcome == "ok" and isinstance(value, list) else None
            row.check(bool(hits), f"{name} /search: {outcome}: {str(value)[:200]}")
            texts.setdefault("search hits", {})[name] = hits
            for route in ("completions", "chat/completions"):
                r = await v1(c, route, model)
                if row.check(
                    r.status_code == 200, f"{name} /v1/{route}: {r.status_code} {r.text[:200]}"
                ):
                    text = _v1_text(r.json())
                    row.check(bool(text), f"{name} /v1/{route}: empty text")
                    texts.setdefault(f"/v1/{route}", {})[name] = text
    for what, by_target in texts.items():
        same = len(set(map(str, by_target.values()))) == 1
        row.check(same and len(by_target) == len(targets), f"{what} differs: {by_target}")
    row.note(
        f"{len(texts)} calls x {len(targets)} targets, identical greedy results everywhere"
        if row.ok
        else "see failures"
    )
    return row


async def shares(a: str, b: str) -> Row:
    """Made through A, opens through B; deleted through B, gone through A."""
    row = Row("share across replicas", "A -> B -> A")
    marker = uuid.uuid4().hex
    body = {
        "mode": "completion",
        "prompt": "def f(",
        "output": f"def f(x):\n    return '{marker}'\n",
    }
    async with client(a) as ca, client(b) as cb:
        r = await ca.post("api/shares", json=body)
        if not row.check(
            r.status_code == 201, f"POST A /api/shares: {r.status_code} {r.text[:200]}"
        ):
            return row
        share_id, delete_url = r.json()["id"], r.json()["delete_url"]
        token = delete_url.split("token=")[1]
        page = await cb.get(f"s/{share_id}")
        row.check(
            page.status_code == 200 and marker in page.text, f"GET B /s/<id>: {page.status_code}"
        )
        gone = await cb.post(f"s/{share_id}/delete", data={"token": token})
        row.check(gone.status_code == 200, f"POST B delete: {gone.status_code} {gone.text[:200]}")
        after = await ca.get(f"s/{share_id}")
        row.check(after.status_code == 404, f"GET A /s/<id> after delete on B: {after.status_code}")
    row.note(f"B opened it (200), B deleted it (200), A then answered {after.status_code}")
    return row


async def _burst(proxy: str, source: str, model: str, n: int, *, sticky: bool, forge: bool):
    """n /v1 completions of one token from `source`; counts per answer and per replica."""
    counts: dict[str, int] = {}
    async with client(proxy, source) as c:
        for i in range(n):
            if not sticky:
                c.cookies.clear()  # a new session each time: round-robin over the replicas
            headers = {"x-forwarded-for": f"203.0.113.{i % 250}"} if forge else {}
            body = {"model": model, "prompt": "x = ", "max_tokens": 1}
            r = await c.post("v1/completions", json=body, headers=headers)
            if r.status_code == 200:
                key = f"ok via {r.cookies.get(REPLICA_COOKIE) or replica_of(c)}"
            elif "over all replicas" in r.text:
                key = "429 from the proxy"
            elif r.status_code == 429:
                key = "429 from a replica"
            else:
                key = f"{r.status_code}: {r.text[:120]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


async def addresses(proxy: str, model: str, env: dict) -> list[Row]:
    """The replicas see the real client address (not the proxy's, not a forged header), and the
    proxy's limit is shared by both replicas."""
    per_replica, shared = int(env["RATE_LIMIT_PER_MIN"]), int(env["GEN_RATE_PER_MIN"])
    row = Row("client address", "proxy -> one replica")
    got = await _burst(proxy, "127.0.7.1", model, per_replica + 5, sticky=True, forge=True)
    ok = sum(v for k, v in got.items() if k.startswith("ok"))
    row.check(
        ok == per_replica and got.get("429 from a replica") == 5,
        f"client 127.0.7.1 with forged X-Forwarded-For: {got}",
    )
    other = await _burst(proxy, "127.0.7.2", model, 1, sticky=True, forge=False)
    row.check(any(k.startswith("ok") for k in other), f"another client then: {other}")
    row.note(
        f"one client, forged X-Forwarded-For on every call: {got}; another client at once: "
        f"{other} (the replica keyed its {per_replica}/min limit on each real address)"
    )
    row2 = Row("shared rate limit", "proxy -> both replicas")
    got = await _burst(proxy, "127.0.7.3", model, shared + 5, sticky=False, forge=False)
    ok = sum(v for k, v in got.items() if k.startswith("ok"))
    spread = sum(1 for k in got if k.startswith("ok via a"))
    row2.check(
        ok == shared and spread == 2 and got.get("429 from the proxy") == 5,
        f"new session per call: {got}",
    )
    row2.note(f"{shared + 5} calls, a new session each (round-robin): {got}")
    return [row, row2]


async def references(proxy: str, params, combos) -> tuple[dict, list[str]]:
    """Greedy reference texts, one fresh client address per call (no rate limit is reached)."""
    refs, problems = {}, []
    for k, key in enumerate(combos):
        async with client(proxy, f"127.0.6.{k + 1}") as c:
            api = Api(c, params, HANG_S, session=new_session("reference"))
            mode, prompt, max_new = key
            outcome, value, _, _ = await api.call(API[mode], request_args(mode, prompt, max_new))
            if outcome == "ok":
                refs[key] = value
            else:
                problems.append(f"{key!r}: {outcome}: {value}")
    return refs, problems


async def _stream(base: str, source: str, params, max_new: int, started: asyncio.Event):
    """One long completion; sets `started` at its first streamed update. -> (replica, outcome,
    message, when it ended: time.perf_counter())."""
    async with client(base, source) as c:
        api = Api(c, params, HANG_S, session=new_session("fault"))
        warm = await api.call("complete", request_args("completion", "x = 1\n", 1))
        replica = replica_of(c) if warm[0] == "ok" else f"warm-up {warm[0]}: {warm[1]}"
        partials: list = []
        state = {"event": "post", "t0": time.perf_counter()}
        args = {**request_args("completion", PROMPTS["completion"][1], max_new), "temperature": 0.8}
        task = asyncio.create_task(api._call("complete", args, partials, state))
        while not task.done():
            if partials:
                started.set()
            await asyncio.sleep(0.02)
        try:
            outcome, value, _, _ = task.result()
        except Exception as exc:  # a dropped stream is an outcome here
            outcome, value = "error", f"{type(exc).__name__}: {exc}"
        return replica, outcome, str(value)[:200], time.perf_counter()


async def kill_during_streams(proxy: str, params, kill, n: int, max_new: int):
    """n users stream through the proxy (spread over the replicas); once they stream, `kill()`.
    -> [(replica, outcome, message, seconds from the kill to the stream's end)]."""
    events = [asyncio.Event() for _ in range(n)]
    tasks = [
        asyncio.create_task(_stream(proxy, f"127.0.8.{i + 1}", params, max_new, events[i]))
        for i in range(n)
    ]
    await asyncio.wait(
        [asyncio.create_task(e.wait()) for e in events],
        timeout=HANG_S,
        return_when=asyncio.FIRST_COMPLETED,
    )
    await asyncio.sleep(0.3)  # several streams under way
    t_kill = time.perf_counter()
    await asyncio.to_thread(kill)
    results = await asyncio.gather(*tasks)
    return [(rep, outcome, msg, end - t_kill) for rep, outcome, msg, end in results]
