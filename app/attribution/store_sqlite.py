"""SQLite storage: documents, FTS5 BM25 over line chunks, FTS5 trigram for exact substrings,
and the table of segment keys that verifies Bloom filter hits."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from .core import IndexDocument, chunk_lines, document_segments
from .store_common import (
    SQLStore,
    bucket_segments,
    document_row,
    insert_document,
    ranked_chunks,
)

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL,
    path TEXT NOT NULL,
    license TEXT NOT NULL,
    lang TEXT NOT NULL,
    split TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE(repo, path)
);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL,
    start_line INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    nchars INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS segments(
    key INTEGER NOT NULL, doc_id INTEGER NOT NULL, off INTEGER NOT NULL,
    PRIMARY KEY(key, doc_id, off)
) WITHOUT ROWID;
-- Contentless: the text lives once, in documents; these hold only the inverted indexes.
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(
    text, content='', tokenize="unicode61 tokenchars '_'"
);
CREATE VIRTUAL TABLE IF NOT EXISTS tri USING fts5(
    text, content='', tokenize='trigram case_sensitive 1'
);
"""


def fts_phrase(text: str) -> str:
    """An FTS5 string literal: inside double quotes everything is literal but the quote itself."""
    return '"' + text.replace('"', '""') + '"'


class SQLiteStore(SQLStore):
    kind = "sqlite"
    mark = "?"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(SCHEMA)

    def describe_location(self) -> str:
        return str(self.path)

    # Gradio calls from a thread pool; one connection per thread, WAL lets readers run
    # beside a writer.
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: bytes | str) -> None:
        self._conn().execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- writing -----------------------------------------------------------------------------
    def begin(self) -> None:
        self._conn().execute("BEGIN IMMEDIATE")

    def rollback(self) -> None:
        conn = self._conn()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def add_document(self, doc: IndexDocument) -> list[int]:
        """Insert one document with its chunks, trigram row and segments; return segment keys."""
        conn = self._conn()
        cur = conn.execute(insert_document("?"), document_row(doc))
        doc_id = cur.lastrowid
        conn.execute("INSERT INTO tri(rowid, text) VALUES(?, ?)", (doc_id, doc.text))
        for start_line, start, n in chunk_lines(doc.text):
            cid = conn.execute(
                "INSERT INTO chunks(doc_id, start_line, start_char, nchars) VALUES(?, ?, ?, ?)",
                (doc_id, start_line, start, n),
            ).lastrowid
            conn.execute(
                "INSERT INTO words(rowid, text) VALUES(?, ?)", (cid, doc.text[start : start + n])
            )
        segments = document_segments(doc.text)
        conn.executemany(
            "INSERT OR IGNORE INTO segments(key, doc_id, off) VALUES(?, ?, ?)",
            [(key, doc_id, off) for key, off in segments],
        )
        return [key for key, _ in segments]

    def delete_document(self, doc_id: int) -> None:
        # Contentless FTS5 rows are deleted by replaying their original text.
        conn = self._conn()
        (text,) = conn.execute("SELECT text FROM documents WHERE id = ?", (doc_id,)).fetchone()
        conn.execute("INSERT INTO tri(tri, rowid, text) VALUES('delete', ?, ?)", (doc_id, text))
        for cid, start, n in conn.execute(
            "SELECT id, start_char, nchars FROM chunks WHERE doc_id = ?", (doc_id,)
        ).fetchall():
            conn.execute(
                "INSERT INTO words(words, rowid, text) VALUES('delete', ?, ?)",
                (cid, text[start : start + n]),
            )
        conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        conn.executemany(
            "DELETE FROM segments WHERE key = ? AND doc_id = ? AND off = ?",
            [(key, doc_id, off) for key, off in document_segments(text)],
        )
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    def optimize(self) -> None:
        conn = self._conn()
        conn.execute("INSERT INTO words(words) VALUES('optimize')")
        conn.execute("INSERT INTO tri(tri) VALUES('optimize')")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def iter_segment_keys(self) -> Iterator[int]:
        for (key,) in self._conn().execute("SELECT key FROM segments"):
            yield key

    # -- membership --------------------------------------------------------------------------
    def lookup_segments(self, keys: Iterable[int], per_key: int) -> dict[int, list[tuple]]:
        conn = self._conn()
        keys = list(keys)
        found: dict[int, list[tuple]] = {}
        for first in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            batch = keys[first : first + 500]
            rows = conn.execute(
                f"SELECT key, doc_id, off FROM segments WHERE key IN ({','.join('?' * len(batch))})",
                batch,
            )
            bucket_segments(found, rows, per_key)
        return found

    def document_texts(self, ids: Iterable[int]) -> dict[int, str]:
        conn = self._conn()
        return {
            i: conn.execute("SELECT text FROM documents WHERE id = ?", (i,)).fetchone()[0]
            for i in ids
        }

    def documents_meta(self, ids: Iterable[int]) -> dict[int, tuple[str, str, str]]:
        conn = self._conn()
        out = {}
        for i in ids:
            out[i] = conn.execute(
                "SELECT repo, path, license FROM documents WHERE id = ?", (i,)
            ).fetchone()
        return out

    def locate(self, needle: str, probe: str, limit: int) -> list[tuple[int, int, int]]:
        """(doc id, 0-based offset, line) of documents containing `needle`, found through the
        trigram index with `probe` (a substring of needle) and checked exactly with instr()."""
        rows = self._conn().execute(
            "SELECT id, p - 1, 1 + length(substr(text, 1, p - 1)) "
            "  - length(replace(substr(text, 1, p - 1), char(10), '')) "
            "FROM (SELECT d.id AS id, d.text AS text, instr(d.text, ?) AS p FROM tri "
            "      JOIN documents d ON d.id = tri.rowid WHERE tri MATCH ?) "
            "WHERE p > 0 LIMIT ?",
            (needle, fts_phrase(probe), limit),
        )
        return rows.fetchall()

    # -- search ------------------------------------------------------------------------------
    def search_words(
        self, terms: list[str], any_term: bool, filters: dict[str, str], limit: int, offset: int
    ) -> list[tuple]:
        """Rows (repo, path, license, chunk start_line, chunk text, score) ranked by BM25."""
        match = (" OR " if any_term else " ").join(fts_phrase(t) for t in terms)
        where, params = self._filters(filters)
        sql = ranked_chunks(
            "SELECT words.rowid AS id, -bm25(words) AS score FROM words "
            "      JOIN chunks c ON c.id = words.rowid JOIN documents d ON d.id = c.doc_id "
            f"     WHERE words MATCH ?{where} ORDER BY bm25(words), words.rowid "
            "      LIMIT ? OFFSET ?"
        )
        return self._conn().execute(sql, [match, *params, limit, offset]).fetchall()

    def search_exact(
        self, phrase: str, filters: dict[str, str], limit: int, offset: int
    ) -> list[tuple]:
        """Rows (repo, path, license, text, 0-based offset of the phrase, score)."""
        where, params = self._filters(filters)
        sql = (
            "SELECT d.repo, d.path, d.license, d.text, instr(d.text, ?) - 1, r.score "
            "FROM (SELECT tri.rowid AS id, -bm25(tri) AS score FROM tri "
            "      JOIN documents d ON d.id = tri.rowid "
            f"     WHERE tri MATCH ?{where} ORDER BY bm25(tri), tri.rowid "
            "      LIMIT ? OFFSET ?) AS r "
            "JOIN documents d ON d.id = r.id ORDER BY r.score DESC, r.id"
        )
        rows = self._conn().execute(sql, [phrase, fts_phrase(phrase), *params, limit, offset])
        return [row for row in rows.fetchall() if row[4] >= 0]

    # -- stats -------------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Bytes on disk of the text index parts (dbstat), by role."""
        conn = self._conn()
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        sizes = {"documents": 0, "words": 0, "trigram": 0, "segments": 0, "other": 0}
        for name, size in rows:
            if name.startswith("tri_"):
                sizes["trigram"] += size
            elif name.startswith("words_"):
                sizes["words"] += size
            elif name.startswith(("documents", "sqlite_autoindex_documents")):
                sizes["documents"] += size
            elif name.startswith("segments"):
                sizes["segments"] += size
            else:
                sizes["other"] += size
        return sizes
