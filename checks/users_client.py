"""One call of Gradio's named API over plain HTTP + SSE, as the simulated users of checks/users.py
make it: outcome ok, refused, error or hang, with the streamed updates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

log = logging.getLogger("checks.users")  # the console shows this logger (see main)


def is_refusal(message: str) -> bool:
    return "busy" in message.lower() or message.startswith("Too many")


class Api:
    """Gradio's named API over plain HTTP: POST /gradio_api/call/<api>, then its SSE stream."""

    def __init__(self, client, params: dict[str, list[dict]], hang_after: float, session: str):
        self.c = client
        # The user's own Gradio session, as a browser tab has: the app refuses a call without
        # one (see session_less_calls in checks/users.py).
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
            return await asyncio.wait_for(self._call(api, given, partials, state), self.hang_after)
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
