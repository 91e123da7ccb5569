"""Per-client rate limits, keyed on the client's address (not on anything the client chooses).

One mechanism for generations and shares. A Gradio session hash is new for every plain HTTP call,
so keying on it let a script open a new session per call and never be limited.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from model.errors import PlaygroundError


class RateLimited(PlaygroundError):
    """Too many requests from one client; `retry_after_s` says when the next one is allowed."""

    def __init__(self, message: str, *, retry_after_s: float):
        super().__init__(message, field=None, kind="rate_limit")
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Sliding window: at most `limit` events per `window_s` seconds per client; 0 disables it."""

    MAX_CLIENTS = 10_000  # beyond this, idle clients are forgotten so memory stays bounded

    def __init__(self, limit: int, window_s: float = 60.0, *, what: str = "requests", clock=None):
        self.limit = limit
        self.window_s = window_s
        self.what = what
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def check(self, client: str) -> None:
        """Count one event for `client`, or raise RateLimited if it is over the limit."""
        if self.limit <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._hits) > self.MAX_CLIENTS:
                self._hits = {
                    k: v for k, v in self._hits.items() if v and v[-1] > now - self.window_s
                }
            hits = self._hits.setdefault(client, deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                wait = max(1.0, hits[0] + self.window_s - now)
                raise RateLimited(
                    f"Too many {self.what}: the limit is {self.limit} per {self.window_s:g} s "
                    f"per client. Try again in {wait:.0f} s.",
                    retry_after_s=wait,
                )
            hits.append(now)


def client_address(host: str | None, headers, trusted_header: str | None = None) -> str:
    """The address rate limits are keyed on.

    Behind a trusted reverse proxy (a Space, a Docker ingress) the socket peer is the proxy, so
    `trusted_header` (e.g. x-forwarded-for) names where the proxy writes the client address. Its
    last entry is the one the proxy appended; earlier entries are the client's to forge.
    """
    if trusted_header and headers is not None:
        value = headers.get(trusted_header)
        if value:
            last = value.split(",")[-1].strip()
            if last:
                return last[:100]
    return host or "unknown"
