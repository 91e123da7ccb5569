"""AttributionIndex: build, membership check (Bloom filter + verification) and full-text search."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from rbloom import Bloom

from model.errors import PlaygroundError

from . import search as q
from .core import (
    KEY_NAME,
    WINDOW,
    BuildReport,
    Hit,
    IndexDocument,
    Source,
    Span,
    bloom_hash,
    window_keys,
)
from .matching import informative, match_left, match_right, probe
from .stats import IndexStats

logger = logging.getLogger(__name__)

FALSE_POSITIVE_RATE = 0.01
MAX_ATTRIBUTE_CHARS = 200_000
MIN_SPAN_CHARS = WINDOW
MAX_SOURCES = 5
CANDIDATES_PER_WINDOW = 20
COMMIT_BYTES = 8_000_000


def _open_store(url_or_path: str | Path, schema: str | None):
    target = str(url_or_path)
    if target.startswith(("postgresql", "postgres://")):
        from .store_postgres import PostgresStore

        return PostgresStore(target, schema=schema)
    if target.startswith("sqlite:///"):
        target = target[len("sqlite:///") :]
    from .store_sqlite import SQLiteStore

    return SQLiteStore(target)


class AttributionIndex:
    """An index of training data: which parts of a text are verbatim copies, and from where."""

    def __init__(self, store):
        self._store = store
        self._bloom: Bloom | None = None
        self._load_bloom()

    @classmethod
    def open(cls, url_or_path: str | Path, *, schema: str | None = None) -> AttributionIndex:
        """Open (creating if needed) an index: a SQLite file path, `sqlite:///path`, or a
        `postgresql+psycopg://` URL (tables live in `schema`, default "attribution")."""
        return cls(_open_store(url_or_path, schema))

    @property
    def location(self) -> str:
        return self._store.describe_location()

    def close(self) -> None:
        self._store.close()

    # -- Bloom filter -----------------------------------------------------------------------
    def _load_bloom(self) -> None:
        key = self._store.get_meta("key")
        if key is not None and _text(key) != KEY_NAME:
            raise PlaygroundError(
                f"attribution index {self.location} uses segment key {_text(key)!r}; "
                f"this version needs {KEY_NAME!r}. Rebuild it.",
                field="index",
                kind="config",
            )
        if _text(self._store.get_meta("bloom_stale") or "0") == "1":
            logger.warning("attribution index: Bloom filter is behind the tables; rebuilding it")
            self._rebuild_bloom()
            return
        data = self._store.get_meta("bloom")
        self._bloom = Bloom.load_bytes(bytes(data), bloom_hash) if data else None

    def _rebuild_bloom(self, extra: int = 0) -> None:
        count = self._store.segment_count()
        capacity = max(int((count + extra) * 1.1), 10_000)
        bloom = Bloom(capacity, FALSE_POSITIVE_RATE, bloom_hash)
        bloom.update(self._store.iter_segment_keys())
        self._bloom = bloom
        self._save_bloom(capacity)

    def _save_bloom(self, capacity: int) -> None:
        self._store.begin()
        self._store.set_meta("bloom", self._bloom.save_bytes())
        self._store.set_meta("bloom_capacity", str(capacity))
        self._store.set_meta("bloom_stale", "0")
        self._store.commit()

    # -- building ---------------------------------------------------------------------------
    def add_documents(
        self,
        documents: Iterable[IndexDocument],
        *,
        size_hint_bytes: int = 0,
        description: str | None = None,
        source_label: str | None = None,
        progress: Callable[[IndexDocument, str], None] | None = None,
    ) -> BuildReport:
        """Add documents incrementally: content already indexed is skipped (dedup by sha256),
        a changed file at a known repo/path replaces the old one. `progress(doc, outcome)` is
        called for every document."""
        report = BuildReport()
        started = time.perf_counter()
        store = self._store
        capacity = int(_text(store.get_meta("bloom_capacity") or "0"))
        expected = store.segment_count() + size_hint_bytes // WINDOW
        if self._bloom is None or expected > capacity:
            self._rebuild_bloom(extra=size_hint_bytes // WINDOW)
            capacity = int(_text(store.get_meta("bloom_capacity")))
        bloom = self._bloom
        pending = 0
        store.begin()
        try:
            store.set_meta("key", KEY_NAME)
            store.set_meta("window", str(WINDOW))
            store.set_meta("bloom_stale", "1")  # until the filter is saved with the tables
            for doc in documents:
                outcome = self._add_one(doc, bloom, report)
                if progress:
                    progress(doc, outcome)
                if outcome in ("added", "replaced"):
                    pending += doc.nbytes
                    if pending >= COMMIT_BYTES:
                        store.commit()
                        store.begin()
                        pending = 0
            if description is not None:
                store.set_meta("description", description)
            if source_label:
                sources = json.loads(_text(store.get_meta("sources") or "[]"))
                if source_label not in sources:
                    sources.append(source_label)
                store.set_meta("sources", json.dumps(sources))
            store.set_meta("built_at", datetime.now(UTC).isoformat(timespec="seconds"))
            store.commit()
        except BaseException:
            store.rollback()
            raise
        if store.segment_count() > capacity:
            self._rebuild_bloom()  # grown past its size: re-size to stay near 1% false positives
        else:
            self._save_bloom(capacity)
        if report.added or report.replaced:
            store.optimize()
        report.seconds = time.perf_counter() - started
        logger.info("attribution index %s: %s", self.location, report.describe())
        return report

    def prune(self, keep: set[tuple[str, str]]) -> int:
        """Delete documents whose (repo, path) is not in `keep`; returns how many. The Bloom
        filter keeps their bits, which only cost a verification lookup until the next resize."""
        stale = [
            doc_id for doc_id, repo, path in self._store.locations() if (repo, path) not in keep
        ]
        if stale:
            self._store.begin()
            try:
                for doc_id in stale:
                    self._store.delete_document(doc_id)
                self._store.commit()
            except BaseException:
                self._store.rollback()
                raise
            logger.info(
                "attribution index %s: removed %d stale documents", self.location, len(stale)
            )
        return len(stale)

    def get_meta(self, key: str) -> str | None:
        value = self._store.get_meta(key)
        return None if value is None else _text(value)

    def set_meta(self, key: str, value: str) -> None:
        self._store.set_meta(key, value)

    def _add_one(self, doc: IndexDocument, bloom: Bloom, report: BuildReport) -> str:
        if "\x00" in doc.text or len(doc.text) < 1:
            report.skipped += 1
            return "skipped"
        state, doc_id = self._store.find_existing(doc.sha256, doc.repo, doc.path)
        if state == "same":
            report.unchanged += 1
            return "unchanged"
        if state == "duplicate":
            report.duplicates += 1
            return "duplicate"
        if state == "replace":
            self._store.delete_document(doc_id)
            report.replaced += 1
        else:
            report.added += 1
        bloom.update(self._store.add_document(doc))
        report.bytes_added += doc.nbytes
        return "replaced" if state == "replace" else "added"

    # -- membership check ------------------------------------------------------------------
    def attribute(
        self, text: str, *, min_chars: int = MIN_SPAN_CHARS, max_sources: int = MAX_SOURCES
    ) -> list[Span]:
        """Verbatim spans of `text` found in the index, each verified and with its sources.

        Every WINDOW-character window is tested against the Bloom filter; hits are checked
        against the stored segments (dropping false positives), then each verified hit is
        extended character by character against its document, so consecutive hits chain into
        one span with exact boundaries. Only spans present in stored text are returned.
        """
        if not isinstance(text, str):
            raise PlaygroundError(f"`text` must be text, got {type(text).__name__}", field="text")
        if len(text) > MAX_ATTRIBUTE_CHARS:
            raise PlaygroundError(
                f"`text` must be at most {MAX_ATTRIBUTE_CHARS} characters for attribution. "
                f"Given: {len(text)}",
                field="text",
            )
        bloom = self._bloom
        n = len(text)
        if bloom is None or n < WINDOW:
            return []
        all_keys = window_keys(text).tolist()
        keys = {i: key for i, key in enumerate(all_keys) if key in bloom}
        if not keys:
            return []
        located = self._store.lookup_segments(set(keys.values()), CANDIDATES_PER_WINDOW)
        hits = [i for i in sorted(keys) if keys[i] in located]
        texts: dict[int, str] = {}
        spans: list[tuple[int, int, int, int]] = []  # start, end, doc id, offset in doc
        covered = 0
        for i in hits:
            if i + WINDOW <= covered:
                continue  # already inside the previous span
            need = {d for d, _ in located[keys[i]] if d not in texts}
            texts.update(self._store.document_texts(need))
            best = None
            for doc_id, off in located[keys[i]]:
                doc = texts[doc_id]
                if doc[off : off + WINDOW] != text[i : i + WINDOW]:
                    continue  # a stale or colliding key: not evidence
                left = match_left(text, i, doc, off, i - covered if i >= covered else 0)
                right = match_right(text, i + WINDOW, doc, off + WINDOW)
                start, end = i - left, i + WINDOW + right
                if best is None or end - start > best[1] - best[0]:
                    best = (start, end, doc_id, off - left)
            if best is None:
                continue
            start, end, doc_id, off = best
            if start < covered:  # overlaps the previous span: keep only the new part
                off += covered - start
                start = covered
            covered = max(covered, end)
            # Whitespace at the edges is not evidence, and would put start_line a line early.
            while start < end and text[start].isspace():
                start, off = start + 1, off + 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end - start >= min_chars and informative(text[start:end]):
                spans.append((start, end, doc_id, off))
        return [self._with_sources(text, s, texts, max_sources) for s in spans]

    def _with_sources(self, text: str, span: tuple, texts: dict[int, str], limit: int) -> Span:
        start, end, doc_id, off = span
        piece = text[start:end]
        rows = self._store.locate(piece, probe(piece), limit)
        found = {row[0]: row for row in rows}
        if doc_id not in found:  # the document the span was verified in always comes first
            doc = texts[doc_id]
            found = {doc_id: (doc_id, off, doc.count("\n", 0, off) + 1), **found}
        else:
            found = {doc_id: found.pop(doc_id), **found}
        rows = list(found.values())[:limit]
        meta = self._store.documents_meta([r[0] for r in rows])
        extra_lines = piece.count("\n", 0, len(piece) - 1)
        sources = tuple(Source(*meta[d][:3], line, line + extra_lines) for d, _, line in rows)
        return Span(start, end, piece, sources)

    # -- full-text search -------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        repo: str | None = None,
        license: str | None = None,
        lang: str | None = None,
        page: int | str = 1,
        page_size: int | str = 10,
        exact: bool = False,
    ) -> list[Hit]:
        """BM25-ranked chunks matching the query's words (all of them, else any of them), or
        with `exact=True` files containing the query verbatim (case-sensitive). Any text is
        safe: words are quoted before they reach the query parser. Bad input (search.py's
        limits) raises PlaygroundError naming the field."""
        given = {"repo": repo, "license": license, "lang": lang}
        query, page, page_size, filters = q.validate(query, page, page_size, given)
        offset = (page - 1) * page_size
        if exact:
            phrase = query.strip()
            if len(phrase) < q.MIN_EXACT_CHARS:
                return []
            rows = self._store.search_exact(phrase, filters, page_size, offset)
            return [q.exact_hit(row, phrase) for row in rows]
        terms = q.query_terms(query)
        if not terms:
            return []
        any_term = False
        if len(terms) > 1 and not self._store.search_words(terms, False, filters, 1, 0):
            any_term = True  # no chunk has every word: rank chunks having any of them
        rows = self._store.search_words(terms, any_term, filters, page_size, offset)
        return [q.word_hit(row, terms) for row in rows]

    # -- stats ------------------------------------------------------------------------------
    def stats(self, *, sizes: bool = False) -> IndexStats:
        """Counts and a one-line `summary`; `sizes=True` also measures the tables on disk."""
        counts = self._store.counts()
        return IndexStats(
            **counts,
            description=_text(self._store.get_meta("description") or ""),
            backend=self._store.kind,
            bloom_bytes=self._bloom.size_in_bits // 8 if self._bloom is not None else 0,
            sizes=self._store.sizes() if sizes else {},
        )


def _text(value: bytes | str | memoryview) -> str:
    if isinstance(value, memoryview):
        value = bytes(value)
    return value.decode() if isinstance(value, bytes) else str(value)
