"""Shared generations: a durable store behind /s/<id> links.

SQLite by default (WAL, explicit busy timeout, synchronous=FULL so an acknowledged share survives
a crash), PostgreSQL when given a postgresql:// URL. The ORM row (`ShareRow`) stays private; callers
get the frozen `SharePublic` view. Schema changes go through the numbered `MIGRATIONS` list
(store_migrations.py); every field is checked in store_validation.py.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.limits import Limits
from app.ratelimit import RateLimited, RateLimiter
from app.shares.migrations import LATEST_VERSION, MIGRATIONS, migrate, read_version, write_tx
from app.shares.validation import MAX_JSON_DEPTH, validate
from app.validation import MODES
from model.errors import PlaygroundError

# Re-exported: callers and tests import the store's whole surface from here.
__all__ = [
    "LATEST_VERSION",
    "MAX_JSON_DEPTH",
    "MIGRATIONS",
    "MODES",
    "Limits",
    "RateLimited",
    "RateLimiter",
    "Store",
    "migrate",
]

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
ID_BYTES = 12  # 96 random bits -> 16 URL-safe characters
TOKEN_BYTES = 32


# ---------------------------------------------------------------- public view


@dataclass(frozen=True)
class FimSplit:
    """The generated middle of a FIM output: output[middle_start:middle_end] (str indices)."""

    middle_start: int
    middle_end: int


@dataclass(frozen=True)
class SharePublic:
    id: str
    created_at: datetime  # timezone-aware, UTC
    mode: str
    model: str | None
    parameters: dict[str, Any]
    prompt: str
    output: str
    fim: FimSplit | None = None
    spans: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class CreatedShare:
    share: SharePublic
    delete_token: str
    created: bool = True


# ---------------------------------------------------------------- ORM table


class Base(DeclarativeBase):
    pass


class ShareRow(Base):
    __tablename__ = "shares"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    mode: Mapped[str] = mapped_column(sa.String(16))
    model: Mapped[str | None] = mapped_column(sa.String(200))
    parameters: Mapped[str] = mapped_column(sa.Text)  # JSON text: identical on both databases
    prompt: Mapped[str] = mapped_column(sa.Text)
    output: Mapped[str] = mapped_column(sa.Text)
    content_hash: Mapped[str] = mapped_column(sa.String(64))  # not unique since v3
    delete_token_hash: Mapped[str] = mapped_column(sa.String(64))
    fim: Mapped[str | None] = mapped_column(sa.Text)  # since v2
    spans: Mapped[str] = mapped_column(sa.Text, default="[]")  # since v2


def _to_public(row: ShareRow) -> SharePublic:
    created = row.created_at
    if created.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        created = created.replace(tzinfo=UTC)
    created = created.astimezone(UTC)
    fim = json.loads(row.fim) if row.fim else None
    return SharePublic(
        id=row.id,
        created_at=created,
        mode=row.mode,
        model=row.model,
        parameters=json.loads(row.parameters),
        prompt=row.prompt,
        output=row.output,
        fim=FimSplit(**fim) if fim else None,
        spans=json.loads(row.spans or "[]"),
    )


# ---------------------------------------------------------------- store


def normalize_url(url: str) -> str:
    """Accept Heroku-style postgres:// URLs and pick the installed psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


UNAVAILABLE = "The share store is busy or unavailable right now; please try again in a minute."


