"""Shared generations: a durable store behind /s/<id> links.

SQLite by default (WAL, explicit busy timeout, synchronous=FULL so an acknowledged share survives
a crash), PostgreSQL when given a postgresql:// URL. The ORM row (`ShareRow`) stays private; callers
get the frozen `SharePublic` view. Schema changes go through the numbered `MIGRATIONS` list.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
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
from model.errors import PlaygroundError

__all__ = ["Limits", "RateLimited", "RateLimiter", "Store"]

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///data/playground.db"
MODES = ("completion", "fim", "assistant")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
ID_BYTES = 12  # 96 random bits -> 16 URL-safe characters
TOKEN_BYTES = 32
MAX_JSON_DEPTH = 16  # shares hold flat parameters and shallow spans; deeper is not a share


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
    # Only the creator of a new share gets the token; a dedup hit returns None, because we keep
    # only the hash and must not hand another person the power to delete someone's link.
    delete_token: str | None
    created: bool


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
    content_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
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


# ---------------------------------------------------------------- migrations


def _m1_create_shares(conn: sa.Connection) -> None:
    # Frozen copy of the v1 table: later ORM changes must not alter what v1 means.
    md = sa.MetaData()
    sa.Table(
        "shares",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("delete_token_hash", sa.String(64), nullable=False),
    )
    md.create_all(conn)


def _m2_fim_and_spans(conn: sa.Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE shares ADD COLUMN fim TEXT")
    conn.exec_driver_sql("ALTER TABLE shares ADD COLUMN spans TEXT NOT NULL DEFAULT '[]'")
    conn.exec_driver_sql("CREATE INDEX ix_shares_created_at ON shares (created_at)")


# Append only. Each entry runs once, in its own transaction, and bumps schema_version.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "create shares", _m1_create_shares),
    (2, "fim split, attribution spans, created_at index", _m2_fim_and_spans),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(engine: sa.Engine, *, target: int | None = None) -> int:
    """Bring the schema up to `target` (default: latest). Safe to run from several processes."""
    target = LATEST_VERSION if target is None else target
    with _migration_tx(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = _read_version(conn)
    if found > LATEST_VERSION:
        # An older release must not write into a schema it does not know.
        raise RuntimeError(
            f"The share database is at schema v{found}, newer than this code (v{LATEST_VERSION}). "
            "Upgrade the app, or point DATABASE_URL at another database."
        )
    for version, name, step in MIGRATIONS:
        if version > target:
            break
        with _migration_tx(engine) as conn:
            current = _read_version(conn)
            if version <= current:
                continue
            log.info("migrating %s to schema v%d: %s", engine.url.render_as_string(), version, name)
            step(conn)
            if current == 0:
                conn.exec_driver_sql(f"INSERT INTO schema_version (version) VALUES ({version})")
            else:
                conn.exec_driver_sql(f"UPDATE schema_version SET version = {version}")
    with engine.connect() as conn:
        return _read_version(conn)


@contextlib.contextmanager
def _migration_tx(engine: sa.Engine):
    with _write_tx(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Serialise processes starting at once; the lock is released at commit.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(724101)"))
        yield conn


def _read_version(conn: sa.Connection) -> int:
    return conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() or 0


def _write_tx(engine: sa.Engine):
    # On SQLite, BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies
    # instead of a deadlock-style SQLITE_BUSY when a reader later tries to write.
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()


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
    PostgreSQL restarted under load, every read and the dedup lookup before a write failed so."""

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
        url: str = DEFAULT_URL,
        *,
        limits: Limits | None = None,
        writes_per_window: int = 30,
        window_s: float = 60.0,
        busy_timeout_ms: int = 10_000,
        rate_limiter: RateLimiter | None = None,
        auto_migrate: bool = True,
    ):
        self.url = normalize_url(url)
        self.limits = limits or Limits()
        self.rate_limiter = rate_limiter or RateLimiter(writes_per_window, window_s, what="shares")
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
            return _read_version(conn)

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
        """Validate and save a generation; identical content returns the existing share.

        `fim` is either {"middle_start": i, "middle_end": j} (indices into `output`) or
        {"prefix": p, "middle": m, "suffix": s} with p + m + s == output.
        `spans` is a list of {"start": i, "end": j, ...} over `output` (extra JSON keys kept).
        Raises PlaygroundError (kind "validation") or RateLimited (kind "busy").
        """
        v = self._validate(mode, prompt, output, parameters, model, fim, spans)
        self.rate_limiter.check(client_id)
        content_hash = _content_hash(v)
        for _ in range(3):  # retry only on a (96-bit) id collision or a lost dedup race
            existing = self._find_by_hash(content_hash)
            if existing:
                return CreatedShare(existing, delete_token=None, created=False)
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
                log.info("share insert conflicted (dedup race or id collision); retrying")
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
        with self._locked(), _write_tx(self.engine) as conn:
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

    def _find_by_hash(self, content_hash: str) -> SharePublic | None:
        with Session(self.engine) as session:
            row = session.scalars(
                sa.select(ShareRow).where(ShareRow.content_hash == content_hash)
            ).first()
            return _to_public(row) if row else None

    def _insert(self, row: ShareRow) -> None:
        with self._locked(), Session(self._write_engine, expire_on_commit=False) as s:
            s.add(row)
            s.commit()  # synchronous=FULL on SQLite: returns only once the WAL is on disk

    def _validate(self, mode, prompt, output, parameters, model, fim, spans) -> dict[str, Any]:
        lim = self.limits
        if mode not in MODES:
            raise PlaygroundError(
                f"`mode` must be one of {', '.join(MODES)}. Given: {str(mode)[:40]!r}.",
                field="mode",
            )
        _check_text("prompt", prompt, lim.max_prompt_bytes)
        _check_text("output", output, lim.max_output_bytes)
        if not prompt and not output:
            raise PlaygroundError(
                "Nothing to share: `prompt` and `output` are both empty.", field="output"
            )
        if model is not None:
            if not isinstance(model, str):
                raise PlaygroundError("`model` must be a string.", field="model")
            if len(model) > lim.max_model_chars or not model.isprintable():
                raise PlaygroundError(
                    f"`model` must be at most {lim.max_model_chars} printable characters. "
                    f"Given: {len(model)} characters.",
                    field="model",
                )
            model = model or None
        params_json = _dump_json("parameters", parameters or {}, lim.max_parameters_bytes, dict)
        fim_json = None
        if fim is not None:
            if mode != "fim":
                raise PlaygroundError(
                    f"`fim` is only for mode 'fim'. Given mode: {mode!r}.", field="fim"
                )
            fim_json = json.dumps(_fim_split(fim, output).__dict__)
        spans_json = _dump_json("spans", spans or [], lim.max_spans_bytes, list)
        _check_spans(spans or [], output, lim.max_spans)
        return {
            "mode": mode,
            "prompt": prompt,
            "output": output,
            "model": model,
            "parameters": params_json,
            "fim": fim_json,
            "spans": spans_json,
        }


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


