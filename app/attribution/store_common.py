"""What the SQLite and PostgreSQL stores share: both hold the same tables, so the queries that
both dialects spell alike live here once; each backend keeps its own dialect-specific SQL."""

from __future__ import annotations

from collections.abc import Iterable


def insert_document(mark: str) -> str:
    """The documents row both stores write, with the driver's bound-parameter `mark`; its
    values are `document_row(doc)`'s."""
    columns = "sha256, repo, path, license, lang, split, bytes, text"
    return f"INSERT INTO documents({columns}) VALUES({', '.join([mark] * 8)})"


def document_row(doc) -> tuple:
    """An IndexDocument's values for `insert_document`, in its column order."""
    return (doc.sha256, doc.repo, doc.path, doc.license, doc.lang, doc.split, doc.nbytes,
            doc.text)  # fmt: skip


def filter_clauses(mark: str) -> dict[str, str]:
    """Column filters shared by both searches, with the driver's bound-parameter `mark`;
    values are bound, never formatted in."""
    return {
        "repo": f"d.repo = {mark}",
        "license": f"lower(d.license) = lower({mark})",
        "lang": f"lower(d.lang) = lower({mark})",
    }


def ranked_chunks(ranked: str) -> str:
    """Rows (repo, path, license, chunk start_line, chunk text, score) for the subquery
    `ranked` of (id, score) chunk rows. Ranking and paging happen on ids first, so the
    sorter never carries document text."""
    return (
        "SELECT d.repo, d.path, d.license, c.start_line, "
        "       substr(d.text, c.start_char + 1, c.nchars), r.score "
        f"FROM ({ranked}) AS r "
        "JOIN chunks c ON c.id = r.id JOIN documents d ON d.id = c.doc_id "
        "ORDER BY r.score DESC, r.id"
    )


def bucket_segments(
    found: dict[int, list[tuple]], rows: Iterable[tuple], per_key: int
) -> dict[int, list[tuple]]:
    """Add (key, doc id, offset) rows to `found`, at most `per_key` places a key."""
    for key, doc_id, off in rows:
        bucket = found.setdefault(key, [])
        if len(bucket) < per_key:
            bucket.append((doc_id, off))
    return found


class SQLStore:
    """Base of both stores. A subclass sets `mark`, its driver's bound-parameter placeholder,
    and provides `_conn()`."""

    mark: str

    def _conn(self):
        raise NotImplementedError

    def commit(self) -> None:
        self._conn().execute("COMMIT")

    def find_existing(self, sha256: str, repo: str, path: str) -> tuple[str | None, int | None]:
        """('same' | 'duplicate' | 'replace' | None, doc id) for an incoming document."""
        conn, p = self._conn(), self.mark
        row = conn.execute(
            f"SELECT id, repo, path FROM documents WHERE sha256 = {p}", (sha256,)
        ).fetchone()
        if row:
            return ("same" if (row[1], row[2]) == (repo, path) else "duplicate"), row[0]
        row = conn.execute(
            f"SELECT id FROM documents WHERE repo = {p} AND path = {p}", (repo, path)
        ).fetchone()
        return ("replace", row[0]) if row else (None, None)

    def locations(self) -> list[tuple[int, str, str]]:
        return self._conn().execute("SELECT id, repo, path FROM documents").fetchall()

    def segment_count(self) -> int:
        return self._conn().execute("SELECT count(*) FROM segments").fetchone()[0]

    def _filters(self, filters: dict[str, str]) -> tuple[str, list]:
        clauses = filter_clauses(self.mark)
        return "".join(f" AND {clauses[n]}" for n in filters), list(filters.values())

    def counts(self) -> dict:
        conn = self._conn()
        docs, nbytes, repos = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), count(DISTINCT repo) FROM documents"
        ).fetchone()

        def grouped(column: str) -> dict[str, int]:
            return dict(
                conn.execute(
                    f"SELECT {column}, count(*) FROM documents GROUP BY {column} "
                    "ORDER BY count(*) DESC, 1"
                ).fetchall()
            )

        top_repos = grouped("repo")
        return {
            "documents": docs,
            # A plain int whatever numeric type the driver hands back for sum().
            "bytes": int(nbytes),
            "repos": repos,
            "top_repos": dict(list(top_repos.items())[:5]),
            "licenses": grouped("license"),
            "languages": grouped("lang"),
            "splits": grouped("split"),
        }
