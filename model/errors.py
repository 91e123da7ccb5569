"""The one user-facing error type, shared by model/ and app/ (app/errors.py maps it to gr.Error),
and the one table of its kinds: each kind's HTTP status and OpenAI error type, so every edge
(the share routes, /v1, the HTTP guard) answers a kind the same way."""

from __future__ import annotations

from typing import NamedTuple


class Kind(NamedTuple):
    status: int
    openai_type: str  # OpenAI's `error.type`; its client picks its exception by the status
    meaning: str


KINDS: dict[str, Kind] = {
    "validation": Kind(400, "invalid_request_error", "a value the caller can fix"),
    "unsupported": Kind(400, "invalid_request_error", "asked for what this server does not do"),
    "unauthorized": Kind(401, "authentication_error", "no valid API key"),
    "forbidden": Kind(403, "permission_error", "not allowed (cross-site, wrong delete token)"),
    "not_found": Kind(404, "not_found_error", "no such model, share, route or call"),
    "timeout": Kind(408, "invalid_request_error", "the request body came too slowly"),
    "too_large": Kind(413, "invalid_request_error", "over a size or cost limit"),
    "unsupported_media_type": Kind(415, "invalid_request_error", "a body that is not JSON"),
    "rate_limit": Kind(429, "rate_limit_error", "over a per-client rate or token budget"),
    "cancelled": Kind(503, "server_error", "stopped before it finished"),
    "busy": Kind(503, "server_error", "the queue or the share store is full or away"),
    "config": Kind(503, "server_error", "the server's setup cannot serve this"),
    "engine": Kind(503, "server_error", "the model failed or is restarting"),
    "oom": Kind(503, "server_error", "the model ran out of memory"),
}


class PlaygroundError(Exception):
    """An error whose message is safe and useful to show to the user as-is.

    `field` names the input at fault (or None), `kind` is one of KINDS: a short machine label
    used for metrics and API clients, which also says the HTTP status.
    """

    def __init__(self, message: str, *, field: str | None = None, kind: str = "validation"):
        if kind not in KINDS:  # a new kind is declared in KINDS first, with its status
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.message = message
        self.field = field
        self.kind = kind

    def renamed(self, names: dict[str, str]) -> PlaygroundError:
        """This error in the caller's words: each `name` in `names` becomes the caller's name
        for it (`/v1` says `max_tokens` where the page says `max_new_tokens`)."""
        message = self.message
        for ours, theirs in names.items():
            if ours != theirs:
                message = message.replace(f"`{ours}`", f"`{theirs}`")
        field = names.get(self.field, self.field) if self.field else self.field
        return self.reworded(message, field)

    def reworded(self, message: str, field: str | None) -> PlaygroundError:
        """A copy saying `message` about `field`: the same class and details (a rate limit's
        retry time), without calling __init__."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.message, copy.field, copy.args = message, field, (message,)
        return copy

    @property
    def status(self) -> int:
        return KINDS[self.kind].status

    def body(self) -> dict:
        """The JSON body of every route but /v1: the message, the field at fault, the kind."""
        return {"error": self.message, "field": self.field, "kind": self.kind}

    def openai_body(self) -> dict:
        """/v1's body, in OpenAI's shape (its clients pick an exception by the status)."""
        kind = KINDS[self.kind].openai_type
        return {"error": {"message": self.message, "type": kind, "param": self.field,
                          "code": self.kind}}  # fmt: skip

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the refusal carries: when to retry, for a rate limit."""
        wait = getattr(self, "retry_after_s", None)
        return {"Retry-After": str(int(wait + 0.999))} if wait else {}

    def __str__(self) -> str:
        return self.message
