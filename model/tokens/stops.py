"""Stop sequences on streamed text: cut at the first match, never show part of a stop."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text deltas; get back what is safe to show and whether a stop was hit.

    Text that could still become a stop sequence is held back, so a user never sees
    "Hum" flash on screen before "Human:" is cut.

    `show_first_newline`: a newline that starts the text is shown at once, although a stop
    that begins with one ("\\n```") may follow it; such a stop then matches right after it,
    and the text is that newline. The playground sets it where it asks again when a completion
    ends at once (GenerationParams.show_first_newline): without it, every completion that
    starts with a newline showed its first token a decode step late.
    """

    def __init__(self, stops: Sequence[str], show_first_newline: bool = False):
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False
        self._first = show_first_newline  # nothing fed yet
        self._after_newline = False  # the newline shown first still starts what is held

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        text = self._pending + delta
        shown = ""
        if self._first and text:
            self._first = False
            if text.startswith("\n"):
                shown, text, self._after_newline = "\n", text[1:], True
        if self._after_newline:
            # Matched as if the newline were still held; never shown twice.
            rest = self._match("\n" + text)
            if self._pending == "\n" + text:  # all held, the newline included
                self._pending = text
                return shown
            self._after_newline = False
            return shown + rest[1:]
        return shown + self._match(text)

    def _match(self, text: str) -> str:
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
