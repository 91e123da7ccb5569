"""Shares as the UI and the API make them: save a generation, build its links, reopen it.

`create_share` is the one way in, for `POST /api/shares` and the Gradio `/share` endpoint alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.links import PublicLinks
from app.parameters import SCHEMA, Schema
from app.services.playground import Output
from app.shares.store import SharePublic, Store
from model.errors import PlaygroundError
from model.registry import Registry

log = logging.getLogger(__name__)

PENDING = {"pending": True}  # the share record while a generation is still streaming


@dataclass(frozen=True)
class ShareLink:
    id: str
    path: str  # "/s/<id>", relative to the app root
    delete_path: str | None  # "/s/<id>/delete?token=..."; None when the content was shared before
    created: bool


def create_share(store: Store, *, client_id: str, **fields: Any) -> ShareLink:
    """Save a generation and return its links. Raises PlaygroundError with a user-ready message.

    `fields` are `Store.create`'s (mode, prompt, output, parameters, model, fim, spans);
    `client_id` keys the per-client write rate limit (the client's address).
    """
    made = store.create(client_id=client_id, **fields)
    sid = made.share.id
    delete_path = f"/s/{sid}/delete?token={quote(made.delete_token)}"
    log.info(
        "share %s created (mode=%s, %d output chars)", sid, made.share.mode, len(made.share.output)
    )
    return ShareLink(id=sid, path=f"/s/{sid}", delete_path=delete_path, created=made.created)


class Shares:
    def __init__(
        self, store: Store | None, links: PublicLinks, registry: Registry, schema: Schema = SCHEMA
    ):
        self.store = store
        self.links = links
        self.registry = registry
        self.schema = schema

    def share(self, record: dict | None, client: str, host: str | None, scheme: str = "http"):
        """Save a generation; returns (link, private delete link or None if shared before)."""
        if self.store is None:
            raise PlaygroundError("Sharing is not configured on this server.", kind="config")
        if record == PENDING:
            raise PlaygroundError(
                "The generation is still running: share it once it has finished.",
                field="output",
            )
        if not record:
            raise PlaygroundError("Generate something first, then share it.", field="output")
        link = create_share(self.store, client_id=client, **record)
        base = self.links.base(host, scheme)
        return base + link.path, (base + link.delete_path if link.delete_path else None)

    def load(self, share_id: str | None) -> SharePublic | None:
        if not share_id or self.store is None:
            return None
        share = self.store.get(share_id)
        if share is None:
            raise PlaygroundError(
                f"The shared generation `{share_id}` does not exist or was deleted.",
                field="share",
                kind="not_found",
            )
        return share

    def form(self, share: SharePublic) -> dict:
        """The parameter widgets' values for a share, whatever its `parameters` hold.

        A share made through the API may carry any JSON object (or none): each value that would
        not pass validation falls back to the default of the share's model, so every share the
        store accepted reopens.
        """
        stored = share.parameters if isinstance(share.parameters, dict) else {}
        try:
            spec = self.registry.choose(share.model or None, share.mode)
        except PlaygroundError:  # a model this server does not offer
            spec = self.registry.choose(None, share.mode)
        form = self.schema.form(stored, spec, share.mode)
        language = stored.get("language")
        form["language"] = language if isinstance(language, str) and language else "python"
        return form


def record(out: Output, prompt: str, params, language: str, spans=(), schema=SCHEMA) -> dict:
    """What Share saves: the user's prompt, the output, and how it was made."""
    start, end = out.generated_span
    return {
        "mode": out.mode,
        "prompt": prompt,
        "output": out.text,
        "parameters": {**schema.record(params), "language": language},
        "model": out.model,
        "fim": {"middle_start": start, "middle_end": end} if out.mode == "fim" else None,
        "spans": list(spans),
    }
