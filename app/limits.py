"""The one set of size limits: request validation, the share store and the HTTP body cap use it.

A prompt the playground accepts must also be shareable, so both read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

# JSON can spell one byte of text as six ("\u0001"), so a body may be up to 6x its text.
JSON_ESCAPE_GROWTH = 6


@dataclass(frozen=True)
class Limits:
    max_prompt_bytes: int = 128 * 1024  # a prompt, a chat message, a whole chat history
    max_new_text_bytes: int = 128 * 1024  # what a generation may add to the prompt
    max_parameters_bytes: int = 4096
    max_model_chars: int = 200
    max_spans: int = 2000
    max_spans_bytes: int = 256 * 1024

    @property
    def max_output_bytes(self) -> int:
        """An output is the prompt plus what the model wrote, so it may be longer than a prompt."""
        return self.max_prompt_bytes + self.max_new_text_bytes

    @property
    def max_body_bytes(self) -> int:
        """Just above the largest valid request: a share of the largest prompt, output and spans
        (a chat request, prompt plus history, is smaller), as escaped JSON."""
        text = self.max_prompt_bytes + self.max_output_bytes + self.max_spans_bytes
        return JSON_ESCAPE_GROWTH * (text + self.max_parameters_bytes) + 64 * 1024
