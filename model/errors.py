"""The one user-facing error type, shared by model/ and app/ (app/errors.py maps it to gr.Error)."""

from __future__ import annotations


class PlaygroundError(Exception):
    """An error whose message is safe and useful to show to the user as-is.

    `field` names the input at fault (or None), `kind` is a short machine label
    used for metrics and API clients (e.g. "validation", "busy", "engine").
    """

    def __init__(self, message: str, *, field: str | None = None, kind: str = "validation"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.kind = kind

    def __str__(self) -> str:
        return self.message
