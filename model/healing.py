"""Token healing for completion prompts that end in whitespace.

A prompt ending in "\\n" (a user pressing Enter after a function header, or any HumanEval
prompt) tokenizes as a lone newline token, while the training data had the newline merged with
the next line's indent ("\\n    " is one token in SmolLM2's vocabulary). The model then sees an
unusual token boundary and tends to answer in prose. Healing backs the prompt off to before its
trailing whitespace token(s) and lets the model choose them again: the first generated token(s)
must start with the removed text, so "\\n" can become "\\n    " and the body follows.

Use (LocalEngine.stream, completion mode only; the batch does the same through
model/sampling.py):

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
from functools import lru_cache

import torch
from transformers import LogitsProcessor

log = logging.getLogger(__name__)

MAX_HEALED_TOKENS = 2


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character alias for each byte, inverted (what byte-level BPE stores)."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class VocabBytes:
    """Each token id's bytes (None for special and added tokens), and prefix-match masks."""

    def __init__(self, tokenizer):
        size = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        decoder = _byte_decoder()
        byte_level = all(
            all(ch in decoder for ch in piece)
            for i, piece in enumerate(pieces)
            if piece and i not in special
        )
        self.byte_level = byte_level
        self.bytes: list[bytes | None] = []
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                self.bytes.append(None)
            elif byte_level:
                self.bytes.append(bytes(decoder[ch] for ch in piece))
            else:  # SentencePiece and friends: slower, decodes one token at a time
                self.bytes.append(tokenizer.decode([i]).encode("utf-8"))
        self._masks: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.bytes)

    def text_bytes(self, ids: Sequence[int]) -> bytes | None:
        parts = [self.bytes[i] if 0 <= i < len(self.bytes) else None for i in ids]
        if any(p is None for p in parts):
            return None
        return b"".join(parts)  # type: ignore[arg-type]

    def allowed(self, remaining: bytes) -> torch.Tensor:
        """Tokens that could come next: they extend `remaining`, or are a prefix of it."""
        mask = self._masks.get(remaining)
        if mask is None:
            mask = torch.tensor(
                [
                    b is not None
                    and b != b""
                    and (b.startswith(remaining) or remaining.startswith(b))
                    for b in self.bytes
                ],
                dtype=torch.bool,
            )
            self._masks[remaining] = mask
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


class TokenHealer:
    """Per tokenizer: builds the vocabulary's byte table once (about a second for 49k tokens)."""

    def __init__(self, tokenizer, *, max_tokens: int = MAX_HEALED_TOKENS):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._vocab: VocabBytes | None = None
        self._extends: dict[bytes, bool] = {}

    @property
    def vocab(self) -> VocabBytes:
        if self._vocab is None:
            self._vocab = VocabBytes(self.tokenizer)
        return self._vocab

    def _extendable(self, removed: bytes) -> bool:
        """Whether some token extends `removed` (cached: one vocabulary scan per text)."""
        if removed not in self._extends:
            self._extends[removed] = any(
                b is not None and len(b) > len(removed) and b.startswith(removed)
                for b in self.vocab.bytes
            )
        return self._extends[removed]

    def heal(self, input_ids: Sequence[int]) -> Healing:
        """Back off trailing whitespace tokens: the last token when its text ends in whitespace,
        plus whole-whitespace tokens before it, up to `max_tokens`; always keep one token."""
        ids = [int(i) for i in input_ids]
        vocab = self.vocab
        k = 0
        while k < self.max_tokens and k < len(ids) - 1:
            piece = vocab.bytes[ids[-1 - k]] if ids[-1 - k] < len(vocab) else None
            if not piece:
                break  # special tokens (FIM markers, chat turns) are never healed
            if k == 0 and not piece[-1:].isspace():
                break
            if k > 0 and not piece.isspace():
                break
            k += 1
        if k == 0:
            return Healing(ids, "", None)
        kept, cut = ids[:-k], ids[-k:]
        removed = vocab.text_bytes(cut)
        try:
            text = removed.decode("utf-8") if removed else ""
        except UnicodeDecodeError:  # the cut splits a character; leave such prompts alone
            return Healing(ids, "", None)
        if not text or not vocab.allowed(removed).any():
            return Healing(ids, "", None)
        if k == 1 and not self._extendable(removed):
            # One token that no other token extends (tiny-starcoder keeps "\n" a token of its
            # own): the model could only re-create it unchanged, so healing would change nothing
            # and only cost the request its place in a batch.
            return Healing(ids, "", None)
        return Healing(kept, text, HealingProcessor(vocab, len(kept), removed))


def needs_healing(prompt: str) -> bool:
    """Whether heal() may act on this prompt text (it only heals trailing whitespace): a cheap
    check before tokenizing."""
    return prompt[-1:].isspace()


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
