"""Generations as the UI and the API ask for them: who asks (the client's address, for rate
limits), what may stop them (a tab's Stop, a newer generation in the same tab) and the three
modes of the Playground.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager

from app.ratelimit import client_address
from app.services.cancel_registry import CancelRegistry
from app.services.playground import Output, Playground
from model.engine import CancelToken
from model.errors import PlaygroundError
from model.prompts.templates import Turn


def session_key(request) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


class Generations:
    def __init__(self, playground: Playground, trusted_proxy_header: str | None = None):
        self.playground = playground
        self.trusted_proxy_header = trusted_proxy_header
        self.cancels = CancelRegistry()

    def client(self, request) -> str:
        """Who asked, for rate limits: the client's address, never a client-chosen id."""
        peer = getattr(getattr(request, "client", None), "host", None)
        return client_address(peer, getattr(request, "headers", None), self.trusted_proxy_header)

    @contextmanager
    def _cancel_scope(self, request, tab: str | None, cancel: CancelToken | None = None):
        # A UI tab's generation can be stopped or superseded; an API call is its own scope, or
        # the caller's token (/v1 cancels its choices when their client goes away).
        key = f"{session_key(request)}/{tab or 'api-' + uuid.uuid4().hex}"
        token = cancel or self.cancels.start(key)
        try:
            yield token
        finally:
            # Explicit: whatever ended this request (done, error, Stop, disconnect) frees the model.
            token.cancel("finished")
            if cancel is None:
                self.cancels.finish(key, token)

    def stop(self, request, tab: str) -> bool:
        return self.cancels.cancel(f"{session_key(request)}/{tab}")

    def complete(self, prompt, params, request, model=None, tab=None, cancel=None):
        with self._cancel_scope(request, tab, cancel) as token:
            run = self.playground.complete(prompt, params, token, self.client(request), model)
            yield from _said_if_stopped(run, tab)

    def fill(self, prompt, params, request, model=None, tab=None, cancel=None):
        with self._cancel_scope(request, tab, cancel) as token:
            run = self.playground.fill(prompt, params, token, self.client(request), model)
            yield from _said_if_stopped(run, tab)

    def assist(
        self,
        message,
        history: list[Turn],
        params,
        request,
        model=None,
        tab=None,
        cancel=None,
        reply_so_far="",
    ):
        with self._cancel_scope(request, tab, cancel) as token:
            client = self.client(request)
            run = self.playground.assist(
                message, history, params, token, client, model, reply_so_far
            )
            yield from _said_if_stopped(run, tab)

    def running(self, request, tab: str) -> bool:
        """Whether this tab has a generation under way (its Stop button is live)."""
        return self.cancels.running(f"{session_key(request)}/{tab}")


def _said_if_stopped(outputs: Iterator[Output], tab: str | None) -> Iterator[Output]:
    """A stopped generation says so: in a tab its status does; an API call fails with why,
    rather than return its partial text as if it were the answer."""
    # Closed whatever happens: raising here left the engine's generator suspended after its
    # Done, so its slot was freed only when the garbage collector got to it (a /v1 request
    # whose client went away held 4 batch slots for minutes).
    with closing(outputs):
        for out in outputs:
            if tab is None and out.done is not None and out.done.reason == "cancelled":
                raise PlaygroundError(
                    f"The generation was stopped before it finished "
                    f"({out.stopped or 'cancelled'}).",
                    kind="cancelled",
                )
            yield out


FRAME_SECONDS = 0.05


def throttle(outputs: Iterator[Output], every: float = FRAME_SECONDS) -> Iterator[Output]:
    """At most one update per frame (the first and the final one always pass).

    Re-rendering highlighted HTML for every token kept the browser so busy that a click on Stop
    waited seconds for its turn. The API endpoints send the whole text so far in each message,
    so one message per token cost O(n^2) bytes and, at 8 streams of the tiny model, more CPU in
    the web stack than the model itself used; 20 frames a second is still live to a reader.
    """
    last = -math.inf
    skipped: Output | None = None
    for out in outputs:
        if skipped is not None:  # its delta is carried by the next frame that goes out
            out = out.after(skipped)
        now = time.monotonic()
        if out.done is not None or now - last >= every:
            last, skipped = now, None
            yield out
        else:
            skipped = out
