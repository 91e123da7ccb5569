"""Stop sequences on streamed text: cut at the first match, never show part of a stop."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text deltas; get back what is safe to show and whether a stop was hit.

    Text that could still become a stop sequence is held back, so a user never sees
    "Hum" flash on screen before "Human:" is cut.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        text = self._pending + delta
        cut = min((i for i in (text.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = self._holdback(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _holdback(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of some stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
