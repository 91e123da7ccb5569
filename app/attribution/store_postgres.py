"""PostgreSQL storage: tsvector ranking over line chunks, pg_trgm for exact substrings, and the
segment-key table that verifies Bloom filter hits. Tables live in their own schema."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator

import psycopg

from model.errors import PlaygroundError

from .core import IndexDocument, chunk_lines, document_segments
from .store_common import (
    SQLStore,
    bucket_segments,
    document_row,
    insert_document,
    ranked_chunks,
)

logger = logging.getLogger(__name__)

DEFAULT_SCHEMA = "attribution"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value bytea);
CREATE TABLE IF NOT EXISTS documents(
    id bigserial PRIMARY KEY,
    sha256 text NOT NULL UNIQUE,
    repo text NOT NULL,
    path text NOT NULL,
    license text NOT NULL,
    lang text NOT NULL,
    split text NOT NULL,
    bytes integer NOT NULL,
    text text NOT NULL,
    UNIQUE(repo, path)
);
CREATE INDEX IF NOT EXISTS documents_text_trgm ON documents USING gin (text gin_trgm_ops);
CREATE TABLE IF NOT EXISTS chunks(
    id bigserial PRIMARY KEY,
    doc_id bigint NOT NULL,
    start_line integer NOT NULL,
    start_char integer NOT NULL,
    nchars integer NOT NULL,
    tsv tsvector NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin (tsv);
CREATE TABLE IF NOT EXISTS segments(key bigint NOT NULL, doc_id bigint NOT NULL, off integer NOT NULL);
CREATE INDEX IF NOT EXISTS segments_key ON segments(key);
"""


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its wildcards escaped (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conninfo(url: str) -> tuple[str, str | None]:
    """libpq URL from a SQLAlchemy-style one; a `schema=` query parameter is taken out."""
    url = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    schema = None
    match = re.search(r"([?&])schema=([^&]*)", url)
    if match:
        schema = match.group(2)
        url = (url[: match.start()] + match.group(1) + url[match.end() :]).replace("?&", "?")
        url = url.rstrip("?&")
    return url, schema


class PostgresStore(SQLStore):
    kind = "postgresql"
    mark = "%s"

    def __init__(self, url: str, *, schema: str | None = None):
        self._url, url_schema = _conninfo(url)
        self.schema = schema or url_schema or DEFAULT_SCHEMA
        if not _SCHEMA_NAME.match(self.schema):
            raise PlaygroundError(
                f"attribution index schema must match {_SCHEMA_NAME.pattern}. "
                f"Given: {self.schema!r}",
                field="index",
                kind="config",
            )
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._setup()

    def describe_location(self) -> str:
        safe = re.sub(r"//[^@/]*@", "//", self._url)  # never log a password
        return f"{safe} (schema {self.schema})"

    def _setup(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except psycopg.errors.UniqueViolation:
                pass  # another process created it at the same moment
            except psycopg.Error as exc:
                raise PlaygroundError(
                    f"attribution index: PostgreSQL extension pg_trgm is needed and could not "
                    f"be created ({exc.diag.message_primary}); run CREATE EXTENSION pg_trgm "
                    "as a superuser",
                    field="index",
                    kind="config",
                ) from exc
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute(f"SET search_path TO {self.schema}, public")
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(
                self._url, autocommit=True, options=f"-c search_path={self.schema},public"
            )
            self._local.conn = conn
            self._all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._local = threading.local()

    def drop(self) -> None:
        """Remove the schema and everything in it (tests and `build --rebuild`)."""
        self._conn().execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.close()

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._conn().execute(
            "INSERT INTO meta(key, value) VALUES(%s, %s) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, data),
        )

    # -- writing -----------------------------------------------------------------------------
    def begin(self) -> None:
        self._conn().execute("BEGIN")

    def rollback(self) -> None:
        conn = self._conn()
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    def add_document(self, doc: IndexDocument) -> list[int]:
        conn = self._conn()
        (doc_id,) = conn.execute(
            insert_document("%s") + " RETURNING id", document_row(doc)
        ).fetchone()
        chunks = chunk_lines(doc.text)
        conn.execute(
            "INSERT INTO chunks(doc_id, start_line, start_char, nchars, tsv) "
            "SELECT %s, l, c, n, to_tsvector('simple', t) "
            "FROM unnest(%s::int[], %s::int[], %s::int[], %s::text[]) AS u(l, c, n, t)",
            (
                doc_id,
                [c[0] for c in chunks],
                [c[1] for c in chunks],
                [c[2] for c in chunks],
                [doc.text[c[1] : c[1] + c[2]] for c in chunks],
            ),
        )
        segments = document_segments(doc.text)
        conn.execute(
            "INSERT INTO segments(key, doc_id, off) "
            "SELECT k, %s, o FROM unnest(%s::bigint[], %s::int[]) AS u(k, o)",
            (doc_id, [k for k, _ in segments], [o for _, o in segments]),
        )
        return [k for k, _ in segments]

    def delete_document(self, doc_id: int) -> None:
        conn = self._conn()
        (text,) = conn.execute("SELECT text FROM documents WHERE id = %s", (doc_id,)).fetchone()
        keys = [k for k, _ in document_segments(text)]
        conn.execute("DELETE FROM segments WHERE key = ANY(%s) AND doc_id = %s", (keys, doc_id))
        conn.execute("DELETE FROM chunks WHERE doc_id = %s", (doc_id,))
        conn.execute("DELETE FROM documents WHERE id = %s", (doc_id,))

    def optimize(self) -> None:
        self._conn().execute("ANALYZE documents, chunks, segments")

    def iter_segment_keys(self) -> Iterator[int]:
        # A separate connection: streaming holds it until the last row is read.
        with psycopg.connect(
            self._url, autocommit=True, options=f"-c search_path={self.schema},public"
        ) as conn:
            for (key,) in conn.cursor().stream("SELECT key FROM segments"):
                yield key

    # -- membership --------------------------------------------------------------------------
    def lookup_segments(self, keys: Iterable[int], per_key: int) -> dict[int, list[tuple]]:
        rows = self._conn().execute(
            "SELECT key, doc_id, off FROM segments WHERE key = ANY(%s) ORDER BY key, doc_id, off",
            (list(keys),),
        )
        return bucket_segments({}, rows, per_key)

    def document_texts(self, ids: Iterable[int]) -> dict[int, str]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self._conn().execute("SELECT id, text FROM documents WHERE id = ANY(%s)", (ids,))
        return dict(rows.fetchall())

    def documents_meta(self, ids: Iterable[int]) -> dict[int, tuple[str, str, str]]:
        rows = self._conn().execute(
            "SELECT id, repo, path, license FROM documents WHERE id = ANY(%s)", (list(ids),)
        )
        return {r[0]: tuple(r[1:]) for r in rows}

    def locate(self, needle: str, probe: str, limit: int) -> list[tuple[int, int, int]]:
        """(doc id, 0-based offset, line) of documents containing `needle`: pg_trgm narrows
        the candidates with `probe` (a short piece of it), strpos() checks the whole needle."""
        return self._indexed(
            "SELECT id, p - 1, 1 + length(pre) - length(replace(pre, E'\\n', '')) "
            "FROM (SELECT id, strpos(text, %s) AS p, text FROM documents "
            "      WHERE text LIKE %s AND strpos(text, %s) > 0 LIMIT %s) AS m, "
            "LATERAL (SELECT substr(m.text, 1, m.p - 1) AS pre) AS x",
            (needle, like_pattern(probe), needle, limit),
        )

    def _indexed(self, sql: str, params) -> list[tuple]:
        """Run a pg_trgm query with sequential scans off: the planner prices a scan of a few
        hundred rows as cheap, not seeing that each row's text must be read from TOAST."""
        conn = self._conn()
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            return conn.execute(sql, params).fetchall()

    # -- search ------------------------------------------------------------------------------
    def search_words(
        self, terms: list[str], any_term: bool, filters: dict[str, str], limit: int, offset: int
    ) -> list[tuple]:
        # Terms are \w+ only, so quoting them as lexemes cannot inject tsquery operators.
        tsquery = (" | " if any_term else " & ").join(f"'{t}'" for t in terms)
        where, params = self._filters(filters)
        sql = ranked_chunks(
            "SELECT c.id, ts_rank_cd(c.tsv, q) AS score "
            "      FROM chunks c JOIN documents d ON d.id = c.doc_id, "
            "           to_tsquery('simple', %s) AS q "
            f"     WHERE c.tsv @@ q{where} ORDER BY score DESC, c.id LIMIT %s OFFSET %s"
        )
        return self._conn().execute(sql, [tsquery, *params, limit, offset]).fetchall()

    def search_exact(
        self, phrase: str, filters: dict[str, str], limit: int, offset: int
    ) -> list[tuple]:
        where, params = self._filters(filters)
        # Score: how many times the file contains the phrase.
        sql = (
            "SELECT d.repo, d.path, d.license, d.text, strpos(d.text, %s) - 1, r.score "
            "FROM (SELECT d.id, "
            "      (length(d.text) - length(replace(d.text, %s, '')))::float / length(%s) "
            "        AS score "
            "      FROM documents d WHERE d.text LIKE %s"
            f"{where} ORDER BY score DESC, d.id LIMIT %s OFFSET %s) AS r "
            "JOIN documents d ON d.id = r.id ORDER BY r.score DESC, r.id"
        )
        params = [phrase, phrase, phrase, like_pattern(phrase), *params, limit, offset]
        return self._indexed(sql, params)

    # -- stats -------------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        conn = self._conn()

        def size(relation: str) -> int:
            return conn.execute("SELECT pg_relation_size(%s)", (relation,)).fetchone()[0]

        return {
            "documents": conn.execute("SELECT pg_table_size('documents')").fetchone()[0],
            "words": size("chunks_tsv")
            + conn.execute("SELECT pg_table_size('chunks')").fetchone()[0],
            "trigram": size("documents_text_trgm"),
            "segments": conn.execute("SELECT pg_total_relation_size('segments')").fetchone()[0],
            "other": size("chunks_doc"),
        }