def _available(method):
    """A database that is down or restarting is the user's "try again", never a 500: with
    PostgreSQL restarted under load, every read and write failed so."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            log.warning("share store unavailable: %s", str(exc).splitlines()[0][:200])
            raise PlaygroundError(UNAVAILABLE, kind="busy") from None

    return call


class Store:
    """Shares on one database. Thread-safe; create one per process and pass it around."""

    def __init__(
        self,
        url: str,
        *,
        limits: Limits | None = None,
        writes_per_window: int | None = None,  # SHARE_RATE_PER_MIN; or a rate_limiter
        window_s: float = 60.0,
        busy_timeout_ms: int = 10_000,
        rate_limiter: RateLimiter | None = None,
        auto_migrate: bool = True,
    ):
        self.url = normalize_url(url)
        self.limits = limits or Limits()
        if rate_limiter is None:
            if writes_per_window is None:
                raise TypeError(
                    "Store needs writes_per_window (SHARE_RATE_PER_MIN) or a rate_limiter"
                )
            rate_limiter = RateLimiter(writes_per_window, window_s, what="shares")
        self.rate_limiter = rate_limiter
        self.engine = _make_engine(self.url, busy_timeout_ms)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self.dialect = self.engine.dialect.name
        # SQLite has one writer at a time; queueing our own threads on a lock is fairer than
        # letting them spin in the busy handler (which still covers other processes).
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        if auto_migrate:
            try:
                migrate(self.engine)
            except Exception:
                self.engine.dispose()
                raise

    def close(self) -> None:
        self.engine.dispose()

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return read_version(conn)

    # -- reads

    @_available
    def get(self, share_id: str) -> SharePublic | None:
        if not ID_RE.match(share_id or ""):
            return None
        with Session(self.engine) as session:
            row = session.get(ShareRow, share_id)
            return _to_public(row) if row else None

    # -- writes

    @_available
    def create(
        self,
        *,
        mode: str,
        prompt: str,
        output: str,
        parameters: dict[str, Any] | None = None,
        model: str | None = None,
        fim: dict[str, Any] | None = None,
        spans: list[dict[str, Any]] | None = None,
        client_id: str,
    ) -> CreatedShare:
        """Validate and save a generation under a new id, even if identical content was shared
        before: handing back the existing id would show anyone who shares the same text (a page
        example, say) someone else's link.

        `fim` is either {"middle_start": i, "middle_end": j} (indices into `output`) or
        {"prefix": p, "middle": m, "suffix": s} with p + m + s == output.
        `spans` is a list of {"start": i, "end": j, ...} over `output` (extra JSON keys kept).
        Raises PlaygroundError (kind "validation") or RateLimited (kind "busy").
        """
        v = validate(self.limits, mode, prompt, output, parameters, model, fim, spans)
        self.rate_limiter.check(client_id)
        content_hash = _content_hash(v)
        for _ in range(3):  # retry only on a (96-bit) id collision
            token = secrets.token_urlsafe(TOKEN_BYTES)
            row = ShareRow(
                id=secrets.token_urlsafe(ID_BYTES),
                created_at=datetime.now(UTC),
                content_hash=content_hash,
                delete_token_hash=_hash_token(token),
                **v,
            )
            try:
                self._insert(row)
            except IntegrityError:
                log.info("share insert conflicted (id collision); retrying")
                continue
            return CreatedShare(_to_public(row), delete_token=token, created=True)
        raise PlaygroundError("Could not save the share; please try again.", kind="busy")

    @_available
    def token_matches(self, share_id: str, token: str) -> bool:
        """Whether `token` is the delete token of share `share_id` (False if no such share)."""
        if not ID_RE.match(share_id or ""):
            return False
        with self.engine.connect() as conn:
            stored = conn.execute(
                sa.select(ShareRow.delete_token_hash).where(ShareRow.id == share_id)
            ).scalar()
        return stored is not None and hmac.compare_digest(stored, _hash_token(token or ""))

    @_available
    def delete(self, share_id: str, token: str) -> None:
        """Delete a share given its delete token. Raises kind "not_found" or "forbidden"."""
        with self._locked(), write_tx(self.engine) as conn:
            stored = None
            if ID_RE.match(share_id or ""):
                stored = conn.execute(
                    sa.select(ShareRow.delete_token_hash).where(ShareRow.id == share_id)
                ).scalar()
            if stored is None:
                raise PlaygroundError(
                    f"No share with id {share_id!r}.", field="id", kind="not_found"
                )
            if not hmac.compare_digest(stored, _hash_token(token or "")):
                raise PlaygroundError(
                    "This delete link is not valid for this share.", field="token", kind="forbidden"
                )
            conn.execute(sa.delete(ShareRow).where(ShareRow.id == share_id))
        log.info("share %s deleted", share_id)

    # -- internals

    def _locked(self):
        return self._write_lock or _NULL_LOCK

    def _insert(self, row: ShareRow) -> None:
        with self._locked(), Session(self._write_engine, expire_on_commit=False) as s:
            s.add(row)
            s.commit()  # synchronous=FULL on SQLite: returns only once the WAL is on disk


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL_LOCK = _NullLock()


def _make_engine(url: str, busy_timeout_ms: int) -> sa.Engine:
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)
    if u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")  # fsync the WAL at every share commit
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _hash_token(token: str) -> str:
    # The token has 256 random bits, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def _content_hash(v: dict[str, Any]) -> str:
    # Spans are left out: they are derived from the output by the attribution index, and the same
    # generation shared again should get the same link.
    key = [v["mode"], v["model"], v["parameters"], v["prompt"], v["output"], v["fim"]]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()
