"""Character-level matching for the membership check: how far a verified window extends into
its document on each side, which piece of a span makes a fast lookup, and whether a span is
evidence at all."""

from __future__ import annotations

MIN_DISTINCT_CHARS = 8  # a window of "=====" or blank lines is not evidence of copying
PROBE_CHARS = 40


def match_right(a: str, i: int, b: str, j: int) -> int:
    """Length of the common run of a[i:] and b[j:]; compares blocks first, then characters."""
    n = 0
    limit = min(len(a) - i, len(b) - j)
    step = 64
    while n + step <= limit and a[i + n : i + n + step] == b[j + n : j + n + step]:
        n += step
    while n < limit and a[i + n] == b[j + n]:
        n += 1
    return n


def match_left(a: str, i: int, b: str, j: int, limit: int) -> int:
    """Length of the common run ending just before a[i] and b[j], at most `limit`."""
    limit = min(limit, i, j)
    n = 0
    while n < limit and a[i - n - 1] == b[j - n - 1]:
        n += 1
    return n


def probe(text: str) -> str:
    """The most varied PROBE_CHARS-long piece of a span: rare trigrams make a fast lookup."""
    if len(text) <= PROBE_CHARS:
        return text
    best, best_score = text[:PROBE_CHARS], -1
    last = min(len(text) - PROBE_CHARS, 12 * PROBE_CHARS)  # a dozen candidates is plenty
    for start in range(0, last + 1, PROBE_CHARS // 2):
        piece = text[start : start + PROBE_CHARS]
        score = len(set(piece)) - piece.count(" ")
        if score > best_score:
            best, best_score = piece, score
    return best


def informative(span: str) -> bool:
    return len(set(span) - set(" \t\r\n")) >= MIN_DISTINCT_CHARS