def _check_text(name: str, value: Any, max_bytes: int) -> None:
    if not isinstance(value, str):
        raise PlaygroundError(
            f"`{name}` must be a string. Given: {type(value).__name__}.", field=name
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PlaygroundError(
            f"`{name}` is not valid Unicode (unpaired surrogate at character {exc.start}).",
            field=name,
        ) from None
    if size > max_bytes:
        raise PlaygroundError(
            f"`{name}` must be at most {max_bytes:,} bytes (UTF-8). Given: {size:,} bytes.",
            field=name,
        )
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on both databases
        raise PlaygroundError(
            f"`{name}` contains a NUL character at position {value.index(chr(0))}.", field=name
        )


def _dump_json(name: str, value: Any, max_bytes: int, kind: type) -> str:
    if not isinstance(value, kind):
        raise PlaygroundError(
            f"`{name}` must be a JSON {'object' if kind is dict else 'list'}. "
            f"Given: {type(value).__name__}.",
            field=name,
        )
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise PlaygroundError(
            f"`{name}` must nest at most {MAX_JSON_DEPTH} levels deep. Given: more than that.",
            field=name,
        )
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise PlaygroundError(f"`{name}` is not valid JSON data: {exc}.", field=name) from None
    if "\\u0000" in text:
        raise PlaygroundError(f"`{name}` contains a NUL character.", field=name)
    if size > max_bytes:
        raise PlaygroundError(
            f"`{name}` must be at most {max_bytes:,} bytes as JSON. Given: {size:,} bytes.",
            field=name,
        )
    return text


def _json_depth(value: Any) -> int:
    """Nesting depth, without recursion: json.dumps of deep data raised RecursionError (a 500)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _fim_split(fim: Any, output: str) -> FimSplit:
    n = len(output)
    if isinstance(fim, dict) and {"prefix", "middle", "suffix"} <= fim.keys():
        p, m, s = fim["prefix"], fim["middle"], fim["suffix"]
        if not all(isinstance(x, str) for x in (p, m, s)) or p + m + s != output:
            raise PlaygroundError(
                "`fim` prefix + middle + suffix must equal `output` "
                f"({n} characters). Given: {sum(len(str(x)) for x in (p, m, s))} characters.",
                field="fim",
            )
        return FimSplit(len(p), len(p) + len(m))
    if isinstance(fim, dict) and {"middle_start", "middle_end"} <= fim.keys():
        a, b = fim["middle_start"], fim["middle_end"]
        if _is_int(a) and _is_int(b) and 0 <= a <= b <= n:
            return FimSplit(a, b)
        raise PlaygroundError(
            f"`fim` needs 0 <= middle_start <= middle_end <= {n} (length of `output`). "
            f"Given: middle_start={a!r}, middle_end={b!r}.",
            field="fim",
        )
    raise PlaygroundError(
        "`fim` must be {middle_start, middle_end} or {prefix, middle, suffix}. "
        f"Given keys: {sorted(fim) if isinstance(fim, dict) else type(fim).__name__}.",
        field="fim",
    )


def _check_spans(spans: list[Any], output: str, max_spans: int) -> None:
    if len(spans) > max_spans:
        raise PlaygroundError(
            f"`spans` must have at most {max_spans} entries. Given: {len(spans)}.", field="spans"
        )
    n = len(output)
    for i, span in enumerate(spans):
        ok = isinstance(span, dict) and _is_int(span.get("start")) and _is_int(span.get("end"))
        if not ok or not 0 <= span["start"] <= span["end"] <= n:
            raise PlaygroundError(
                f"`spans[{i}]` must be {{start, end}} with 0 <= start <= end <= {n} "
                f"(length of `output`). Given: {json.dumps(span)[:80]}.",
                field="spans",
            )
