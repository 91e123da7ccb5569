"""Attribution: which parts of a generated text are verbatim training data, and from where.

A Bloom filter over 50-character segments of every indexed file flags candidate windows of a
text; each candidate is verified against the stored text, extended to its exact boundaries and
located (repo, path, lines, license) with the exact-substring index. The same index serves
BM25 full-text search. SQLite (FTS5) is the embedded default; a postgresql+psycopg:// URL
uses PostgreSQL (tsvector + pg_trgm).
"""

from __future__ import annotations

from .build import build, ensure_default_index
from .core import WINDOW, BuildReport, Hit, IndexDocument, Source, Span
from .index import AttributionIndex
from .stats import IndexStats

__all__ = [
    "WINDOW",
    "AttributionIndex",
    "BuildReport",
    "Hit",
    "IndexDocument",
    "IndexStats",
    "Source",
    "Span",
    "build",
    "ensure_default_index",
]
