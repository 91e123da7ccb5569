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


class TokenBudget:
    """Per client, the model tokens its generations may cost in a sliding minute
    (TOKEN_BUDGET_PER_MIN; 0 disables it).

    A count of requests let one `echo` + `logprobs` request on an 8,000-token prompt, or thirty
    `n: 16, max_tokens: 1000` requests a minute, hold a model for minutes. A generation costs its
    prompt's tokens plus the most it may write (`max_new_tokens`), charged when it starts; when
    it ends the charge drops to what it used, so a short answer or a stopped run gives the rest
    back.
    """

    def __init__(self, per_window: int, window_s: float = 60.0, *, clock=None):
        self.per_window = per_window
        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._spent: dict[str, deque[list[float]]] = {}  # client -> [[time, tokens], ...]

    def charge(self, client: str, prompt_tokens: int, new_tokens: int) -> Charge:
        """Reserve a generation's cost, or raise RateLimited saying the budget, the cost and
        when enough of it is back (PlaygroundError "too_large" if it could never fit)."""
        cost = prompt_tokens + new_tokens
        entry = [self._clock(), float(cost)]
        if self.per_window <= 0:
            return Charge(entry, self._lock)
        what = f"{cost:,} model tokens ({prompt_tokens:,} of prompt + {new_tokens:,} to write)"
        budget = f"{self.per_window:,} per {self.window_s:g} s per client (TOKEN_BUDGET_PER_MIN)"
        if cost > self.per_window:
            raise PlaygroundError(
                f"This generation would cost {what}, more than the whole budget of {budget}: "
                "ask for fewer new tokens or send a shorter prompt.",
                field="max_new_tokens",
                kind="too_large",
            )
        now = entry[0]
        with self._lock:
            if len(self._spent) > RateLimiter.MAX_CLIENTS:
                self._spent = {
                    k: v for k, v in self._spent.items() if v and v[-1][0] > now - self.window_s
                }
            spent = self._spent.setdefault(client, deque())
            while spent and spent[0][0] <= now - self.window_s:
                spent.popleft()
            used = sum(tokens for _, tokens in spent)
            if used + cost > self.per_window:
                wait, freed = self.window_s, 0.0
                for at, tokens in spent:  # oldest first: when does enough of it expire?
                    freed += tokens
                    if used - freed + cost <= self.per_window:
                        wait = at + self.window_s - now
                        break
                left = max(0, self.per_window - int(used))
                raise RateLimited(
                    f"Token budget spent: this generation costs {what}; the budget is {budget} "
                    f"and {left:,} are left. Enough is back in {max(1.0, wait):.0f} s.",
                    retry_after_s=max(1.0, wait),
                )
            spent.append(entry)
        return Charge(entry, self._lock)


class Charge:
    """One generation's reservation in a TokenBudget; settle() lowers it to what it used."""

    def __init__(self, entry: list[float], lock: threading.Lock):
        self._entry, self._lock = entry, lock
        self.used = int(entry[1])  # what to settle at, as far as the caller knows so far
        self.per_token = 1  # rows each generated token costs (a fill's candidates)

    def settle(self, used_tokens: int) -> None:
        with self._lock:
            self._entry[1] = min(self._entry[1], float(max(0, used_tokens)))


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
