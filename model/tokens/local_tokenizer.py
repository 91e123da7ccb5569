"""The model's own tokenizer in the web process, torch-free (the `tokenizers` library reading
the model folder's tokenizer.json): prompts are tokenized and checked without a trip to the
worker. A Hub model before its download has none here; the worker tokenizes it over the pipe."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model.engine import decode_ids


class LocalTokenizer:
    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    @classmethod
    def find(cls, model: str) -> LocalTokenizer | None:
        path = Path(model).expanduser() / "tokenizer.json"
        if not path.is_file():
            return None
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Sequence[int]) -> str:
        return decode_ids(self._tok, ids)
