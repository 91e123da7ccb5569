"""Per-browser-session cancel handles, so Stop cancels exactly that session's generation."""

from __future__ import annotations

import threading

from model.engine import CancelToken


class CancelRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}

    def start(self, session: str) -> CancelToken:
        token = CancelToken()
        with self._lock:
            previous = self._tokens.get(session)
            self._tokens[session] = token
        if previous is not None:
            previous.cancel()  # one generation per session: a new one supersedes the old
        return token

    def cancel(self, session: str) -> bool:
        with self._lock:
            token = self._tokens.get(session)
        if token is None:
            return False
        token.cancel()
        return True

    def finish(self, session: str, token: CancelToken) -> None:
        with self._lock:
            if self._tokens.get(session) is token:
                del self._tokens[session]
