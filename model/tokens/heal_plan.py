"""Token healing's plan, torch-free: which trailing tokens to back off and which tokens may
re-create them. model/tokens/healing.py turns a plan into a logits processor for the local model;
model/engines/remote_heal.py into `allowed_token_ids` requests for a remote server (vLLM).

Works on the token bytes, so it is exact for byte-level BPE (StarCoder, SmolLM2, GPT-2) and
falls back to per-token decoding for other vocabularies. Takes either kind of tokenizer:
transformers' or the `tokenizers` library's (the web process has only the latter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


def _pieces_and_specials(tokenizer) -> tuple[list[str | None], set[int]]:
    """Each id's stored piece, and the ids of special and added tokens."""
    if hasattr(tokenizer, "get_vocab_size"):  # a `tokenizers.Tokenizer`
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        pieces = [tokenizer.id_to_token(i) for i in range(size)]
        return pieces, set(tokenizer.get_added_tokens_decoder())
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return pieces, special


class VocabBytes:
    """Each token id's bytes (None for special and added tokens), and prefix matches."""

    def __init__(self, tokenizer):
        pieces, special = _pieces_and_specials(tokenizer)
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
        self._matches: dict[bytes, list[bool]] = {}

    def __len__(self) -> int:
        return len(self.bytes)

    def text_bytes(self, ids: Sequence[int]) -> bytes | None:
        parts = [self.bytes[i] if 0 <= i < len(self.bytes) else None for i in ids]
        if any(p is None for p in parts):
            return None
        return b"".join(parts)  # type: ignore[arg-type]

    def matches(self, remaining: bytes) -> list[bool]:
        """Per id: whether the token could come next, i.e. it extends `remaining` or is a
        prefix of it (cached per text)."""
        found = self._matches.get(remaining)
        if found is None:
            found = [
                b is not None and b != b"" and (b.startswith(remaining) or remaining.startswith(b))
                for b in self.bytes
            ]
            self._matches[remaining] = found
        return found

    def allowed_ids(self, remaining: bytes) -> list[int]:
        return [i for i, ok in enumerate(self.matches(remaining)) if ok]


@dataclass(frozen=True)
class HealPlan:
    kept: list[int]  # the prompt's ids minus the backed-off ones
    removed: bytes  # the backed-off tokens' bytes, which the generation must start with
    text: str  # the same, as text


class HealPlanner:
    """Per tokenizer: builds the vocabulary's byte table once (about a second for 49k tokens)."""

    vocab_class: type[VocabBytes] = VocabBytes

    def __init__(self, tokenizer, *, max_tokens: int = MAX_HEALED_TOKENS):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._vocab: VocabBytes | None = None
        self._extends: dict[bytes, bool] = {}

    @property
    def vocab(self) -> VocabBytes:
        if self._vocab is None:
            self._vocab = self.vocab_class(self.tokenizer)
        return self._vocab

    def _extendable(self, removed: bytes) -> bool:
        """Whether some token extends `removed` (cached: one vocabulary scan per text)."""
        if removed not in self._extends:
            self._extends[removed] = any(
                b is not None and len(b) > len(removed) and b.startswith(removed)
                for b in self.vocab.bytes
            )
        return self._extends[removed]

    def plan(self, input_ids: Sequence[int]) -> HealPlan | None:
        """Back off trailing whitespace tokens: the last token when its text ends in whitespace,
        plus whole-whitespace tokens before it, up to `max_tokens`; always keep one token.
        None: nothing to heal."""
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
            return None
        kept, cut = ids[:-k], ids[-k:]
        removed = vocab.text_bytes(cut)
        try:
            text = removed.decode("utf-8") if removed else ""
        except UnicodeDecodeError:  # the cut splits a character; leave such prompts alone
            return None
        if not text or not any(vocab.matches(removed)):
            return None
        if k == 1 and not self._extendable(removed):
            # One token that no other token extends (tiny-starcoder keeps "\n" a token of its
            # own): the model could only re-create it unchanged, so healing would change nothing
            # and only cost the request its place in a batch.
            return None
        return HealPlan(kept, removed, text)


def needs_healing(prompt: str) -> bool:
    """Whether a plan may act on this prompt text (it only heals trailing whitespace): a cheap
    check before tokenizing."""
    return prompt[-1:].isspace()
