"""Turning arbitrary user text into safe queries, and search hits into snippets."""

from __future__ import annotations

import math
import re

from model.errors import PlaygroundError

from .core import Hit

# The one place search input is checked: the page, the API, /v1 and the CLI all reach it
# through AttributionIndex.search.
MAX_QUERY_CHARS = 1_000
MAX_FILTER_CHARS = 200
MAX_TERMS = 32
MAX_PAGE = 1_000
MAX_PAGE_SIZE = 50
MIN_EXACT_CHARS = 3  # the trigram index cannot find anything shorter
SNIPPET_LINE_CHARS = 240
_WORD = re.compile(r"\w+")


def validate(
    query: object, page: object, page_size: object, filters: dict[str, object]
) -> tuple[str, int, int, dict[str, str]]:
    """Search inputs checked and normalised: (query, page, page_size, the filters given).
    Messages name the field, the limit and the value."""
    checked = {}
    for name, value in filters.items():
        text = check_search_text(name, value, MAX_FILTER_CHARS, optional=True)
        if text:
            checked[name] = text
    return (
        check_search_text("query", query, MAX_QUERY_CHARS),
        whole_number("page", page, MAX_PAGE, default=1),
        whole_number("page_size", page_size, MAX_PAGE_SIZE, default=10),
        checked,
    )


def whole_number(field: str, value, limit: int, *, default: int) -> int:
    """1 to `limit`, given as a number or its text (the API's forms send text); unset: default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlaygroundError(
            f"`{field}` must be a whole number from 1 to {limit}; got {type(value).__name__}.",
            field=field,
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer() or not 1 <= number <= limit:
        raise PlaygroundError(
            f"`{field}` must be a whole number from 1 to {limit}; got {str(value)[:40]!r}.",
            field=field,
        )
    return int(number)


def check_search_text(field: str, value, limit: int, *, optional: bool = False) -> str | None:
    """Search text and filters are plain strings: an object such as {"$ne": 1} is refused."""
    if value is None or (optional and value == ""):
        if optional:
            return None
        value = ""
    if not isinstance(value, str):
        raise PlaygroundError(f"`{field}` must be text; got {type(value).__name__}.", field=field)
    if len(value) > limit:
        raise PlaygroundError(
            f"`{field}` is {len(value):,} characters; the limit is {limit:,}.", field=field
        )
    if "\x00" in value:  # no database accepts NUL inside text
        raise PlaygroundError(f"`{field}` contains a NUL character.", field=field)
    return value


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
    return Hit(
        repo, path, license_, chunk_start + first, snippet, round(float(score), 4), highlights
    )


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
    return Hit(
        repo,
        path,
        license_,
        start_line,
        snippet,
        round(float(score), 4),
        ((pos - lo, min(end, hi) - lo),),
    )
