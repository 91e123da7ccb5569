"""A mode's clean-up of what the model writes, on the pieces as they stream: a fill's trailing
blank lines, an assistant reply's whitespace and turn markers. Only what may still be cut is
held back, so the streamed text and the final text are the same; the whole-text forms
(model/prompts/templates.py: trim_fim_middle, clean_reply) run the same code once.
"""

from __future__ import annotations

from model.tokens.stops import StopMatcher


class Plain:
    """Pieces shown as the engine wrote them."""

    def feed(self, piece: str) -> str:
        return piece

    def finish(self) -> str:
        return ""


class HoldTrailingSpace(Plain):
    """Trailing whitespace is held until text follows it, and dropped at the end."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        kept = text.rstrip()
        self._held = text[len(kept) :]
        return kept


class Reply(HoldTrailingSpace):
    """An assistant's reply: no leading or trailing whitespace, cut before a turn marker
    (`Human:`) even when the model's own stops did not include it."""

    def __init__(self, markers: tuple[str, ...], started: bool = False) -> None:
        """`started`: the reply goes on from text already shown (Continue), so leading
        whitespace is the model's and kept."""
        super().__init__()
        self._started = started
        self._stops = StopMatcher(markers)

    def feed(self, piece: str) -> str:
        piece = self._stops.feed(piece)
        if not self._started:
            piece = piece.lstrip()
            self._started = bool(piece)
        return super().feed(piece) if piece else ""

    def finish(self) -> str:
        # A held part of a marker ("Hum") was text after all; trailing whitespace is dropped.
        tail = self._stops.flush()
        if not self._started:
            tail = tail.lstrip()
        return (self._held + tail).rstrip() if tail.strip() else ""


def whole(shaper: Plain, text: str) -> str:
    """What `shaper` makes of a whole text at once."""
    return shaper.feed(text) + shaper.finish()
