"""Deltas end to end: what a generation has written, kept as the pieces the engine sent.

The services pass each piece on (Output.delta); `/v1` streams them as they are, and only an
edge that needs the whole text (a Gradio component, a share, the final JSON body) joins it.
A mode's clean-up runs on the pieces as they come (model/tokens/shaping.py), so the streamed
text and the final text are the same.
"""

from __future__ import annotations

from model.engine import TokenLogprob


class Written:
    """One generation's text and tokens so far. Every Output of the generation shares it and
    reads its own length of it, so no frame copies what came before."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.tokens: list[TokenLogprob] = []
        self._joined, self._count = "", 0

    def add(self, piece: str, tokens: tuple[TokenLogprob, ...]) -> tuple[int, int]:
        if piece:
            self.pieces.append(piece)
        self.tokens.extend(tokens)
        return len(self.pieces), len(self.tokens)

    def text(self, count: int) -> str:
        """The first `count` pieces, joined; frames read in order, so each join adds only the
        pieces since the last one."""
        if count < self._count:
            return "".join(self.pieces[:count])
        if count > self._count:
            self._joined += "".join(self.pieces[self._count : count])
            self._count = count
        return self._joined
