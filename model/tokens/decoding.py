"""Incremental, UTF-8-safe detokenization for streaming (the approach TGI uses)."""

from __future__ import annotations

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # older tokenizers: window decoding only
    DecodeStream = None

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turn a growing list of token ids into text deltas, never emitting a broken character.

    Byte-level BPE splits multi-byte characters across tokens; decoding such a prefix yields
    U+FFFD. Fast tokenizers use the Rust DecodeStream, which holds back incomplete characters;
    otherwise we decode a small window of recent tokens and hold back while it ends in U+FFFD.
    """

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # tokens before this have been emitted
        # Fast tokenizers decode incrementally in Rust: one call per token instead of two.
        backend = getattr(tokenizer, "_tokenizer", None)
        self._stream = None
        if backend is not None and DecodeStream is not None:
            self._backend = backend
            self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids,
            skip_special_tokens=self.skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        if self._stream is not None:
            text = self._stream.step(self._backend, int(token_id)) or ""
            if REPLACEMENT not in text:
                self._prefix = self._read = len(self.ids)
                return text
            # A genuinely invalid byte sequence: window decoding from here on shows it as such.
            self._stream = None
        return self._window_push()

    def _window_push(self) -> str:
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end stays dropped)."""
        if self._stream is not None:
            return ""
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text) :].rstrip(REPLACEMENT)
