"""Cancel handles per browser session and tab, so Stop cancels exactly that tab's generation.

A new generation supersedes the previous one in the same tab only (the UI shows one output per
tab). Another tab, or another API call from the same session, never cancels anything: with one
gradio_client and 8 concurrent calls, 5-7 of 8 used to end early with no text.
"""

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
            previous.cancel("stopped: you started a new generation in this tab")
        return token

    def cancel(self, session: str) -> bool:
        with self._lock:
            token = self._tokens.get(session)
        if token is None:
            return False
        token.cancel()
        return True

    def running(self, session: str) -> bool:
        with self._lock:
            return session in self._tokens

    def finish(self, session: str, token: CancelToken) -> None:
        with self._lock:
            if self._tokens.get(session) is token:
                del self._tokens[session]
