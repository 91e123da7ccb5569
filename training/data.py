"""Token streams for tiny-starcoder: FIM per document, packing with <|endoftext|>."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from corpus import Document
from model.prompts.families import ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

logger = logging.getLogger(__name__)


def split_pieces(
    text: str, max_chars: int, min_chars: int = 0, rng: np.random.Generator | None = None
) -> list[str]:
    """Cut a file at line boundaries into pieces of at most ~max_chars characters.

    StarCoder applied FIM to whole files inside an 8K window. With a 512-token window a whole
    file rarely fits, so each context-sized piece of a file is a FIM document of its own. With
    `rng`, each piece's limit is drawn from [min_chars, max_chars]: shorter FIM documents have
    shorter middles, so a tiny model sees more middles end at <|endoftext|>.
    """
    pieces: list[str] = []
    current: list[str] = []
    size = 0

    def limit() -> int:
        return int(rng.integers(min_chars, max_chars + 1)) if rng is not None else max_chars

    cap = limit()
    for line in text.splitlines(keepends=True):
        if current and size + len(line) > cap:
            pieces.append("".join(current))
            current, size = [], 0
            cap = limit()
        current.append(line)
        size += len(line)
    if current:
        pieces.append("".join(current))
    return pieces


class StreamBuilder:
    """Builds one epoch's packed token stream from documents, deterministically from a seed."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        piece_chars: int,
        fim_rate: float = 0.5,
        fim_spm_rate: float = 0.5,
        min_piece_chars: int = 0,
    ):
        self.tok = tokenizer
        self.piece_chars = piece_chars
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.min_piece_chars = min_piece_chars
        self.eos = tokenizer.token_to_id(ENDOFTEXT)
        self.prefix = tokenizer.token_to_id(FIM_PREFIX)
        self.middle = tokenizer.token_to_id(FIM_MIDDLE)
        self.suffix = tokenizer.token_to_id(FIM_SUFFIX)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def build(self, docs: Sequence[Document], seed: int, shuffle: bool = True) -> np.ndarray:
        """One epoch: documents shuffled, FIM applied per piece at `fim_rate`, EOS-packed.

        Plain pieces of a file stay contiguous (one document); each FIM piece is a document of
        its own, framed by <|endoftext|>, as in StarCoder's packing.
        """
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(docs)) if shuffle else np.arange(len(docs))
        # Plan first (texts to encode + layout), then encode everything in one parallel batch.
        texts: list[str] = []
        layout: list[tuple] = []
        for i in order:
            if self.min_piece_chars and self.fim_rate > 0:
                pieces = split_pieces(docs[i].text, self.piece_chars, self.min_piece_chars, rng)
            else:
                pieces = split_pieces(docs[i].text, self.piece_chars)
            plain: list[str] = []
            for piece in pieces:
                if rng.random() < self.fim_rate:
                    if plain:
                        layout.append(("plain", len(texts)))
                        texts.append("".join(plain))
                        plain = []
                    # Character-level boundaries, as bigcode's Megatron `permute`.
                    a, b = sorted(rng.integers(0, len(piece) + 1, size=2))
                    spm = rng.random() < self.fim_spm_rate
                    layout.append(("spm" if spm else "psm", len(texts)))
                    texts.extend([piece[:a], piece[a:b], piece[b:]])
                else:
                    plain.append(piece)
            if plain:
                layout.append(("plain", len(texts)))
                texts.append("".join(plain))
        ids = self._encode(texts)
        out: list[int] = []
        for kind, k in layout:
            if kind == "plain":
                out.extend(ids[k])
            elif kind == "psm":
                pre, mid, suf = ids[k], ids[k + 1], ids[k + 2]
                out.append(self.prefix)
                out.extend(pre)
                out.append(self.suffix)
                out.extend(suf)
                out.append(self.middle)
                out.extend(mid)
            else:  # SPM, StarCoder's variant: <pre><suf>{suffix}<mid>{prefix}{middle}
                pre, mid, suf = ids[k], ids[k + 1], ids[k + 2]
                out.extend([self.prefix, self.suffix])
                out.extend(suf)
                out.append(self.middle)
                out.extend(pre)
                out.extend(mid)
            out.append(self.eos)
        return np.asarray(out, dtype=np.int32)


def windows(stream: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows of `length + 1` tokens (inputs + shifted targets)."""
    n = (len(stream) - 1) // length
    idx = np.arange(n)[:, None] * length + np.arange(length + 1)[None, :]
    return stream[idx]


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token stands for (0 for special tokens), for bits per byte."""
    from tokenizers.decoders import ByteLevel  # noqa: F401  (documents the byte mapping)

    # GPT-2 byte-to-unicode table: every byte maps to one printable character.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
    bs += list(range(0xAE, 0xFF + 1))
    mapped = set(bs)
    n = 0
    chars = {}
    for b in range(256):
        if b in mapped:
            chars[chr(b)] = 1
        else:
            chars[chr(256 + n)] = 1
            n += 1
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    out = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for token, i in vocab.items():
        out[i] = 0 if token in special else sum(chars.get(c, 0) for c in token)
    return out
