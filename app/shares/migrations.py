"""The share store's schema: numbered migrations, each run once, safe from several processes.

`schema_version` holds the version reached; `migrate` brings a database up to the latest (or a
given) version and refuses a database newer than this code.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger(__name__)


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


def _m3_no_link_dedup(conn: sa.Connection) -> None:
    # Identical content used to get the existing share's id back, so anyone who could guess
    # what someone shared (a page example, say) learnt their link. Every share now gets its own
    # id; content_hash stays as a plain, non-unique column.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE shares DROP CONSTRAINT IF EXISTS shares_content_hash_key")
        return
    # SQLite cannot drop a constraint: rebuild the table under the same name.
    columns = (
        "id, created_at, mode, model, parameters, prompt, output, content_hash, "
        "delete_token_hash, fim, spans"
    )
    conn.exec_driver_sql(
        "CREATE TABLE shares_v3 (id VARCHAR(64) NOT NULL PRIMARY KEY, "
        "created_at DATETIME NOT NULL, mode VARCHAR(16) NOT NULL, model VARCHAR(200), "
        "parameters TEXT NOT NULL, prompt TEXT NOT NULL, output TEXT NOT NULL, "
        "content_hash VARCHAR(64) NOT NULL, delete_token_hash VARCHAR(64) NOT NULL, "
        "fim TEXT, spans TEXT NOT NULL DEFAULT '[]')"
    )
    conn.exec_driver_sql(f"INSERT INTO shares_v3 ({columns}) SELECT {columns} FROM shares")
    conn.exec_driver_sql("DROP TABLE shares")
    conn.exec_driver_sql("ALTER TABLE shares_v3 RENAME TO shares")
    conn.exec_driver_sql("CREATE INDEX ix_shares_created_at ON shares (created_at)")


# Append only. Each entry runs once, in its own transaction, and bumps schema_version.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "create shares", _m1_create_shares),
    (2, "fim split, attribution spans, created_at index", _m2_fim_and_spans),
    (3, "a new link for every share (no dedup of links)", _m3_no_link_dedup),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(engine: sa.Engine, *, target: int | None = None) -> int:
    """Bring the schema up to `target` (default: latest). Safe to run from several processes."""
    target = LATEST_VERSION if target is None else target
    with _migration_tx(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = read_version(conn)
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
            current = read_version(conn)
            if version <= current:
                continue
            log.info("migrating %s to schema v%d: %s", engine.url.render_as_string(), version, name)
            step(conn)
            if current == 0:
                conn.exec_driver_sql(f"INSERT INTO schema_version (version) VALUES ({version})")
            else:
                conn.exec_driver_sql(f"UPDATE schema_version SET version = {version}")
    with engine.connect() as conn:
        return read_version(conn)


@contextlib.contextmanager
def _migration_tx(engine: sa.Engine):
    with write_tx(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Serialise processes starting at once; the lock is released at commit.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(724101)"))
        yield conn


def read_version(conn: sa.Connection) -> int:
    return conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() or 0


def write_tx(engine: sa.Engine):
    # On SQLite, BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies
    # instead of a deadlock-style SQLITE_BUSY when a reader later tries to write.
    return engine.execution_options(sqlite_begin="IMMEDIATE").begin()
