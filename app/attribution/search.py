"""Turning arbitrary user text into safe queries, and search hits into snippets."""

from __future__ import annotations

import re

from model.errors import PlaygroundError

from .core import Hit

MAX_QUERY_CHARS = 1_000
MAX_TERMS = 32
MAX_PAGE = 1_000
MAX_PAGE_SIZE = 50
MIN_EXACT_CHARS = 3  # the trigram index cannot find anything shorter
SNIPPET_LINE_CHARS = 240
_WORD = re.compile(r"\w+")


def validate(query: object, page: object, page_size: object) -> str:
    """Check the search inputs at the edge; messages name the field, the limit and the value."""
    if not isinstance(query, str):
        raise PlaygroundError(f"`query` must be text, got {type(query).__name__}", field="query")
    if len(query) > MAX_QUERY_CHARS:
        raise PlaygroundError(
            f"`query` must be at most {MAX_QUERY_CHARS} characters. Given: {len(query)}",
            field="query",
        )
    for name, value, limit in (("page", page, MAX_PAGE), ("page_size", page_size, MAX_PAGE_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise PlaygroundError(
                f"`{name}` must be an integer from 1 to {limit}. Given: {value!r}", field=name
            )
    return query.replace("\x00", "")  # no database accepts NUL inside text


def query_terms(query: str) -> list[str]:
    """Words of the query, lowercased and deduplicated; operators and punctuation are dropped,
    so AND/OR/NEAR, quotes, *, - and parentheses can never reach the query parser."""
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):
        word = word.strip("_")
        if word and word not in terms:
            terms.append(word)
    return terms[:MAX_TERMS]


def term_pattern(terms: list[str]) -> re.Pattern | None:
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    # Alphanumerics bound a match; underscores split identifiers, as both tokenizers do.
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)


def word_hit(row: tuple, terms: list[str]) -> Hit:
    """A hit from (repo, path, license, chunk start_line, chunk text, score)."""
    repo, path, license_, chunk_start, chunk, score = row
    lines = chunk.splitlines() or [""]
    pattern = term_pattern(terms)
    best, best_score = 0, (0, 0)
    for i, line in enumerate(lines):
        found = [m.group(0).lower() for m in pattern.finditer(line)] if pattern else []
        line_score = (len(set(found)), len(found))
        if line_score > best_score:
            best, best_score = i, line_score
    first = best - 1 if best > 0 and lines[best - 1].strip() else best
    shown = [line[:SNIPPET_LINE_CHARS] for line in lines[first : best + 2]]
    snippet = "\n".join(shown)
    highlights = tuple(m.span() for m in pattern.finditer(snippet)) if pattern else ()
    return Hit(repo, path, license_, chunk_start + first, snippet, round(float(score), 4),
               highlights)  # fmt: skip


def exact_hit(row: tuple, phrase: str) -> Hit:
    """A hit from (repo, path, license, document text, offset of the phrase, score)."""
    repo, path, license_, text, pos, score = row
    line_start = text.rfind("\n", 0, pos) + 1
    end = pos + len(phrase)
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    # Long lines: keep the phrase and some context, not a whole minified file.
    lo = max(line_start, pos - SNIPPET_LINE_CHARS)
    hi = min(line_end, end + SNIPPET_LINE_CHARS)
    snippet = text[lo:hi]
    start_line = text.count("\n", 0, pos) + 1
    return Hit(repo, path, license_, start_line, snippet, round(float(score), 4),
               ((pos - lo, min(end, hi) - lo),))  # fmt: skip
