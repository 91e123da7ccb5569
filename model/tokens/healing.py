"""Token healing for completion prompts that end in whitespace.

A prompt ending in "\\n" (a user pressing Enter after a function header, or any HumanEval
prompt) tokenizes as a lone newline token, while the training data had the newline merged with
the next line's indent ("\\n    " is one token in SmolLM2's vocabulary). The model then sees an
unusual token boundary and tends to answer in prose. Healing backs the prompt off to before its
trailing whitespace token(s) and lets the model choose them again: the first generated token(s)
must start with the removed text, so "\\n" can become "\\n    " and the body follows.

Use (LocalEngine.stream, completion mode only; the batch does the same through
model/tokens/sampling.py):

    healing = healer.heal(prompt_ids)            # once per request
    generate(input_ids=healing.input_ids, logits_processor=[healing.processor], ...)
    strip = healing.stripper()                   # the removed text is already in the prompt:
    shown = strip.feed(delta)                    # drop it from the streamed continuation

Works on the token bytes, so it is exact for byte-level BPE (StarCoder, SmolLM2, GPT-2) and
falls back to per-token decoding for other vocabularies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from model.tokens import heal_plan
from model.tokens.heal_plan import MAX_HEALED_TOKENS, HealPlanner, needs_healing

log = logging.getLogger(__name__)

__all__ = ["MAX_HEALED_TOKENS", "Healing", "TokenHealer", "heal", "heal_request", "needs_healing"]


class VocabBytes(heal_plan.VocabBytes):
    """The byte table plus its prefix matches as cached masks, for the logits processor."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self._masks: dict[bytes, torch.Tensor] = {}

    def allowed(self, remaining: bytes) -> torch.Tensor:
        """Tokens that could come next: they extend `remaining`, or are a prefix of it."""
        mask = self._masks.get(remaining)
        if mask is None:
            mask = self._masks[remaining] = torch.tensor(self.matches(remaining), dtype=torch.bool)
        return mask


class HealingProcessor(LogitsProcessor):
    """Masks every token that would not continue the removed prompt text, until it is rebuilt."""

    def __init__(self, vocab: VocabBytes, prompt_len: int, removed: bytes):
        self.vocab = vocab
        self.prompt_len = prompt_len
        self.removed = removed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            blocked = self.blocked(input_ids[row, self.prompt_len :].tolist(), scores.shape[-1])
            if blocked is not None:
                scores[row, blocked.to(scores.device)] = -float("inf")
        return scores

    def blocked(self, generated: list[int], width: int) -> torch.Tensor | None:
        """[width] mask of the tokens that may not come next, or None once healed."""
        consumed = self._consumed(generated)
        if consumed is None:
            return None  # healed: from here on the model is free
        mask = self.vocab.allowed(self.removed[len(consumed) :])
        n = min(width, mask.shape[0])
        blocked = torch.ones(width, dtype=torch.bool)
        blocked[:n] = ~mask[:n]
        return blocked

    def _consumed(self, generated: list[int]) -> bytes | None:
        """The removed text rebuilt so far, or None once it is complete (or cannot be)."""
        consumed = b""
        for token in generated:
            piece = self.vocab.bytes[token] if token < len(self.vocab) else None
            if piece is None:
                return None
            consumed += piece
            if len(consumed) >= len(self.removed):
                return None
        return consumed


class PrefixStripper:
    """Drops the healed text from the start of the streamed continuation (it is in the prompt)."""

    def __init__(self, prefix: str):
        self.pending = prefix

    def feed(self, delta: str) -> str:
        if not self.pending:
            return delta
        n = min(len(self.pending), len(delta))
        if delta[:n] != self.pending[:n]:  # cannot happen under the constraint; never eat text
            log.warning("healed text %r not at the start of %r", self.pending, delta)
            self.pending = ""
            return delta
        self.pending = self.pending[n:]
        return delta[n:]


@dataclass(frozen=True)
class Healing:
    input_ids: list[int]  # the prompt, minus the backed-off tokens
    removed: str  # their text, which the generation will start with
    processor: HealingProcessor | None  # None: nothing to heal, generate as usual

    @property
    def active(self) -> bool:
        return self.processor is not None

    def stripper(self) -> PrefixStripper:
        return PrefixStripper(self.removed)


class TokenHealer(HealPlanner):
    """Per tokenizer: the plan (model/tokens/heal_plan.py) as a Healing with its logits processor."""

    vocab_class = VocabBytes

    def heal(self, input_ids: Sequence[int]) -> Healing:
        plan = self.plan(input_ids)
        if plan is None:
            return Healing([int(i) for i in input_ids], "", None)
        processor = HealingProcessor(self.vocab, len(plan.kept), plan.removed)
        return Healing(plan.kept, plan.text, processor)


def heal_request(tokenizer, request, ids: Sequence[int]) -> Healing | None:
    """The healing to apply to a request's prompt `ids`, or None: not asked for (`params.heal`
    is off outside completion mode) or nothing to heal. One rule for generate() and the batch."""
    if not (request.params.heal and needs_healing(request.prompt)):
        return None
    healing = heal(tokenizer, ids)
    return healing if healing.active else None


_healers: dict[int, TokenHealer] = {}


def heal(tokenizer, input_ids: Sequence[int]) -> Healing:
    """heal() with a TokenHealer cached per tokenizer object (the byte table is built once)."""
    healer = _healers.get(id(tokenizer))
    if healer is None or healer.tokenizer is not tokenizer:
        healer = _healers[id(tokenizer)] = TokenHealer(tokenizer)
    return healer.heal(input_ids)
